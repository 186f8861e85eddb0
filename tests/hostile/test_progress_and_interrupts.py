"""Issue 10, items 7 and 14: progress in logs (stderr not a terminal) and Ctrl-C within an epoch."""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from rich.console import Console
from safetensors.torch import load_file
from typer.testing import CliRunner

from geoclass.cli import render
from geoclass.cli.app import app
from geoclass.cli.render import ProgressRenderer
from geoclass.engine.train import TrainConfig, resume, train
from geoclass.engine.train import loop as train_loop
from geoclass.engine.train.checkpoint import load_checkpoint
from geoclass.errors import ConfigError, Interrupted
from geoclass.models.model_file import ModelMeta, save_model_file
from geoclass.models.registry import create_model
from geoclass.progress import ProgressEvent, Reporter
from tests.conftest import make_raster

# --- progress lines in logs -------------------------------------------------------------------


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(render, "time", SimpleNamespace(monotonic=fake))
    return fake


def run_task(clock: FakeClock, total: float | None, steps: int, seconds_per_step: float, *,
             quiet: bool = False, terminal: bool = False, step: float = 1) -> list[str]:
    """Render one task of ``steps`` advances, each ``seconds_per_step`` long; return the lines."""
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=terminal, width=120, color_system=None)
    with ProgressRenderer(quiet=quiet, console=console) as renderer:
        report = Reporter(renderer)
        report.start("predict", total)
        for _ in range(steps):
            clock.now += seconds_per_step
            report.advance("predict", step)
        report.end("predict")
        report.warn("a warning")
    return buffer.getvalue().splitlines()


LINE = re.compile(r"^predict: (\d+)/(\d+) \((\d+)%\), ([\d.]+) it/s, elapsed (\S+), eta (\S+)$")


def test_log_prints_a_line_at_each_tenth_with_rate_and_eta(clock: FakeClock) -> None:
    lines = run_task(clock, total=200, steps=200, seconds_per_step=0.5)  # 10 s per tenth
    progress = [LINE.match(line) for line in lines[:-2]]
    assert all(progress), lines
    assert [int(m[3]) for m in progress if m] == [10, 20, 30, 40, 50, 60, 70, 80, 90]
    first = progress[0]
    assert first is not None and first.groups() == ("20", "200", "10", "2", "10s", "1m30s")
    assert lines[-2] == "predict: 200 in 100.0s (2 it/s)"  # the summary line of today
    assert lines[-1] == "warning: a warning"


def test_log_prints_a_line_every_30_s_when_progress_is_slow(clock: FakeClock) -> None:
    lines = run_task(clock, total=1000, steps=400, seconds_per_step=1.0)  # 100 s per tenth
    times = [int(m[1]) for m in map(LINE.match, lines) if m]  # done == seconds here
    assert times == [30, 60, 90, 100, 130, 160, 190, 200, 230, 260, 290, 300, 330, 360, 390, 400]
    assert "predict: 400/1000 in 400.0s (1 it/s)" in lines


def test_log_without_a_total_prints_count_rate_and_elapsed_every_30_s(clock: FakeClock) -> None:
    lines = run_task(clock, total=None, steps=20, seconds_per_step=7.0, step=256)
    assert lines[:4] == [
        "predict: 1280, 36.6 it/s, elapsed 35s",
        "predict: 2560, 36.6 it/s, elapsed 1m10s",
        "predict: 3840, 36.6 it/s, elapsed 1m45s",
        "predict: 5120, 36.6 it/s, elapsed 2m20s",
    ]
    assert lines[4:] == ["predict: 5120 in 140.0s (36.6 it/s)", "warning: a warning"]


def test_log_short_task_prints_only_its_summary(clock: FakeClock) -> None:
    lines = run_task(clock, total=100, steps=100, seconds_per_step=0.04)  # 4 s in all
    assert lines == ["predict: 100 in 4.0s (25 it/s)", "warning: a warning"]


def test_log_quiet_prints_no_progress(clock: FakeClock) -> None:
    assert run_task(clock, total=200, steps=200, seconds_per_step=0.5, quiet=True) == ["warning: a warning"]
    assert run_task(clock, total=None, steps=20, seconds_per_step=7.0, quiet=True) == ["warning: a warning"]


def test_terminal_draws_bars_and_no_log_lines(clock: FakeClock) -> None:
    out = "\n".join(run_task(clock, total=200, steps=200, seconds_per_step=0.5, terminal=True))
    assert "━" in out and "200/200" in out
    assert "elapsed" not in out and "(10%)" not in out


def _tiny_cnn(path: Path) -> Path:
    torch.manual_seed(0)
    model = create_model("cnn", 3, 3, chip_size=16)
    meta = ModelMeta(architecture="cnn", task="classify", classes=["a", "b", "c"], in_chans=3, chip_size=16,
                     mean=[110.0] * 3, std=[50.0] * 3)
    save_model_file(path, model, meta)
    return path


def test_cli_predict_without_a_terminal_logs_progress_as_it_goes(tmp_path: Path, clock: FakeClock,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "FORCE_TERMINAL"):
        monkeypatch.delenv(name, raising=False)
    rng = np.random.default_rng(0)
    scene = make_raster(tmp_path / "scene.tif", rng.integers(1, 255, (3, 160, 160), dtype=np.uint8))
    model = _tiny_cnn(tmp_path / "cnn.safetensors")
    # Every look at the renderer's clock is 3 s later: the 10% steps are then slow enough to print.
    def tick() -> float:
        clock.now += 3.0
        return clock.now

    monkeypatch.setattr(render, "time", SimpleNamespace(monotonic=tick))
    result = CliRunner().invoke(app, ["predict", str(scene), "-o", str(tmp_path / "map.tif"), "-m", str(model),
                                      "--batch-size", "8", "--workers", "0", "--device", "cpu",
                                      "--strategy", "windows"])  # many windows: many progress steps
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    progress = [line for line in lines if line.startswith("predict: ") and "%)" in line]
    assert len(progress) >= 5, result.stderr
    assert all(" it/s, elapsed " in line and ", eta " in line for line in progress)
    summary = [i for i, line in enumerate(lines) if re.match(r"predict: \d+ in [\d.]+s", line)]
    assert summary and lines.index(progress[-1]) < summary[0]  # intermediate lines come before the summary


# --- Ctrl-C within a training epoch -----------------------------------------------------------

CLASSES = {"Forest": (30, 90, 40), "SeaLake": (20, 40, 120), "Residential": (180, 150, 140)}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("chips") / "data"
    rng = np.random.default_rng(0)
    for name, colour in CLASSES.items():
        (root / name).mkdir(parents=True)
        for i in range(10):
            pixels = np.clip(np.array(colour, np.float32)[:, None, None] + rng.normal(0, 12, (3, 16, 16)), 0, 255)
            with rasterio.open(root / name / f"{name}_{i}.tif", "w", driver="GTiff", width=16, height=16, count=3,
                               dtype="uint8", transform=from_origin(0, 16, 1, 1)) as dst:
                dst.write(pixels.astype(np.uint8))
    return root


def _config(data: Path, out: Path, **changes: object) -> TrainConfig:
    # 30 chips, 24 for training: 3 batches of 8 per epoch
    base = dict(data=str(data), model="cnn", out_dir=str(out), epochs=3, batch_size=8, workers=0, lr=5e-3,
                val_fraction=0.2, warmup_epochs=0.0)
    base.update(changes)
    return TrainConfig(**base)  # type: ignore[arg-type]


def stop_at(epoch: int, batch: int, then: Callable[[ProgressEvent], None] | None = None
            ) -> Callable[[ProgressEvent], None]:
    """A progress callback that presses Ctrl-C after ``batch`` of ``epoch`` (counted from 1)."""
    seen = {"epoch": 1, "batch": 0}

    def callback(event: ProgressEvent) -> None:
        if then is not None:
            then(event)
        if event.kind == "metrics":
            seen["epoch"] = int(event.data["epoch"]) + 1
        elif event.kind == "start" and event.task == "train":
            seen["batch"] = 0
        elif event.kind == "advance" and event.task == "train":
            seen["batch"] += 1
            if (seen["epoch"], seen["batch"]) == (epoch, batch):
                raise KeyboardInterrupt

    return callback


def _epochs_in(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize(("minutes", "saved"), [
    (0.0, "nothing finished is saved yet, so geoclass train --resume {run} starts it again from the beginning"),
    (5.0, "4 of 8 batches of epoch 1 are saved in {run}; continue with: geoclass train --resume {run}"),
])
def test_ctrl_c_in_the_first_epoch_says_what_is_saved(folders: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch, minutes: float,
                                                      saved: str) -> None:
    # Each training batch takes 100 s of a fake clock: with 5 minutes, batches 4 and 7 checkpoint.
    fake = FakeClock()
    monkeypatch.setattr(train_loop, "time", SimpleNamespace(monotonic=fake, perf_counter=time.perf_counter))

    def slow_batches(event: ProgressEvent) -> None:
        if event.kind == "advance" and event.task == "train":
            fake.now += 100.0

    run = tmp_path / "run"
    with pytest.raises(Interrupted) as caught:
        train(_config(folders, run, batch_size=3, checkpoint_minutes=minutes), progress=stop_at(1, 6, slow_batches))
    assert str(caught.value) == "training interrupted in epoch 1; " + saved.format(run=run)
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")  # weights_only: plain values only
    assert state["epoch"] == 0
    if minutes:
        assert state["partial"]["batches"] == 4 and state["partial"]["seen"] == 12
    else:
        assert "partial" not in state


def test_ctrl_c_after_whole_epochs_names_them(folders: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(Interrupted) as caught:
        train(_config(folders, run, epochs=4, checkpoint_minutes=0), progress=stop_at(3, 2))
    assert str(caught.value) == (f"training interrupted in epoch 3; epochs 1-2 are saved in {run}; "
                                 f"continue with: geoclass train --resume {run}")


def test_resume_within_an_epoch_continues_exactly(folders: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    straight = train(_config(folders, tmp_path / "straight"))
    run = tmp_path / "split"
    # A tiny interval checkpoints after every batch; Ctrl-C comes after batch 2 of epoch 2's 3.
    with pytest.raises(Interrupted, match="epoch 1 and 2 of 3 batches of epoch 2 are saved"):
        train(_config(folders, run, checkpoint_minutes=1e-9), progress=stop_at(2, 2))
    assert [r["epoch"] for r in _epochs_in(run)] == ["1"]

    from geoclass.data.chips import ChipDataset

    fetched: list[int] = []
    original = ChipDataset.__getitems__

    def counting(self: ChipDataset, indices: list) -> list:  # type: ignore[type-arg]
        if self.augment is not None:  # the training set
            fetched.append(len(indices))
        return original(self, indices)

    monkeypatch.setattr(ChipDataset, "__getitems__", counting)
    events: list[ProgressEvent] = []
    result = resume(run, progress=events.append)
    assert fetched == [8] * 4  # the rest of epoch 2 and all of epoch 3: the skipped batches are not read
    assert any(e.kind == "message" and e.message.endswith("at epoch 2, batch 3 of 3") for e in events)
    assert [e.total for e in events if e.kind == "start" and e.task == "train"] == [1, 3]
    assert result.epochs_run == 3
    rows, expected = _epochs_in(run), _epochs_in(tmp_path / "straight")
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    for row, want in zip(rows, expected):  # the resumed epoch's train metrics cover the whole epoch
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert row[key] == want[key], (row["epoch"], key)
    assert result.best_epoch == straight.best_epoch
    want_weights = load_file(str(tmp_path / "straight" / "last.safetensors"))
    got_weights = load_file(str(run / "last.safetensors"))
    for key, value in want_weights.items():
        torch.testing.assert_close(got_weights[key], value, rtol=0, atol=0, msg=key)


def test_resume_with_loader_workers_continues_exactly(folders: Path, tmp_path: Path) -> None:
    # Persistent workers draw the loader's worker seed only in the first epoch a process runs: it must
    # not come from the sampler's generator, or a resumed epoch is shuffled differently.
    train(_config(folders, tmp_path / "straight", workers=1))
    for name, minutes, where in (("boundary", 0.0, (3, 1)), ("within", 1e-9, (2, 2))):
        with pytest.raises(Interrupted):
            train(_config(folders, tmp_path / name, workers=1, checkpoint_minutes=minutes), progress=stop_at(*where))
        resume(tmp_path / name)
        want = load_file(str(tmp_path / "straight" / "last.safetensors"))
        got = load_file(str(tmp_path / name / "last.safetensors"))
        for key, value in want.items():
            torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=f"{name}: {key}")


def test_checkpoint_minutes_is_checked_and_offered_by_the_cli(folders: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--checkpoint-minutes"):
        train(_config(folders, tmp_path / "run", checkpoint_minutes=-1.0))
    help_text = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    training_panel = help_text[help_text.index("─ Training ─"):]
    training_panel = training_panel[:training_panel.index("╰")]
    assert "--checkpoint-minutes" in training_panel
    result = CliRunner().invoke(app, ["-q", "train", str(folders), "-m", "cnn", "-o", str(tmp_path / "cli"),
                                      "--epochs", "1", "-j", "0", "--checkpoint-minutes", "0.5"])
    assert result.exit_code == 0, result.output
    assert '"checkpoint_minutes": 0.5' in (tmp_path / "cli" / "config.json").read_text()
