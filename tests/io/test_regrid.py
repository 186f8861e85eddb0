"""open_on_grid: aligned rasters read directly with their offset, others warped onto the grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import reproject
from rasterio.windows import Window

from geoclass.io.regrid import GridSpec, grid_offset, open_on_grid
from tests.conftest import make_raster

UTM = "EPSG:32632"
T = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)
GRID = GridSpec(CRS.from_string(UTM), T, 40, 30)


def _values(h: int, w: int) -> np.ndarray:
    return (np.arange(h * w).reshape(h, w) % 251 + 1).astype(np.uint8)


def test_aligned_raster_is_read_directly_with_its_offset(tmp_path: Path) -> None:
    # Starts 3 columns east and 2 rows south of the grid: grid pixel (3, 2) is its pixel (0, 0).
    arr = _values(20, 25)
    path = make_raster(tmp_path / "a.tif", arr, crs=UTM, transform=T * Affine.translation(3, 2))
    with rasterio.open(path) as ds:
        on = open_on_grid(ds, GRID, resampling=Resampling.bilinear)
        assert on.dataset is ds and on.offset == (-3, -2) and on.alpha is None
        assert grid_offset(ds.crs, ds.transform, GRID) == (-3, -2)
        data, covered = on.read([1], Window(5, 4, 10, 6))  # wholly inside the raster
        assert covered is None
        np.testing.assert_array_equal(data[0], arr[2:8, 2:12])
        data, covered = on.read([1], Window(0, 0, 40, 30))  # the raster covers part of it
        assert covered is not None and covered.sum() == 20 * 25
        assert covered[2:22, 3:28].all()
        np.testing.assert_array_equal(data[0, 2:22, 3:28], arr)
        assert (data[0][~covered] == 0).all()


def test_fractional_offset_or_other_crs_is_warped(tmp_path: Path) -> None:
    half = make_raster(tmp_path / "h.tif", _values(30, 40), crs=UTM, transform=T * Affine.translation(0.5, 0))
    with rasterio.open(half) as ds:
        assert grid_offset(ds.crs, ds.transform, GRID) is None
        on = open_on_grid(ds, GRID, resampling=Resampling.nearest)
        assert on.offset is None and on.alpha == on.dataset.count == 2
        on.close()
    with rasterio.open(half) as ds:
        assert grid_offset(CRS.from_epsg(32633), T, GRID) is None
        assert open_on_grid(ds, GRID, resampling=Resampling.nearest, warp=False).offset == (0, 0)


def test_reprojected_nearest_equals_one_whole_reproject(tmp_path: Path) -> None:
    # A lon/lat raster overlapping the grid: every window read equals one warp of the whole raster.
    t = Affine(0.0001, 0.0, 9.0, 0.0, -0.0001, 45.14)
    arr = _values(60, 70)
    path = make_raster(tmp_path / "geo.tif", arr, crs="EPSG:4326", transform=t)
    grid = GridSpec(CRS.from_string(UTM), Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4998400.0), 60, 70)
    expected = np.zeros((grid.height, grid.width), np.uint8)
    reproject(arr, expected, src_transform=t, src_crs="EPSG:4326", dst_transform=grid.transform,
              dst_crs=grid.crs, resampling=Resampling.nearest)
    with rasterio.open(path) as ds:
        on = open_on_grid(ds, grid, resampling=Resampling.nearest, add_alpha=False)
        assert on.offset is None and on.alpha is None
        got = np.zeros_like(expected)
        for r in range(0, grid.height, 16):
            for c in range(0, grid.width, 16):
                win = Window(c, r, min(16, grid.width - c), min(16, grid.height - r))
                data, covered = on.read([1], win)
                assert covered is None
                got[r : r + int(win.height), c : c + int(win.width)] = data[0]
        on.close()
    assert (expected != 0).any() and (expected == 0).any()  # the raster covers part of the grid
    np.testing.assert_array_equal(got, expected)


def test_validity_outside_the_source_footprint(tmp_path: Path) -> None:
    # Half a pixel east, covering grid columns 10..29 and rows 5..19: alpha says where it reaches.
    arr = np.full((15, 20), 7, np.uint8)
    src_t = T * Affine.translation(10.5, 5)
    path = make_raster(tmp_path / "p.tif", arr, crs=UTM, transform=src_t)
    with rasterio.open(path) as ds:
        on = open_on_grid(ds, GRID, resampling=Resampling.nearest)
        data, covered = on.read([1], Window(0, 0, GRID.width, GRID.height))
        on.close()
    assert covered is not None
    assert covered[5:20, 11:30].all() and not covered[:5].any() and not covered[20:].any()
    assert not covered[:, :10].any() and not covered[:, 31:].any()
    assert (data[0][covered] == 7).all()
