"""train -> eval -> resume on tiny synthetic class-folder datasets, and the real EuroSAT folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from geoclass.cli.app import app
from geoclass.engine.evaluate import EvalConfig, evaluate
from geoclass.engine.train import TrainConfig, resume, train
from geoclass.errors import BandError, DatasetError, InputNotFoundError, Interrupted, OutputExistsError
from geoclass.models.model_file import read_model_meta
from geoclass.progress import ProgressEvent
from tests.conftest import SHARED_DATA, needs_shared_data

CLASSES = {"Forest": (30, 90, 40), "SeaLake": (20, 40, 120), "Residential": (180, 150, 140)}


def _write_chip(path: Path, colour: tuple[int, int, int], rng: np.random.Generator, size: int = 16,
                bands: int = 3) -> None:
    base = np.array(colour[:bands] + (90,) * max(0, bands - 3), dtype=np.float32)[:bands, None, None]
    pixels = np.clip(base + rng.normal(0, 12, (bands, size, size)), 0, 255).astype(np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=bands, dtype="uint8") as dst:
        dst.write(pixels)


def make_class_folders(root: Path, per_class: int = 10, bands: int = 3, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for name, colour in CLASSES.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            _write_chip(root / name / f"{name}_{i}.tif", colour, rng, bands=bands)
    return root


def _config(data: Path, out: Path, **changes: object) -> TrainConfig:
    base = dict(data=str(data), model="cnn", out_dir=str(out), epochs=2, batch_size=8, workers=0, lr=5e-3,
                val_fraction=0.2, warmup_epochs=0.0)
    base.update(changes)
    return TrainConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_class_folders(tmp_path_factory.mktemp("chips") / "data")


def test_train_writes_a_complete_run_and_eval_reads_it(folders: Path, tmp_path: Path) -> None:
    result = train(_config(folders, tmp_path / "run", epochs=3))
    run = tmp_path / "run"
    for name in ("config.json", "metrics.csv", "model.safetensors", "best.safetensors", "last.safetensors",
                 "curves.png", "checkpoints/last.ckpt", "checkpoints/epoch-003.safetensors"):
        assert (run / name).exists(), name
    assert not (run / "cache").exists()  # the decoded-chip cache goes when training ends
    with (run / "metrics.csv").open() as handle:
        assert [int(float(r["epoch"])) for r in csv.DictReader(handle)] == [1, 2, 3]
    meta = read_model_meta(result.model_path)
    assert meta.classes == sorted(CLASSES) and meta.in_chans == 3 and meta.chip_size == 16
    assert meta.training_data["train_chips"] == 24 and len(meta.training_data["fingerprint"]) == 16
    # The colours are separable: a few epochs must learn them.
    report = evaluate(EvalConfig(data=str(folders), model=str(result.model_path), workers=0,
                                 report=str(tmp_path / "r.json"), plots=str(tmp_path / "plots")))
    assert report["accuracy"] > 0.9
    assert set(report["per_class"]) == set(CLASSES)
    assert json.loads((tmp_path / "r.json").read_text())["samples"] == 30
    assert (tmp_path / "plots" / "confusion_matrix.png").stat().st_size > 0
    assert (tmp_path / "plots" / "roc_curves.png").stat().st_size > 0


def test_resume_continues_exactly(folders: Path, tmp_path: Path) -> None:
    train(_config(folders, tmp_path / "straight", epochs=3))
    interrupted_in = {"epoch": 0}

    def stop_in_epoch_three(event: ProgressEvent) -> None:
        if event.kind == "metrics":
            interrupted_in["epoch"] = int(event.data["epoch"])
        if event.kind == "advance" and event.task == "train" and interrupted_in["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted, match="--resume"):
        train(_config(folders, tmp_path / "split", epochs=3), progress=stop_in_epoch_three)
    assert len(list((tmp_path / "split" / "cache" / "train").glob("chips-*.npy"))) == 1  # kept for the resume
    resume(tmp_path / "split")
    straight = load_file(str(tmp_path / "straight" / "last.safetensors"))
    resumed = load_file(str(tmp_path / "split" / "last.safetensors"))
    for key, value in straight.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0, msg=key)


def test_ema_model_is_saved_and_resumes_exactly(folders: Path, tmp_path: Path) -> None:
    train(_config(folders, tmp_path / "straight", epochs=3, ema=0.99))
    stopped = {"done": False}

    def stop_in_epoch_two(event: ProgressEvent) -> None:
        if event.kind == "metrics":
            stopped["done"] = True
        if event.kind == "advance" and event.task == "train" and stopped["done"]:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        train(_config(folders, tmp_path / "split", epochs=3, ema=0.99), progress=stop_in_epoch_two)
    assert "ema" in torch.load(tmp_path / "split" / "checkpoints" / "last.ckpt", weights_only=False)
    resume(tmp_path / "split")
    straight = load_file(str(tmp_path / "straight" / "last.safetensors"))
    resumed = load_file(str(tmp_path / "split" / "last.safetensors"))
    raw = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=False)["model"]
    for key, value in straight.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0, msg=key)
    # What is saved is the average, not the last step's weights.
    assert any(not torch.equal(straight[k], raw[k]) for k in straight if k in raw and raw[k].is_floating_point())


def test_batch_fetch_repeats_the_same_augmentation(folders: Path) -> None:
    from geoclass.data.chips import ChipDataset
    from geoclass.data.samples import load_samples
    from geoclass.data.transforms import Augmenter
    from geoclass.models.model_file import ModelMeta

    samples = load_samples(folders).samples[:6]
    meta = ModelMeta(architecture="cnn", task="classify", classes=sorted(CLASSES), in_chans=3, chip_size=16,
                     mean=[100.0] * 3, std=[50.0] * 3, train_dtype="uint8")
    dataset = ChipDataset(samples, meta, None, Augmenter("strong", 255.0))
    batch = [(i, 1234 + i) for i in range(6)]
    first, again = dataset.__getitems__(batch), dataset.__getitems__(batch)
    other_seed = dataset.__getitems__([(i, 99 + i) for i in range(6)])
    for (a, la), (b, lb) in zip(first, again):
        assert torch.equal(a, b) and int(la) == int(lb)
    assert any(not torch.equal(a, c) for (a, _), (c, _) in zip(first, other_seed))


def test_existing_run_needs_resume_or_overwrite(folders: Path, tmp_path: Path) -> None:
    train(_config(folders, tmp_path / "run", epochs=1))
    with pytest.raises(OutputExistsError, match="--resume"):
        train(_config(folders, tmp_path / "run", epochs=1))
    train(_config(folders, tmp_path / "run", epochs=1, overwrite=True))


def test_grouped_model_and_grouped_eval(folders: Path, tmp_path: Path) -> None:
    result = train(_config(folders, tmp_path / "run", groups={"water": ["SeaLake"]}, epochs=3))
    assert read_model_meta(result.model_path).classes == ["water", "other"]
    grouped = evaluate(EvalConfig(data=str(folders), model=str(result.model_path), workers=0))
    assert grouped["classes"] == ["water", "other"] and grouped["roc_auc"] is not None
    plain = train(_config(folders, tmp_path / "plain", epochs=3))
    by_group = evaluate(EvalConfig(data=str(folders), model=str(plain.model_path), workers=0,
                                   groups={"built": ["Residential"]}))
    assert by_group["classes"] == ["built", "other"]
    assert sum(by_group["per_class"][c]["support"] for c in ("built", "other")) == 30


def test_bad_datasets_fail_with_the_file_named(folders: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no class sub-folders"):
        train(_config(empty, tmp_path / "r1"))
    with pytest.raises(InputNotFoundError, match="nowhere"):
        train(_config(tmp_path / "nowhere", tmp_path / "r2"))
    split = tmp_path / "split.csv"
    split.write_text("path,label\nForest/Forest_0.tif,Forest\nForest/Forest_1.tif,Glacier\n")
    with pytest.raises(DatasetError, match="Glacier"):
        train(_config(folders, tmp_path / "r3", split_csv=str(split)))
    corrupt = make_class_folders(tmp_path / "corrupt", per_class=4)
    (corrupt / "Forest" / "Forest_2.tif").write_bytes(b"this is not a GeoTIFF")
    with pytest.raises(DatasetError, match="Forest_2.tif"):
        train(_config(corrupt, tmp_path / "r4", epochs=1))


def test_eval_rejects_data_the_model_does_not_fit(folders: Path, tmp_path: Path) -> None:
    result = train(_config(folders, tmp_path / "run", epochs=1))
    four_band = make_class_folders(tmp_path / "four", per_class=2, bands=4)
    with pytest.raises((BandError, DatasetError), match="expect(s|ed) 3 bands"):
        evaluate(EvalConfig(data=str(four_band), model=str(result.model_path), workers=0))
    other = tmp_path / "other"
    (other / "Glacier").mkdir(parents=True)
    _write_chip(other / "Glacier" / "g.tif", (250, 250, 250), np.random.default_rng(0))
    with pytest.raises(DatasetError, match="Glacier.*model: Forest"):
        evaluate(EvalConfig(data=str(other), model=str(result.model_path), workers=0))


def test_cli_train_eval_resume(folders: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    run = tmp_path / "run"
    out = runner.invoke(app, ["-q", "train", str(folders), "--model", "cnn", "-o", str(run), "--epochs", "1",
                              "-j", "0", "--batch-size", "8", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["epochs_run"] == 1
    out = runner.invoke(app, ["-q", "train", str(folders), "--resume", str(run), "--epochs", "2", "-j", "0"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["-q", "train", "--resume", str(run), "--epochs", "3", "-j", "0", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["epochs_run"] == 3
    out = runner.invoke(app, ["-q", "train", str(tmp_path), "--resume", str(run), "--epochs", "4"])
    assert out.exit_code == 2 and "this run trains on" in out.output
    out = runner.invoke(app, ["eval", str(folders), "-m", str(run / "model.safetensors"), "-j", "0", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["samples"] == 30
    out = runner.invoke(app, ["train", str(folders), "--model", "cnn", "-o", str(run), "-j", "0"])
    assert out.exit_code == 1 and "--resume" in out.output and "Traceback" not in out.output


@needs_shared_data
def test_real_eurosat_smoke(tmp_path: Path) -> None:
    root = SHARED_DATA / "eurosat-rgb"
    with (root / "splits" / "train.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    per_class: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        per_class.setdefault(row["label"], []).append(row)
    small = tmp_path / "small.csv"
    with small.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label"])
        writer.writeheader()
        for label in sorted(per_class):
            writer.writerows(per_class[label][:12])
    result = train(TrainConfig(data=str(root), model="cnn", out_dir=str(tmp_path / "run"), split_csv=str(small),
                               epochs=1, batch_size=32, workers=0, val_fraction=0.25))
    meta = read_model_meta(result.model_path)
    assert len(meta.classes) == 10 and meta.chip_size == 64 and meta.train_dtype == "uint8"
    report = evaluate(EvalConfig(data=str(root), model=str(result.model_path), split_csv=str(small), workers=0))
    assert report["samples"] == 120


@pytest.mark.parametrize(("change", "message"), [
    ({"epochs": 0}, "--epochs"), ({"ema": 1.0}, "--ema"), ({"augment_strength": "heavy"}, "strong or light"),
])
def test_bad_settings_are_config_errors(folders: Path, tmp_path: Path, change: dict[str, object], message: str) -> None:
    from geoclass.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        train(_config(folders, tmp_path / "run", **change))


def test_negative_valued_data_trains_without_radiometric_augmentation(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    for name, level in (("water", -22.0), ("urban", -6.0)):
        (tmp_path / "sar" / name).mkdir(parents=True)
        for i in range(6):
            with rasterio.open(tmp_path / "sar" / name / f"{i}.tif", "w", driver="GTiff", width=16, height=16, count=2,
                               dtype="float32") as dst:
                dst.write((level + rng.normal(0, 1.5, (2, 16, 16))).astype(np.float32))
    messages: list[str] = []
    train(_config(tmp_path / "sar", tmp_path / "run", epochs=1),
          progress=lambda event: messages.append(event.message) if event.kind == "message" else None)
    assert any("negative values" in m for m in messages)
    meta = read_model_meta(tmp_path / "run" / "model.safetensors")
    assert meta.training_data["value_floor"] < 0 and meta.train_dtype == "float32"
