"""Chip windows centred on the labels (``tile --sample labels``), for sparse labels.

A fixed chip grid gives sparse labels (a few polygons, field points) almost no chips. Here each
point gets the chip centred on it, and each polygon or line ``per_feature`` chips centred on points
inside it (its representative point first, then seeded random points within it). Windows are kept
inside the scene (shifted in at its edges), duplicates dropped, and returned in row-major order.
"""

from __future__ import annotations

import numpy as np
import shapely
from rasterio.windows import Window

from geoclass.errors import ConfigError
from geoclass.io.reader import Scene

__all__ = ["label_windows"]

_TRIES = 50  # random draws per wanted point inside a thin polygon


def label_windows(geometries: np.ndarray, scene: Scene, size: int, per_feature: int = 1,
                  seed: int = 0) -> list[Window]:
    """``size`` px windows centred on the labelled features (in the scene's CRS).

    Raises:
        ConfigError: ``per_feature`` below 1.
    """
    if per_feature < 1:
        raise ConfigError(f"chips per feature must be >= 1, got {per_feature}")
    rng = np.random.default_rng(seed)
    centres: list[tuple[float, float]] = []
    for geom in geometries:
        if shapely.get_type_id(geom) in (0, 4):  # (multi)point: one chip per point
            centres += [(p.x, p.y) for p in getattr(geom, "geoms", [geom])]
            continue
        anchor = geom.representative_point()
        centres.append((anchor.x, anchor.y))
        area = geom if shapely.get_type_id(geom) in (3, 6) else geom.buffer(abs(scene.transform.a) / 2)
        left, bottom, right, top = area.bounds
        wanted, tries = per_feature - 1, 0
        while wanted > 0 and tries < _TRIES * per_feature:
            tries += 1
            x, y = rng.uniform(left, right), rng.uniform(bottom, top)
            if area.contains(shapely.Point(x, y)):
                centres.append((x, y))
                wanted -= 1
    inverse = ~scene.transform
    offsets: set[tuple[int, int]] = set()
    for x, y in centres:
        col, row = inverse * (x, y)
        offsets.add((_offset(row, size, scene.height), _offset(col, size, scene.width)))
    return [Window(col, row, size, size) for row, col in sorted(offsets)]


def _offset(centre: float, size: int, extent: int) -> int:
    """Offset of a window centred on ``centre``, kept inside ``[0, extent)`` when it fits."""
    start = int(np.floor(centre)) - size // 2
    return 0 if extent <= size else min(max(start, 0), extent - size)
