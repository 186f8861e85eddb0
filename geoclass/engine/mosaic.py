"""Mosaic class maps (or raw scenes) of neighbouring areas onto one grid, block by block.

The output grid is in the target CRS (the first input's unless given), at the finest input
resolution (unless given), over the union of the inputs' extents, snapped to the grid of the first
input already on it. Inputs without a CRS are joined only when they all lack one and share one
pixel grid (the mosaic then has no CRS either). Each output block is filled from the inputs that
cover it: inputs on the output grid are read directly; others are read around the block's
footprint and reprojected in memory (nearest neighbour for class maps), so memory is bounded by
the block size whatever the input sizes. The GeoTIFF is written to a temporary file beside the
target and renamed at the end, under a lock on the output (``geoclass.io.outputs``).

A canvas much larger than the inputs (inputs far apart) is mostly nodata and slow to write:
when the inputs cover less than a quarter of it (the canvas has more than 4x their pixels) and it
has more than 10 megapixels, a warning names its size; above 250 megapixels a GeoTIFF mosaic is
refused unless ``force`` is set (a VRT costs nothing and only warns).
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio._err import CPLE_BaseError  # GDAL errors rasterio does not wrap (no public name)
from rasterio.errors import CRSError, NotGeoreferencedWarning, RasterioError
from rasterio.warp import calculate_default_transform, reproject, transform_bounds
from rasterio.windows import Window

from geoclass.errors import (
    BandError,
    ConfigError,
    GeoreferenceError,
    LabelError,
)
from geoclass.io.class_map import (
    CLASS_BAND_DESCRIPTION,
    CLASS_MAP_NODATA,
    CLASSES_TAG,
    read_class_metadata,
    write_class_metadata,
)
from geoclass.io.outputs import (
    OutputLock,
    atomic_output,
    check_output_path,
    input_files,
)
from geoclass.io.reader import Scene, open_scene
from geoclass.io.windows import window_bounds, window_transform
from geoclass.progress import ProgressCallback, Reporter

__all__ = ["Method", "MosaicConfig", "MosaicInput", "MosaicResult", "confidence_sibling", "mosaic"]

Method = Literal["first", "last", "max-confidence"]
Kind = Literal["auto", "classes", "scene"]
PathLike = str | os.PathLike[str]

_METHODS = ("first", "last", "max-confidence")
_TILE = 256
_CLASS_RESAMPLING = ("nearest", "mode")
# A canvas with more than _SPARSE_RATIO times the pixels the inputs cover is mostly nodata: warn
# above _WARN_PIXELS, refuse a GeoTIFF above _REFUSE_PIXELS unless forced.
_SPARSE_RATIO = 4
_WARN_PIXELS = 10_000_000
_REFUSE_PIXELS = 250_000_000
# Extra source pixels read around a block's footprint, so kernels at the block edge see the
# same neighbours as in one big warp.
_KERNEL_PAD = {"nearest": 1, "bilinear": 2, "cubic": 3, "cubic_spline": 3, "lanczos": 4}
_GDAL_TYPES = {
    "uint8": "Byte",
    "int8": "Int8",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "uint64": "UInt64",
    "int64": "Int64",
    "float32": "Float32",
    "float64": "Float64",
}


@dataclass(frozen=True)
class MosaicInput:
    """One mosaic input: a file, or a stack of files read as one scene (bands concatenated).

    Attributes:
        paths: The file, or the files of the stack in band order.
        bands: 1-based bands to take from it (default: all; band 1 of a class map).
    """

    paths: tuple[Path, ...]
    bands: tuple[int, ...] | None = None

    @classmethod
    def of(cls, spec: MosaicInput | PathLike | Sequence[PathLike]) -> MosaicInput:
        """A ``MosaicInput`` from a path, a sequence of paths (a stack), or itself."""
        if isinstance(spec, MosaicInput):
            return spec
        if isinstance(spec, (str, os.PathLike)):
            return cls((Path(spec),))
        paths = tuple(Path(p) for p in spec)
        if not paths:
            raise ConfigError("mosaic: an input stack with no files was given")
        return cls(paths)

    @property
    def label(self) -> str:
        """Name for messages: the file, or ``a.tif+b.tif+...`` for a stack."""
        return "+".join(str(p) for p in self.paths)


@dataclass
class MosaicConfig:
    """What to mosaic and how.

    Attributes:
        inputs: Files (or stacks / ``MosaicInput``s), in precedence order for ``first``/``last``.
        output: A ``.tif`` GeoTIFF, or a ``.vrt`` (implies ``vrt``).
        method: Where inputs overlap: the ``first`` valid input wins, the ``last`` one, or the
            class with the highest confidence (``max-confidence``, class maps with confidence).
        crs: Target CRS (``EPSG:32632``, WKT, PROJ); default the first input's.
        res: Pixel size in target CRS units (one number, or ``(x, y)``); default the finest input's.
        vrt: Write a GDAL VRT that references the inputs instead of a GeoTIFF. Only for inputs
            already on one grid (same CRS, resolution and pixel alignment).
        overwrite: Replace an existing output.
        nodata: Treat this value as nodata in every input (for inputs that have fill but declare
            no nodata); also the output's nodata for raw scenes.
        resampling: How reprojected inputs are resampled; default ``nearest`` for class maps
            (``mode`` is the only other choice for them), ``bilinear`` for scenes.
        kind: ``classes`` or ``scene`` to override detection: a class map has ``GEOCLASS_CLASSES``
            tags, a colour table, or is a single 8-bit integer band.
        block_size: Side of the output blocks processed at once (a multiple of 256).
        force: Write a GeoTIFF canvas even when it is huge and mostly empty (more than 250
            megapixels and more than 4x the pixels the inputs cover: inputs far apart).
    """

    inputs: Sequence[MosaicInput | PathLike | Sequence[PathLike]]
    output: PathLike
    method: Method = "first"
    crs: str | None = None
    res: float | tuple[float, float] | None = None
    vrt: bool = False
    overwrite: bool = False
    nodata: float | None = None
    resampling: str | None = None
    kind: Kind = "auto"
    block_size: int = 1024
    force: bool = False


@dataclass(frozen=True)
class MosaicResult:
    """What ``mosaic`` wrote.

    Attributes:
        output: The mosaic file.
        format: ``GTiff`` or ``VRT``.
        kind: ``classes`` (class maps) or ``scene`` (raw scenes).
        method: Precedence method used.
        width: Width in pixels.
        height: Height in pixels.
        count: Number of bands.
        dtype: Pixel dtype.
        nodata: Nodata value of the output.
        crs: Output CRS as a string (empty when the inputs have no CRS).
        transform: Output affine transform.
        bounds: ``(left, bottom, right, top)`` in the output CRS.
        inputs: Input labels, in the order given.
        reprojected: Inputs that were not on the output grid and were resampled.
        classes: Class names (class maps with names), else None.
        valid_fraction: Share of output pixels with data (None for a VRT).
        seconds: Wall time.
    """

    output: Path
    format: Literal["GTiff", "VRT"]
    kind: Literal["classes", "scene"]
    method: Method
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    crs: str
    transform: Affine
    bounds: tuple[float, float, float, float]
    inputs: list[str]
    reprojected: list[str] = field(default_factory=list)
    classes: list[str] | None = None
    valid_fraction: float | None = None
    seconds: float = 0.0


@dataclass
class _Source:
    """One opened input and where it lies on the output grid."""

    spec: MosaicInput
    scene: Scene
    kind: Literal["classes", "scene"]
    classes: list[str] | None = None
    colors: list[tuple[int, int, int]] | None = None
    colormap: dict[int, tuple[int, ...]] | None = None
    bounds: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # in the target CRS
    res: tuple[float, float] = (0.0, 0.0)  # in target CRS units
    offset: tuple[int, int] | None = None  # (col, row) of its pixel (0, 0) on the output grid
    footprint: tuple[int, int, int, int] = (0, 0, 0, 0)  # output pixels (c0, r0, c1, r1)

    @property
    def label(self) -> str:
        return self.spec.label


@dataclass(frozen=True)
class _Grid:
    crs: CRS | None  # None: inputs without a CRS on one pixel grid
    transform: Affine
    width: int
    height: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return window_bounds(self.transform, Window(0, 0, self.width, self.height))


# --- inputs -------------------------------------------------------------------------------------


def confidence_sibling(path: PathLike) -> Path:
    """Where a class map's separate confidence raster lives: ``X.tif`` -> ``X.confidence.tif``."""
    p = Path(path)
    return p.with_name(f"{p.stem}.confidence{p.suffix}")


def _open_input(path: Path) -> Any:
    """``rasterio.open`` of an input already checked by ``open_scene`` (no CRS is fine)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path)


def _first_file_info(path: Path) -> dict[str, Any]:
    open_scene(path).close()  # typed errors for missing / unreadable files
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # checked in _run, with a reason
        ds = rasterio.open(path)
    with ds:
        try:
            cmap = ds.colormap(1)
        except ValueError:
            cmap = None
        return {
            "meta": read_class_metadata(ds),
            "colormap": cmap,
            "count": ds.count,
            "dtype": ds.dtypes[0],
            "descriptions": ds.descriptions,
        }


def _has_confidence_band(info: dict[str, Any]) -> bool:
    descs = info["descriptions"]
    return info["count"] >= 2 and (descs[1] or "").strip().lower() == "confidence"


def _open_source(spec: MosaicInput, config: MosaicConfig, kind_hint: Kind) -> _Source:
    info = _first_file_info(spec.paths[0])
    if kind_hint != "auto":
        kind: Literal["classes", "scene"] = kind_hint
    elif len(spec.paths) == 1 and (
        info["meta"] is not None
        or info["colormap"] is not None
        or (
            info["dtype"] in ("uint8", "int8")
            and (info["count"] == 1 or _has_confidence_band(info))
        )
    ):
        kind = "classes"
    else:
        kind = "scene"
    default = "nearest" if kind == "classes" else "bilinear"
    resampling = config.resampling or default
    if kind == "classes" and resampling not in _CLASS_RESAMPLING:
        raise ConfigError(
            f"{spec.label}: is a class map; class ids can only be resampled with "
            f"{' or '.join(_CLASS_RESAMPLING)}, not {resampling}"
        )
    bands: list[int] | None = list(spec.bands) if spec.bands is not None else None
    paths: list[Path] = list(spec.paths)
    if kind == "classes":
        if bands is None:
            bands = [1]
        if len(bands) != 1:
            raise BandError(f"{spec.label}: a class map input takes one band, got bands {bands}")
        if config.method == "max-confidence":
            if len(paths) == 1 and _has_confidence_band(info):
                bands = [bands[0], 2]
            elif len(paths) == 1 and confidence_sibling(paths[0]).is_file():
                paths.append(confidence_sibling(paths[0]))
                bands = [bands[0], info["count"] + 1]
            else:
                raise ConfigError(
                    f"{spec.label}: --method max-confidence needs a confidence for every map: "
                    f"a second band described 'confidence' (predict --confidence) or a file "
                    f"{confidence_sibling(paths[0]).name} beside it; neither was found"
                )
    elif config.method == "max-confidence":
        raise ConfigError(
            f"{spec.label}: --method max-confidence works on class maps with confidence; "
            "for raw scenes use first or last"
        )
    scene = open_scene(paths, bands, resampling=resampling, nodata=config.nodata)
    meta = info["meta"] if kind == "classes" else None
    return _Source(
        spec=spec,
        scene=scene,
        kind=kind,
        classes=meta[0] if meta else None,
        colors=meta[1] if meta else None,
        colormap=info["colormap"] if kind == "classes" else None,
    )


def _check_classes(
    sources: list[_Source], reporter: Reporter
) -> tuple[list[str] | None, list[tuple[int, int, int]] | None]:
    named = [s for s in sources if s.classes is not None]
    if not named:
        return None, None
    ref = named[0]
    assert ref.classes is not None
    for s in named[1:]:
        assert s.classes is not None
        if s.classes != ref.classes:
            raise LabelError(_class_difference(ref, s))
        if s.colors != ref.colors:
            reporter.warn(
                f"{s.label}: class colours differ from {ref.label}'s; using {ref.label}'s"
            )
    for s in sources:
        if s.classes is None:
            reporter.warn(
                f"{s.label}: has no class names ({CLASSES_TAG} tag); assuming the classes of "
                f"{ref.label}"
            )
    return list(ref.classes), list(ref.colors or [])


def _class_difference(a: _Source, b: _Source) -> str:
    ca, cb = a.classes or [], b.classes or []
    head = (
        f"class maps disagree on their classes: {a.label} has {len(ca)} {ca}, "
        f"{b.label} has {len(cb)} {cb}"
    )
    for i, (x, y) in enumerate(zip(ca, cb)):
        if x != y:
            return f"{head}; class id {i} is {x!r} in {a.label} but {y!r} in {b.label}"
    longer, extra = (a, ca[len(cb) :]) if len(ca) > len(cb) else (b, cb[len(ca) :])
    return f"{head}; only {longer.label} has {extra}"


# --- grid ---------------------------------------------------------------------------------------


def _target_crs(config: MosaicConfig, sources: list[_Source]) -> CRS:
    if config.crs is None:
        crs = sources[0].scene.crs
        assert crs is not None  # require_crs
        return crs
    try:
        return CRS.from_user_input(config.crs)
    except CRSError as exc:
        raise ConfigError(f"--crs {config.crs!r}: not a CRS rasterio knows ({exc})") from exc


def _place(source: _Source, crs: CRS) -> None:
    """Bounds and resolution of a source in the target CRS."""
    sc = source.scene
    assert sc.crs is not None  # inputs without a CRS go through _pixel_grid
    t = sc.transform
    if sc.crs == crs:
        source.bounds = tuple(sc.bounds)  # type: ignore[assignment]
        source.res = (abs(t.a), abs(t.e)) if t.b == 0 and t.d == 0 else sc.res
        return
    try:
        source.bounds = transform_bounds(sc.crs, crs, *sc.bounds, densify_pts=21)
        dt, _, _ = calculate_default_transform(sc.crs, crs, sc.width, sc.height, *sc.bounds)
    except (RasterioError, CRSError, ValueError) as exc:
        raise GeoreferenceError(
            f"{source.label}: cannot be reprojected from {sc.crs.to_string()} to "
            f"{crs.to_string()} ({exc})"
        ) from exc
    if not all(map(math.isfinite, source.bounds)):
        raise GeoreferenceError(
            f"{source.label}: its extent has no finite coordinates in {crs.to_string()}"
        )
    source.res = (abs(dt.a), abs(dt.e))


def _resolution(config: MosaicConfig, sources: list[_Source]) -> tuple[float, float]:
    if config.res is None:
        return min(s.res[0] for s in sources), min(s.res[1] for s in sources)
    rx, ry = (config.res, config.res) if isinstance(config.res, (int, float)) else config.res
    if not (rx > 0 and ry > 0 and math.isfinite(rx) and math.isfinite(ry)):
        raise ConfigError(f"--res must be a positive number, got {config.res}")
    return float(rx), float(ry)


def _on_grid(t: Affine, crs: CRS | None, grid_crs: CRS, rx: float, ry: float) -> bool:
    return (
        crs == grid_crs
        and t.b == 0
        and t.d == 0
        and math.isclose(t.a, rx, rel_tol=1e-9)
        and math.isclose(-t.e, ry, rel_tol=1e-9)
    )


def _whole(value: float) -> int | None:
    r = round(value)
    return int(r) if abs(value - r) < 1e-6 else None


def _grid(sources: list[_Source], crs: CRS, res: tuple[float, float]) -> _Grid:
    rx, ry = res
    left = min(s.bounds[0] for s in sources)
    bottom = min(s.bounds[1] for s in sources)
    right = max(s.bounds[2] for s in sources)
    top = max(s.bounds[3] for s in sources)
    # Snap to the first input already on a grid of this resolution, so it is copied, not resampled.
    anchor = next(
        (
            s.scene.transform
            for s in sources
            if _on_grid(s.scene.transform, s.scene.crs, crs, rx, ry)
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
    transform = Affine(rx, 0.0, ax + c0 * rx, 0.0, -ry, ay - r0 * ry)
    return _Grid(crs, transform, width, height)


def _pixel_grid(config: MosaicConfig, sources: list[_Source]) -> _Grid:
    """The grid of inputs without a CRS: the first input's pixel grid, over all of them.

    Raises:
        ConfigError: ``crs`` or a different ``res`` was asked for (nothing to reproject with).
        GeoreferenceError: An input is not on the first one's pixel grid.
    """
    ref = sources[0]
    r = ref.scene.transform
    if config.crs is not None:
        raise ConfigError(
            f"--crs {config.crs}: the inputs have no CRS, so they cannot be reprojected; assign "
            "their CRS first (gdal_edit.py -a_srs) or leave out --crs"
        )
    if config.res is not None and not all(
        math.isclose(a, b, rel_tol=1e-9)
        for a, b in zip((abs(r.a), abs(r.e)), _resolution(config, sources))
    ):
        raise ConfigError(
            f"--res {config.res}: the inputs have no CRS, so they cannot be resampled; the mosaic "
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
        col = _whole(t.c * inv.a + t.f * inv.b + inv.c)
        row = _whole(t.c * inv.d + t.f * inv.e + inv.f)
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
    for (c, rw), s in zip(places, sources):
        s.offset = (c - c0, rw - r0)
        s.footprint = (c - c0, rw - r0, c - c0 + s.scene.width, rw - r0 + s.scene.height)
        s.res = (abs(r.a), abs(r.e))
        s.bounds = tuple(s.scene.bounds)  # type: ignore[assignment]
    return _Grid(None, r * Affine.translation(c0, r0), c1 - c0, r1 - r0)


def _fmt_share(fraction: float) -> str:
    """``0.1234`` -> ``about 12%``; tiny shares as ``less than 0.01%``."""
    pct = 100 * fraction
    if pct >= 1:
        return f"about {pct:.0f}%"
    return f"about {pct:.2f}%" if pct >= 0.01 else "less than 0.01%"


def _check_canvas(
    config: MosaicConfig, sources: list[_Source], grid: _Grid, vrt: bool, reporter: Reporter
) -> None:
    """Warn about (or refuse) a canvas that is huge and mostly empty: inputs far apart.

    The inputs' share of the canvas is estimated as the sum of their footprints on the output
    grid, capped at 1 (footprints of reprojected inputs are bounding boxes: an over-estimate).

    Raises:
        ConfigError: A GeoTIFF canvas of more than ``_REFUSE_PIXELS`` pixels, more than
            ``_SPARSE_RATIO`` times what the inputs cover, without ``force``.
    """
    canvas = grid.width * grid.height
    covered = sum(
        max(0, c1 - c0) * max(0, r1 - r0) for c0, r0, c1, r1 in (s.footprint for s in sources)
    )
    share = min(1.0, covered / canvas)
    if canvas <= _SPARSE_RATIO * covered or canvas <= _WARN_PIXELS:
        return
    size = (
        f"{grid.width} x {grid.height} pixels ({canvas / 1e9:.3g} gigapixels) and the inputs "
        f"cover {_fmt_share(share)} of it"
    )
    if canvas > _REFUSE_PIXELS and not (vrt or config.force):
        raise ConfigError(
            f"the mosaic canvas would be {size}: the inputs lie far apart, so it would be mostly "
            "nodata and slow to write; pass --force to write it anyway, or mosaic inputs that "
            "are neighbours"
        )
    reporter.warn(f"the mosaic canvas is {size} (the inputs lie far apart); the rest is nodata")


def _locate(source: _Source, grid: _Grid) -> None:
    """Where a source lies on the output grid: a whole-pixel offset, or None (reprojected)."""
    t = source.scene.transform
    g = grid.transform
    if _on_grid(t, source.scene.crs, grid.crs, g.a, -g.e):
        col, row = _whole((t.c - g.c) / g.a), _whole((g.f - t.f) / -g.e)
        if col is not None and row is not None:
            source.offset = (col, row)
            source.footprint = (
                max(0, col),
                max(0, row),
                min(grid.width, col + source.scene.width),
                min(grid.height, row + source.scene.height),
            )
            return
    source.offset = None
    left, bottom, right, top = source.bounds
    c0 = math.floor((left - g.c) / g.a) - 1
    c1 = math.ceil((right - g.c) / g.a) + 1
    r0 = math.floor((g.f - top) / -g.e) - 1
    r1 = math.ceil((g.f - bottom) / -g.e) + 1
    source.footprint = (max(0, c0), max(0, r0), min(grid.width, c1), min(grid.height, r1))


# --- reading ------------------------------------------------------------------------------------


def _read_direct(source: _Source, win: Window) -> tuple[np.ndarray, np.ndarray]:
    assert source.offset is not None
    col, row = source.offset
    return source.scene.read_masked(
        Window(win.col_off - col, win.row_off - row, win.width, win.height)
    )


def _read_warped(
    source: _Source, grid: _Grid, win: Window, resampling: str
) -> tuple[np.ndarray, np.ndarray] | None:
    sc = source.scene
    assert sc.crs is not None
    try:
        left, bottom, right, top = transform_bounds(
            grid.crs, sc.crs, *window_bounds(grid.transform, win), densify_pts=21
        )
    except RasterioError:
        return None
    inv = ~sc.transform
    corners = [inv * (x, y) for x in (left, right) for y in (bottom, top)]
    cols = [c for c, _ in corners]
    rows = [r for _, r in corners]
    # Downsampling kernels (average, mode, ...) span about one output pixel of source pixels.
    scale = math.sqrt(abs(grid.transform.a * grid.transform.e) / (source.res[0] * source.res[1]))
    pad = _KERNEL_PAD.get(resampling, 2 + math.ceil(scale))
    c0 = max(0, math.floor(min(cols)) - pad)
    r0 = max(0, math.floor(min(rows)) - pad)
    c1 = min(sc.width, math.ceil(max(cols)) + pad)
    r1 = min(sc.height, math.ceil(max(rows)) + pad)
    if c0 >= c1 or r0 >= r1:
        return None
    src_win = Window(c0, r0, c1 - c0, r1 - r0)
    data, valid = sc.read_masked(src_win)
    if not valid.any():
        return None
    if data.dtype == np.int8:  # room for the alpha value 255
        data = data.astype(np.int16)
    k = data.shape[0]
    src = np.concatenate([data, np.where(valid, 255, 0).astype(data.dtype)[None]])
    dst = np.zeros((k + 1, int(win.height), int(win.width)), dtype=data.dtype)
    try:
        reproject(
            src,
            dst,
            src_transform=sc.window_transform(src_win),
            src_crs=sc.crs,
            dst_transform=window_transform(grid.transform, win),
            dst_crs=grid.crs,
            resampling=Resampling[resampling],
            src_alpha=k + 1,
            dst_alpha=k + 1,
            num_threads=1,
        )
    except (RasterioError, CPLE_BaseError) as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        assert grid.crs is not None
        raise GeoreferenceError(
            f"{source.label}: cannot be reprojected onto the mosaic grid ({sc.crs.to_string()} -> "
            f"{grid.crs.to_string()}: {reason})"
        ) from exc
    # Alpha is exactly 0/255 for nearest; kernels give partial alpha at edges: count the majority.
    threshold = 0 if resampling == "nearest" else 127
    return dst[:k], dst[k] > threshold


def _blocks(width: int, height: int, size: int) -> list[Window]:
    return [
        Window(c, r, min(size, width - c), min(size, height - r))
        for r in range(0, height, size)
        for c in range(0, width, size)
    ]


def _touches(footprint: tuple[int, int, int, int], win: Window) -> bool:
    c0, r0, c1, r1 = footprint
    return (
        c0 < win.col_off + win.width
        and win.col_off < c1
        and r0 < win.row_off + win.height
        and win.row_off < r1
    )


# --- outputs ------------------------------------------------------------------------------------


def _check_output(
    config: MosaicConfig, sources: Sequence[MosaicInput]
) -> tuple[Path, bool]:
    """The output path and whether it is a VRT.

    Raises:
        ConfigError: Wrong extension, or the output is an input (by name, symlink, hard link or
            as a source of an input VRT).
        OutputExistsError: It exists and ``overwrite`` is False.
        OutputError: It is a folder, or its folder cannot be created or written to.
    """
    out = Path(config.output)
    suffix = out.suffix.lower()
    vrt = config.vrt or suffix == ".vrt"
    if vrt and suffix != ".vrt":
        raise ConfigError(f"{out}: a VRT mosaic needs a .vrt file name")
    if not vrt and suffix not in (".tif", ".tiff"):
        raise ConfigError(
            f"{out}: the mosaic is written as GeoTIFF (.tif, .tiff) or, with --vrt, as .vrt; "
            f"got {out.suffix or 'no extension'!r}"
        )
    given = [p for spec in sources for p in spec.paths]
    if config.method == "max-confidence":  # confidence files beside the maps are read too
        given += [confidence_sibling(spec.paths[0]) for spec in sources if len(spec.paths) == 1]
    inputs = input_files(given, "raster")
    check_output_path(out, overwrite=config.overwrite, inputs=inputs, kind="mosaic")
    return out, vrt


def _output_nodata(
    kind: str, dtype: np.dtype, config: MosaicConfig, sources: list[_Source], reporter: Reporter
) -> float:
    if kind == "classes":
        if dtype == np.uint8:
            return float(CLASS_MAP_NODATA)
        declared = next((s.scene.nodata for s in sources if s.scene.nodata is not None), None)
        return float(declared) if declared is not None else float(np.iinfo(dtype).max)
    if config.nodata is not None:
        return float(config.nodata)
    declared = next((s.scene.nodata for s in sources if s.scene.nodata is not None), None)
    if declared is not None:
        return float(declared)
    value = math.nan if dtype.kind == "f" else 0.0
    reporter.warn(
        f"no input declares a nodata value; pixels outside every input are written as {value:g} "
        "and marked nodata, so input pixels of that value will read as nodata too "
        "(pass nodata to say which value is fill)"
    )
    return value


def _description(source: _Source) -> list[str] | None:
    if len(source.spec.paths) != 1:
        return None
    with _open_input(source.spec.paths[0]) as ds:
        descs = [ds.descriptions[b - 1] for b in source.scene.bands]
    return [d or "" for d in descs] if any(descs) else None


def _vrt_refusal(label: str, crs: CRS | None, transform: Affine, grid: _Grid) -> str:
    g = grid.transform
    where = crs.to_string() if crs is not None else "no CRS"
    return (
        f"--vrt cannot reproject or resample: {label} ({where}, {abs(transform.a):g} x "
        f"{abs(transform.e):g} pixels) is not on the mosaic grid ({grid.crs.to_string()}, "
        f"{g.a:g} x {-g.e:g} pixels, origin {g.c:g}, {g.f:g}); write a GeoTIFF mosaic "
        "instead (without --vrt), which reprojects on the fly"
    )


def _write_vrt(
    out: Path,
    grid: _Grid,
    sources: list[_Source],
    method: Method,
    kind: str,
    dtype: np.dtype,
    count: int,
    nodata: float,
    classes: tuple[list[str] | None, list[tuple[int, int, int]] | None],
    colormap: dict[int, tuple[int, ...]] | None,
    config: MosaicConfig,
) -> None:
    """Write a VRT whose sources are the input files placed on the output grid."""
    root = ET.Element("VRTDataset", rasterXSize=str(grid.width), rasterYSize=str(grid.height))
    if grid.crs is not None:
        ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping="1,2").text = grid.crs.to_wkt()
    t = grid.transform
    ET.SubElement(root, "GeoTransform").text = ", ".join(
        repr(float(v)) for v in (t.c, t.a, t.b, t.f, t.d, t.e)
    )
    names, colors = classes
    if names is not None:
        md = ET.SubElement(root, "Metadata")
        ET.SubElement(md, "MDI", key=CLASSES_TAG).text = json.dumps(names)

    # Per source: for each output band, (file, local band, file dataset info).
    placements: list[list[tuple[Path, int, Any]]] = []
    for s in sources:
        files: list[tuple[Path, Any]] = []
        for p in s.spec.paths:
            with _open_input(p) as ds:
                files.append(
                    (
                        p,
                        {
                            "count": ds.count,
                            "width": ds.width,
                            "height": ds.height,
                            "transform": ds.transform,
                            "crs": ds.crs,
                            "nodata": ds.nodatavals,
                            "dtypes": ds.dtypes,
                            "blocks": ds.block_shapes,
                            "mask": [sum(int(f) for f in flags) for flags in ds.mask_flag_enums],
                        },
                    )
                )
        lookup = [(p, lb, info) for p, info in files for lb in range(1, info["count"] + 1)]
        bands = [lookup[b - 1] for b in s.scene.bands[:count]]
        for p, _, info in bands:
            if not _on_grid(info["transform"], info["crs"], grid.crs, t.a, -t.e) or any(
                _whole(v) is None
                for v in ((info["transform"].c - t.c) / t.a, (t.f - info["transform"].f) / -t.e)
            ):
                raise GeoreferenceError(_vrt_refusal(str(p), info["crs"], info["transform"], grid))
        placements.append(bands)

    # GDAL paints later sources over earlier ones where they are valid.
    order = list(range(len(sources)))
    if method == "first":
        order.reverse()
    descriptions = _description(sources[0]) if kind == "scene" else None
    per_dataset = int(MaskFlags.per_dataset) | int(MaskFlags.alpha)
    base = out.parent.resolve()
    for i in range(count):
        band = ET.SubElement(
            root, "VRTRasterBand", dataType=_GDAL_TYPES[dtype.name], band=str(i + 1)
        )
        if kind == "classes":
            ET.SubElement(band, "Description").text = CLASS_BAND_DESCRIPTION
        elif descriptions and descriptions[i]:
            ET.SubElement(band, "Description").text = descriptions[i]
        ET.SubElement(band, "NoDataValue").text = "nan" if math.isnan(nodata) else repr(nodata)
        table: dict[int, tuple[int, ...]] | None = None
        if kind == "classes" and colors:
            table = {k: (*c, 255) for k, c in enumerate(colors)}
            if dtype == np.uint8:
                table.setdefault(int(nodata), (0, 0, 0, 0))
        elif kind == "classes" and colormap:
            table = colormap
        if table:
            ET.SubElement(band, "ColorInterp").text = "Palette"
            ct = ET.SubElement(band, "ColorTable")
            for k in range(max(table) + 1):
                c = table.get(k, (0, 0, 0, 0))
                ET.SubElement(ct, "Entry", c1=str(c[0]), c2=str(c[1]), c3=str(c[2]), c4=str(c[3]))
        for si in order:
            path, lb, info = placements[si][i]
            src = ET.SubElement(band, "ComplexSource")
            abspath = path.resolve()
            try:
                rel = os.path.relpath(abspath, base)
                ET.SubElement(src, "SourceFilename", relativeToVRT="1").text = rel
            except ValueError:  # another drive
                ET.SubElement(src, "SourceFilename", relativeToVRT="0").text = str(abspath)
            ET.SubElement(src, "SourceBand").text = str(lb)
            by, bx = info["blocks"][lb - 1]
            ET.SubElement(
                src,
                "SourceProperties",
                RasterXSize=str(info["width"]),
                RasterYSize=str(info["height"]),
                DataType=_GDAL_TYPES[info["dtypes"][lb - 1]],
                BlockXSize=str(bx),
                BlockYSize=str(by),
            )
            ft = info["transform"]
            col, row = _whole((ft.c - t.c) / t.a), _whole((t.f - ft.f) / -t.e)
            ET.SubElement(
                src,
                "SrcRect",
                xOff="0",
                yOff="0",
                xSize=str(info["width"]),
                ySize=str(info["height"]),
            )
            ET.SubElement(
                src,
                "DstRect",
                xOff=str(col),
                yOff=str(row),
                xSize=str(info["width"]),
                ySize=str(info["height"]),
            )
            src_nodata = config.nodata if config.nodata is not None else info["nodata"][lb - 1]
            if src_nodata is not None:
                ET.SubElement(src, "NODATA").text = (
                    "nan" if math.isnan(src_nodata) else repr(float(src_nodata))
                )
            elif info["mask"][lb - 1] & per_dataset:
                ET.SubElement(src, "UseMaskBand").text = "true"
    ET.indent(root)
    text = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    with atomic_output(out, needed_bytes=len(text)) as tmp:
        tmp.write_bytes(text)


# --- main ---------------------------------------------------------------------------------------


def mosaic(config: MosaicConfig, progress: ProgressCallback | None = None) -> MosaicResult:
    """Merge class maps (or raw scenes) into one raster on a common grid.

    Args:
        config: Inputs, output and options (see ``MosaicConfig``).
        progress: Optional progress callback.

    Returns:
        A ``MosaicResult`` describing the output.

    Raises:
        ConfigError: Bad options (method, CRS, resolution, extension, max-confidence without
            confidence, class maps mixed with scenes).
        LabelError: Class maps whose class lists disagree (both are named).
        BandError: Raw scenes with different band counts.
        ConfigError: Also: the output is an input (even through a VRT or a link); a huge, mostly
            empty GeoTIFF canvas (inputs far apart) without ``force``.
        GeoreferenceError: Inputs with a CRS mixed with inputs without one; inputs without a CRS
            not on one pixel grid; inputs that cannot be reprojected; ``vrt`` with inputs not on
            one grid.
        OutputExistsError: The output exists and ``overwrite`` is False.
        OutputBusyError: Another run is writing the same output.
        DiskFullError: The disk filled up while writing (the message names the space needed).
        OutputError: The output folder is not writable, or the output cannot be written.
        InputNotFoundError, RasterOpenError: An input cannot be read.
    """
    started = time.perf_counter()
    reporter = Reporter(progress)
    if config.method not in _METHODS:
        raise ConfigError(
            f"unknown method {config.method!r}; expected one of {', '.join(_METHODS)}"
        )
    if config.kind not in ("auto", "classes", "scene"):
        raise ConfigError(f"unknown kind {config.kind!r}; expected auto, classes or scene")
    if config.resampling is not None and config.resampling not in Resampling.__members__:
        raise ConfigError(
            f"unknown resampling {config.resampling!r}; expected one of "
            + ", ".join(sorted(Resampling.__members__))
        )
    if config.block_size < _TILE or config.block_size % _TILE:
        raise ConfigError(f"block_size must be a multiple of {_TILE}, got {config.block_size}")
    if not config.inputs:
        raise ConfigError("mosaic: no inputs given")
    specs = [MosaicInput.of(s) for s in config.inputs]
    out, vrt = _check_output(config, specs)
    if vrt and config.method == "max-confidence":
        raise ConfigError(
            "--vrt cannot pick by confidence (a VRT only layers inputs); use first or last, "
            "or write a GeoTIFF"
        )

    sources: list[_Source] = []
    lock = OutputLock(out).acquire()
    try:
        for spec in specs:
            sources.append(_open_source(spec, config, config.kind))
        return _run(config, sources, out, vrt, reporter, started)
    finally:
        for s in sources:
            s.scene.close()
        lock.release()


def _run(
    config: MosaicConfig,
    sources: list[_Source],
    out: Path,
    vrt: bool,
    reporter: Reporter,
    started: float,
) -> MosaicResult:
    kinds = {s.kind for s in sources}
    if len(kinds) > 1:
        cm = next(s for s in sources if s.kind == "classes")
        sc = next(s for s in sources if s.kind == "scene")
        raise ConfigError(
            f"{cm.label} is a class map but {sc.label} is a raw scene "
            f"({sc.scene.count} bands, {sc.scene.dtype}); mosaic class maps with class maps and "
            "scenes with scenes (or set kind to say which they are)"
        )
    kind = sources[0].kind
    if kind == "classes":
        classes = _check_classes(sources, reporter)
        count = 1
        dtype = np.result_type(*[np.dtype(_class_dtype(s)) for s in sources])
        if dtype.kind not in "iu":
            raise BandError(
                f"class maps hold integer class ids, but {sources[0].label} and the others "
                f"combine to dtype {dtype.name}"
            )
    else:
        classes = (None, None)
        counts = {s.label: s.scene.count for s in sources}
        if len(set(counts.values())) > 1:
            listed = ", ".join(f"{k} has {v}" for k, v in counts.items())
            raise BandError(f"raw scenes to mosaic must have the same number of bands: {listed}")
        count = sources[0].scene.count
        dtype = np.result_type(*[np.dtype(s.scene.dtype) for s in sources])

    with_crs = [s for s in sources if s.scene.crs is not None]
    without = [s for s in sources if s.scene.crs is None]
    if with_crs and without:
        georef = with_crs[0].scene.crs
        assert georef is not None
        raise GeoreferenceError(
            f"{without[0].label}: has no CRS, but {with_crs[0].label} is in {georef.to_string()}; "
            "a mosaic cannot place inputs without a CRS among georeferenced ones (assign their "
            "CRS with gdal_edit.py -a_srs, or mosaic them separately)"
        )
    crs: CRS | None
    if without:
        crs = None
        grid = _pixel_grid(config, sources)
        reporter.warn(
            "the inputs have no CRS: they are joined on their shared pixel grid and the mosaic "
            "has no CRS either"
        )
    else:
        crs = _target_crs(config, sources)
        for s in sources:
            _place(s, crs)
        grid = _grid(sources, crs, _resolution(config, sources))
        for s in sources:
            _locate(s, grid)
    _check_canvas(config, sources, grid, vrt, reporter)
    reprojected = [s.label for s in sources if s.offset is None]
    if vrt and reprojected:
        s = next(s for s in sources if s.offset is None)
        raise GeoreferenceError(_vrt_refusal(s.label, s.scene.crs, s.scene.transform, grid))
    for s in sources:
        if s.offset is None:
            assert crs is not None and s.scene.crs is not None
            reporter.info(
                f"{s.label}: not on the mosaic grid ({s.scene.crs.to_string()} -> "
                f"{crs.to_string()}); "
                f"resampled with {s.scene.resampling}"
            )
    nodata = _output_nodata(kind, dtype, config, sources, reporter)
    colormap = sources[0].colormap if kind == "classes" and classes[0] is None else None

    result_kw: dict[str, Any] = {
        "kind": kind,
        "method": config.method,
        "width": grid.width,
        "height": grid.height,
        "count": count,
        "dtype": dtype.name,
        "nodata": nodata,
        "crs": crs.to_string() if crs is not None else "",
        "transform": grid.transform,
        "bounds": grid.bounds,
        "inputs": [s.label for s in sources],
        "reprojected": reprojected,
        "classes": classes[0],
    }
    if vrt:
        _write_vrt(
            out, grid, sources, config.method, kind, dtype, count, nodata, classes, colormap, config
        )
        return MosaicResult(
            output=out, format="VRT", seconds=time.perf_counter() - started, **result_kw
        )

    valid = _write_tiff(
        config, sources, grid, out, kind, dtype, count, nodata, classes, colormap, reporter
    )
    return MosaicResult(
        output=out,
        format="GTiff",
        valid_fraction=valid / (grid.width * grid.height),
        seconds=time.perf_counter() - started,
        **result_kw,
    )


def _class_dtype(source: _Source) -> str:
    """dtype of the class band itself (a stack with a float confidence reads as float)."""
    with _open_input(source.spec.paths[0]) as ds:
        return ds.dtypes[source.scene.bands[0] - 1]


def _block_size(config: MosaicConfig, sources: list[_Source], grid: _Grid) -> int:
    """Shrink blocks when a reprojected input is much finer than the output, so reads stay small."""
    out_px = abs(grid.transform.a * grid.transform.e)
    worst = max((out_px / (s.res[0] * s.res[1]) for s in sources if s.offset is None), default=1.0)
    scale = max(1, math.ceil(math.sqrt(worst)))
    return max(_TILE, (config.block_size // scale) // _TILE * _TILE)


def _fill_block(
    sources: list[_Source],
    order: list[_Source],
    grid: _Grid,
    win: Window,
    method: Method,
    count: int,
    dtype: np.dtype,
    nodata: float,
) -> tuple[np.ndarray, np.ndarray]:
    """One output block: its pixels and where they hold data."""
    h, w = int(win.height), int(win.width)
    block = np.full((count, h, w), nodata, dtype=dtype)
    filled = np.zeros((h, w), bool)
    best = np.full((h, w), -np.inf) if method == "max-confidence" else None
    for s in order:
        if not _touches(s.footprint, win):
            continue
        got = (
            _read_direct(s, win)
            if s.offset is not None
            else _read_warped(s, grid, win, s.scene.resampling)
        )
        if got is None:
            continue
        data, valid = got
        if best is None:
            take = valid & ~filled
        else:
            conf = data[1].astype(np.float64)
            conf[np.isnan(conf)] = -np.inf
            take = valid & (~filled | (conf > best))
            best[take] = conf[take]
        if take.all():
            block[:] = data[:count]
            filled[:] = True
        elif take.any():
            np.copyto(block, data[:count], casting="unsafe", where=take[None])
            filled |= take
        if best is None and filled.all():
            break
    return block, filled


def _write_tiff(
    config: MosaicConfig,
    sources: list[_Source],
    grid: _Grid,
    out: Path,
    kind: str,
    dtype: np.dtype,
    count: int,
    nodata: float,
    classes: tuple[list[str] | None, list[tuple[int, int, int]] | None],
    colormap: dict[int, tuple[int, ...]] | None,
    reporter: Reporter,
) -> int:
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": count,
        "dtype": dtype.name,
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": _TILE,
        "blockysize": _TILE,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }
    if kind == "scene" and dtype.kind in "iu":
        profile["predictor"] = 2
    elif kind == "scene" and dtype.kind == "f":
        profile["predictor"] = 3
    method = config.method
    order = sources[::-1] if method == "last" else sources
    blocks = _blocks(grid.width, grid.height, _block_size(config, sources, grid))
    n_valid = 0
    descs = _description(sources[0]) if kind == "scene" else None
    # Upper bound of the output's size: uncompressed pixels (deflate only makes it smaller).
    needed = grid.width * grid.height * count * dtype.itemsize
    reporter.start("mosaic", len(blocks))
    with atomic_output(out, needed_bytes=needed) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # inputs without a CRS
            dst = rasterio.open(tmp, "w", **profile)
        with dst:
            names, colors = classes
            if kind == "classes":
                if names is not None and colors is not None:
                    write_class_metadata(dst, names, colors)
                else:
                    dst.set_band_description(1, CLASS_BAND_DESCRIPTION)
                    if colormap and dtype.name in ("uint8", "uint16"):
                        dst.write_colormap(1, colormap)
            else:
                for i, d in enumerate(descs or []):
                    if d:
                        dst.set_band_description(i + 1, d)
            for win in blocks:
                block, filled = _fill_block(
                    sources, order, grid, win, method, count, dtype, nodata
                )
                dst.write(block, window=win)
                n_valid += int(filled.sum())
                reporter.advance("mosaic")
    reporter.end("mosaic")
    return n_valid
