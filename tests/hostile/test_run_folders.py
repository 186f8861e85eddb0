"""Run folders are untrusted: a checkpoint never runs code, a damaged one is one clear line."""

from __future__ import annotations

import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from geoclass.engine.train import LAST_CKPT, TrainConfig, resume, train
from geoclass.engine.train.checkpoint import load_checkpoint
from geoclass.errors import ConfigError, ModelError
from tests.engine.test_train_eval import make_class_folders


class _Payload:
    """Unpickling this runs ``os.system``: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("run")
    data = make_class_folders(root / "data", per_class=4)
    config = TrainConfig(data=str(data), model="cnn", out_dir=str(root / "run"), epochs=1, batch_size=8,
                         workers=0, val_fraction=0.25, warmup_epochs=0.0, cache=False)
    train(config)
    return root / "run"


def _copy_run(run_dir: Path, tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy


def _geoclass(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "geoclass.cli.app", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"})


def test_pickle_payload_checkpoint_never_runs(run_dir: Path, tmp_path: Path) -> None:
    run = _copy_run(run_dir, tmp_path)
    marker = tmp_path / "pwned"
    # A real payload, in the zip layout torch.save uses, and as a bare pickle.
    torch.save({"model": _Payload(marker)}, run / LAST_CKPT)
    with pytest.raises(ModelError, match="could run code"):
        resume(run)
    assert not marker.exists()
    (run / LAST_CKPT).write_bytes(pickle.dumps(_Payload(marker)))
    result = _geoclass("train", "--resume", str(run))
    assert not marker.exists()
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "last.ckpt" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_truncated_checkpoint_is_one_line(run_dir: Path, tmp_path: Path) -> None:
    run = _copy_run(run_dir, tmp_path)
    data = (run / LAST_CKPT).read_bytes()
    (run / LAST_CKPT).write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated or corrupt"):
        load_checkpoint(run / LAST_CKPT)
    result = _geoclass("train", "--resume", str(run))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "truncated or corrupt" in result.stderr, result.stderr


def test_checkpoint_of_plain_values_is_refused_when_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "x.ckpt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ModelError, match="not a geoclass training checkpoint"):
        load_checkpoint(path)


def test_damaged_run_config_is_a_config_error(run_dir: Path, tmp_path: Path) -> None:
    run = _copy_run(run_dir, tmp_path)
    (run / "config.json").write_text('{"data": "x", "model": "cnn", "out_dir": "y", "evil": 1}')
    with pytest.raises(ConfigError, match="unknown keys evil"):
        resume(run)
    (run / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable run configuration"):
        resume(run)


def test_resume_of_a_real_checkpoint_still_works(run_dir: Path, tmp_path: Path) -> None:
    run = _copy_run(run_dir, tmp_path)
    state = load_checkpoint(run / LAST_CKPT)
    assert state["epoch"] == 1 and isinstance(state["rng"]["numpy"]["keys"], torch.Tensor)
    result = resume(run, epochs=2)
    assert result.epochs_run == 2


def test_run_folder_files_follow_the_umask(run_dir: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    expected = 0o666 & ~umask
    if expected == 0o600:
        pytest.skip("under umask 077 the umask's mode and safetensors' own 0600 cannot be told apart")
    for name in ("model.safetensors", "best.safetensors", "last.safetensors", "checkpoints/epoch-001.safetensors",
                 LAST_CKPT, "config.json"):
        mode = stat.S_IMODE((run_dir / name).stat().st_mode)
        assert mode == expected, f"{name}: {oct(mode)} != {oct(expected)}"


def test_a_run_that_failed_before_its_first_checkpoint_can_simply_start_again(tmp_path: Path) -> None:
    data = make_class_folders(tmp_path / "data", per_class=3)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")  # what a run that failed while building its model leaves
    config = TrainConfig(data=str(data), model="cnn", out_dir=str(run), epochs=1, batch_size=8, workers=0,
                         val_fraction=0.34, warmup_epochs=0.0, cache=False)
    assert train(config).epochs_run == 1
    from geoclass.errors import OutputExistsError

    with pytest.raises(OutputExistsError, match="--resume"):  # a run with a checkpoint is kept
        train(config)


def test_pickle_payload_weights_file_never_runs(tmp_path: Path) -> None:
    """``--weights FILE`` (a .pth from anywhere) is read with weights_only: a payload is refused in one line."""
    from geoclass.models.registry import create_model

    marker = tmp_path / "pwned"
    weights = tmp_path / "encoder.pth"
    torch.save({"conv.weight": torch.zeros(1), "extra": _Payload(marker)}, weights)
    with pytest.raises(ModelError, match="could run code"):
        create_model("unet-lite0", num_classes=5, in_chans=3, weights=str(weights))
    assert not marker.exists()
    (tmp_path / "text.pth").write_text("not weights")
    with pytest.raises(ModelError, match="expected .safetensors or a torch state dict"):
        create_model("compact", num_classes=5, in_chans=3, weights=str(tmp_path / "text.pth"))
