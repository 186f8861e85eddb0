"""``geoclass tile``: the tile engine on synthetic scenes, the CLI, and the real scenes."""

from __future__ import annotations

import csv
import errno
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fiona
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.features import rasterize
from rasterio.warp import transform_geom
from rasterio.windows import Window
from typer.testing import CliRunner

from geoclass.cli.app import app
from geoclass.data.samples import load_samples
from geoclass.data.tiling import TileConfig, TileResult, block_split, tile
from geoclass.data.tiling.chip_writer import ChipWriter
from geoclass.data.tiling.fast_tiff import FastTiff
from geoclass.data.tiling.worker import Worker
from geoclass.errors import (
    ConfigError,
    DiskFullError,
    Interrupted,
    LabelError,
    OutputExistsError,
)
from geoclass.io.labels import UNLABELLED
from geoclass.io.reader import Scene, open_scene
from geoclass.progress import ProgressEvent
from tests.conftest import (
    SHARED_DATA,
    UTM_CRS,
    UTM_TRANSFORM,
    make_raster,
    needs_shared_data,
)

X0, Y0, RES = UTM_TRANSFORM.c, UTM_TRANSFORM.f, UTM_TRANSFORM.a


# --- helpers ----------------------------------------------------------------------------------


def px_box(col0: float, row0: float, col1: float, row1: float) -> shapely.Polygon:
    """A rectangle given in scene pixel coordinates, as a UTM polygon."""
    return shapely.box(X0 + col0 * RES, Y0 - row1 * RES, X0 + col1 * RES, Y0 - row0 * RES)


def write_vector(path: Path, features: Sequence[tuple[Any, dict[str, Any]]], crs: str = UTM_CRS) -> Path:
    props: dict[str, str] = {}
    for _, p in features:
        for k, v in p.items():
            props.setdefault(k, "int" if isinstance(v, int) else "str")
    with fiona.open(path, "w", driver="GPKG", crs=crs,
                    schema={"geometry": "Polygon", "properties": props}) as dst:
        for geom, p in features:
            dst.write(fiona.Feature(geometry=fiona.Geometry.from_dict(shapely.geometry.mapping(geom)),
                                    properties={k: p.get(k) for k in props}))
    return path


def scene_array(h: int = 64, w: int = 64, bands: int = 3) -> np.ndarray:
    rows, cols = np.mgrid[0:h, 0:w]
    return np.stack([(rows * w + cols + 1000 * b + 1) % 60000 for b in range(bands)]).astype(np.uint16)


QUADRANTS = [(px_box(0, 0, 32, 32), {"cls": "water"}), (px_box(32, 32, 64, 64), {"cls": "crop"})]


@pytest.fixture
def scene_path(tmp_path: Path) -> Path:
    return make_raster(tmp_path / "scene.tif", scene_array())


@pytest.fixture
def quad_labels(tmp_path: Path) -> Path:
    return write_vector(tmp_path / "labels.gpkg", QUADRANTS)


def run(tmp_path: Path, name: str = "out", **kw: Any) -> TileResult:
    kw.setdefault("workers", 0)
    return tile(TileConfig(output=tmp_path / name, **kw))


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path / "chips.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def totals(result: TileResult) -> dict[str, int]:
    out: Counter[str] = Counter()
    for split in result.counts.values():
        out.update(split)
    return {k: v for k, v in out.items() if v}


# --- classification ---------------------------------------------------------------------------


def test_chips_inside_polygons_get_their_class(tmp_path: Path, scene_path: Path, quad_labels: Path) -> None:
    result = run(tmp_path, scenes=scene_path, labels=quad_labels, label_field="cls", size=16)
    # 4x4 windows: 4 inside water, 4 inside crop, 8 with no label at all.
    assert result.windows == 16 and result.chips == 8
    assert totals(result) == {"crop": 4, "water": 4}
    assert result.skipped == {"nodata": 0, "too_much_nodata": 0, "unlabelled": 8, "under_labelled": 0}
    assert result.classes == ["crop", "water"]
    rows = read_csv(tmp_path / "out")
    assert len(rows) == 8
    for r in rows:
        row, col = int(r["row"]), int(r["col"])
        expected = "water" if row < 32 and col < 32 else "crop"
        assert r["label"] == expected
        assert r["path"].startswith(f"chips/{expected}/") and (tmp_path / "out" / r["path"]).is_file()
        assert r["split"] in ("train", "val") and r["scene"] == "scene.tif"


def test_chips_are_georeferenced_exactly(tmp_path: Path, scene_path: Path, quad_labels: Path) -> None:
    run(tmp_path, scenes=scene_path, labels=quad_labels, label_field="cls", size=16)
    with open_scene(scene_path) as scene:
        for r in read_csv(tmp_path / "out"):
            win = Window(int(r["col"]), int(r["row"]), 16, 16)
            with rasterio.open(tmp_path / "out" / r["path"]) as chip:
                assert chip.transform == scene.window_transform(win)
                assert chip.crs == scene.crs
                assert chip.dtypes == ("uint16",) * 3
                assert chip.compression.name == "deflate"
                np.testing.assert_array_equal(chip.read(), scene.read(win))


def test_min_labelled_threshold(tmp_path: Path, scene_path: Path) -> None:
    # The first chip is exactly half covered.
    labels = write_vector(tmp_path / "half.gpkg", [(px_box(0, 0, 8, 16), {"cls": "a"})])
    kept = run(tmp_path, "a", scenes=scene_path, labels=labels, size=16, min_labelled=0.5)
    assert kept.chips == 1 and kept.skipped["under_labelled"] == 0
    dropped = run(tmp_path, "b", scenes=scene_path, labels=labels, size=16, min_labelled=0.51)
    assert dropped.chips == 0 and dropped.skipped["under_labelled"] == 1
    assert dropped.skipped["unlabelled"] == 15


def test_majority_class(tmp_path: Path, scene_path: Path) -> None:
    feats = [(px_box(0, 0, 5, 16), {"cls": "a"}), (px_box(5, 0, 16, 16), {"cls": "b"})]
    result = run(tmp_path, scenes=scene_path, labels=write_vector(tmp_path / "m.gpkg", feats), size=16)
    assert totals(result) == {"b": 1}


def test_nodata_windows_are_skipped_and_counted(tmp_path: Path) -> None:
    arr = np.full((1, 64, 64), 9, np.uint8)
    arr[:, :16, :16] = 0  # one chip all nodata
    arr[:, :4, 16:32] = 0  # one chip a quarter nodata
    path = make_raster(tmp_path / "nd.tif", arr, nodata=0)
    strict = run(tmp_path, "a", scenes=path, size=16)
    assert strict.skipped == {"nodata": 1, "too_much_nodata": 1, "unlabelled": 0, "under_labelled": 0}
    assert strict.chips == 14
    loose = run(tmp_path, "b", scenes=path, size=16, max_nodata=0.25)
    assert loose.chips == 15 and loose.skipped["too_much_nodata"] == 0
    row = next(r for r in read_csv(tmp_path / "b") if (r["row"], r["col"]) == ("0", "16"))
    with rasterio.open(tmp_path / "b" / row["path"]) as chip:
        assert chip.nodata == 0 and (chip.read_masks(1) == 0).sum() == 64
    assert loose.statistics is not None and loose.statistics.min == [9.0]


def test_masked_pixels_without_nodata_value_keep_an_internal_mask(tmp_path: Path) -> None:
    valid = np.ones((32, 32), bool)
    valid[:2, :16] = False
    path = make_raster(tmp_path / "m.tif", np.full((1, 32, 32), 5, np.uint8), mask=valid)
    result = run(tmp_path, scenes=path, size=16, max_nodata=0.5)
    assert result.chips == 4
    row = next(r for r in read_csv(tmp_path / "out") if (r["row"], r["col"]) == ("0", "0"))
    with rasterio.open(tmp_path / "out" / row["path"]) as chip:
        assert (chip.read_masks(1) == 0).sum() == 32


# --- segmentation -----------------------------------------------------------------------------


def test_segment_masks_match_the_rasterised_polygons(tmp_path: Path, scene_path: Path) -> None:
    tri = shapely.Polygon([(X0, Y0), (X0 + 64 * RES, Y0), (X0, Y0 - 64 * RES)])
    feats = [(tri, {"cls": "tri"}), (px_box(40, 40, 60, 60), {"cls": "sq"})]
    labels = write_vector(tmp_path / "seg.gpkg", feats)
    result = run(tmp_path, scenes=scene_path, labels=labels, size=16, task="segment", min_labelled=0.1)
    classes = result.classes
    assert classes == ["sq", "tri"]
    full = rasterize([(g, classes.index(p["cls"])) for g, p in feats], out_shape=(64, 64),
                     transform=UTM_TRANSFORM, fill=UNLABELLED, dtype="uint8")
    rows = read_csv(tmp_path / "out")
    assert rows and all(r["path"].startswith("images/") and r["mask"].startswith("masks/") for r in rows)
    for r in rows:
        row, col = int(r["row"]), int(r["col"])
        with rasterio.open(tmp_path / "out" / r["mask"]) as m:
            assert m.dtypes == ("uint8",) and m.nodata == UNLABELLED
            assert m.transform == rasterio.windows.transform(Window(col, row, 16, 16), UTM_TRANSFORM)
            np.testing.assert_array_equal(m.read(1), full[row: row + 16, col: col + 16])
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert info["task"] == "segment" and info["ignore_index"] == 255
    pixel_total = sum(sum(v.values()) for v in info["pixel_counts"].values())
    assert pixel_total == sum(
        int((full[int(r["row"]): int(r["row"]) + 16, int(r["col"]): int(r["col"]) + 16] != 255).sum())
        for r in rows)
    samples = load_samples(tmp_path / "out", split="train")
    assert samples.task == "segment" and all(s.mask is not None and s.mask.is_file() for s in samples.samples)


# --- other label sources ----------------------------------------------------------------------


def test_labels_in_another_crs_give_the_same_chips(tmp_path: Path, scene_path: Path, quad_labels: Path) -> None:
    geo = [(shapely.geometry.shape(transform_geom(UTM_CRS, "EPSG:4326", shapely.geometry.mapping(g))), p)
           for g, p in QUADRANTS]
    geo_labels = write_vector(tmp_path / "geo.gpkg", geo, crs="EPSG:4326")
    events: list[ProgressEvent] = []
    a = run(tmp_path, "a", scenes=scene_path, labels=quad_labels, size=16)
    b = tile(TileConfig(scenes=scene_path, output=tmp_path / "b", labels=geo_labels, size=16, workers=0),
             progress=events.append)
    assert any(e.kind == "message" and "reprojected" in e.message for e in events)
    assert a.counts == b.counts
    assert read_csv(tmp_path / "a") == read_csv(tmp_path / "b")


def test_label_raster_on_another_grid(tmp_path: Path, scene_path: Path) -> None:
    fine = np.zeros((128, 128), np.uint8)  # 5 m pixels: left half class 1, right half class 2
    fine[:, :64], fine[:, 64:] = 1, 2
    t = Affine(5.0, 0.0, X0, 0.0, -5.0, Y0)
    lab = make_raster(tmp_path / "fine.tif", fine, transform=t, nodata=0)
    result = run(tmp_path, scenes=scene_path, labels=lab, size=16, classes=["none", "left", "right"])
    assert totals(result) == {"left": 8, "right": 8}
    for r in read_csv(tmp_path / "out"):
        assert r["label"] == ("left" if int(r["col"]) < 32 else "right")


def test_numeric_field_with_a_classes_file(tmp_path: Path, scene_path: Path) -> None:
    feats = [(px_box(0, 0, 32, 32), {"code": 1}), (px_box(32, 32, 64, 64), {"code": 2})]
    labels = write_vector(tmp_path / "codes.gpkg", feats)
    names = tmp_path / "classes.txt"
    names.write_text("background\nwater\ncrop\n")
    result = run(tmp_path, "a", scenes=scene_path, labels=labels, size=16, classes=names)
    assert result.classes == ["background", "water", "crop"] and totals(result) == {"water": 4, "crop": 4}
    info = json.loads((tmp_path / "a" / "dataset.json").read_text())
    assert info["class_ids"] == {"background": 0, "water": 1, "crop": 2}
    plain = run(tmp_path, "b", scenes=scene_path, labels=labels, size=16)
    assert plain.classes == ["1", "2"]


# --- split ------------------------------------------------------------------------------------


def test_split_is_reproducible_and_block_consistent(tmp_path: Path) -> None:
    path = make_raster(tmp_path / "big.tif", scene_array(128, 128, 1))
    a = run(tmp_path, "a", scenes=path, size=8, block_size=4, seed=1)
    b = run(tmp_path, "b", scenes=path, size=8, block_size=4, seed=1)
    run(tmp_path, "c", scenes=path, size=8, block_size=4, seed=2)
    rows_a, rows_c = read_csv(tmp_path / "a"), read_csv(tmp_path / "c")
    assert rows_a == read_csv(tmp_path / "b") and a.counts == b.counts
    assert [r["split"] for r in rows_a] != [r["split"] for r in rows_c]
    by_block: dict[tuple[int, int], set[str]] = {}
    for r in rows_a:
        by_block.setdefault((int(r["row"]) // 32, int(r["col"]) // 32), set()).add(r["split"])
        assert r["split"] == block_split(int(r["row"]), int(r["col"]), 32, 0.2, 1)
    assert len(by_block) == 16 and all(len(s) == 1 for s in by_block.values())
    n_val = a.split_total("val")
    assert 0 < n_val < 256 and n_val % 16 == 0  # whole blocks of 16 chips


def test_small_datasets_get_both_splits(tmp_path: Path) -> None:
    two_blocks = make_raster(tmp_path / "two.tif", scene_array(16, 32, 1))
    one_block = make_raster(tmp_path / "one.tif", scene_array(16, 16, 1))
    for seed in range(12):
        r = run(tmp_path, f"two{seed}", scenes=two_blocks, size=8, block_size=2, seed=seed)
        assert r.split_total("train") == 4 and r.split_total("val") == 4
        rows = read_csv(tmp_path / f"two{seed}")
        assert Counter(r["split"] for r in rows) == {"train": 4, "val": 4}
        r = run(tmp_path, f"one{seed}", scenes=one_block, size=8, block_size=2, seed=seed, val_fraction=0.5)
        assert r.split_total("train") == 4 and r.split_total("val") == 0
    none = run(tmp_path, "none", scenes=two_blocks, size=8, block_size=2, val_fraction=0.0)
    assert none.split_total("val") == 0


@pytest.mark.parametrize("dtype", ["uint16", "int16", "float32"])
def test_statistics_are_those_of_the_train_chips(tmp_path: Path, dtype: str) -> None:
    arr = scene_array(64, 64, 2).astype(dtype)
    if dtype != "uint16":
        arr = arr - 30000 if dtype == "int16" else arr / 7
    path = make_raster(tmp_path / "s.tif", arr)
    result = run(tmp_path, scenes=path, size=8, block_size=2, seed=3)
    rows = read_csv(tmp_path / "out")
    train = [r for r in rows if r["split"] == "train"]
    assert 0 < len(train) < len(rows)
    pix = np.concatenate([rasterio.open(tmp_path / "out" / r["path"]).read().reshape(2, -1) for r in train], axis=1)
    stats = result.statistics
    assert stats is not None and stats.pixel_count == pix.shape[1]
    np.testing.assert_allclose(stats.mean, pix.astype(np.float64).mean(axis=1))
    np.testing.assert_allclose(stats.std, pix.astype(np.float64).std(axis=1))
    assert stats.min == pix.min(axis=1).tolist() and stats.max == pix.max(axis=1).tolist()
    if dtype == "float32":
        assert stats.percentiles == {}
    else:
        np.testing.assert_allclose(stats.percentiles[98.0], np.percentile(pix, 98, axis=1))
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert info["statistics"]["mean"] == stats.mean


# --- output folder, resume --------------------------------------------------------------------


def test_existing_output_needs_overwrite_or_resume(tmp_path: Path, scene_path: Path, quad_labels: Path) -> None:
    kw = {"scenes": scene_path, "labels": quad_labels, "size": 16}
    run(tmp_path, **kw)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run(tmp_path, **kw)
    (tmp_path / "out" / "chips" / "stale").mkdir()
    again = run(tmp_path, overwrite=True, **kw)
    assert again.chips == 8 and not (tmp_path / "out" / "chips" / "stale").exists()
    with pytest.raises(ConfigError, match="size: 16 -> 32"):
        run(tmp_path, resume=True, **{**kw, "size": 32})
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    for flag in ("overwrite", "resume"):
        with pytest.raises(OutputExistsError):
            run(tmp_path, "foreign", **{flag: True}, **kw)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_resume_after_an_interruption(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quad_labels: Path) -> None:
    path = make_raster(tmp_path / "s.tif", scene_array(64, 64, 3))
    kw = {"scenes": path, "labels": quad_labels, "size": 8, "min_labelled": 0.5}
    reference = run(tmp_path, "ref", **kw)
    original = Worker.__call__
    calls = {"n": 0}

    def flaky(self: Any, window: Window) -> Any:
        calls["n"] += 1
        if calls["n"] == 40:
            raise KeyboardInterrupt
        return original(self, window)

    monkeypatch.setattr(Worker, "__call__", flaky)
    with pytest.raises(Interrupted, match="--resume"):
        run(tmp_path, **kw)
    monkeypatch.setattr(Worker, "__call__", original)
    out = tmp_path / "out"
    partial = sorted(out.glob("chips/*/*.tif"))
    assert partial and not (out / "chips.csv").exists()
    (out / "chips" / "water" / ".half.tif.123-4.tmp").write_bytes(b"half")
    resumed = run(tmp_path, resume=True, **kw)
    assert resumed.reused == len(partial) and resumed.written == reference.chips - len(partial)
    assert read_csv(out) == read_csv(tmp_path / "ref")
    assert resumed.counts == reference.counts and resumed.statistics == reference.statistics
    assert not list(out.rglob("*.tmp"))
    first = partial[0].relative_to(out)
    assert (out / first).read_bytes() == (tmp_path / "ref" / first).read_bytes()
    # Resuming a finished run rewrites nothing and gives the same index.
    again = run(tmp_path, resume=True, **kw)
    assert again.written == 0 and read_csv(out) == read_csv(tmp_path / "ref")


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "error", "pattern"),
    [
        ({"size": 128}, ConfigError, r"chip size 128 px is larger than the scene \(64x64 px\)"),
        ({"min_labelled": 1.5}, ConfigError, "min-labelled must be between 0 and 1"),
        ({"min_labelled": -0.1}, ConfigError, "min-labelled must be between 0 and 1"),
        ({"stride": 32}, ConfigError, "stride"),
        ({"label_field": "klass"}, LabelError, "no field 'klass'.*fields are: cls"),
        ({"labels": None, "task": "segment"}, ConfigError, "needs --labels"),
    ],
)
def test_bad_input_errors(tmp_path: Path, scene_path: Path, quad_labels: Path, changes: dict[str, Any],
                          error: type[Exception], pattern: str) -> None:
    kw = {"scenes": scene_path, "labels": quad_labels, "size": 16, **changes}
    with pytest.raises(error, match=pattern):
        run(tmp_path, **kw)
    assert not (tmp_path / "out").exists()  # nothing written for bad input


def test_label_errors_name_the_problem(tmp_path: Path, scene_path: Path) -> None:
    far = write_vector(tmp_path / "far.gpkg", [(px_box(500, 500, 510, 510), {"cls": "a"})])
    with pytest.raises(LabelError) as info:
        run(tmp_path, scenes=scene_path, labels=far)
    msg = str(info.value)
    assert "do not overlap" in msg and "(305000, 5794900, 305100, 5795000)" in msg
    assert "(300000, 5799360, 300640, 5800000)" in msg and "\n" not in msg
    empty = write_vector(tmp_path / "empty.gpkg", [(px_box(0, 0, 8, 8), {"cls": ""})])
    with pytest.raises(LabelError, match="no usable values"):
        run(tmp_path, scenes=scene_path, labels=empty)


# --- outputs ----------------------------------------------------------------------------------


def test_dataset_json_index_and_load_samples(tmp_path: Path, scene_path: Path, quad_labels: Path) -> None:
    result = run(tmp_path, scenes=scene_path, labels=quad_labels, size=16, bands=[3, 1])
    out = tmp_path / "out"
    info = json.loads((out / "dataset.json").read_text())
    assert info["format"] == "geoclass-chips" and info["version"] == 1 and info["task"] == "classify"
    assert info["classes"] == ["crop", "water"] and info["class_ids"] == {"crop": 0, "water": 1}
    assert len(info["colors"]) == 2 and all(len(c) == 3 for c in info["colors"])
    assert info["chip_size"] == 16 and info["bands"] == [3, 1] and len(info["band_names"]) == 2
    assert info["dtype"] == "uint16" and info["crs"] == "EPSG:32633" and info["nodata"] is None
    assert set(info["statistics"]) >= {"mean", "std", "min", "max"} and len(info["statistics"]["mean"]) == 2
    assert info["counts"] == result.counts and info["skipped"]["unlabelled"] == 8
    assert info["created_by"]["config"]["size"] == 16
    with rasterio.open(out / read_csv(out)[0]["path"]) as chip:
        assert chip.count == 2
    train = load_samples(out, split="train")
    val = load_samples(out, split="val") if result.split_total("val") else None
    assert train.classes == ["crop", "water"] and len(train.samples) == result.split_total("train")
    assert all(s.path.is_file() and s.label in train.classes for s in train.samples)
    assert val is None or len(val.samples) == result.split_total("val")
    with fiona.open(out / "index.gpkg") as index:
        feats = list(index)
        assert index.crs.to_epsg() == 32633 and len(feats) == 8
        for f in feats:
            p = f.properties
            left, bottom, right, top = shapely.geometry.shape(f.geometry).bounds
            assert (left, top) == (X0 + p["col"] * RES, Y0 - p["row"] * RES)
            assert (right - left, top - bottom) == (160.0, 160.0)
            assert p["label"] in ("crop", "water") and p["split"] in ("train", "val")


def test_unlabelled_chips(tmp_path: Path, scene_path: Path) -> None:
    result = run(tmp_path, scenes=scene_path, size=32, stride=16)
    assert result.windows == 9 and result.chips == 9 and result.classes == []
    rows = read_csv(tmp_path / "out")
    assert all(r["label"] == "" and r["path"].count("/") == 1 for r in rows)


def test_stacked_band_files_with_awkward_names(tmp_path: Path) -> None:
    arr = scene_array(32, 32, 3)
    paths = [make_raster(tmp_path / f"2018-10-13, S2 L1C, B0{i + 2}.tiff", arr[i]) for i in range(3)]
    result = run(tmp_path, scenes=paths, size=16, bands=[3, 1])
    assert result.chips == 4
    row = read_csv(tmp_path / "out")[0]
    assert row["path"].startswith("chips/2018-10-13_S2_L1C_") and "B02" in row["scene"]
    with rasterio.open(tmp_path / "out" / row["path"]) as chip:
        np.testing.assert_array_equal(chip.read(), arr[[2, 0], :16, :16])


def test_threads_give_the_same_output(tmp_path: Path, quad_labels: Path) -> None:
    path = make_raster(tmp_path / "s.tif", scene_array(64, 64, 3))
    kw = {"scenes": path, "labels": quad_labels, "size": 8, "task": "segment"}
    a = run(tmp_path, "a", workers=0, **kw)
    b = run(tmp_path, "b", workers=3, **kw)
    assert a.counts == b.counts and read_csv(tmp_path / "a") == read_csv(tmp_path / "b")
    for r in read_csv(tmp_path / "a"):
        assert (tmp_path / "a" / r["path"]).read_bytes() == (tmp_path / "b" / r["path"]).read_bytes()


def test_only_chip_sized_windows_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_raster(tmp_path / "s.tif", scene_array(64, 96, 1))
    seen: list[tuple[int, int]] = []
    original = Scene.read_masked

    def spy(self: Scene, window: Window, **kw: Any) -> Any:
        seen.append((int(window.width), int(window.height)))
        return original(self, window, **kw)

    monkeypatch.setattr(Scene, "read_masked", spy)
    run(tmp_path, scenes=path, size=16)
    assert len(seen) == 24 and set(seen) == {(16, 16)}


def test_progress_reports_one_task(tmp_path: Path, scene_path: Path) -> None:
    events: list[ProgressEvent] = []
    tile(TileConfig(scenes=scene_path, output=tmp_path / "o", size=8, workers=0), progress=events.append)
    tasks = [e for e in events if e.task == "tile"]
    assert tasks[0].kind == "start" and tasks[0].total == 64 and tasks[-1].kind == "end"
    assert sum(e.step for e in tasks if e.kind == "advance") == 64


@pytest.mark.parametrize(
    ("dtype", "nodata", "count"),
    [("uint8", 0, 3), ("uint16", None, 4), ("int16", -9999, 1), ("float32", float("nan"), 2)],
)
def test_fast_chip_writer_matches_gdal(tmp_path: Path, dtype: str, nodata: float | None, count: int) -> None:
    t = Affine(8.98e-05, 0.0, -76.7, 0.0, -7.39e-05, 34.73)
    writer = ChipWriter(size=32, count=count, dtype=dtype, crs=rasterio.crs.CRS.from_epsg(4326),
                        transform=t, nodata=nodata, descriptions=[f"b{i}" for i in range(count)])
    assert writer.fast is not None
    data = (np.arange(count * 32 * 32) % 200).reshape(count, 32, 32).astype(dtype)
    ct = rasterio.windows.transform(Window(96, 64, 32, 32), t)
    writer.write(tmp_path / "c.tif", data, ct)
    with rasterio.open(tmp_path / "c.tif") as chip:
        assert chip.transform == ct and chip.crs.to_epsg() == 4326 and chip.descriptions[0] == "b0"
        np.testing.assert_array_equal(chip.read(), data)
    assert list(tmp_path.iterdir()) == [tmp_path / "c.tif"]  # no temp file left


def test_rotated_grids_fall_back_to_gdal(tmp_path: Path) -> None:
    t = Affine(10.0, 1.0, 300000.0, 1.0, -10.0, 5800000.0)
    writer = ChipWriter(size=16, count=1, dtype="uint8", crs=rasterio.crs.CRS.from_epsg(32633),
                        transform=t, nodata=None)
    assert writer.fast is None
    writer.write(tmp_path / "r.tif", np.ones((1, 16, 16), np.uint8), t)
    with rasterio.open(tmp_path / "r.tif") as chip:
        assert chip.transform.almost_equals(t)


def test_a_full_disk_is_one_line_naming_the_chip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 scene_path: Path) -> None:
    original, calls = FastTiff.encode, []

    def full(self: Any, data: np.ndarray, transform: Affine) -> bytes:
        calls.append(1)
        if len(calls) == 1:  # the writer's self-test
            return original(self, data, transform)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(FastTiff, "encode", full)
    with pytest.raises(DiskFullError) as info:
        tile(TileConfig(scenes=scene_path, output=tmp_path / "o", size=16, workers=0))
    message = str(info.value)
    assert "\n" not in message and ".tif: the disk is full" in message and "--resume" in message
    assert not list((tmp_path / "o").rglob("*.tmp"))


# --- CLI --------------------------------------------------------------------------------------


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "120")
    return CliRunner()


def test_cli_tiles_a_small_scene(tmp_path: Path, runner: CliRunner, scene_path: Path, quad_labels: Path) -> None:
    out = tmp_path / "chips"
    args = ["tile", str(scene_path), "-o", str(out), "--labels", str(quad_labels), "--label-field", "cls",
            "--size", "16"]
    result = runner.invoke(app, args, prog_name="geoclass")
    assert result.exit_code == 0, result.output
    assert "8 chips" in result.stdout and "water" in result.stdout and "8 unlabelled" in result.stdout
    assert load_samples(out, split="train").classes == ["crop", "water"]

    again = runner.invoke(app, args, prog_name="geoclass")
    assert again.exit_code == 1
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--overwrite" in lines[0]

    js = runner.invoke(app, [*args, "--overwrite", "--json", "--seed", "3"], prog_name="geoclass")
    assert js.exit_code == 0, js.output
    data = json.loads(js.stdout)
    assert data["chips"] == 8 and data["classes"] == ["crop", "water"] and data["statistics"]["mean"]


@pytest.mark.parametrize(
    ("extra", "code", "text"),
    [
        (["--overwrite", "--resume"], 2, "use only one"),
        (["--min-labelled", "1.5"], 2, "--min-labelled"),
        (["--size", "128"], 2, "larger than the scene"),
        (["--label-field", "nope"], 1, "fields are: cls"),
    ],
)
def test_cli_bad_input(tmp_path: Path, runner: CliRunner, scene_path: Path, quad_labels: Path,
                       extra: list[str], code: int, text: str) -> None:
    args = ["tile", str(scene_path), "-o", str(tmp_path / "c"), "--labels", str(quad_labels), *extra]
    result = runner.invoke(app, args, prog_name="geoclass")
    assert result.exit_code == code and text in result.stderr


# --- real data --------------------------------------------------------------------------------

RCR = SHARED_DATA / "scenes" / "sentinel2-rcr"
L8 = SHARED_DATA / "scenes" / "landsat8-224077-224078"


@pytest.mark.realdata
@needs_shared_data
def test_real_sentinel2_rcr_polygons(tmp_path: Path) -> None:
    bands = sorted((RCR / "sentinel-2").glob("*B0[432].tiff"))
    result = tile(TileConfig(scenes=bands, output=tmp_path / "rcr", labels=RCR / "rcr" / "rcr_landcover.shp",
                             label_field="Classname", size=16, task="segment", min_labelled=0.05))
    assert result.classes == ["Emergent Wetland", "Forested Wetland", "Herbaceous", "Sand",
                              "Subtidal Haline", "WetSand"]
    assert result.chips > 10 and result.windows == 165 * 138
    info = json.loads((tmp_path / "rcr" / "dataset.json").read_text())
    assert info["crs"] == "EPSG:4326" and info["dtype"] == "uint8" and len(info["band_names"]) == 3
    assert sum(info["pixel_counts"]["train"].values()) > 0
    samples = load_samples(tmp_path / "rcr", split="train")
    assert samples.classes == result.classes and samples.samples


@pytest.mark.realdata
@needs_shared_data
def test_real_landsat8_polygons(tmp_path: Path) -> None:
    scene = L8 / "LC08_L1TP_224078_20200518_20200518_01_RT.TIF"
    labels = L8 / "LC08_L1TP_224078_20200518_20200518_01_RT_polygons.gpkg"
    result = tile(TileConfig(scenes=scene, output=tmp_path / "l8", labels=labels, size=8, nodata=0))
    # The layer's only field, "name", is used without --label-field.
    assert result.classes == ["crop", "developed", "tree", "water"]
    assert result.chips >= 8 and set(totals(result)) >= {"crop", "water"}
    samples = load_samples(tmp_path / "l8", split="train")
    with rasterio.open(samples.samples[0].path) as chip:
        assert chip.crs.to_epsg() == 32621 and chip.count == 3 and chip.dtypes[0] == "uint16"
