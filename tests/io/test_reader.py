"""The windowed reader on synthetic rasters written under tmp_path."""

from __future__ import annotations

import json
import multiprocessing
import pickle
import threading
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.windows import Window

from geoclass.errors import (
    BandError,
    ConfigError,
    GeoreferenceError,
    InputNotFoundError,
    RasterOpenError,
)
from geoclass.io.reader import BandStatistics, Scene, open_scene
from tests.conftest import UTM_TRANSFORM, make_raster

RNG = np.random.default_rng(42)


def _rand(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    if np.dtype(dtype).kind == "f":
        return RNG.normal(100, 30, shape).astype(dtype)
    hi = min(np.iinfo(dtype).max, 5000)
    return RNG.integers(1, hi, shape).astype(dtype)


@pytest.fixture
def rgb(tmp_path: Path) -> tuple[Path, np.ndarray]:
    arr = _rand((3, 131, 257), "uint8")
    return make_raster(tmp_path / "scene.tif", arr, nodata=0), arr


# -- single files -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
def test_read_matches_file(tmp_path: Path, dtype: str) -> None:
    arr = _rand((2, 131, 257), dtype)
    path = make_raster(tmp_path / f"odd {dtype}.tif", arr)
    with open_scene(path) as scene:
        assert (scene.width, scene.height, scene.count, scene.dtype) == (257, 131, 2, dtype)
        assert scene.crs == CRS.from_epsg(32633)
        assert scene.transform == UTM_TRANSFORM
        assert scene.res == (10.0, 10.0)
        assert scene.bounds == rasterio.open(path).bounds
        assert scene.paths == (path,)
        assert scene.bands == (1, 2)
        np.testing.assert_array_equal(scene.read(Window(0, 0, 257, 131)), arr)
        np.testing.assert_array_equal(scene.read(Window(200, 100, 57, 31)), arr[:, 100:, 200:])
        out = scene.read(Window(250, 120, 64, 64))
        assert out.shape == (2, 64, 64) and out.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(out[:, :11, :7], arr[:, 120:, 250:])
        assert (out[:, 11:, :] == 0).all() and (out[:, :, 7:] == 0).all()


def test_padding_uses_nodata_or_fill(rgb: tuple[Path, np.ndarray]) -> None:
    path, arr = rgb
    scene = open_scene(path)
    assert scene.nodata == 0.0
    win = Window(-5, -3, 20, 10)
    out = scene.read(win, fill=7)
    assert (out[:, :3, :] == 7).all() and (out[:, :, :5] == 7).all()
    np.testing.assert_array_equal(out[:, 3:, 5:], arr[:, :7, :15])
    valid = scene.read_valid(win)
    assert valid.shape == (10, 20)
    assert not valid[:3].any() and not valid[:, :5].any() and valid[3:, 5:].all()
    # entirely outside
    far = scene.read(Window(1000, 1000, 8, 8), fill=9)
    assert far.shape == (3, 8, 8) and (far == 9).all()
    assert not scene.read_valid(Window(1000, 1000, 8, 8)).any()


def test_nodata_fill_and_float_nan(tmp_path: Path) -> None:
    arr = _rand((1, 20, 30), "float32")
    arr[0, 5, :] = np.nan
    path = make_raster(tmp_path / "f.tif", arr, nodata=float("nan"))
    scene = open_scene(path)
    assert scene.nodata is not None and np.isnan(scene.nodata)
    out = scene.read(Window(-2, 0, 10, 10))
    assert np.isnan(out[:, :, :2]).all()
    valid = scene.read_valid(Window(0, 0, 30, 20))
    assert not valid[5].any() and valid[:5].all() and valid[6:].all()


def test_one_pixel_and_smaller_than_window(tmp_path: Path) -> None:
    path = make_raster(tmp_path / "px.tif", np.array([[[42]]], dtype="uint16"))
    scene = open_scene(path)
    (gw,) = list(scene.windows(64, halo=2))
    data, valid = scene.read_masked(gw.read)
    assert data.shape == (1, 68, 68)
    assert data[0, 2, 2] == 42 and data.sum() == 42
    assert valid.sum() == 1 and valid[2, 2]
    assert scene.statistics().mean == [42.0]


def test_bands_selection_and_order(rgb: tuple[Path, np.ndarray]) -> None:
    path, arr = rgb
    scene = open_scene(path, bands=[3, 1, 3])
    assert scene.count == 3 and scene.bands == (3, 1, 3)
    out = scene.read(Window(10, 10, 16, 16))
    np.testing.assert_array_equal(out, arr[[2, 0, 2], 10:26, 10:26])


def test_nodata_stripes_valid_skip_empty_and_stats(tmp_path: Path) -> None:
    arr = _rand((2, 100, 150), "uint16")
    arr[:, :, :64] = 0  # a wide nodata stripe: the first window column is empty
    arr[1, 70:72, :] = 0  # nodata in one band only
    path = make_raster(tmp_path / "stripes.tif", arr, nodata=0)
    scene = open_scene(path)
    valid = scene.read_valid(Window(0, 0, 150, 100))
    expected = (arr != 0).all(axis=0)
    np.testing.assert_array_equal(valid, expected)
    all_w = list(scene.windows(32))
    kept = list(scene.windows(32, skip_empty=True))
    assert len(all_w) == scene.num_windows(32) == 5 * 4
    assert {(g.row, g.col) for g in all_w} - {(g.row, g.col) for g in kept} == {
        (r, c) for r in range(4) for c in (0, 1)
    }
    stats = scene.statistics(max_windows=None, window_size=40, percentiles=(2, 50, 98))
    vals = arr[:, expected].astype(np.float64)
    assert stats.pixel_count == int(expected.sum())
    np.testing.assert_allclose(stats.mean, vals.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(stats.std, vals.std(axis=1), rtol=1e-9)
    assert stats.min == list(vals.min(axis=1)) and stats.max == list(vals.max(axis=1))
    for p in (2.0, 50.0, 98.0):
        np.testing.assert_allclose(stats.percentiles[p], np.percentile(vals, p, axis=1))


def test_statistics_float_sample_and_roundtrip(tmp_path: Path) -> None:
    arr = _rand((2, 300, 300), "float32")
    scene = open_scene(make_raster(tmp_path / "f.tif", arr))
    stats = scene.statistics(max_windows=None, window_size=128)
    np.testing.assert_allclose(stats.mean, arr.reshape(2, -1).mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(
        stats.percentiles[98.0], np.percentile(arr.reshape(2, -1), 98, axis=1), rtol=1e-6
    )
    sampled = scene.statistics(max_windows=2, window_size=64, seed=1)
    assert 0 < sampled.pixel_count <= 2 * 64 * 64  # cores: edge windows are smaller
    assert sampled == scene.statistics(max_windows=2, window_size=64, seed=1)
    back = BandStatistics.from_dict(json.loads(json.dumps(stats.to_dict())))
    assert back == stats


def test_statistics_all_nodata_raises(tmp_path: Path) -> None:
    path = make_raster(tmp_path / "empty.tif", np.zeros((1, 10, 10), "uint8"), nodata=0)
    with pytest.raises(RasterOpenError, match=r"empty\.tif: no valid"):
        open_scene(path).statistics()


def test_internal_mask(tmp_path: Path) -> None:
    arr = _rand((3, 40, 50), "uint8")
    mask = np.ones((40, 50), bool)
    mask[10:20, 10:20] = False  # exactly the core of window (1, 1) of a 10 px grid
    mask[30:35, 0:3] = False
    path = make_raster(tmp_path / "masked.tif", arr, mask=mask)
    scene = open_scene(path, bands=[2])
    np.testing.assert_array_equal(scene.read_valid(Window(0, 0, 50, 40)), mask)
    np.testing.assert_array_equal(scene.read(Window(0, 0, 50, 40))[0], arr[1])
    assert len(list(scene.windows(10, skip_empty=True))) == 20 - 1


@pytest.mark.parametrize("crs", ["EPSG:4326", "EPSG:32618", None])
def test_crs_variants(tmp_path: Path, crs: str | None) -> None:
    arr = _rand((1, 12, 17), "uint8")
    path = make_raster(tmp_path / "c.tif", arr, crs=crs)
    scene = open_scene(path)
    assert scene.crs == (CRS.from_user_input(crs) if crs else None)
    np.testing.assert_array_equal(scene.read(Window(0, 0, 17, 12)), arr)
    if crs is None:
        with pytest.raises(GeoreferenceError, match=r"c\.tif: has no CRS"):
            open_scene(path, require_crs=True)
    else:
        assert open_scene(path, require_crs=True).crs is not None


def test_window_geometry_helpers(rgb: tuple[Path, np.ndarray]) -> None:
    scene = open_scene(rgb[0])
    win = Window(10, 20, 30, 40)
    t = scene.window_transform(win)
    assert t @ (0, 0) == scene.transform @ (10, 20)


def _write_vrt(path: Path, src: Path, width: int, height: int, copies: int) -> None:
    """A VRT that repeats ``src`` (single band, Byte) ``copies`` times side by side."""
    with rasterio.open(src) as ds:
        crs_wkt, t = escape(ds.crs.to_wkt()), ds.transform
    sources = "".join(
        f'<SimpleSource><SourceFilename relativeToVRT="0">{src}</SourceFilename>'
        f"<SourceBand>1</SourceBand>"
        f'<SrcRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>'
        f'<DstRect xOff="{i * width}" yOff="0" xSize="{width}" ySize="{height}"/>'
        "</SimpleSource>"
        for i in range(copies)
    )
    path.write_text(
        f'<VRTDataset rasterXSize="{width * copies}" rasterYSize="{height}">'
        f"<SRS>{crs_wkt}</SRS>"
        f"<GeoTransform>{t.c}, {t.a}, {t.b}, {t.f}, {t.d}, {t.e}</GeoTransform>"
        f'<VRTRasterBand dataType="Byte" band="1">{sources}</VRTRasterBand></VRTDataset>'
    )


def test_vrt(tmp_path: Path) -> None:
    arr = _rand((1, 23, 31), "uint8")
    src = make_raster(tmp_path / "tile.tif", arr)
    vrt = tmp_path / "repeat.vrt"
    _write_vrt(vrt, src, 31, 23, 3)
    scene = open_scene(vrt)
    assert (scene.width, scene.height) == (93, 23)
    np.testing.assert_array_equal(scene.read(Window(0, 0, 93, 23))[0], np.hstack([arr[0]] * 3))


# -- stacks -------------------------------------------------------------------------------------


def test_stack_same_grid_concatenates_bands(tmp_path: Path) -> None:
    a = _rand((1, 50, 60), "uint16")
    b = _rand((2, 50, 60), "uint16")
    c = _rand((1, 50, 60), "uint8")
    pa = make_raster(tmp_path / "B02, blue.tif", a)
    pb = make_raster(tmp_path / "two.tif", b, descriptions=["red", "nir"])
    pc = make_raster(tmp_path / "c.tif", c)
    scene = open_scene([pa, pb, pc])
    assert scene.count == 4 and scene.dtype == "uint16"
    assert scene.band_names == ("B02, blue", "red", "nir", "c")
    win = Window(7, 3, 40, 30)
    np.testing.assert_array_equal(
        scene.read(win), np.concatenate([a, b, c.astype("uint16")])[:, 3:33, 7:47]
    )
    sub = open_scene([pa, pb, pc], bands=[4, 2])
    np.testing.assert_array_equal(sub.read(win), np.stack([c[0], b[0]])[:, 3:33, 7:47])


def test_stack_mixed_resolution(tmp_path: Path) -> None:
    fine = _rand((1, 40, 60), "uint16")
    coarse = _rand((1, 20, 30), "uint16")
    coarser = _rand((1, 10, 15), "uint16")
    p20 = make_raster(tmp_path / "b20.tif", coarse, transform=from_origin(300000, 5800000, 20, 20))
    p10 = make_raster(tmp_path / "b10.tif", fine, transform=from_origin(300000, 5800000, 10, 10))
    p40 = make_raster(tmp_path / "b40.tif", coarser, transform=from_origin(300000, 5800000, 40, 40))
    # the reference is the finest file even when it is not first
    scene = open_scene([p20, p10, p40], resampling="nearest")
    assert (scene.width, scene.height, scene.res) == (60, 40, (10.0, 10.0))
    out = scene.read(Window(0, 0, 60, 40))
    np.testing.assert_array_equal(out[1], fine[0])
    np.testing.assert_array_equal(out[0], np.repeat(np.repeat(coarse[0], 2, 0), 2, 1))
    np.testing.assert_array_equal(out[2], np.repeat(np.repeat(coarser[0], 4, 0), 4, 1))
    assert scene.read_valid(Window(0, 0, 60, 40)).all()
    bil = open_scene([p20, p10], resampling="bilinear").read(Window(10, 10, 8, 8))
    assert bil.shape == (2, 8, 8)


def test_stack_offset_member_and_other_crs(tmp_path: Path) -> None:
    ref = _rand((1, 40, 40), "uint8")
    part = _rand((1, 20, 40), "uint8")
    p_ref = make_raster(tmp_path / "ref.tif", ref, nodata=0)
    # same grid, shifted down by 30 rows: only the bottom 10 rows overlap
    p_part = make_raster(
        tmp_path / "part.tif", part, transform=from_origin(300000, 5800000 - 300, 10, 10)
    )
    scene = open_scene([p_ref, p_part])
    out, valid = scene.read_masked(Window(0, 0, 40, 40))
    np.testing.assert_array_equal(out[1, 30:], part[0, :10])
    assert (out[1, :30] == 0).all()
    assert not valid[:30].any() and valid[30:].all()
    # a member in geographic coordinates is warped onto the UTM reference
    west, _, _, north = rasterio.warp.transform_bounds("EPSG:32633", "EPSG:4326", *scene.bounds)
    geo = make_raster(
        tmp_path / "geo.tif",
        np.full((1, 20, 20), 9, "uint8"),
        crs="EPSG:4326",  # ~35 x 55 m pixels: coarser than the 10 m reference
        transform=from_origin(west - 0.001, north + 0.001, 0.0005, 0.0005),
    )
    stacked = open_scene([p_ref, geo])
    assert stacked.crs == CRS.from_epsg(32633) and stacked.count == 2
    d, v = stacked.read_masked(Window(0, 0, 40, 40))
    assert (d[1][v] == 9).all() and v.mean() > 0.9


def test_stack_errors(tmp_path: Path) -> None:
    a = make_raster(tmp_path / "a.tif", _rand((1, 10, 10), "uint8"))
    far = make_raster(
        tmp_path / "far.tif", _rand((1, 10, 10), "uint8"), transform=from_origin(0, 0, 10, 10)
    )
    with pytest.raises(GeoreferenceError) as err:
        open_scene([a, far])
    msg = str(err.value)
    assert "far.tif" in msg and "a.tif" in msg and "does not overlap" in msg and "\n" not in msg
    nocrs = make_raster(tmp_path / "nocrs.tif", _rand((1, 10, 10), "uint8"), crs=None)
    with pytest.raises(
        GeoreferenceError, match=r"nocrs\.tif: has no CRS, but .*a\.tif has EPSG:32633"
    ):
        open_scene([a, nocrs])
    # two files without a CRS on the same pixel grid stack fine
    nocrs2 = make_raster(tmp_path / "nocrs2.tif", _rand((2, 10, 10), "uint8"), crs=None)
    assert open_scene([nocrs, nocrs2]).count == 3
    with pytest.raises(
        BandError, match=r"stack of 2 files \(a\.tif, a\.tif\): band 3 .* has 2 bands"
    ):
        open_scene([a, a], bands=[3])


# -- errors -------------------------------------------------------------------------------------


def test_band_out_of_range_message(rgb: tuple[Path, np.ndarray]) -> None:
    with pytest.raises(BandError) as err:
        open_scene(rgb[0], bands=[1, 5])
    assert str(err.value).endswith("scene.tif: band 5 requested but the scene has 3 bands")
    with pytest.raises(BandError, match="1-based"):
        open_scene(rgb[0], bands=[0])


def test_open_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match=r"missing\.tif: file not found"):
        open_scene(tmp_path / "missing.tif")
    text = tmp_path / "notes.tif"
    text.write_text("this is not a raster")
    with pytest.raises(RasterOpenError) as err:
        open_scene(text)
    assert "notes.tif: not a raster GDAL can read (" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(RasterOpenError, match="is a directory"):
        open_scene(tmp_path)
    with pytest.raises(ConfigError, match="no input files"):
        open_scene([])
    with pytest.raises(ConfigError, match="unknown resampling 'fancy'"):
        open_scene(text, resampling="fancy")


def test_bad_fill_and_window(rgb: tuple[Path, np.ndarray]) -> None:
    scene = open_scene(rgb[0])
    with pytest.raises(ConfigError, match="fill value -1"):
        scene.read(Window(0, 0, 4, 4), fill=-1)
    with pytest.raises(ConfigError, match="whole pixels"):
        scene.read(Window(0.5, 0, 4, 4))


def test_nodata_override(tmp_path: Path) -> None:
    arr = _rand((1, 20, 20), "uint16")
    arr[:, :5] = 0
    path = make_raster(tmp_path / "fill.tif", arr)
    assert open_scene(path).read_valid(Window(0, 0, 20, 20)).all()
    scene = open_scene(path, nodata=0)
    assert scene.nodata == 0.0
    assert scene.read_valid(Window(0, 0, 20, 20)).sum() == 15 * 20
    assert pickle.loads(pickle.dumps(scene)).nodata == 0.0


# -- pickling, threads, handles -----------------------------------------------------------------


def test_pickle_roundtrip(tmp_path: Path) -> None:
    fine = make_raster(tmp_path / "f.tif", _rand((2, 40, 60), "uint16"))
    coarse = make_raster(
        tmp_path / "c.tif",
        _rand((1, 20, 30), "uint16"),
        transform=from_origin(300000, 5800000, 20, 20),
    )
    scene = open_scene([fine, coarse], bands=[3, 1])
    win = Window(5, 5, 32, 32)
    before = scene.read(win)  # opens handles; they must not travel with the pickle
    clone = pickle.loads(pickle.dumps(scene))
    assert isinstance(clone, Scene)
    assert (clone.paths, clone.bands, clone.transform, clone.crs, clone.band_names) == (
        scene.paths,
        scene.bands,
        scene.transform,
        scene.crs,
        scene.band_names,
    )
    assert clone.resampling == "bilinear"
    np.testing.assert_array_equal(clone.read(win), before)


def test_two_threads(rgb: tuple[Path, np.ndarray]) -> None:
    path, arr = rgb
    scene = open_scene(path)
    grid = list(scene.windows(32, halo=4))
    results: dict[int, list[np.ndarray]] = {}
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            results[k] = [scene.read(g.read) for g in grid for _ in range(3)]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    serial = [scene.read(g.read) for g in grid for _ in range(3)]
    for k in range(2):
        for x, y in zip(results[k], serial, strict=True):
            np.testing.assert_array_equal(x, y)
    assert len(scene._all_handles) == 3
    scene.close()
    np.testing.assert_array_equal(scene.read(Window(0, 0, 257, 131)), arr)  # reopens lazily


def _read_in_child(scene: Scene, win: Window, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    queue.put(scene.read(win))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_subprocess_reads(tmp_path: Path, method: str) -> None:
    """DataLoader workers: forked children must not reuse the parent's GDAL handles."""
    fine = make_raster(tmp_path / "f.tif", _rand((1, 40, 60), "uint16"))
    coarse = make_raster(
        tmp_path / "c.tif",
        _rand((1, 20, 30), "uint16"),
        transform=from_origin(300000, 5800000, 20, 20),
    )
    scene = open_scene([fine, coarse])
    win = Window(3, 4, 30, 20)
    expected = scene.read(win)  # the parent holds open handles now
    ctx = multiprocessing.get_context(method)
    queue = ctx.Queue()
    proc = ctx.Process(target=_read_in_child, args=(scene, win, queue))
    proc.start()
    got = queue.get(timeout=60)
    proc.join(timeout=60)
    assert proc.exitcode == 0
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(scene.read(win), expected)


def test_two_threads_on_a_warped_stack(tmp_path: Path) -> None:
    fine = make_raster(tmp_path / "f.tif", _rand((1, 64, 64), "uint16"))
    coarse = make_raster(
        tmp_path / "c.tif",
        _rand((1, 32, 32), "uint16"),
        transform=from_origin(300000, 5800000, 20, 20),
    )
    scene = open_scene([fine, coarse])
    grid = list(scene.windows(16, stride=8, halo=2))
    serial = [scene.read(g.read) for g in grid]
    out: list[list[np.ndarray]] = [[], []]

    def work(k: int) -> None:
        out[k] = [scene.read(g.read) for g in grid for _ in range(2)][::2]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(2):
        assert len(out[k]) == len(serial)
        for x, y in zip(out[k], serial, strict=True):
            np.testing.assert_array_equal(x, y)


def test_truncated_file_fails_on_read_with_the_file_named(tmp_path: Path) -> None:
    path = make_raster(
        tmp_path / "cut.tif",
        _rand((1, 256, 256), "uint8"),
        tiled=True,
        blockxsize=64,
        blockysize=64,
    )
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the directory survives, half the tiles do not
    scene = open_scene(path)
    with pytest.raises(RasterOpenError) as err:
        scene.read(Window(0, 0, 256, 256))
    msg = str(err.value)
    assert msg.startswith(f"{path}: read failed at window col=0 row=0 256x256 (")
    assert "IReadBlock failed" in msg and "\n" not in msg


def test_vector_file_is_named_as_such(tmp_path: Path) -> None:
    vec = tmp_path / "labels.geojson"
    vec.write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(RasterOpenError, match=r"labels\.geojson: not a raster .*vector file"):
        open_scene(vec)
