"""Starting a training run in its folder, and resuming an interrupted one."""

from __future__ import annotations

import shutil
from pathlib import Path

from geoclass.engine.device import select_device
from geoclass.engine.train.checkpoint import load_checkpoint
from geoclass.engine.train.config import (
    BEST_MODEL,
    CACHE_DIR,
    CONFIG_JSON,
    FINAL_MODEL,
    LAST_CKPT,
    LAST_MODEL,
    METRICS_CSV,
    TrainConfig,
    TrainResult,
    read_config,
)
from geoclass.engine.train.distributed import Ranks, barrier, init_ranks, shutdown
from geoclass.engine.train.loop import Trainer
from geoclass.errors import ConfigError, InputNotFoundError, OutputExistsError
from geoclass.progress import ProgressCallback


def train(config: TrainConfig, progress: ProgressCallback | None = None) -> TrainResult:
    """Train a model as ``config`` says, writing everything into ``config.out_dir``.

    Raises:
        OutputExistsError: ``out_dir`` already holds a run and ``overwrite`` is off.
        Interrupted: Ctrl-C; the completed epochs, and in a long epoch the batches done by its last
            checkpoint, are saved and can be resumed; the message says which.
    """
    config.validate()
    ranks = _join(config)
    try:
        run_dir = Path(config.out_dir)
        if (run_dir / CONFIG_JSON).exists() and (run_dir / LAST_CKPT).exists() and not config.overwrite:
            raise OutputExistsError(f"{run_dir}: already holds a training run; continue it with "
                                    f"--resume {run_dir}, or pass --overwrite to start again")
        barrier(ranks)  # every process has looked before rank 0 clears the folder
        if ranks.is_main:
            _prepare_run_dir(run_dir)
        barrier(ranks)
        return Trainer(config, run_dir, progress, ranks).run(resume_state=None)
    finally:
        shutdown(ranks)


def _join(config: TrainConfig) -> Ranks:
    """This process's ranks under torchrun (joining the process group), else one process."""
    return init_ranks(config.batch_size, select_device(config.device))


def _prepare_run_dir(run_dir: Path) -> None:
    """An empty run folder (the files of an earlier run there removed)."""
    if (run_dir / CONFIG_JSON).exists():
        # A run that failed before its first checkpoint (e.g. no network for --pretrained) left
        # only its config: nothing to resume, so it is simply started again.
        for name in (CONFIG_JSON, METRICS_CSV, BEST_MODEL, LAST_MODEL, FINAL_MODEL):
            (run_dir / name).unlink(missing_ok=True)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        shutil.rmtree(run_dir / CACHE_DIR, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)


def resume(run_dir: str | Path, progress: ProgressCallback | None = None, epochs: int | None = None,
           data: str | None = None, checkpoint_minutes: float | None = None) -> TrainResult:
    """Continue an interrupted run exactly where its last checkpoint left it.

    That is the end of the last completed epoch, or a point within the epoch after it (see
    ``TrainConfig.checkpoint_minutes``), from which the epoch goes on with its remaining batches.

    Args:
        run_dir: The run folder of the interrupted run.
        progress: Receives progress events.
        epochs: A new total number of epochs (to extend a finished run).
        data: The training data, when the caller names it: it must be the run's.
        checkpoint_minutes: A new checkpoint interval within epochs (default: the run's).

    Raises:
        InputNotFoundError: ``run_dir`` holds no run.
        ConfigError: ``data`` is not the data the run trains on.
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_JSON).is_file() or not (run_dir / LAST_CKPT).is_file():
        raise InputNotFoundError(f"{run_dir}: no training run to resume (expected {CONFIG_JSON} and {LAST_CKPT})")
    config = read_config(run_dir / CONFIG_JSON)
    if data is not None and Path(data).resolve() != Path(config.data).resolve():
        raise ConfigError(f"{run_dir}: this run trains on {config.data}, not {data}; "
                          f"resume it with: geoclass train --resume {run_dir}")
    if epochs is not None:
        config.epochs = epochs
    if checkpoint_minutes is not None:
        config.checkpoint_minutes = checkpoint_minutes
        config.validate()
    state = load_checkpoint(run_dir / LAST_CKPT)
    ranks = _join(config)
    try:
        return Trainer(config, run_dir, progress, ranks).run(resume_state=state)
    finally:
        shutdown(ranks)
