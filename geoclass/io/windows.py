"""The window grid: how a scene of any size is cut into fixed-size windows.

Every command walks a scene window by window. A window has a ``read`` part (the pixels handed to a
model, ``size`` x ``size`` plus an optional halo) and a ``core`` part (the pixels it is responsible
for). Cores of one grid are disjoint and cover the scene exactly once, so writing each window's core
into an output reproduces the scene with no seams, gaps or double counting.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from affine import Affine
from rasterio.windows import Window

from geoclass.errors import ConfigError

__all__ = [
    "GridWindow",
    "iter_window_grid",
    "num_windows",
    "window_bounds",
    "window_grid",
    "window_transform",
]


@dataclass(frozen=True)
class GridWindow:
    """One window of a grid.

    Attributes:
        read: The pixels to read: ``size`` x ``size`` plus ``halo`` on every side. It may extend
            past the scene (scene smaller than ``size``, or a halo at the edge); the reader pads.
        core: The pixels this window is responsible for; always inside the scene and ``read``.
        row: Row index of the window in the grid.
        col: Column index of the window in the grid.
    """

    read: Window
    core: Window
    row: int
    col: int


def _check_args(width: int, height: int, size: int, stride: int | None, halo: int = 0) -> int:
    """Validate grid arguments and return the effective stride."""
    if width < 1 or height < 1:
        raise ConfigError(f"window grid: scene size must be at least 1x1, got {width}x{height}")
    if size < 1:
        raise ConfigError(f"window grid: window size must be >= 1, got {size}")
    stride = size if stride is None else stride
    if stride < 1:
        raise ConfigError(f"window grid: stride must be >= 1, got {stride}")
    if stride > size:
        # Cores must lie inside their read window; with gaps between windows they cannot.
        raise ConfigError(f"window grid: stride ({stride}) must not exceed window size ({size})")
    if halo < 0:
        raise ConfigError(f"window grid: halo must be >= 0, got {halo}")
    return stride


def _axis_count(extent: int, size: int, stride: int) -> int:
    if extent <= size:
        return 1
    return math.ceil((extent - size) / stride) + 1


def _axis(extent: int, size: int, stride: int) -> list[tuple[int, int, int]]:
    """Offsets and core spans along one axis as ``(offset, core_start, core_stop)``."""
    if extent <= size:
        return [(0, 0, extent)]
    n = _axis_count(extent, size, stride)
    # The last window is shifted back so it ends exactly at the edge.
    offsets = [min(i * stride, extent - size) for i in range(n)]
    # Core boundaries sit at the midpoint of each overlap, so the cores tile [0, extent).
    cuts = [0] + [(offsets[i] + offsets[i - 1] + size) // 2 for i in range(1, n)] + [extent]
    return [(offsets[i], cuts[i], cuts[i + 1]) for i in range(n)]


def num_windows(width: int, height: int, size: int, stride: int | None = None) -> int:
    """Number of windows ``window_grid`` yields for these arguments (cheap; for progress totals)."""
    stride = _check_args(width, height, size, stride)
    return _axis_count(width, size, stride) * _axis_count(height, size, stride)


def iter_window_grid(
    width: int, height: int, size: int, stride: int | None = None, halo: int = 0
) -> Iterator[GridWindow]:
    """Yield the windows of a grid lazily, row by row.

    Memory is O(rows + columns), so this is fine for gigapixel scenes. See ``window_grid``.
    """
    stride = _check_args(width, height, size, stride, halo)
    cols = _axis(width, size, stride)
    rows = _axis(height, size, stride)
    span = size + 2 * halo
    for r, (roff, rstart, rstop) in enumerate(rows):
        for c, (coff, cstart, cstop) in enumerate(cols):
            yield GridWindow(
                read=Window(coff - halo, roff - halo, span, span),
                core=Window(cstart, rstart, cstop - cstart, rstop - rstart),
                row=r,
                col=c,
            )


def window_grid(
    width: int, height: int, size: int, stride: int | None = None, halo: int = 0
) -> list[GridWindow]:
    """Cut a ``width`` x ``height`` scene into ``size`` x ``size`` windows.

    Args:
        width: Scene width in pixels.
        height: Scene height in pixels.
        size: Window side in pixels (before the halo).
        stride: Step between windows; defaults to ``size`` (no overlap). Must be <= ``size``.
        halo: Extra context added on every side of ``read`` (may extend outside the scene).

    Returns:
        Windows in row-major order. The last row/column is shifted back to end at the scene edge,
        so no edge pixels are dropped; a scene smaller than ``size`` gives one window whose
        ``read`` extends past the scene. Cores split each overlap at its midpoint and tile the
        scene exactly once.

    Raises:
        ConfigError: For sizes < 1, a negative halo or ``stride > size``.
    """
    return list(iter_window_grid(width, height, size, stride, halo))


def window_transform(transform: Affine, window: Window) -> Affine:
    """Affine transform of a window's pixel grid.

    ``window_transform(t, w) * (0, 0)`` equals ``t * (w.col_off, w.row_off)`` exactly (rasterio's
    version goes through a translation and can differ in the last bit).
    """
    col, row = window.col_off, window.row_off
    # Same arithmetic as ``transform * (col, row)``, spelled out to avoid Affine's deprecations.
    x = col * transform.a + row * transform.b + transform.c
    y = col * transform.d + row * transform.e + transform.f
    return Affine(transform.a, transform.b, x, transform.d, transform.e, y)


def window_bounds(transform: Affine, window: Window) -> tuple[float, float, float, float]:
    """``(left, bottom, right, top)`` of a window, in rasterio's ``bounds`` convention."""
    t = window_transform(transform, window)
    w, h = window.width, window.height
    if t.b == 0 and t.d == 0:
        # Same as rasterio's array_bounds: (west, f + e * h, west + a * w, f).
        return (float(t.c), float(t.f + t.e * h), float(t.c + t.a * w), float(t.f))
    xs = [t.c, t.a * w + t.c, t.b * h + t.c, t.a * w + t.b * h + t.c]
    ys = [t.f, t.d * w + t.f, t.e * h + t.f, t.d * w + t.e * h + t.f]
    return (float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys)))
