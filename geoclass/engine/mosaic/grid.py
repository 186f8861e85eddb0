"""The mosaic's output grid and where each input lies on it.

The grid is in the target CRS (the first input's unless given), at the finest input resolution
(unless given), over the union of the inputs' extents, snapped to the grid of the first input
already on it, so that input is copied rather than resampled. Inputs without a CRS are joined only
when they all lack one and share one pixel grid (the mosaic then has no CRS either).

A canvas much larger than the inputs (inputs far apart) is mostly nodata and slow to write: when
the inputs cover less than a quarter of it and it has more than ``WARN_PIXELS``, a warning names
its size; above ``REFUSE_PIXELS`` a GeoTIFF is refused unless forced (a VRT costs nothing and
only warns).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError, RasterioError
from rasterio.warp import calculate_default_transform, transform_bounds
from rasterio.windows import Window

from geoclass.engine.mosaic.inputs import Source
from geoclass.errors import ConfigError, GeoreferenceError
from geoclass.io.windows import window_bounds
from geoclass.progress import Reporter

__all__ = [
    "REFUSE_PIXELS",
    "SPARSE_RATIO",
    "WARN_PIXELS",
    "Grid",
    "Placement",
    "check_canvas",
    "georeferenced_grid",
    "on_grid",
    "pixel_grid",
    "whole",
]

SPARSE_RATIO = 4
"""A canvas with more than this many times the pixels the inputs cover is mostly nodata."""
WARN_PIXELS = 10_000_000
"""Warn about a sparse canvas above this many pixels."""
REFUSE_PIXELS = 250_000_000
"""Refuse a sparse GeoTIFF canvas above this many pixels unless forced."""

Bounds = tuple[float, float, float, float]
Footprint = tuple[int, int, int, int]


@dataclass(frozen=True)
class Grid:
    """The output grid: CRS (None for inputs without one), transform and size."""

    crs: CRS | None
    transform: Affine
    width: int
    height: int

    @property
    def bounds(self) -> Bounds:
        """``(left, bottom, right, top)`` in the grid's CRS."""
        return window_bounds(self.transform, Window(0, 0, self.width, self.height))


@dataclass(frozen=True)
class Placement:
    """Where one input lies on the output grid.

    Attributes:
        bounds: Its extent in the target CRS.
        res: Its pixel size in target CRS units.
        offset: ``(col, row)`` of its pixel (0, 0) on the output grid; None when it is not on
            the grid and is reprojected block by block.
        footprint: Output pixels ``(c0, r0, c1, r1)`` it may cover (clipped to the grid).
    """

    bounds: Bounds
    res: tuple[float, float]
    offset: tuple[int, int] | None
    footprint: Footprint

    @property
    def reprojected(self) -> bool:
        """Not on the output grid: read around each block and resampled."""
        return self.offset is None


def on_grid(t: Affine, crs: CRS | None, grid_crs: CRS | None, rx: float, ry: float) -> bool:
    """``t`` in ``crs`` has the grid's CRS and a north-up pixel of ``rx`` x ``ry``."""
    return (
        crs == grid_crs
        and t.b == 0
        and t.d == 0
        and math.isclose(t.a, rx, rel_tol=1e-9)
        and math.isclose(-t.e, ry, rel_tol=1e-9)
    )


def whole(value: float) -> int | None:
    """``value`` as an int when it is one (within 1e-6), else None."""
    r = round(value)
    return int(r) if abs(value - r) < 1e-6 else None


def _requested_res(res: float | tuple[float, float]) -> tuple[float, float]:
    rx, ry = (res, res) if isinstance(res, (int, float)) else res
    if not (rx > 0 and ry > 0 and math.isfinite(rx) and math.isfinite(ry)):
        raise ConfigError(f"--res must be a positive number, got {res}")
    return float(rx), float(ry)


def _target_crs(crs: str | None, sources: Sequence[Source]) -> CRS:
    if crs is None:
        first = sources[0].scene.crs
        assert first is not None  # inputs without a CRS go through pixel_grid
        return first
    try:
        return CRS.from_user_input(crs)
    except CRSError as exc:
        raise ConfigError(f"--crs {crs!r}: not a CRS rasterio knows ({exc})") from exc


def _extent(source: Source, crs: CRS) -> tuple[Bounds, tuple[float, float]]:
    """Bounds and resolution of a source in the target CRS."""
    sc = source.scene
    assert sc.crs is not None  # inputs without a CRS go through pixel_grid
    t = sc.transform
    if sc.crs == crs:
        res = (abs(t.a), abs(t.e)) if t.b == 0 and t.d == 0 else sc.res
        return tuple(sc.bounds), res  # type: ignore[return-value]
    try:
        bounds = transform_bounds(sc.crs, crs, *sc.bounds, densify_pts=21)
        dt, _, _ = calculate_default_transform(sc.crs, crs, sc.width, sc.height, *sc.bounds)
    except (RasterioError, CRSError, ValueError) as exc:
        raise GeoreferenceError(
            f"{source.label}: cannot be reprojected from {sc.crs.to_string()} to "
            f"{crs.to_string()} ({exc})"
        ) from exc
    if not all(map(math.isfinite, bounds)):
        raise GeoreferenceError(
            f"{source.label}: its extent has no finite coordinates in {crs.to_string()}"
        )
    return bounds, (abs(dt.a), abs(dt.e))


def georeferenced_grid(
    crs: str | None, res: float | tuple[float, float] | None, sources: Sequence[Source]
) -> tuple[Grid, list[Placement]]:
    """The output grid of inputs with a CRS, and where each input lies on it.

    Raises:
        ConfigError: Unknown ``crs``, non-positive ``res``, or a grid too large for GeoTIFF.
        GeoreferenceError: An input cannot be reprojected, or the union extent is empty.
    """
    target = _target_crs(crs, sources)
    extents = [_extent(s, target) for s in sources]
    if res is None:
        rx, ry = min(r[0] for _, r in extents), min(r[1] for _, r in extents)
    else:
        rx, ry = _requested_res(res)
    left = min(b[0] for b, _ in extents)
    bottom = min(b[1] for b, _ in extents)
    right = max(b[2] for b, _ in extents)
    top = max(b[3] for b, _ in extents)
    # Snap to the first input already on a grid of this resolution, so it is copied, not resampled.
    anchor = next(
        (
            s.scene.transform
            for s in sources
            if on_grid(s.scene.transform, s.scene.crs, target, rx, ry)
        ),
        None,
    )
    ax, ay = (anchor.c, anchor.f) if anchor is not None else (0.0, 0.0)
    eps = 1e-6
    c0 = math.floor((left - ax) / rx + eps)
    c1 = math.ceil((right - ax) / rx - eps)
    r0 = math.floor((ay - top) / ry + eps)
    r1 = math.ceil((ay - bottom) / ry - eps)
    width, height = c1 - c0, r1 - r0
    if width < 1 or height < 1:
        raise GeoreferenceError("the inputs' union extent is empty on the output grid")
    if width > 2**31 - 1 or height > 2**31 - 1:
        raise ConfigError(
            f"the mosaic would be {width}x{height} pixels at resolution {rx:g}x{ry:g}; "
            "give a coarser --res"
        )
    grid = Grid(target, Affine(rx, 0.0, ax + c0 * rx, 0.0, -ry, ay - r0 * ry), width, height)
    return grid, [_locate(s, b, r, grid) for s, (b, r) in zip(sources, extents)]


def _locate(source: Source, bounds: Bounds, res: tuple[float, float], grid: Grid) -> Placement:
    """Where a source lies on the output grid: a whole-pixel offset, or reprojected."""
    t = source.scene.transform
    g = grid.transform
    if on_grid(t, source.scene.crs, grid.crs, g.a, -g.e):
        col, row = whole((t.c - g.c) / g.a), whole((g.f - t.f) / -g.e)
        if col is not None and row is not None:
            footprint = (
                max(0, col),
                max(0, row),
                min(grid.width, col + source.scene.width),
                min(grid.height, row + source.scene.height),
            )
            return Placement(bounds, res, (col, row), footprint)
    left, bottom, right, top = bounds
    c0 = math.floor((left - g.c) / g.a) - 1
    c1 = math.ceil((right - g.c) / g.a) + 1
    r0 = math.floor((g.f - top) / -g.e) - 1
    r1 = math.ceil((g.f - bottom) / -g.e) + 1
    footprint = (max(0, c0), max(0, r0), min(grid.width, c1), min(grid.height, r1))
    return Placement(bounds, res, None, footprint)


def pixel_grid(
    crs: str | None, res: float | tuple[float, float] | None, sources: Sequence[Source]
) -> tuple[Grid, list[Placement]]:
    """The grid of inputs without a CRS: the first input's pixel grid, over all of them.

    Raises:
        ConfigError: ``crs`` or a different ``res`` was asked for (nothing to reproject with).
        GeoreferenceError: An input is not on the first one's pixel grid.
    """
    ref = sources[0]
    r = ref.scene.transform
    if crs is not None:
        raise ConfigError(
            f"--crs {crs}: the inputs have no CRS, so they cannot be reprojected; assign "
            "their CRS first (gdal_edit.py -a_srs) or leave out --crs"
        )
    if res is not None and not all(
        math.isclose(a, b, rel_tol=1e-9)
        for a, b in zip((abs(r.a), abs(r.e)), _requested_res(res))
    ):
        raise ConfigError(
            f"--res {res}: the inputs have no CRS, so they cannot be resampled; the mosaic "
            f"keeps their pixel size ({abs(r.a):g} x {abs(r.e):g})"
        )
    inv = ~r
    places: list[tuple[int, int]] = []
    for s in sources:
        t = s.scene.transform
        same = all(
            math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)
            for x, y in ((t.a, r.a), (t.b, r.b), (t.d, r.d), (t.e, r.e))
        )
        col = whole(t.c * inv.a + t.f * inv.b + inv.c)
        row = whole(t.c * inv.d + t.f * inv.e + inv.f)
        if not same or col is None or row is None:
            raise GeoreferenceError(
                f"{s.label}: has no CRS and is not on the pixel grid of {ref.label} (pixel "
                f"{t.a:g} x {t.e:g} at {t.c:g}, {t.f:g}; expected {r.a:g} x {r.e:g} and a whole "
                f"number of pixels from {r.c:g}, {r.f:g}); inputs without a CRS can only be "
                "joined on one shared pixel grid"
            )
        places.append((col, row))
    c0 = min(c for c, _ in places)
    r0 = min(rw for _, rw in places)
    c1 = max(c + s.scene.width for (c, _), s in zip(places, sources))
    r1 = max(rw + s.scene.height for (_, rw), s in zip(places, sources))
    placements = [
        Placement(
            bounds=tuple(s.scene.bounds),  # type: ignore[arg-type]
            res=(abs(r.a), abs(r.e)),
            offset=(c - c0, rw - r0),
            footprint=(c - c0, rw - r0, c - c0 + s.scene.width, rw - r0 + s.scene.height),
        )
        for (c, rw), s in zip(places, sources)
    ]
    return Grid(None, r * Affine.translation(c0, r0), c1 - c0, r1 - r0), placements


def _fmt_share(fraction: float) -> str:
    """``0.1234`` -> ``about 12%``; tiny shares as ``less than 0.01%``."""
    pct = 100 * fraction
    if pct >= 1:
        return f"about {pct:.0f}%"
    return f"about {pct:.2f}%" if pct >= 0.01 else "less than 0.01%"


def check_canvas(
    grid: Grid,
    placements: Sequence[Placement],
    *,
    refuse: bool,
    reporter: Reporter,
    warn_pixels: int = WARN_PIXELS,
    refuse_pixels: int = REFUSE_PIXELS,
) -> None:
    """Warn about (or refuse) a canvas that is huge and mostly empty: inputs far apart.

    The inputs' share of the canvas is estimated as the sum of their footprints on the output
    grid, capped at 1 (footprints of reprojected inputs are bounding boxes: an over-estimate).

    Args:
        grid: The output grid.
        placements: Where the inputs lie on it.
        refuse: Refuse a sparse canvas above ``refuse_pixels`` (a GeoTIFF, not forced).
        reporter: Where the warning goes.
        warn_pixels: Warn above this many pixels.
        refuse_pixels: Refuse above this many pixels.

    Raises:
        ConfigError: A sparse canvas of more than ``refuse_pixels`` pixels when ``refuse``.
    """
    canvas = grid.width * grid.height
    covered = sum(
        max(0, c1 - c0) * max(0, r1 - r0) for c0, r0, c1, r1 in (p.footprint for p in placements)
    )
    share = min(1.0, covered / canvas)
    if canvas <= SPARSE_RATIO * covered or canvas <= warn_pixels:
        return
    size = (
        f"{grid.width} x {grid.height} pixels ({canvas / 1e9:.3g} gigapixels) and the inputs "
        f"cover {_fmt_share(share)} of it"
    )
    if canvas > refuse_pixels and refuse:
        raise ConfigError(
            f"the mosaic canvas would be {size}: the inputs lie far apart, so it would be mostly "
            "nodata and slow to write; pass --force to write it anyway, or mosaic inputs that "
            "are neighbours"
        )
    reporter.warn(f"the mosaic canvas is {size} (the inputs lie far apart); the rest is nodata")
