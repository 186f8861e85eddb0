"""Mosaics of class maps and scenes: grid, reprojection, precedence, classes, VRT, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window, from_bounds
from typer.testing import CliRunner

from geoclass.cli.app import app
from geoclass.cli.mosaic import parse_input
from geoclass.engine.mosaic import MosaicConfig, MosaicInput, confidence_sibling, mosaic
from geoclass.errors import (
    BandError,
    ConfigError,
    GeoreferenceError,
    LabelError,
    OutputExistsError,
)
from geoclass.io.class_map import read_class_metadata, write_class_metadata
from geoclass.io.reader import open_scene
from geoclass.progress import ProgressEvent
from tests.conftest import SHARED_DATA, make_raster, needs_shared_data

CLASSES = ["water", "crop", "tree", "built"]
COLORS = [(0, 0, 255), (255, 255, 0), (0, 128, 0), (200, 0, 0)]
UTM = "EPSG:32632"
# A: 60 x 50 px at 10 m, west. B: a lon/lat grid overlapping A's east half and reaching further
# north-east, so the union box has corners that no input covers.
A_TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)
B_BOUNDS = (9.0038, 45.1508, 9.0127, 45.1561)
B_RES = 0.0002


def class_map(path: Path, array: np.ndarray, *, classes: list[str] | None = CLASSES, **kw) -> Path:
    make_raster(path, np.asarray(array, np.uint8), nodata=255, **kw)
    if classes is not None:
        with rasterio.open(path, "r+") as ds:
            write_class_metadata(
                ds, classes, COLORS[: len(classes)] + [(9, 9, 9)] * (len(classes) - 4)
            )
    return path


@pytest.fixture
def maps(tmp_path: Path) -> tuple[Path, Path]:
    a = np.ones((50, 60), np.uint8)  # class 1
    a[:5, :5] = 255  # a nodata corner
    w = round((B_BOUNDS[2] - B_BOUNDS[0]) / B_RES)
    h = round((B_BOUNDS[3] - B_BOUNDS[1]) / B_RES)
    b = np.full((h, w), 2, np.uint8)
    b[:, w // 2 :] = 3
    path_a = class_map(tmp_path / "a.tif", a, crs=UTM, transform=A_TRANSFORM)
    path_b = class_map(
        tmp_path / "b.tif",
        b,
        crs="EPSG:4326",
        transform=Affine(B_RES, 0, B_BOUNDS[0], 0, -B_RES, B_BOUNDS[3]),
    )
    return path_a, path_b


def read(path: Path) -> tuple[np.ndarray, rasterio.profiles.Profile, Affine]:
    with rasterio.open(path) as ds:
        return ds.read(1), ds.profile, ds.transform


def value_at(path: Path, x: float, y: float) -> int:
    with rasterio.open(path) as ds:
        row, col = ds.index(x, y)
        return int(ds.read(1, window=Window(col, row, 1, 1))[0, 0])


def test_two_crs_class_maps_georeferencing_classes_and_nodata(
    maps: tuple[Path, Path], tmp_path: Path
) -> None:
    a, b = maps
    events: list[ProgressEvent] = []
    result = mosaic(MosaicConfig([a, b], tmp_path / "m.tif"), progress=events.append)
    arr, profile, t = read(result.output)
    assert profile["crs"].to_string() == UTM
    assert (t.a, t.e) == (10.0, -10.0)  # the finest input (B is ~16 x 22 m)
    # The grid is A's grid, extended to the union of both extents.
    assert ((t.c - A_TRANSFORM.c) / 10).is_integer() and ((t.f - A_TRANSFORM.f) / 10).is_integer()
    with rasterio.open(result.output) as ds, rasterio.open(b) as sb:
        out_b = ds.bounds
        from rasterio.warp import transform_bounds

        bb = transform_bounds(sb.crs, UTM, *sb.bounds, densify_pts=21)
        assert out_b.left <= 500000 and out_b.top >= 5000000
        assert (
            out_b.left <= bb[0]
            and out_b.bottom <= bb[1]
            and out_b.right >= bb[2]
            and out_b.top >= bb[3]
        )
        assert out_b.right - bb[2] < 10 and bb[3] <= out_b.top < bb[3] + 10
        assert ds.nodata == 255 and ds.profile["tiled"] and ds.profile["compress"] == "deflate"
        assert ds.descriptions[0] == "class"
    assert read_class_metadata(result.output) == (CLASSES, COLORS)
    assert set(np.unique(arr)) <= {1, 2, 3, 255}
    assert {2, 3} <= set(np.unique(arr))  # B's classes survive nearest-neighbour reprojection
    # Corners covered by neither input, and A's own nodata corner, are nodata.
    assert arr[0, 0] == 255 and arr[-1, -1] == 255
    assert value_at(result.output, 500020, 4999980) == 255
    assert value_at(result.output, 500100, 4999700) == 1  # A only
    assert value_at(result.output, 500950, 5000250) == 3  # B only
    assert result.reprojected == [str(b)] and result.kind == "classes"
    assert 0 < result.valid_fraction < 1
    assert any("resampled with nearest" in e.message for e in events)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_first_and_last_precedence_in_the_overlap(maps: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = maps
    first = mosaic(MosaicConfig([a, b], tmp_path / "first.tif", method="first")).output
    last = mosaic(MosaicConfig([a, b], tmp_path / "last.tif", method="last")).output
    assert value_at(first, 500450, 4999850) == 1
    assert value_at(last, 500450, 4999850) == 2
    # Outside the overlap both agree.
    fa, la = read(first)[0], read(last)[0]
    assert value_at(first, 500100, 4999700) == value_at(last, 500100, 4999700) == 1
    assert (fa != la).sum() > 0 and ((fa == 1) & (la != 1)).sum() == (fa != la).sum()


def test_blocks_do_not_change_the_result(maps: tuple[Path, Path], tmp_path: Path) -> None:
    _, b = maps
    big = tmp_path / "a_big.tif"
    class_map(
        big,
        np.arange(600 * 300).reshape(300, 600) % 4,
        crs=UTM,
        transform=Affine(2, 0, 500000, 0, -2, 5000000),
    )
    small = mosaic(MosaicConfig([big, b], tmp_path / "s.tif", block_size=256))
    large = mosaic(MosaicConfig([big, b], tmp_path / "l.tif", block_size=4096))
    assert small.width > 256 and small.height > 256
    np.testing.assert_array_equal(read(small.output)[0], read(large.output)[0])


def test_continuous_scene_is_reprojected_bilinearly(tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:200, 0:300]
    ramp = (xx + 2.0 * yy).astype(np.float32)
    ramp[:, :10] = np.nan  # nodata strip
    geo = make_raster(
        tmp_path / "ramp.tif",
        ramp,
        crs="EPSG:4326",
        nodata=float("nan"),
        transform=Affine(0.00004, 0, 9.0, 0, -0.00004, 45.156),
    )
    small = mosaic(MosaicConfig([geo], tmp_path / "s.tif", crs=UTM, res=2.0, block_size=256))
    large = mosaic(MosaicConfig([geo], tmp_path / "l.tif", crs=UTM, res=2.0, block_size=2048))
    assert small.reprojected == [str(geo)] and small.width > 256
    a, b = read(small.output)[0], read(large.output)[0]
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    # GDAL approximates the transform to 1/8 pixel, so blocks may differ by a hair, no more.
    assert np.nanmax(np.abs(a - b)) < 0.05
    assert np.isnan(a).sum() > 0 and np.nanmin(a) >= 10 and np.nanmax(a) <= 299 + 2 * 199
    assert not np.array_equal(np.round(a[~np.isnan(a)]), a[~np.isnan(a)])  # interpolated


def test_target_crs_and_resolution(maps: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = maps
    result = mosaic(MosaicConfig([a, b], tmp_path / "g.tif", crs="EPSG:4326", res=B_RES))
    arr, profile, t = read(result.output)
    assert profile["crs"].to_epsg() == 4326 and (t.a, t.e) == (B_RES, -B_RES)
    assert result.reprojected == [str(a)]  # the grid snaps onto B's, which is copied as is
    assert value_at(result.output, B_BOUNDS[2] - B_RES / 2, B_BOUNDS[3] - B_RES / 2) == 3
    assert set(np.unique(arr)) <= {1, 2, 3, 255} and {1, 2, 3} <= set(np.unique(arr))


def test_disagreeing_class_lists_are_refused_naming_both(
    maps: tuple[Path, Path], tmp_path: Path
) -> None:
    a, _ = maps
    c = class_map(
        tmp_path / "c.tif",
        np.zeros((10, 10)),
        classes=["water", "crop", "forest", "built"],
        crs=UTM,
        transform=A_TRANSFORM,
    )
    with pytest.raises(LabelError) as info:
        mosaic(MosaicConfig([a, c], tmp_path / "m.tif"))
    msg = str(info.value)
    assert str(a) in msg and str(c) in msg and "class id 2" in msg and "'forest'" in msg
    d = class_map(
        tmp_path / "d.tif", np.zeros((10, 10)), classes=CLASSES[:3], crs=UTM, transform=A_TRANSFORM
    )
    with pytest.raises(LabelError, match=r"only .*a\.tif has \['built'\]"):
        mosaic(MosaicConfig([a, d], tmp_path / "m.tif"))


def test_raw_three_band_scenes(tmp_path: Path) -> None:
    t1 = Affine(30, 0, 600000, 0, -30, 4000000)
    t2 = Affine(30, 0, 600000 + 30 * 40, 0, -30, 4000000 - 30 * 10)
    s1 = np.stack([np.full((50, 60), v, np.uint16) for v in (100, 200, 300)])
    s2 = np.stack([np.full((50, 60), v, np.uint16) for v in (1000, 2000, 3000)])
    s1[:, :, :3] = 0  # fill
    p1 = make_raster(tmp_path / "s1.tif", s1, crs=UTM, transform=t1, nodata=0)
    p2 = make_raster(tmp_path / "s2.tif", s2, crs=UTM, transform=t2, nodata=0)
    result = mosaic(MosaicConfig([p1, p2], tmp_path / "raw.tif", method="last"))
    assert (
        result.kind == "scene" and result.count == 3 and (result.width, result.height) == (100, 60)
    )
    with rasterio.open(result.output) as ds:
        arr = ds.read()
        assert ds.dtypes[0] == "uint16" and ds.nodata == 0
    assert list(arr[:, 5, 10]) == [100, 200, 300]
    assert list(arr[:, 20, 45]) == [1000, 2000, 3000]  # overlap: last wins
    assert list(arr[:, 55, 10]) == [0, 0, 0]  # below s1, left of s2
    assert list(arr[:, 5, 1]) == [0, 0, 0]  # s1's fill
    one = make_raster(tmp_path / "one.tif", s1[:1], crs=UTM, transform=t1)
    with pytest.raises(BandError, match=r"s1\.tif has 3.*one\.tif has 1"):
        mosaic(MosaicConfig([p1, one], tmp_path / "bad.tif", kind="scene"))


def test_stacked_input_and_band_selection(tmp_path: Path) -> None:
    t = Affine(30, 0, 600000, 0, -30, 4000000)
    bands = [
        make_raster(
            tmp_path / f"B{i}.tif", np.full((20, 20), i * 10, np.uint16), crs=UTM, transform=t
        )
        for i in (2, 3, 4)
    ]
    other = make_raster(
        tmp_path / "other.tif",
        np.stack([np.full((20, 20), v, np.uint16) for v in (7, 8, 9)]),
        crs=UTM,
        transform=t * Affine.translation(20, 0),
    )
    result = mosaic(MosaicConfig([bands, other], tmp_path / "st.tif"))
    with rasterio.open(result.output) as ds:
        assert (
            ds.count == 3
            and list(ds.read()[:, 0, 0]) == [20, 30, 40]
            and list(ds.read()[:, 0, 30]) == [7, 8, 9]
        )
    single = mosaic(
        MosaicConfig([bands[0], MosaicInput((other,), bands=(3,))], tmp_path / "b2.tif")
    )
    with rasterio.open(single.output) as ds:
        assert ds.count == 1 and ds.read(1)[0, 0] == 20 and ds.read(1)[0, 30] == 9


def test_each_input_file_is_described_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import geoclass.engine.mosaic.inputs as inputs_module

    t = Affine(30, 0, 600000, 0, -30, 4000000)
    stack = [
        make_raster(tmp_path / f"B{i}.tif", np.full((20, 20), i, np.uint16), crs=UTM, transform=t)
        for i in (2, 3)
    ]
    other = make_raster(
        tmp_path / "o.tif",
        np.ones((2, 20, 20), np.uint16),
        crs=UTM,
        transform=t * Affine.translation(20, 0),
    )
    described: list[Path] = []
    real = inputs_module.describe_file

    def counting(path: Path) -> inputs_module.FileInfo:
        described.append(path)
        return real(path)

    monkeypatch.setattr(inputs_module, "describe_file", counting)
    for name in ("m.vrt", "m.tif"):
        described.clear()
        result = mosaic(MosaicConfig([stack, other], tmp_path / name))
        assert sorted(described) == sorted([*stack, other]), name
        with rasterio.open(result.output) as ds:
            assert list(ds.read()[:, 0, 0]) == [2, 3] and list(ds.read()[:, 0, 20]) == [1, 1]


def test_vrt_is_readable_and_matches_the_geotiff(tmp_path: Path, maps: tuple[Path, Path]) -> None:
    t2 = A_TRANSFORM * Affine.translation(30, 20)
    a = class_map(tmp_path / "va.tif", np.ones((50, 60)), crs=UTM, transform=A_TRANSFORM)
    b = class_map(tmp_path / "vb.tif", np.full((50, 60), 2), crs=UTM, transform=t2)
    for method in ("first", "last"):
        v = mosaic(MosaicConfig([a, b], tmp_path / f"{method}.vrt", method=method))
        g = mosaic(MosaicConfig([a, b], tmp_path / f"{method}.tif", method=method))
        assert v.format == "VRT" and g.format == "GTiff"
        with rasterio.open(v.output) as vds, rasterio.open(g.output) as gds:
            assert vds.driver == "VRT" and vds.crs == gds.crs and vds.transform == gds.transform
            np.testing.assert_array_equal(vds.read(), gds.read())
            assert vds.colormap(1)[1][:3] == COLORS[1] and vds.nodata == 255
        assert read_class_metadata(v.output) == (CLASSES, COLORS)
    assert "../" not in (tmp_path / "first.vrt").read_text()  # relative to the VRT
    with pytest.raises(GeoreferenceError, match="--vrt cannot reproject"):
        mosaic(MosaicConfig(list(maps), tmp_path / "x.vrt"))
    with pytest.raises(ConfigError, match=r"\.vrt file name"):
        mosaic(MosaicConfig([a, b], tmp_path / "x.tif", vrt=True))


def test_max_confidence(tmp_path: Path) -> None:
    t2 = A_TRANSFORM * Affine.translation(10, 0)
    a = make_raster(
        tmp_path / "a.tif",
        np.stack([np.full((10, 20), 1), np.tile(np.arange(20) * 10, (10, 1))]).astype(np.uint8),
        crs=UTM,
        transform=A_TRANSFORM,
        nodata=255,
        descriptions=["class", "confidence"],
    )
    b = class_map(tmp_path / "b.tif", np.full((10, 20), 2), crs=UTM, transform=t2)
    make_raster(
        confidence_sibling(b), np.full((10, 20), 0.5, np.float32) * 255, crs=UTM, transform=t2
    )
    result = mosaic(MosaicConfig([a, b], tmp_path / "mc.tif", method="max-confidence"))
    arr = read(result.output)[0]
    # Overlap = A's columns 10..19 (confidence 100..190) vs B's 127.5: A wins from column 13.
    assert list(arr[0, 10:20]) == [2, 2, 2, 1, 1, 1, 1, 1, 1, 1]
    assert arr[0, 0] == 1 and arr[0, 25] == 2
    confidence_sibling(b).unlink()
    with pytest.raises(ConfigError, match=r"b\.tif.*confidence.*b\.confidence\.tif"):
        mosaic(MosaicConfig([a, b], tmp_path / "mc2.tif", method="max-confidence"))


def test_input_and_output_errors(maps: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = maps
    scene = make_raster(
        tmp_path / "scene.tif", np.zeros((3, 10, 10), np.uint16), crs=UTM, transform=A_TRANSFORM
    )
    with pytest.raises(ConfigError, match="is a class map but .*scene.tif is a raw scene"):
        mosaic(MosaicConfig([a, scene], tmp_path / "m.tif"))
    out = tmp_path / "m.tif"
    mosaic(MosaicConfig([a], out))
    with pytest.raises(OutputExistsError, match="--overwrite"):
        mosaic(MosaicConfig([a, b], out))
    assert mosaic(MosaicConfig([a, b], out, overwrite=True)).reprojected
    with pytest.raises(ConfigError, match="would replace .*the input"):
        mosaic(MosaicConfig([a, b], a, overwrite=True))
    with pytest.raises(ConfigError, match=r"\.tif, \.tiff"):
        mosaic(MosaicConfig([a], tmp_path / "m.png"))
    with pytest.raises(ConfigError, match="nearest or mode"):
        mosaic(MosaicConfig([a, b], tmp_path / "n.tif", resampling="bilinear"))
    no_crs = make_raster(tmp_path / "nocrs.tif", np.zeros((5, 5), np.uint8), crs=None)
    with pytest.raises(GeoreferenceError, match="no CRS"):
        mosaic(MosaicConfig([a, no_crs], tmp_path / "n.tif"))


def test_cli(maps: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = maps
    runner = CliRunner()
    out = tmp_path / "cli.tif"
    res = runner.invoke(app, ["-q", "mosaic", str(a), str(b), "-o", str(out), "--method", "last"])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith(f"wrote {out} (GTiff)") and "1 reprojected" in res.stdout
    assert value_at(out, 500450, 4999850) == 2
    res = runner.invoke(app, ["mosaic", str(a), str(b), "-o", str(out)])
    assert res.exit_code == 1 and "already exists" in res.stderr
    res = runner.invoke(app, ["mosaic", str(a), "-o", str(tmp_path / "x.tif"), "--res", "0"])
    assert res.exit_code == 2


def test_parse_input_stacks_only_when_unambiguous(tmp_path: Path) -> None:
    for name in ("B2.tif", "B3.tif", "odd,name.tif"):
        (tmp_path / name).write_bytes(b"")
    b2, b3 = tmp_path / "B2.tif", tmp_path / "B3.tif"
    assert parse_input(f"{b2},{b3}").paths == (b2, b3)
    assert parse_input(str(tmp_path / "odd,name.tif")).paths == (tmp_path / "odd,name.tif",)
    assert parse_input(f"{b2},{tmp_path / 'missing.tif'}").paths == (
        Path(f"{b2},{tmp_path / 'missing.tif'}"),
    )


LANDSAT = SHARED_DATA / "scenes" / "landsat8-224077-224078"


@needs_shared_data
@pytest.mark.realdata
def test_real_adjacent_landsat_scenes(tmp_path: Path) -> None:
    row77 = [LANDSAT / f"LC08_L1TP_224077_20200518_20200518_01_RT_B{i}.TIF" for i in (2, 3, 4)]
    row78 = LANDSAT / "LC08_L1TP_224078_20200518_20200518_01_RT.TIF"
    # Row 077 is three single-band files: stacked into one 3-band input. Fill is 0, undeclared.
    result = mosaic(MosaicConfig([row77, row78], tmp_path / "l8.tif", nodata=0))
    assert (result.width, result.height) == (2819, 2206)
    assert (
        result.transform == Affine(30, 0, 694005, 0, -30, -2766615) and result.crs == "EPSG:32621"
    )
    assert not result.reprojected and result.count == 3 and result.nodata == 0
    # The same mosaic as a VRT over the original files.
    vrt = mosaic(MosaicConfig([row77, row78], tmp_path / "l8.vrt", nodata=0))
    s77, s78 = open_scene(row77, nodata=0), open_scene(row78, nodata=0)
    with rasterio.open(result.output) as out, rasterio.open(vrt.output) as v:
        assert (v.width, v.height, v.count, v.transform) == (2819, 2206, 3, out.transform)
        for x, y in (
            (700000, -2770000),
            (770000, -2830000),
            (735000, -2790000),
            (720000, -2800000),
        ):
            win = (
                from_bounds(x, y - 1500, x + 1500, y, out.transform).round_offsets().round_lengths()
            )
            got = out.read(window=win)
            expect = np.zeros_like(got)
            done = np.zeros(got.shape[1:], bool)
            for s in (s77, s78):  # first valid input wins
                sw = (
                    from_bounds(*out.window_bounds(win), s.transform)
                    .round_offsets()
                    .round_lengths()
                )
                data, valid = s.read_masked(sw)
                take = valid & ~done
                expect[:, take] = data[:, take]
                done |= take
            np.testing.assert_array_equal(got, expect)
            np.testing.assert_array_equal(v.read(window=win), expect)
            assert done.any()
