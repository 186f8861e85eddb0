"""torchrun training: sharded epochs, gloo all-reduce, rank 0 alone writes, resume, same metrics."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from geoclass.data.chips import SeededSampler
from geoclass.engine.train import train
from geoclass.errors import ConfigError
from tests.engine.test_train_eval import _config, make_class_folders

ROOT = Path(__file__).resolve().parents[2]


def _torchrun() -> str:
    exe = Path(sys.executable).with_name("torchrun")
    return str(exe) if exe.exists() else (shutil.which("torchrun") or "torchrun")


def _launch(args: list[str], tmp_path: Path, processes: int = 2) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [_torchrun(), "--standalone", "--nproc-per-node", str(processes), "-m", "geoclass", "-q", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )


@pytest.mark.parametrize("length", [10, 11, 1])
def test_sampler_shards_cover_the_epoch_evenly_with_the_same_seeds(length: int) -> None:
    def items(rank: int, world: int) -> list[tuple[int, int]]:
        sampler = SeededSampler(length, torch.Generator().manual_seed(3), rank, world)
        out = list(sampler)
        assert len(out) == len(sampler)
        return out

    whole = items(0, 1)
    shards = [items(r, 3) for r in range(3)]
    assert len({len(s) for s in shards}) == 1  # DDP: every rank takes the same number of steps
    assert set().union(*map(set, shards)) == set(whole)  # each item with its one-process seed
    assert sum(map(len, shards)) - len(whole) < 3  # only the wrap-round is seen twice


def test_two_gloo_processes_train_like_one_and_resume(tmp_path: Path) -> None:
    data = make_class_folders(tmp_path / "data")
    one = train(_config(data, tmp_path / "one", epochs=3, warmup_epochs=1.0))
    run = tmp_path / "two"
    args = ["train", str(data), "--model", "cnn", "-o", str(run), "--epochs", "3", "--batch-size", "8",
            "-j", "0", "--lr", "5e-3", "--val-fraction", "0.2", "--json"]
    done = _launch(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('"run_dir"') == 1, done.stdout  # rank 0 alone reports
    two = json.loads(done.stdout)
    assert two["epochs_run"] == 3
    # Same global batch, steps and schedule: the separable colours are learnt as in one process.
    assert two["best_metrics"]["val_accuracy"] >= 0.9 and one.best_metrics["val_accuracy"] >= 0.9
    assert abs(two["best_metrics"]["val_accuracy"] - one.best_metrics["val_accuracy"]) <= 0.2
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())

    done = _launch(["train", "--resume", str(run), "--epochs", "4", "-j", "0", "--json"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["epochs_run"] == 4
    with (run / "metrics.csv").open() as handle:
        assert [int(float(r["epoch"])) for r in csv.DictReader(handle)] == [1, 2, 3, 4]


def test_global_batch_must_split_evenly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checked before the process group is joined (as torchrun's rank 0 of 2 would see it)."""
    data = make_class_folders(tmp_path / "data", per_class=4)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match="--batch-size 7 is the global batch and must be a multiple of the 2"):
        train(_config(data, tmp_path / "run", batch_size=7))
    assert not (tmp_path / "run").exists()


def test_per_pixel_training_refuses_torchrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from geoclass.cli.app import app

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    result = CliRunner().invoke(app, ["train", str(tmp_path / "scene.tif"), "--labels",
                                      str(tmp_path / "l.gpkg"), "-o", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "per-pixel training runs in one process" in result.output
    assert not (tmp_path / "run").exists()
