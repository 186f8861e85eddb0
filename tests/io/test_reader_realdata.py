"""The reader on the real scenes in ../shared/data (skipped when that folder is absent)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from geoclass.io.reader import open_scene
from tests.conftest import SHARED_DATA, needs_shared_data

pytestmark = [pytest.mark.realdata, needs_shared_data]

SCENES = SHARED_DATA / "scenes"
LANDSAT7 = SCENES / "landsat7-rgb" / "RGB.byte.tif"
L8 = SCENES / "landsat8-224077-224078"
L8_077 = [L8 / f"LC08_L1TP_224077_20200518_20200518_01_RT_B{b}.TIF" for b in (2, 3, 4)]
L8_078 = L8 / "LC08_L1TP_224078_20200518_20200518_01_RT.TIF"
S2 = SCENES / "sentinel2-t33uuu" / "IMG_DATA"
RCR = SCENES / "sentinel2-rcr" / "sentinel-2"


def s2_band(name: str) -> Path:
    return S2 / f"T33UUU_20170216T102101_{name}.jp2"


def rcr_bands() -> list[Path]:
    return sorted(RCR.glob("*.tiff"))


@pytest.mark.parametrize(
    "path",
    [LANDSAT7, L8_078, *L8_077, s2_band("B02"), s2_band("B01")],
    ids=lambda p: p.name,
)
def test_open_each_real_scene(path: Path) -> None:
    with open_scene(path) as scene, rasterio.open(path) as ds:
        assert (scene.width, scene.height, scene.count) == (ds.width, ds.height, ds.count)
        assert scene.crs == ds.crs and scene.transform == ds.transform
        win = Window(ds.width - 100, ds.height - 80, 128, 128)  # straddles the corner
        out = scene.read(win)
        assert out.shape == (ds.count, 128, 128) and out.dtype == np.dtype(ds.dtypes[0])
        np.testing.assert_array_equal(
            out[:, :80, :100], ds.read(window=Window(ds.width - 100, ds.height - 80, 100, 80))
        )


def test_sentinel2_jp2_mixed_resolution_stack() -> None:
    paths = [s2_band("B02"), s2_band("B05"), s2_band("B01")]
    scene = open_scene(paths, resampling="nearest", require_crs=True)
    assert (scene.width, scene.height, scene.res) == (1536, 768, (10.0, 10.0))
    assert scene.count == 3 and scene.dtype == "uint16"
    assert [n.rsplit("_", 1)[-1] for n in scene.band_names] == ["B02", "B05", "B01"]
    win = Window(120, 60, 240, 180)  # multiple of 6 px: aligned with the 20 and 60 m grids
    out, valid = scene.read_masked(win)
    assert valid.all()
    with rasterio.open(paths[1]) as b05, rasterio.open(paths[2]) as b01:
        b05_native = b05.read(1, window=Window(60, 30, 120, 90))
        b01_native = b01.read(1, window=Window(20, 10, 40, 30))
    np.testing.assert_array_equal(out[1], np.repeat(np.repeat(b05_native, 2, 0), 2, 1))
    np.testing.assert_array_equal(out[2], np.repeat(np.repeat(b01_native, 6, 0), 6, 1))
    # bilinear (the default) too, and the stack survives pickling
    bil = open_scene(paths)
    clone = pickle.loads(pickle.dumps(bil))
    np.testing.assert_array_equal(clone.read(win), bil.read(win))


def test_sentinel2_rcr_names_with_spaces_and_commas() -> None:
    paths = rcr_bands()
    assert len(paths) == 8 and all(", " in p.name for p in paths)
    scene = open_scene(paths)
    assert (scene.width, scene.height, scene.count) == (2629, 2201, 8)
    assert scene.crs.to_epsg() == 4326
    assert scene.band_names[0].endswith("B01")
    out = scene.read(Window(2600, 2180, 64, 64))
    assert out.shape == (8, 64, 64)
    with rasterio.open(paths[7]) as ds:
        np.testing.assert_array_equal(
            out[7, :21, :29], ds.read(1, window=Window(2600, 2180, 29, 21))
        )


def test_landsat8_single_band_files_stack_without_warping() -> None:
    scene = open_scene(L8_077, bands=[3, 2, 1])
    assert scene.count == 3 and not any(m.warp for m in scene._members)
    with rasterio.open(L8_077[0]) as b2:
        np.testing.assert_array_equal(
            scene.read(Window(500, 500, 64, 64))[2], b2.read(1, window=Window(500, 500, 64, 64))
        )


def test_landsat8_zero_fill_with_nodata_override() -> None:
    declared = open_scene(L8_078)
    assert declared.nodata is None
    scene = open_scene(L8_078, nodata=0)
    stats = scene.statistics(max_windows=None, window_size=512)
    total = scene.width * scene.height
    assert 0.7 * total < stats.pixel_count < 0.9 * total  # ~17% zero fill is ignored
    assert min(stats.min) > 0


def test_statistics_on_landsat7_match_numpy() -> None:
    scene = open_scene(LANDSAT7)
    stats = scene.statistics(max_windows=None, window_size=256, percentiles=(2, 98))
    with rasterio.open(LANDSAT7) as ds:
        arr = ds.read()
    valid = (arr != 0).all(axis=0)
    vals = arr[:, valid].astype(np.float64)
    assert stats.pixel_count == int(valid.sum())
    np.testing.assert_allclose(stats.mean, vals.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(stats.std, vals.std(axis=1), rtol=1e-9)
    np.testing.assert_allclose(stats.percentiles[98.0], np.percentile(vals, 98, axis=1))
    sampled = scene.statistics(max_windows=4, window_size=128)
    assert 0 < sampled.pixel_count <= 4 * 128 * 128
    np.testing.assert_allclose(sampled.mean, stats.mean, rtol=0.5)


def test_skip_empty_on_landsat7_nodata_corners() -> None:
    scene = open_scene(LANDSAT7)
    all_windows = list(scene.windows(64))
    kept = list(scene.windows(64, skip_empty=True))
    assert 0 < len(kept) < len(all_windows)
    for gw in set(map(lambda g: (g.row, g.col), all_windows)) - {(g.row, g.col) for g in kept}:
        core = next(g.core for g in all_windows if (g.row, g.col) == gw)
        assert not scene.read_valid(core).any()
