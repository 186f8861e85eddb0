"""Training per-pixel models straight from a scene and labels, and predicting with them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import shapely.geometry as sg
import torch
from affine import Affine
from typer.testing import CliRunner

from geoclass.cli.app import app
from geoclass.data.pixel_samples import split_blocks
from geoclass.engine.predict import PredictConfig, predict
from geoclass.engine.train.pixels import PixelTrainConfig, train_pixels
from geoclass.errors import ConfigError, LabelError
from geoclass.models.model_file import load_model_file, read_model_meta
from geoclass.models.pixel import PixelMLP
from tests.conftest import UTM_TRANSFORM, make_raster
from tests.io.test_labels import write_vector

# Spectra (blue, green, red, nir) of three classes, in reflectance x 10000.
SPECTRA = {"water": (900, 800, 500, 300), "forest": (400, 700, 400, 3500), "field": (900, 1100, 1300, 2200)}
NAMES = list(SPECTRA)
X0, Y0 = UTM_TRANSFORM.c, UTM_TRANSFORM.f  # the scene's top-left corner (10 m pixels)


def _scene(path: Path, nodata_rows: slice | None = None) -> Path:
    """120 x 150 px, columns 0-49 water, 50-99 forest, 100-149 field, with noise."""
    rng = np.random.default_rng(0)
    img = np.zeros((4, 120, 150), np.float64)
    for k, spectrum in enumerate(SPECTRA.values()):
        img[:, :, 50 * k : 50 * (k + 1)] = np.asarray(spectrum, np.float64)[:, None, None]
    img += rng.normal(0, 120, img.shape)
    img = np.clip(img, 1, 10000).astype(np.uint16)
    if nodata_rows is not None:
        img[:, nodata_rows] = 0
    return make_raster(path, img, nodata=0, descriptions=["blue", "green", "red", "nir"])


def _box(row0: int, col0: int, rows: int, cols: int) -> sg.Polygon:
    """A polygon over whole pixels [row0, row0 + rows) x [col0, col0 + cols)."""
    return sg.box(X0 + 10 * col0, Y0 - 10 * (row0 + rows), X0 + 10 * (col0 + cols), Y0 - 10 * row0)


def _polygons(path: Path, rows: tuple[int, ...] = (5, 45, 85)) -> Path:
    features = [(_box(r, 50 * k + 10, 20, 25), {"cls": name}) for k, name in enumerate(NAMES) for r in rows]
    return write_vector(path, features)


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["-q", *args], env={"COLUMNS": "200", "NO_COLOR": "1"})


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    return _scene(tmp_path / "scene.tif")


@pytest.fixture
def polygons(tmp_path: Path) -> Path:
    return _polygons(tmp_path / "labels.gpkg")


def test_polygons_train_a_model_that_predict_runs_per_pixel(tmp_path: Path, scene: Path, polygons: Path) -> None:
    run = tmp_path / "run"
    result = _cli("train", str(scene), "--labels", str(polygons), "--label-field", "cls", "-o", str(run),
                  "--block-size", "16", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["metrics"]["balanced_accuracy"] > 0.95 and doc["val_pixels"] > 0
    assert "whole features" in doc["metrics"]["validation"]
    meta = read_model_meta(run / "model.safetensors")
    assert meta.architecture == "pixel-mlp" and meta.classes == ["field", "forest", "water"]
    assert meta.band_names == ["blue", "green", "red", "nir"]
    assert meta.arch_kwargs["indices"] == ["ndvi", "ndwi"] and meta.arch_kwargs["texture"] == 1
    assert meta.training_data["labels_sha256"] and meta.training_data["labelled_pixels"]["water"] == 1500

    out = tmp_path / "map.tif"
    res = predict(PredictConfig(scenes=scene, output=out, model=run, workers=0))
    assert res.strategy == "pixel"
    classes = _read(out)
    for k, name in enumerate(NAMES):
        region = classes[:, 50 * k + 2 : 50 * (k + 1) - 2]
        assert (region == meta.classes.index(name)).mean() > 0.97, name
    with rasterio.open(out) as dst, rasterio.open(scene) as src:
        assert dst.transform == src.transform and dst.crs == src.crs


def test_tiled_prediction_equals_the_whole_scene(tmp_path: Path, scene: Path, polygons: Path) -> None:
    run = tmp_path / "run"
    train_pixels(PixelTrainConfig(scenes=[str(scene)], labels=str(polygons), out_dir=str(run),
                                  label_field="cls", texture=2, block_size=16, epochs=5))
    outs = {}
    for window in (512, 37):  # one window, and 37 px windows overlapping by twice the radius
        outs[window] = tmp_path / f"map{window}.tif"
        probs = tmp_path / f"p{window}.tif"
        res = predict(PredictConfig(scenes=scene, output=outs[window], model=run, window=window,
                                    probabilities=probs, workers=0))
        assert res.strategy == "pixel" and res.window == window
    assert res.windows > 10
    assert np.array_equal(_read(outs[512]), _read(outs[37]))
    with rasterio.open(tmp_path / "p512.tif") as a, rasterio.open(tmp_path / "p37.tif") as b:
        assert np.abs(a.read().astype(int) - b.read().astype(int)).max() <= 1


def test_points_with_a_buffer_and_grouped_classes(tmp_path: Path, scene: Path) -> None:
    points = []
    for k, name in enumerate(NAMES):
        for i in range(6):
            row, col = 10 + 18 * i, 50 * k + 10 + 5 * i
            points.append((sg.Point(X0 + 10 * col + 5, Y0 - 10 * row - 5), {"kind": f"{name}-{i % 2}"}))
    labels = write_vector(tmp_path / "points.gpkg", points, geometry="Point")
    groups = tmp_path / "groups.json"
    groups.write_text(json.dumps({name: [f"{name}-0", f"{name}-1"] for name in NAMES}))
    result = train_pixels(PixelTrainConfig(scenes=[str(scene)], labels=str(labels), out_dir=str(tmp_path / "run"),
                                           label_field="kind", classes=str(groups), point_buffer=1,
                                           block_size=16, epochs=10))
    meta = read_model_meta(result.model_path)
    assert meta.classes == NAMES
    assert meta.training_data["labelled_pixels"] == {name: 6 * 9 for name in NAMES}  # 3 x 3 px per point


def test_a_class_raster_on_another_grid(tmp_path: Path, scene: Path) -> None:
    # 20 m class raster, half a pixel off the scene grid; 0 = unlabelled.
    classes = np.zeros((60, 75), np.uint8)
    for k in range(3):
        classes[5:55:3, 25 * k + 5 : 25 * k + 20] = k + 1
    transform = Affine(20.0, 0, X0 + 10, 0, -20.0, Y0 - 10)
    raster = make_raster(tmp_path / "classes.tif", classes, transform=transform, nodata=0)
    result = train_pixels(PixelTrainConfig(scenes=[str(scene)], labels=str(raster), out_dir=str(tmp_path / "run"),
                                           block_size=16, epochs=10))
    assert result.metrics["balanced_accuracy"] > 0.9
    assert read_model_meta(result.model_path).classes == ["1", "2", "3"]


def test_validation_takes_whole_blocks() -> None:
    rng = np.random.default_rng(1)
    blocks = rng.integers(0, 40, 5000)
    labels = (blocks % 4 == 0).astype(np.int64) + (blocks % 7 == 0)  # three classes by block
    val = split_blocks(labels, blocks, 0.2, seed=3)
    assert not set(blocks[val]) & set(blocks[~val])  # no block on both sides
    for k in range(3):
        share = val[labels == k].mean()
        assert 0.1 < share < 0.6, (k, share)
    lonely = np.zeros(100, np.int64)
    assert not split_blocks(np.zeros(100, np.int64), lonely, 0.2).any()  # one block: kept for training


def test_val_bounds_hold_out_an_area(tmp_path: Path, scene: Path, polygons: Path) -> None:
    # The bottom third of the scene validates; the model never trains on it.
    bounds = (X0, Y0 - 1200, X0 + 1500, Y0 - 800)
    result = train_pixels(PixelTrainConfig(scenes=[str(scene)], labels=str(polygons), out_dir=str(tmp_path / "r"),
                                           label_field="cls", val_bounds=bounds, epochs=10))
    assert result.val_pixels == 3 * 20 * 25 and result.train_pixels == 2 * 3 * 20 * 25
    assert "inside" in result.metrics["validation"]


def test_model_loads_without_unpickling(tmp_path: Path, scene: Path, polygons: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    train_pixels(PixelTrainConfig(scenes=[str(scene)], labels=str(polygons), out_dir=str(run),
                                  label_field="cls", epochs=2))

    def no_pickle(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a model file must never be unpickled")

    monkeypatch.setattr(torch, "load", no_pickle)
    monkeypatch.setattr("pickle.load", no_pickle)
    monkeypatch.setattr("pickle.loads", no_pickle)
    model, meta = load_model_file(run / "model.safetensors")
    assert meta.architecture == "pixel-mlp" and model.per_pixel
    header = (run / "model.safetensors").read_bytes()[:8]
    assert int.from_bytes(header, "little") < 1_000_000  # a safetensors JSON header, not a pickle


# --- bad input ----------------------------------------------------------------------------------


def test_labels_that_miss_the_scene(tmp_path: Path, scene: Path) -> None:
    far = write_vector(tmp_path / "far.gpkg", [(sg.box(0, 0, 100, 100), {"cls": "water"}),
                                               (sg.box(200, 0, 300, 100), {"cls": "forest"})])
    result = _cli("train", str(scene), "--labels", str(far), "-o", str(tmp_path / "run"))
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "do not overlap the scene" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_class_whose_labels_all_fall_on_nodata_is_dropped_with_a_warning(tmp_path: Path) -> None:
    scene = _scene(tmp_path / "holes.tif", nodata_rows=slice(0, 30))
    features = [(_box(r, 50 * k + 10, 20, 25), {"cls": name}) for k, name in enumerate(NAMES) for r in (45, 85)]
    features.append((_box(5, 110, 20, 20), {"cls": "cloud"}))  # only on nodata rows
    labels = write_vector(tmp_path / "l.gpkg", features)
    result = _cli("train", str(scene), "--labels", str(labels), "--label-field", "cls",
                  "-o", str(tmp_path / "run"), "--epochs", "3", "--block-size", "16")
    assert result.exit_code == 0, result.output
    assert "class 'cloud': all 400 labelled pixels fall on nodata; trained without it" in result.stderr


def test_labels_only_on_nodata_are_an_error(tmp_path: Path) -> None:
    scene = _scene(tmp_path / "holes.tif", nodata_rows=slice(0, 40))
    labels = write_vector(tmp_path / "l.gpkg", [(_box(5, 10, 20, 20), {"cls": "water"}),
                                                (_box(5, 60, 20, 20), {"cls": "forest"})])
    with pytest.raises(LabelError, match="all 800 labelled pixels fall on nodata; nothing to train on"):
        train_pixels(PixelTrainConfig(scenes=[str(scene)], labels=str(labels), out_dir=str(tmp_path / "r"),
                                      label_field="cls"))


def test_a_missing_label_field_is_named(tmp_path: Path, scene: Path, polygons: Path) -> None:
    result = _cli("train", str(scene), "--labels", str(polygons), "--label-field", "klass",
                  "-o", str(tmp_path / "run"))
    assert result.exit_code == 1 and "no field 'klass'" in result.stderr and "cls" in result.stderr


def test_predict_refuses_a_scene_with_other_bands(tmp_path: Path, scene: Path, polygons: Path) -> None:
    run = tmp_path / "run"
    train_pixels(PixelTrainConfig(scenes=[str(scene)], labels=str(polygons), out_dir=str(run),
                                  label_field="cls", epochs=2))
    three = make_raster(tmp_path / "rgb.tif", np.ones((3, 40, 40), np.uint16))
    result = _cli("predict", str(three), "-o", str(tmp_path / "m.tif"), "-m", str(run))
    assert result.exit_code == 1 and "has 3 bands, the model expects 4 (blue, green, red, nir)" in result.stderr
    assert not (tmp_path / "m.tif").exists()


def test_an_existing_run_is_not_replaced_without_overwrite(tmp_path: Path, scene: Path, polygons: Path) -> None:
    args = ("train", str(scene), "--labels", str(polygons), "--label-field", "cls", "-o", str(tmp_path / "run"),
            "--epochs", "2")
    assert _cli(*args).exit_code == 0
    again = _cli(*args)
    assert again.exit_code == 1 and "pass --overwrite" in again.stderr
    assert _cli(*args, "--overwrite").exit_code == 0


def test_a_stack_mixing_data_types_and_nodata_values(tmp_path: Path) -> None:
    """float32 with -99999 beside int16 with -32768, as in older products: both fills are nodata."""
    rng = np.random.default_rng(2)
    red = np.where(np.arange(150) < 75, 0.05, 0.30)[None, :].repeat(120, 0) + rng.normal(0, 0.01, (120, 150))
    nir = np.where(np.arange(150) < 75, 3000, 1500)[None, :].repeat(120, 0) + rng.normal(0, 100, (120, 150))
    red, nir = red.astype(np.float32), nir.astype(np.int16)
    red[:20] = -99999
    nir[:, :10] = -32768
    stack = [make_raster(tmp_path / "red.tif", red, nodata=-99999),
             make_raster(tmp_path / "nir.tif", nir, nodata=-32768)]
    labels = write_vector(tmp_path / "l.gpkg", [(_box(0, 0, 120, 60), {"cls": "a"}), (_box(0, 90, 120, 60), {"cls": "b"})])
    result = train_pixels(PixelTrainConfig(scenes=[str(p) for p in stack], labels=str(labels), out_dir=str(tmp_path / "r"),
                                           label_field="cls", block_size=16, epochs=10, band_names=["red", "nir"]))
    meta = read_model_meta(result.model_path)
    assert meta.training_data["labelled_pixels"] == {"a": 100 * 50, "b": 100 * 60}  # fills never sampled
    assert meta.arch_kwargs["indices"] == ["ndvi"] and result.metrics["balanced_accuracy"] > 0.95


@pytest.mark.parametrize("arch", ["pixel-gbt", "pixel-rf"])
def test_trees_train_predict_and_load_without_pickle(
    tmp_path: Path, scene: Path, polygons: Path, monkeypatch: pytest.MonkeyPatch, arch: str
) -> None:
    run = tmp_path / "trees"
    result = _cli("train", str(scene), "--labels", str(polygons), "--label-field", "cls", "-o", str(run),
                  "--model", arch, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metrics"]["balanced_accuracy"] > 0.95
    meta = read_model_meta(run / "model.safetensors")
    assert meta.architecture == arch and meta.arch_kwargs["booster"].startswith("tree\n")

    def no_pickle(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a model file must never be unpickled")

    monkeypatch.setattr(torch, "load", no_pickle)
    monkeypatch.setattr("pickle.loads", no_pickle)
    out = tmp_path / "map.tif"
    res = predict(PredictConfig(scenes=scene, output=out, model=run, workers=0, window=64))
    assert res.strategy == "pixel"
    classes = _read(out)
    for k, name in enumerate(NAMES):
        assert (classes[:, 50 * k + 2 : 50 * (k + 1) - 2] == meta.classes.index(name)).mean() > 0.97, name


def test_eval_and_predict_take_the_run_folder(tmp_path: Path, scene: Path, polygons: Path) -> None:
    from geoclass.data.tiling import TileConfig, tile
    from geoclass.models.model_file import resolve_model_path

    run = tmp_path / "run"
    train_pixels(PixelTrainConfig(scenes=[str(scene)], labels=str(polygons), out_dir=str(run),
                                  label_field="cls", epochs=5))
    assert resolve_model_path(run) == run / "model.safetensors"
    chips = tmp_path / "chips"
    tile(TileConfig(scenes=scene, output=chips, labels=polygons, label_field="cls", task="segment",
                    size=16, sample="labels", per_feature=2, min_labelled=0.0))
    result = _cli("eval", str(chips), "-m", str(run), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["pixel_accuracy"] > 0.9


def test_independent_validation_labels(tmp_path: Path, scene: Path) -> None:
    train_labels = _polygons(tmp_path / "train.gpkg", rows=(5, 45))
    val_labels = _polygons(tmp_path / "val.gpkg", rows=(90,))
    result = train_pixels(PixelTrainConfig(scenes=[str(scene)], labels=str(train_labels), out_dir=str(tmp_path / "r"),
                                           label_field="cls", val_labels=str(val_labels), epochs=10))
    assert result.train_pixels == 2 * 3 * 20 * 25 and result.val_pixels == 3 * 20 * 25
    assert result.metrics["validation"].startswith("independent labels") and result.metrics["balanced_accuracy"] > 0.95


def test_a_run_folder_never_replaces_an_input(tmp_path: Path, scene: Path, polygons: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").symlink_to(polygons)  # the labels, reached through the run folder
    with pytest.raises(ConfigError, match="would replace"):
        train_pixels(PixelTrainConfig(scenes=[str(scene)], labels=str(polygons), out_dir=str(run),
                                      label_field="cls", epochs=2))
    assert polygons.read_bytes()[:16].startswith(b"SQLite format 3")


def test_validation_holds_out_whole_polygons(tmp_path: Path, scene: Path, polygons: Path) -> None:
    from geoclass.data.pixel_samples import sample_pixels, window_features
    from geoclass.io.labels import open_labels
    from geoclass.io.reader import open_scene

    with open_scene(scene) as opened:
        labels = open_labels(polygons, opened, field="cls")
        model = PixelMLP(3, 4).eval()
        samples = sample_pixels(opened, labels, window_features(model, lambda d: d.astype(np.float32)),
                                classes=3, halo=0, max_per_class=10_000, block_size=16, by_feature=True)
    # Nine polygons of 20 x 25 px: every pixel's group is its polygon.
    assert sorted(np.unique(samples.blocks, return_counts=True)[1]) == [500] * 9
    val = split_blocks(samples.labels, samples.blocks, 0.3, seed=0)
    for feature in np.unique(samples.blocks):
        assert len(set(val[samples.blocks == feature])) == 1  # a polygon is never split
    for k in range(3):
        assert 0 < val[samples.labels == k].sum() < 1500


def test_one_feature_per_class_cannot_be_validated_and_says_so(tmp_path: Path, scene: Path) -> None:
    labels = write_vector(tmp_path / "l.gpkg", [(_box(10, 50 * k + 10, 30, 25), {"cls": n}) for k, n in enumerate(NAMES)])
    events: list[Any] = []
    result = train_pixels(PixelTrainConfig(scenes=[str(scene)], labels=str(labels), out_dir=str(tmp_path / "r"),
                                           label_field="cls", epochs=3), events.append)
    warnings = [e.message for e in events if e.level == "warning"]
    assert any("every class lies in a single feature" in w and "--val-labels" in w for w in warnings)
    assert result.metrics["validation"].startswith("the training pixels")


def test_several_labelled_scenes_train_one_model(tmp_path: Path, scene: Path, polygons: Path) -> None:
    # A second scene 10 km east, with its own labels (only two of the classes, one of them
    # spelled as the first scene spells it): the classes are matched by name.
    second = tmp_path / "second"
    second.mkdir()
    east = Affine(10.0, 0.0, X0 + 10_000, 0.0, -10.0, Y0)
    rng = np.random.default_rng(5)
    img = np.zeros((4, 60, 100))
    img[:, :, :50] = np.asarray(SPECTRA["water"], float)[:, None, None]
    img[:, :, 50:] = np.asarray(SPECTRA["field"], float)[:, None, None]
    img = np.clip(img + rng.normal(0, 120, img.shape), 1, 10000).astype(np.uint16)
    make_raster(second / "b.tif", img, transform=east, nodata=0, descriptions=["blue", "green", "red", "nir"])
    boxes = [(sg.box(east.c + 100, Y0 - 500, east.c + 400, Y0 - 100), {"cls": "water"}),
             (sg.box(east.c + 600, Y0 - 500, east.c + 900, Y0 - 100), {"cls": "field"})]
    write_vector(second / "b.gpkg", boxes)
    listing = tmp_path / "more.json"
    listing.write_text(json.dumps([{"scenes": "second/b.tif", "labels": "second/b.gpkg"}]))
    run = tmp_path / "run"
    result = _cli("train", str(scene), "--labels", str(polygons), "--label-field", "cls", "-o", str(run),
                  "--more-scenes", str(listing), "--epochs", "10", "--json")
    assert result.exit_code == 0, result.output
    meta = read_model_meta(run / "model.safetensors")
    assert meta.training_data["labelled_pixels"] == {"water": 1500 + 1200, "forest": 1500, "field": 1500 + 1200}
    assert meta.training_data["scenes"] == ["scene.tif", "b.tif"]

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"scenes": "x.tif"}))
    result = _cli("train", str(scene), "--labels", str(polygons), "--label-field", "cls", "-o", str(tmp_path / "r2"),
                  "--more-scenes", str(bad))
    assert result.exit_code == 2 and "expected a JSON list" in result.stderr
