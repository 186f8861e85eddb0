"""The window grid: cores tile the scene exactly once, reads stay put, transforms are exact."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from affine import Affine
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from rasterio.windows import Window
from rasterio.windows import bounds as rio_bounds

from geoclass.errors import ConfigError
from geoclass.io.windows import (
    GridWindow,
    iter_window_grid,
    num_windows,
    window_bounds,
    window_grid,
    window_transform,
)


def _check_grid(width: int, height: int, size: int, stride: int | None, halo: int) -> None:
    grid = window_grid(width, height, size, stride, halo)
    assert len(grid) == num_windows(width, height, size, stride)
    cover = np.zeros((height, width), np.int32)
    for gw in grid:
        r, c = gw.read, gw.core
        assert (r.width, r.height) == (size + 2 * halo, size + 2 * halo)
        assert c.width >= 1 and c.height >= 1
        # core inside the read window and inside the scene
        assert r.col_off <= c.col_off and c.col_off + c.width <= r.col_off + r.width
        assert r.row_off <= c.row_off and c.row_off + c.height <= r.row_off + r.height
        assert 0 <= c.col_off and c.col_off + c.width <= width
        assert 0 <= c.row_off and c.row_off + c.height <= height
        # without a halo, reads stay inside the scene along every axis at least `size` long
        if width >= size:
            assert -halo <= r.col_off and r.col_off + r.width <= width + halo
            if halo == 0:
                assert 0 <= r.col_off and r.col_off + r.width <= width
        if height >= size:
            if halo == 0:
                assert 0 <= r.row_off and r.row_off + r.height <= height
        cover[c.row_off : c.row_off + c.height, c.col_off : c.col_off + c.width] += 1
    assert (cover == 1).all(), "cores must cover every pixel exactly once"
    rows = max(g.row for g in grid) + 1
    cols = max(g.col for g in grid) + 1
    assert rows * cols == len(grid)
    assert [(g.row, g.col) for g in grid] == list(itertools.product(range(rows), range(cols)))
    assert list(iter_window_grid(width, height, size, stride, halo)) == grid


@settings(max_examples=150, deadline=None)
@given(
    width=st.integers(1, 300),
    height=st.integers(1, 300),
    size=st.integers(1, 96),
    stride_frac=st.floats(0.01, 1.0),
    halo=st.integers(0, 12),
)
def test_grid_properties(width: int, height: int, size: int, stride_frac: float, halo: int) -> None:
    stride = max(1, round(size * stride_frac))
    assume(num_windows(width, height, size, stride) <= 2500)
    _check_grid(width, height, size, stride, halo)


@pytest.mark.parametrize(
    ("width", "height", "size", "stride", "halo"),
    [
        (257, 131, 64, None, 0),
        (257, 131, 64, 48, 8),
        (1, 1, 64, None, 0),
        (1, 1, 1, None, 3),
        (10, 7, 64, None, 0),
        (64, 64, 64, None, 0),
        (65, 64, 64, 1, 0),
        (300, 5, 32, 31, 2),
    ],
)
def test_grid_examples(width: int, height: int, size: int, stride: int | None, halo: int) -> None:
    _check_grid(width, height, size, stride, halo)


def test_last_window_shifted_back_not_dropped() -> None:
    grid = window_grid(257, 131, 64)
    col_offs = sorted({g.read.col_off for g in grid})
    row_offs = sorted({g.read.row_off for g in grid})
    assert col_offs == [0, 64, 128, 192, 193]
    assert row_offs == [0, 64, 67]
    last = grid[-1]
    assert last.read.col_off + last.read.width == 257
    assert last.read.row_off + last.read.height == 131


def test_scene_smaller_than_window() -> None:
    (gw,) = window_grid(10, 7, 64, halo=4)
    assert gw.read == Window(-4, -4, 72, 72)
    assert gw.core == Window(0, 0, 10, 7)
    assert (gw.row, gw.col) == (0, 0)


def test_overlap_split_at_midpoint() -> None:
    grid = window_grid(100, 10, 40, stride=30)
    cores = [(g.core.col_off, g.core.col_off + g.core.width) for g in grid]
    reads = [(g.read.col_off, g.read.col_off + g.read.width) for g in grid]
    assert reads == [(0, 40), (30, 70), (60, 100)]
    assert cores == [(0, 35), (35, 65), (65, 100)]


def test_grid_is_lazy_and_cheap_for_gigapixel() -> None:
    t0 = time.perf_counter()
    assert num_windows(100_000, 100_000, 256) == 391 * 391
    first = next(iter_window_grid(100_000, 100_000, 256, halo=16))
    assert isinstance(first, GridWindow)
    assert first.read == Window(-16, -16, 288, 288)
    assert time.perf_counter() - t0 < 0.5


@pytest.mark.parametrize(
    "args",
    [
        (0, 10, 8, None, 0),
        (10, 10, 0, None, 0),
        (10, 10, 8, 9, 0),
        (10, 10, 8, 0, 0),
        (10, 10, 8, None, -1),
    ],
)
def test_bad_grid_arguments(args: tuple[int, int, int, int | None, int]) -> None:
    with pytest.raises(ConfigError, match="window grid"):
        window_grid(*args)


_coord = st.floats(-1e7, 1e7, allow_nan=False, allow_infinity=False)
_res = st.floats(1e-6, 1e4, allow_nan=False).flatmap(lambda v: st.sampled_from([v, -v]))


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # rasterio's own Affine use
@settings(max_examples=200, deadline=None)
@given(
    a=_res,
    e=_res,
    b=st.sampled_from([0.0, 0.5, -1.25]),
    c=_coord,
    f=_coord,
    col=st.integers(-1000, 10**6),
    row=st.integers(-1000, 10**6),
    w=st.integers(1, 4096),
    h=st.integers(1, 4096),
)
def test_window_transform_exact(
    a: float, e: float, b: float, c: float, f: float, col: int, row: int, w: int, h: int
) -> None:
    t = Affine(a, b, c, 0.0, e, f)
    win = Window(col, row, w, h)
    wt = window_transform(t, win)
    assert wt @ (0, 0) == t @ (col, row)
    assert (wt.a, wt.b, wt.d, wt.e) == (t.a, t.b, t.d, t.e)
    corners = np.array([t @ (col + dc, row + dr) for dc in (0, w) for dr in (0, h)])
    scale = np.abs(corners).max() + 1.0
    if b == 0.0:
        # rasterio's convention: (west, f + e*h, west + a*w, f), as DatasetReader.bounds gives
        x0, y0 = t @ (col, row)
        expected = (x0, y0 + e * h, x0 + a * w, y0)
    else:
        expected = (*corners.min(axis=0), *corners.max(axis=0))
    np.testing.assert_allclose(window_bounds(t, win), expected, rtol=0, atol=1e-12 * scale)
    if b == 0.0 and a > 0 and e < 0:
        np.testing.assert_allclose(window_bounds(t, win), rio_bounds(win, t), rtol=1e-12)


def test_window_bounds_north_up() -> None:
    t = Affine(10.0, 0.0, 1000.0, 0.0, -10.0, 2000.0)
    assert window_bounds(t, Window(2, 3, 4, 5)) == (1020.0, 1920.0, 1060.0, 1970.0)
