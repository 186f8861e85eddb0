"""One output block of the mosaic: each input read (or reprojected) onto it and composited.

Inputs on the output grid are read directly; others are read around the block's footprint and
reprojected in memory (nearest neighbour for class maps), so memory is bounded by the block size
whatever the input sizes. Where inputs overlap, the ``first`` valid one wins, the ``last`` one,
or the one with the highest confidence (``max-confidence``: a class map's second band).
A pixel is valid when it is valid in every band the input gives.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from rasterio._err import (
    CPLE_BaseError,  # GDAL errors rasterio does not wrap (no public name)
)
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window

from geoclass.engine.mosaic.grid import Grid, Placement
from geoclass.engine.mosaic.inputs import Source
from geoclass.errors import GeoreferenceError
from geoclass.io.windows import window_bounds, window_transform

__all__ = ["Layer", "blocks", "fill_block"]

# Extra source pixels read around a block's footprint, so kernels at the block edge see the
# same neighbours as in one big warp.
_KERNEL_PAD = {"nearest": 1, "bilinear": 2, "cubic": 3, "cubic_spline": 3, "lanczos": 4}

Layer = tuple[Source, Placement]
"""An input and where it lies on the output grid."""


def blocks(width: int, height: int, size: int) -> list[Window]:
    """The output grid cut into ``size`` x ``size`` blocks, row by row."""
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


def _read_direct(
    source: Source, offset: tuple[int, int], win: Window
) -> tuple[np.ndarray, np.ndarray]:
    col, row = offset
    return source.scene.read_masked(
        Window(win.col_off - col, win.row_off - row, win.width, win.height)
    )


def _read_warped(
    source: Source, place: Placement, grid: Grid, win: Window
) -> tuple[np.ndarray, np.ndarray] | None:
    """The source reprojected onto one output block, or None where it has nothing there."""
    sc = source.scene
    resampling = sc.resampling
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
    scale = math.sqrt(abs(grid.transform.a * grid.transform.e) / (place.res[0] * place.res[1]))
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


def fill_block(
    layers: Sequence[Layer],
    grid: Grid,
    win: Window,
    *,
    by_confidence: bool,
    count: int,
    dtype: np.dtype,
    nodata: float,
) -> tuple[np.ndarray, np.ndarray]:
    """One output block: its pixels and where they hold data.

    Args:
        layers: The inputs in precedence order (the first valid one wins, unless
            ``by_confidence``).
        grid: The output grid.
        win: The block on it.
        by_confidence: Take the pixel of the highest confidence (each class map's second band)
            instead of the first valid one.
        count: Bands of the output.
        dtype: Output dtype.
        nodata: Fill of pixels no input covers.
    """
    h, w = int(win.height), int(win.width)
    block = np.full((count, h, w), nodata, dtype=dtype)
    filled = np.zeros((h, w), bool)
    best = np.full((h, w), -np.inf) if by_confidence else None
    for source, place in layers:
        if not _touches(place.footprint, win):
            continue
        got = (
            _read_direct(source, place.offset, win)
            if place.offset is not None
            else _read_warped(source, place, grid, win)
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
