"""Polygons from a class map, streamed band by band.

The map is read in horizontal bands of rows. Each band is polygonized on its own; a polygon that
touches the band's bottom edge may continue in the next band, so it is held back ("open") and
joined with the touching polygons of the same class below. A polygon is written as soon as no
piece of it touches the current seam; its pieces are dissolved then, with one union. Memory is
bounded by one band of pixels plus the open polygons.

Polygons are built and dissolved in pixel coordinates, where every vertex is a whole number, so
unions along seams are exact; they are moved into the map's CRS only when written.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fiona
import numpy as np
import rasterio.features
import shapely
from affine import Affine
from rasterio.windows import Window
from shapely.affinity import affine_transform
from shapely.geometry import Polygon, mapping, shape
from shapely.geometry.polygon import orient

from geoclass.errors import BandError, ConfigError, GeoclassError
from geoclass.io.class_map import read_class_metadata
from geoclass.io.outputs import input_files, is_io_error, temp_path, write_error
from geoclass.io.reader import open_scene
from geoclass.io.vector_files import (
    VECTOR_DRIVERS,
    check_vector_output,
    commit_vector,
    discard_vector,
    vector_driver,
)
from geoclass.progress import ProgressCallback, Reporter

__all__ = ["VECTOR_DRIVERS", "VectorResult", "polygonize_class_map"]

_SCHEMA = {
    "geometry": "Polygon",
    "properties": {"class_id": "int", "class_name": "str", "area": "float"},
}
_WRITE_BATCH = 2000


@dataclass(frozen=True)
class VectorResult:
    """What ``polygonize_class_map`` wrote.

    Attributes:
        path: The vector file.
        driver: OGR driver used (``GPKG``, ``GeoJSON``, ``ESRI Shapefile``).
        crs: The map's CRS as a string (``EPSG:32632``), or None without one.
        polygons: Polygons written.
        dropped: Polygons dropped by ``min_area``.
        area_units: Unit of the ``area`` attribute, e.g. ``metre²`` or ``degree²``.
        geographic: True when the CRS is geographic (areas are then in square degrees).
        classes: Class names by id from the map's tags (empty without them; polygons are then
            named ``class_<id>``).
        polygons_by_class: Class id -> polygons written.
        area_by_class: Class id -> summed ``area`` of the polygons written.
    """

    path: Path
    driver: str
    crs: str | None
    polygons: int
    dropped: int
    area_units: str
    geographic: bool
    classes: list[str]
    polygons_by_class: dict[int, int] = field(default_factory=dict)
    area_by_class: dict[int, float] = field(default_factory=dict)



# --- seams --------------------------------------------------------------------------------------


def _seam_intervals(poly: Polygon, y: float) -> list[tuple[float, float]]:
    """``(x0, x1)`` spans of the exterior lying on the horizontal line ``y`` (pixel coordinates).

    Holes cannot lie on a band edge: a hole needs pixels of its polygon on both sides.
    """
    xy = np.asarray(poly.exterior.coords)
    on = (xy[:-1, 1] == y) & (xy[1:, 1] == y)
    a, b = xy[:-1, 0][on], xy[1:, 0][on]
    return list(zip(np.minimum(a, b).tolist(), np.maximum(a, b).tolist()))


def _polygons(geom: Any) -> Iterator[Polygon]:
    """The non-empty polygons in ``geom``, repaired when needed."""
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    if isinstance(geom, Polygon):
        if not geom.is_empty:
            yield geom
        return
    for part in getattr(geom, "geoms", ()):
        yield from _polygons(part)


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


@dataclass
class _Open:
    """A polygon still growing downwards: its pieces so far, unioned only once it is complete.

    ``frontier`` holds the pieces of the last band that touch its bottom edge; only they can
    continue into the next band.
    """

    cls: int
    pieces: list[Polygon]
    frontier: list[Polygon]

    def geometry(self) -> Any:
        return self.pieces[0] if len(self.pieces) == 1 else shapely.union_all(self.pieces)


def _stitch(
    held: list[_Open], new: list[tuple[int, Polygon]], top: float, bottom: float | None
) -> tuple[list[_Open], list[_Open]]:
    """Join the new band's pieces to the open polygons above them that share a stretch of seam.

    Args:
        held: Open polygons whose frontier touches the seam ``top``.
        new: ``(class, piece)`` of the band between ``top`` and ``bottom``.
        top: The seam above the band.
        bottom: The seam below the band; None for the last band.

    Returns:
        ``(complete, still_open)``: polygons that cannot grow any further, and those whose new
        pieces touch ``bottom``.
    """
    n_held = len(held)
    spans: dict[int, tuple[list[tuple[float, float, int]], list[tuple[float, float, int]]]] = {}
    for i, op in enumerate(held):
        for piece in op.frontier:
            for x0, x1 in _seam_intervals(piece, top):
                spans.setdefault(op.cls, ([], []))[0].append((x0, x1, i))
    for j, (cls, piece) in enumerate(new):
        if piece.bounds[1] == top:
            for x0, x1 in _seam_intervals(piece, top):
                spans.setdefault(cls, ([], []))[1].append((x0, x1, n_held + j))
    uf = _UnionFind(n_held + len(new))
    for above, below in spans.values():
        above.sort()
        below.sort()
        i = j = 0
        # Spans on one side of the seam never overlap, so one sweep finds every shared stretch.
        while i < len(above) and j < len(below):
            a0, a1, ai = above[i]
            b0, b1, bi = below[j]
            if min(a1, b1) > max(a0, b0):  # a shared edge, not just a corner
                uf.union(ai, bi)
            if a1 <= b1:
                i += 1
            else:
                j += 1
    groups: dict[int, list[int]] = {}
    for k in range(n_held + len(new)):
        groups.setdefault(uf.find(k), []).append(k)
    complete: list[_Open] = []
    still_open: list[_Open] = []
    for members in groups.values():
        pieces: list[Polygon] = []
        frontier: list[Polygon] = []
        cls = held[members[0]].cls if members[0] < n_held else new[members[0] - n_held][0]
        for k in members:
            if k < n_held:
                pieces.extend(held[k].pieces)
            else:
                piece = new[k - n_held][1]
                pieces.append(piece)
                if bottom is not None and piece.bounds[3] == bottom:
                    frontier.append(piece)
        (still_open if frontier else complete).append(_Open(cls, pieces, frontier))
    return complete, still_open


# --- main ---------------------------------------------------------------------------------------


def _band_shapes(band: np.ndarray, valid: np.ndarray, row0: int) -> list[tuple[int, Polygon]]:
    if band.dtype.kind == "f":
        raise BandError(f"a class map must hold integer class ids, got dtype {band.dtype}")
    if band.dtype not in (np.uint8, np.uint16, np.int16, np.int32):
        lo, hi = (int(band.min()), int(band.max())) if band.size else (0, 0)
        if lo < np.iinfo(np.int32).min or hi > np.iinfo(np.int32).max:
            raise BandError(f"class ids {lo}..{hi} do not fit 32-bit integers")
        band = band.astype(np.int32)
    out: list[tuple[int, Polygon]] = []
    for geom, value in rasterio.features.shapes(
        band, mask=valid, connectivity=4, transform=Affine(1, 0, 0, 0, 1, row0)
    ):
        cls = int(value)
        out.extend((cls, p) for p in _polygons(shape(geom)))
    return out


def polygonize_class_map(
    map_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    min_area: float = 0.0,
    simplify: float = 0.0,
    band_rows: int = 1024,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> VectorResult:
    """Write the polygons of a class map to a vector file, streaming in bands of rows.

    Neighbouring pixels (4-connectivity) of one class form one polygon, however many bands it
    spans; holes are kept and nodata pixels produce no polygon.

    Args:
        map_path: A class map (single band of class ids; ``GEOCLASS_CLASSES`` names are used).
        out_path: ``.gpkg``, ``.geojson``/``.json`` or ``.shp``; written in the map's CRS.
        min_area: Drop polygons smaller than this, in CRS units² (square degrees for a
            geographic CRS), measured before simplification.
        simplify: Topology-preserving simplification tolerance in CRS units; 0 keeps the exact
            pixel outlines. Each polygon is simplified on its own, so shared edges may no longer
            match exactly.
        band_rows: Rows per band read; memory is about ``width * band_rows`` pixels.
        overwrite: Replace an existing output.
        progress: Optional progress callback.

    Returns:
        A ``VectorResult``.

    Raises:
        ConfigError: Unknown extension or negative ``min_area``/``simplify``/``band_rows``.
        OutputExistsError: The output exists and ``overwrite`` is False.
        OutputError: The output folder is missing or not writable.
        InputNotFoundError, RasterOpenError: The map cannot be read.
        BandError: The map does not hold integer class ids.
    """
    out = Path(out_path)
    driver = vector_driver(out)
    if band_rows < 1:
        raise ConfigError(f"band_rows must be >= 1, got {band_rows}")
    if not (min_area >= 0 and math.isfinite(min_area)):
        raise ConfigError(f"min_area must be a number >= 0, got {min_area}")
    if not (simplify >= 0 and math.isfinite(simplify)):
        raise ConfigError(f"simplify must be a number >= 0, got {simplify}")
    check_vector_output(out, driver, overwrite=overwrite, inputs=input_files([map_path], "map"), kind="vector output")

    reporter = Reporter(progress)
    scene = open_scene(map_path, bands=[1])
    meta = read_class_metadata(map_path)
    names = meta[0] if meta else []
    crs = scene.crs
    geographic = bool(crs is not None and crs.is_geographic)
    if crs is None:
        units = "pixel²"
        reporter.warn(f"{map_path}: has no CRS; polygons are written in its pixel coordinates")
    elif geographic:
        units = "degree²"
        reporter.warn(
            f"{map_path}: CRS {crs.to_string()} is geographic, so polygon areas (and min_area) "
            "are in square degrees; reproject the map for areas in square metres"
        )
    else:
        units = f"{crs.linear_units}²"

    t = scene.transform
    to_crs = [t.a, t.b, t.d, t.e, t.c, t.f]
    pixel_area = abs(t.a * t.e - t.b * t.d)
    width, height = scene.width, scene.height
    n_bands = math.ceil(height / band_rows)

    def name_of(cls: int) -> str:
        return names[cls] if 0 <= cls < len(names) else f"class_{cls}"

    counts: dict[int, int] = {}
    areas: dict[int, float] = {}
    dropped = 0
    batch: list[dict[str, Any]] = []

    def finish(done: Iterable[_Open], sink: Any) -> None:
        nonlocal dropped
        for op in done:
            cls = op.cls
            if sum(p.area for p in op.pieces) * pixel_area < min_area:
                dropped += 1
                continue
            geom = affine_transform(op.geometry(), to_crs)
            if simplify > 0:
                geom = geom.simplify(simplify, preserve_topology=True)
            # Pieces are valid and a union of valid pieces is too: check only what may not be.
            parts = [geom] if simplify == 0 and isinstance(geom, Polygon) else _polygons(geom)
            for part in parts:
                part = orient(part, 1.0)
                area = float(part.area)
                counts[cls] = counts.get(cls, 0) + 1
                areas[cls] = areas.get(cls, 0.0) + area
                batch.append(
                    {
                        "geometry": mapping(part),
                        "properties": {"class_id": cls, "class_name": name_of(cls), "area": area},
                    }
                )
        if len(batch) >= _WRITE_BATCH:
            flush(sink)

    def flush(sink: Any) -> None:
        if batch:
            sink.writerecords(batch)
            batch.clear()

    tmp = temp_path(out)
    open_kwargs: dict[str, Any] = {"driver": driver, "schema": _SCHEMA}
    if crs is not None:
        open_kwargs["crs_wkt"] = crs.to_wkt()
    if driver != "ESRI Shapefile":
        open_kwargs["layer"] = out.stem
    reporter.start("polygonize", n_bands)
    try:
        with scene, fiona.open(tmp, "w", **open_kwargs) as sink:
            held: list[_Open] = []
            for k in range(n_bands):
                r0, r1 = k * band_rows, min(height, (k + 1) * band_rows)
                data, valid = scene.read_masked(Window(0, r0, width, r1 - r0))
                new = _band_shapes(data[0], valid, r0)
                complete, held = _stitch(held, new, float(r0), float(r1) if r1 < height else None)
                finish(complete, sink)
                reporter.advance("polygonize")
            finish(held, sink)
            flush(sink)
        commit_vector(tmp, out, driver)
    except BaseException as exc:
        discard_vector(tmp, driver)
        if is_io_error(exc) and not isinstance(exc, GeoclassError):
            raise write_error(exc, out) from exc
        raise
    reporter.end("polygonize")
    return VectorResult(
        path=out,
        driver=driver,
        crs=crs.to_string() if crs is not None else None,
        polygons=sum(counts.values()),
        dropped=dropped,
        area_units=units,
        geographic=geographic,
        classes=list(names),
        polygons_by_class=dict(sorted(counts.items())),
        area_by_class=dict(sorted(areas.items())),
    )
