"""The training loop: streaming chips, augmentation, AMP, checkpoints, early stopping, resume."""

from __future__ import annotations

import csv
import json
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.utils import ModelEmaV3
from torch import nn
from torch.utils.data import DataLoader

from geoclass.data.chip_cache import ChipCache, chip_cache_bytes
from geoclass.data.chips import IGNORE_INDEX, ChipDataset, SeededSampler, init_chip_worker, read_chip
from geoclass.data.samples import Sample, SampleSet, apply_groups, holdout_split, load_samples
from geoclass.data.transforms import Augmenter, max_value_of
from geoclass.engine.checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from geoclass.engine.device import Precision, select_device, select_precision
from geoclass.engine.metrics import classification_summary, segmentation_summary
from geoclass.errors import ConfigError, DatasetError, InputNotFoundError, Interrupted, ModelError, OutputExistsError
from geoclass.io.outputs import free_bytes
from geoclass.models.model_file import ModelMeta, save_model_file
from geoclass.models.registry import architecture_task, create_model
from geoclass.progress import ProgressCallback, Reporter

CONFIG_JSON = "config.json"
METRICS_CSV = "metrics.csv"
LAST_CKPT = "checkpoints/last.ckpt"
BEST_MODEL = "best.safetensors"
LAST_MODEL = "last.safetensors"
FINAL_MODEL = "model.safetensors"
CACHE_DIR = "cache"


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as ``RUN_DIR/config.json``."""

    data: str
    model: str
    out_dir: str
    val: str | None = None
    split_csv: str | None = None
    val_split_csv: str | None = None
    val_fraction: float = 0.1
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    amp: str = "auto"
    weights: str | None = None
    pretrained: bool = False
    label_smoothing: float = 0.1
    class_weights: str = "auto"
    patience: int = 10
    augment: bool = True
    augment_strength: str = "strong"
    cutmix: float = 0.0
    ema: float = 0.0
    workers: int = 2
    seed: int = 0
    device: str = "auto"
    groups: dict[str, list[str]] = field(default_factory=dict)
    bands: list[int] | None = None
    radiometry: dict[str, dict[str, Any]] = field(default_factory=dict)
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    channels_last: bool = True
    cache: bool = True
    max_stat_chips: int = 2000
    overwrite: bool = False
    # Also checkpoint within an epoch when this long has passed since the last checkpoint, so a
    # Ctrl-C in a long epoch loses minutes, not the epoch; 0 checkpoints at epoch ends only.
    checkpoint_minutes: float = 5.0

    def validate(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.class_weights not in ("auto", "none"):
            raise ConfigError(f"--class-weights must be auto or none, got {self.class_weights!r}")
        if not 0 <= self.cutmix <= 1:
            raise ConfigError(f"--cutmix is a probability in [0, 1], got {self.cutmix}")
        if not 0 <= self.ema < 1:
            raise ConfigError(f"--ema is a decay in [0, 1) (0: off), got {self.ema}")
        if self.workers < 0:
            raise ConfigError(f"--workers must be 0 or more, got {self.workers}")
        if self.augment_strength not in ("strong", "light"):
            raise ConfigError(f"augment_strength must be strong or light, got {self.augment_strength!r}")
        if not 0 <= self.checkpoint_minutes < math.inf:
            raise ConfigError(f"--checkpoint-minutes must be 0 (off) or more, got {self.checkpoint_minutes}")


@dataclass
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    model_path: Path
    best_epoch: int
    best_metrics: dict[str, float]
    epochs_run: int
    stopped_early: bool


def train(config: TrainConfig, progress: ProgressCallback | None = None) -> TrainResult:
    """Train a model as ``config`` says, writing everything into ``config.out_dir``.

    Raises:
        OutputExistsError: ``out_dir`` already holds a run and ``overwrite`` is off.
        Interrupted: Ctrl-C; the completed epochs, and in a long epoch the batches done by its last
            checkpoint, are saved and can be resumed; the message says which.
    """
    config.validate()
    run_dir = Path(config.out_dir)
    if (run_dir / CONFIG_JSON).exists():
        # A run that failed before its first checkpoint (e.g. no network for --pretrained) left
        # only its config: nothing to resume, so it is simply started again.
        if (run_dir / LAST_CKPT).exists() and not config.overwrite:
            raise OutputExistsError(f"{run_dir}: already holds a training run; continue it with "
                                    f"--resume {run_dir}, or pass --overwrite to start again")
        for name in (CONFIG_JSON, METRICS_CSV, BEST_MODEL, LAST_MODEL, FINAL_MODEL):
            (run_dir / name).unlink(missing_ok=True)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        shutil.rmtree(run_dir / CACHE_DIR, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    return _Trainer(config, run_dir, progress).run(resume_state=None)


def resume(run_dir: str | Path, progress: ProgressCallback | None = None, epochs: int | None = None,
           data: str | None = None, checkpoint_minutes: float | None = None) -> TrainResult:
    """Continue an interrupted run exactly where its last checkpoint left it.

    That is the end of the last completed epoch, or a point within the epoch after it (see
    ``TrainConfig.checkpoint_minutes``), from which the epoch goes on with its remaining batches.

    Args:
        run_dir: The run folder of the interrupted run.
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
    config = _read_config(run_dir / CONFIG_JSON)
    if data is not None and Path(data).resolve() != Path(config.data).resolve():
        raise ConfigError(f"{run_dir}: this run trains on {config.data}, not {data}; "
                          f"resume it with: geoclass train --resume {run_dir}")
    if epochs is not None:
        config.epochs = epochs
    if checkpoint_minutes is not None:
        config.checkpoint_minutes = checkpoint_minutes
        config.validate()
    state = load_checkpoint(run_dir / LAST_CKPT)
    return _Trainer(config, run_dir, progress).run(resume_state=state)


def _read_config(path: Path) -> TrainConfig:
    """The run's saved configuration; a damaged or foreign file is a one-line ConfigError."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable run configuration ({exc}); expected the JSON geoclass train writes") from None
    known = {f.name for f in fields(TrainConfig)}
    if not isinstance(doc, dict) or not {"data", "model", "out_dir"} <= set(doc) or set(doc) - known:
        extra = sorted(set(doc) - known) if isinstance(doc, dict) else []
        found = f"unknown keys {', '.join(extra)}" if extra else "not a geoclass run configuration"
        raise ConfigError(f"{path}: expected the configuration geoclass train writes, found {found}")
    try:
        config = TrainConfig(**doc)
        config.validate()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: invalid run configuration ({exc})") from None
    return config


def compute_band_statistics(samples: list[Sample], meta: ModelMeta, bands: list[int] | None, limit: int,
                            seed: int) -> tuple[list[float], list[float], float, float]:
    """Per-band mean and std in model units over (a sample of) the training chips, the value range
    (a bright level) and the floor (a dark level: the lowest band's typical 0.5th percentile)."""
    rng = random.Random(seed)
    chosen = samples if len(samples) <= limit else rng.sample(samples, limit)
    total = total_sq = None
    count = 0
    high: list[np.ndarray] = []
    low: list[np.ndarray] = []
    for sample in chosen:
        values = meta.to_model_units(read_chip(str(sample.path), bands)).astype(np.float64)
        flat = values.reshape(values.shape[0], -1)
        total = flat.sum(1) if total is None else total + flat.sum(1)
        total_sq = (flat**2).sum(1) if total_sq is None else total_sq + (flat**2).sum(1)
        count += flat.shape[1]
        dark, bright = np.percentile(flat, [0.5, 99.5], axis=1)
        low.append(dark)
        high.append(bright)
    assert total is not None and total_sq is not None
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
    value_range = 255.0 if meta.train_dtype == "uint8" else float(np.max(np.median(np.stack(high), axis=0)))
    floor = float(np.min(np.median(np.stack(low), axis=0)))
    return mean.tolist(), np.maximum(std, 1e-6).tolist(), value_range, floor


def _seed_worker(worker_id: int) -> None:
    init_chip_worker()
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class _Trainer:
    def __init__(self, config: TrainConfig, run_dir: Path, progress: ProgressCallback | None) -> None:
        self.config = config
        self.run_dir = run_dir
        self.report = Reporter(progress)
        # What last.ckpt holds: (completed epochs, batches of the next epoch, its batch count).
        self._saved = (0, 0, 0)
        self._last_save = time.monotonic()

    # ----------------------------------------------------------------- data
    def _sample_sets(self) -> tuple[SampleSet, list[Sample]]:
        c = self.config
        is_tiled = (Path(c.data) / "dataset.json").is_file()
        train_set = load_samples(c.data, c.split_csv, split="train" if is_tiled and not c.split_csv else None)
        if c.val is not None:
            val_samples = load_samples(c.val, c.val_split_csv).samples
        elif c.val_split_csv is not None:
            val_samples = load_samples(c.data, c.val_split_csv).samples
        elif is_tiled:
            val_samples = load_samples(c.data, split="val").samples if _has_split(c.data, "val") else []
        else:
            val_samples = []
        if not val_samples:
            train, val_samples = holdout_split(train_set.samples, c.val_fraction, c.seed)
            train_set.samples = train
            self.report.info(f"no validation data given: holding out {len(val_samples)} chips ({c.val_fraction:.0%})")
        if c.groups:
            train_set = apply_groups(train_set, c.groups)
            val_samples = apply_groups(SampleSet(train_set.root, val_samples, list(_original_classes(c, train_set))),
                                       c.groups).samples
        unknown = sorted({s.label for s in val_samples} - set(train_set.classes))
        if unknown:
            raise DatasetError(f"{c.val or c.val_split_csv or c.data}: validation labels {', '.join(unknown)} "
                               f"are not training classes ({', '.join(train_set.classes)})")
        return train_set, val_samples

    def _meta(self, train_set: SampleSet) -> ModelMeta:
        c = self.config
        first = read_chip(str(train_set.samples[0].path), c.bands)
        task = architecture_task(c.model)
        if task == "segment" and train_set.task != "segment":
            raise DatasetError(f"{c.data}: model {c.model} segments, but the dataset holds classification chips")
        info = train_set.info
        band_names = info.get("band_names") or (["red", "green", "blue"] if first.shape[0] == 3 else [])
        meta = ModelMeta(
            architecture=c.model, task=task, classes=list(train_set.classes), in_chans=int(first.shape[0]),
            chip_size=int(first.shape[1]), mean=[0.0] * first.shape[0], std=[1.0] * first.shape[0],
            arch_kwargs=dict(c.arch_kwargs), band_names=list(band_names), radiometry=dict(c.radiometry),
            train_dtype=first.dtype.name, groups=dict(c.groups),
        )
        if info.get("colors") and not c.groups:
            meta.colors = info["colors"]
        meta.radiometry.pop(meta.train_dtype, None)  # training data is used as it is
        mean, std, value_range, floor = compute_band_statistics(train_set.samples, meta, c.bands, c.max_stat_chips,
                                                                c.seed)
        meta.mean, meta.std = mean, std
        meta.training_data = {
            "path": str(Path(c.data).resolve()), "fingerprint": train_set.fingerprint(),
            "train_chips": len(train_set.samples), "class_counts": train_set.counts(), "value_range": value_range,
            "value_floor": floor,
        }
        return meta

    def _loaders(self, train_set: SampleSet, val_samples: list[Sample], meta: ModelMeta,
                 precision: Precision) -> tuple[DataLoader[Any], DataLoader[Any], torch.Generator]:
        c = self.config
        augment = None
        if c.augment:
            reflectance_like = meta.training_data.get("value_floor", 0.0) >= 0
            if not reflectance_like:
                self.report.info("the training data has negative values (e.g. SAR in dB): augmenting with flips, "
                                 "rotations, warps and blur only, not illumination, haze or gamma")
            augment = Augmenter(c.augment_strength, meta.training_data["value_range"], max_value_of(meta.train_dtype),
                                radiometric=reflectance_like)
        train_cache = self._cache("train", train_set.samples, meta)
        train_ds = ChipDataset(train_set.samples, meta, c.bands, augment, train_cache)
        val_ds = ChipDataset(val_samples, meta, c.bands, None, self._cache("val", val_samples, meta))
        generator = torch.Generator()
        common: dict[str, Any] = {"num_workers": c.workers, "pin_memory": precision.device.type == "cuda",
                                  "worker_init_fn": _seed_worker}
        if c.workers > 0:
            common.update(persistent_workers=True, prefetch_factor=4)
        # The loader draws its worker seed from a generator of its own (see SeededSampler).
        loader_generator = torch.Generator().manual_seed(c.seed)
        train_loader = DataLoader(train_ds, batch_size=c.batch_size, sampler=SeededSampler(len(train_ds), generator),
                                  drop_last=len(train_ds) > c.batch_size, generator=loader_generator, **common)
        val_loader = DataLoader(val_ds, batch_size=c.batch_size * 2, shuffle=False, **common)
        return train_loader, val_loader, generator

    def _cache(self, name: str, samples: list[Sample], meta: ModelMeta) -> ChipCache | None:
        """A decoded-chip cache in RUN_DIR/cache for classification chips, if the disk has room."""
        if not self.config.cache or meta.task != "classify" or not samples:
            return None
        folder = self.run_dir / CACHE_DIR / name
        bands = ",".join(map(str, self.config.bands or []))
        shape = (meta.in_chans, meta.chip_size, meta.chip_size)
        needed = chip_cache_bytes(len(samples), shape, meta.train_dtype)
        if needed * 1.1 > (free_bytes(self.run_dir) or 0):
            self.report.info(f"not caching decoded {name} chips: they need {needed / 1e9:.1f} GB, "
                             f"the disk of {self.run_dir} has less free")
            return None
        return ChipCache(folder, [f"{s.path}|{bands}" for s in samples], shape, meta.train_dtype)

    # ------------------------------------------------------------- training
    def run(self, resume_state: dict[str, Any] | None) -> TrainResult:
        c = self.config
        torch.manual_seed(c.seed)
        random.seed(c.seed)
        np.random.seed(c.seed)
        device = select_device(c.device)
        precision = select_precision(device, c.amp)
        train_set, val_samples = self._sample_sets()
        if resume_state is not None:
            try:
                meta = ModelMeta.from_json(resume_state["meta"])
            except (TypeError, ValueError) as exc:
                raise ModelError(f"{self.run_dir / LAST_CKPT}: unreadable model description ({exc})") from None
        else:
            meta = self._meta(train_set)
        (self.run_dir / CONFIG_JSON).write_text(json.dumps(asdict(c), indent=2))
        model = create_model(c.model, meta.num_classes, meta.in_chans, pretrained=c.pretrained, weights=c.weights,
                             chip_size=meta.chip_size, **meta.arch_kwargs).to(device)
        memory_format = torch.channels_last if c.channels_last else torch.contiguous_format
        model = model.to(memory_format=memory_format)
        train_loader, val_loader, generator = self._loaders(train_set, val_samples, meta, precision)
        steps_per_epoch = max(len(train_loader), 1)
        optimizer = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _warmup_cosine(int(c.warmup_epochs * steps_per_epoch), c.epochs * steps_per_epoch))
        scaler = torch.amp.GradScaler(device.type, enabled=precision.use_scaler)
        weight = self._class_weights(train_set, meta, device) if meta.task == "classify" else None
        criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=c.label_smoothing, ignore_index=IGNORE_INDEX)
        # With --ema the exponential moving average of the weights is what gets validated and saved:
        # it is smoother than the last step's weights and usually generalises better.
        # The decay warms up (1 - (1 + step)^-2/3), so the average does not remember the random start.
        ema = ModelEmaV3(model, decay=c.ema, use_warmup=True) if c.ema > 0 else None
        kept = ema.module if ema is not None else model

        start_epoch, best_score, best_epoch, bad_epochs = 1, -math.inf, 0, 0
        best_metrics: dict[str, float] = {}
        partial: dict[str, Any] | None = None
        if resume_state is not None:
            try:
                model.load_state_dict(resume_state["model"])
                optimizer.load_state_dict(resume_state["optimizer"])
                scheduler.load_state_dict(resume_state["scheduler"])
                scaler.load_state_dict(resume_state["scaler"])
                if ema is not None:
                    ema.module.load_state_dict(resume_state["ema"])
                start_epoch = int(resume_state["epoch"]) + 1
                best_score, best_epoch = float(resume_state["best_score"]), int(resume_state["best_epoch"])
                bad_epochs, best_metrics = int(resume_state["bad_epochs"]), dict(resume_state["best_metrics"])
                set_rng_state(resume_state["rng"])
                partial = _read_partial(resume_state.get("partial"), start_epoch, steps_per_epoch)
            except (KeyError, RuntimeError, TypeError, ValueError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ModelError(f"{self.run_dir / LAST_CKPT}: does not fit this run ({first}); "
                                 "start it again with --overwrite") from None
            self._saved = (start_epoch - 1, partial["batches"] if partial else 0, steps_per_epoch)
            within = f", batch {partial['batches'] + 1} of {steps_per_epoch}" if partial else ""
            self.report.info(f"resuming {self.run_dir} at epoch {start_epoch}{within}")
        else:
            self._save_checkpoint(model, ema, optimizer, scheduler, scaler, meta, 0, best_score, best_epoch,
                                  bad_epochs, {})
        self.report.info(f"training {c.model} ({_count_parameters(model) / 1e6:.2f} M parameters) on "
                         f"{len(train_set.samples)} chips, validating on {len(val_samples)}; device {device}, "
                         f"precision {precision.label}")
        writer = _tensorboard(self.run_dir)
        stopped_early = False
        epoch = start_epoch - 1

        def save_within_epoch(done: dict[str, Any]) -> None:
            self._save_checkpoint(model, ema, optimizer, scheduler, scaler, meta, epoch - 1, best_score, best_epoch,
                                  bad_epochs, best_metrics, partial=done)

        try:
            for epoch in range(start_epoch, c.epochs + 1):
                generator.manual_seed(c.seed * 1000 + epoch)
                row = self._train_epoch(model, ema, train_loader, optimizer, scheduler, scaler, criterion, precision,
                                        epoch, memory_format, meta, partial, save_within_epoch)
                partial = None
                row.update(self._validate(kept, val_loader, criterion, precision, memory_format, meta, epoch))
                row["lr"] = optimizer.param_groups[0]["lr"]
                score = row["val_miou"] if meta.task == "segment" else row["val_accuracy"]
                improved = score > best_score
                if improved:
                    best_score, best_epoch, bad_epochs = score, epoch, 0
                    best_metrics = {k: float(v) for k, v in row.items()}
                else:
                    bad_epochs += 1
                self._write_metrics(row, writer)
                self.report.metrics(f"epoch {epoch}/{c.epochs}", {**row, "best": improved})
                meta.metrics = {"epoch": epoch, **{k: float(v) for k, v in row.items()}}
                save_model_file(self.run_dir / "checkpoints" / f"epoch-{epoch:03d}.safetensors", kept, meta)
                save_model_file(self.run_dir / LAST_MODEL, kept, meta)
                if improved:
                    save_model_file(self.run_dir / BEST_MODEL, kept, meta)
                self._save_checkpoint(model, ema, optimizer, scheduler, scaler, meta, epoch, best_score, best_epoch,
                                      bad_epochs, best_metrics)
                if c.patience > 0 and bad_epochs >= c.patience:
                    stopped_early = True
                    self.report.info(f"early stop: no improvement for {c.patience} epochs (best epoch {best_epoch})")
                    break
        except KeyboardInterrupt:
            raise Interrupted(self._interrupted_message(epoch)) from None
        finally:
            if writer is not None:
                writer.close()
        shutil.copyfile(self.run_dir / BEST_MODEL, self.run_dir / FINAL_MODEL)
        shutil.rmtree(self.run_dir / CACHE_DIR, ignore_errors=True)
        _plot_curves(self.run_dir / METRICS_CSV, self.run_dir / "curves.png")
        return TrainResult(self.run_dir, self.run_dir / FINAL_MODEL, best_epoch, best_metrics, epoch, stopped_early)

    def _train_epoch(self, model: nn.Module, ema: ModelEmaV3 | None, loader: DataLoader[Any],
                     optimizer: torch.optim.Optimizer,
                     scheduler: Any, scaler: torch.amp.GradScaler, criterion: nn.Module, precision: Precision,
                     epoch: int, memory_format: torch.memory_format, meta: ModelMeta,
                     partial: dict[str, Any] | None = None,
                     save_within: Callable[[dict[str, Any]], None] | None = None) -> dict[str, float]:
        """One epoch of training; ``partial`` (from a checkpoint within it) skips the batches it covers."""
        model.train()
        task = "train"
        sampler = loader.sampler
        assert isinstance(sampler, SeededSampler)
        steps = len(loader)
        total_loss, seen, correct, before = 0.0, 0, 0, 0.0
        done = 0
        if partial is not None:
            done, total_loss, seen = partial["batches"], partial["loss_sum"], partial["seen"]
            correct, before = partial["correct"], partial["seconds"]
            # the sampler draws the epoch's whole order and seeds, then starts at the first batch not done
            sampler.start = done * (loader.batch_size or 1)
        interval = self.config.checkpoint_minutes * 60
        try:
            self.report.start(task, len(loader))
            start = time.perf_counter()
            for images, targets in loader:
                images = images.to(precision.device, non_blocking=True).to(memory_format=memory_format)
                targets = targets.to(precision.device, non_blocking=True)
                mixed = meta.task == "classify" and self.config.cutmix > 0 and random.random() < self.config.cutmix
                with precision.autocast():
                    if mixed:
                        images, targets_b, lam = _cutmix(images, targets)
                        logits = model(images)
                        loss = lam * criterion(logits, targets) + (1 - lam) * criterion(logits, targets_b)
                    else:
                        logits = model(images)
                        loss = criterion(logits, targets)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                if ema is not None:
                    ema.update(model, step=scheduler.last_epoch)
                total_loss += float(loss.detach()) * images.shape[0]
                seen += images.shape[0]
                if meta.task == "classify":
                    correct += int((logits.detach().argmax(1) == targets).sum())
                done += 1
                if save_within is not None and interval > 0 and time.monotonic() - self._last_save >= interval:
                    save_within({"epoch": epoch, "batches": done, "batches_total": steps, "loss_sum": total_loss,
                                 "seen": seen, "correct": correct, "seconds": before + time.perf_counter() - start})
                self.report.advance(task)
        finally:
            sampler.start = 0
        self.report.end(task)
        elapsed = before + time.perf_counter() - start
        row = {"epoch": epoch, "train_loss": total_loss / max(seen, 1), "train_images_per_s": seen / max(elapsed, 1e-9),
               "epoch_seconds": elapsed}
        if meta.task == "classify":
            row["train_accuracy"] = correct / max(seen, 1)
        return row

    def _validate(self, model: nn.Module, loader: DataLoader[Any], criterion: nn.Module, precision: Precision,
                  memory_format: torch.memory_format, meta: ModelMeta, epoch: int) -> dict[str, float]:
        model.eval()
        losses, preds, truths = 0.0, [], []
        seen = 0
        task = "val"
        self.report.start(task, len(loader))
        with torch.inference_mode():
            for images, targets in loader:
                images = images.to(precision.device).to(memory_format=memory_format)
                targets = targets.to(precision.device)
                with precision.autocast():
                    logits = model(images)
                    losses += float(criterion(logits.float(), targets)) * images.shape[0]
                seen += images.shape[0]
                preds.append(logits.argmax(1).cpu().numpy())
                truths.append(targets.cpu().numpy())
                self.report.advance(task)
        self.report.end(task)
        y_pred, y_true = np.concatenate(preds), np.concatenate(truths)
        if meta.task == "segment":
            summary = segmentation_summary(y_true, y_pred, meta.num_classes, IGNORE_INDEX)
            return {"val_loss": losses / max(seen, 1), "val_accuracy": summary["pixel_accuracy"],
                    "val_miou": summary["mean_iou"]}
        summary = classification_summary(y_true, y_pred, meta.num_classes)
        return {"val_loss": losses / max(seen, 1), "val_accuracy": summary["accuracy"], "val_macro_f1": summary["macro_f1"]}

    # ---------------------------------------------------------- bookkeeping
    def _class_weights(self, train_set: SampleSet, meta: ModelMeta, device: torch.device) -> torch.Tensor | None:
        if self.config.class_weights == "none":
            return None
        counts = np.array([train_set.counts().get(name, 0) for name in meta.classes], dtype=np.float64)
        weights = np.where(counts > 0, counts.sum() / (len(counts) * np.maximum(counts, 1)), 0.0)
        return torch.tensor(weights, dtype=torch.float32, device=device)

    def _save_checkpoint(self, model: nn.Module, ema: ModelEmaV3 | None, optimizer: torch.optim.Optimizer,
                         scheduler: Any, scaler: torch.amp.GradScaler, meta: ModelMeta, epoch: int, best_score: float,
                         best_epoch: int, bad_epochs: int, best_metrics: dict[str, float],
                         partial: dict[str, Any] | None = None) -> None:
        """Write last.ckpt: the state after ``epoch`` completed epochs, plus ``partial`` (batches done
        in the next epoch and its running sums) for a checkpoint within an epoch."""
        path = self.run_dir / LAST_CKPT
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "epoch": epoch, "best_score": best_score, "best_epoch": best_epoch,
            "bad_epochs": bad_epochs, "best_metrics": best_metrics, "meta": meta.to_json(), "rng": get_rng_state(),
        }
        if ema is not None:
            state["ema"] = ema.module.state_dict()
        if partial is not None:
            state["partial"] = dict(partial)
        save_checkpoint(path, state)
        self._saved = (epoch, partial["batches"], partial["batches_total"]) if partial else (epoch, 0, 0)
        self._last_save = time.monotonic()

    def _interrupted_message(self, epoch: int) -> str:
        """What a Ctrl-C in ``epoch`` leaves: which epochs and batches last.ckpt holds, and how to go on."""
        epochs, batches, steps = self._saved
        resume_cmd = f"geoclass train --resume {self.run_dir}"
        head = f"training interrupted in epoch {max(epoch, 1)}"
        if epochs == 0 and batches == 0:
            return f"{head}; nothing finished is saved yet, so {resume_cmd} starts it again from the beginning"
        saved = [] if epochs == 0 else ["epoch 1" if epochs == 1 else f"epochs 1-{epochs}"]
        if batches:
            saved.append(f"{batches} of {steps} batches of epoch {epochs + 1}")
        verb = "is" if saved == ["epoch 1"] else "are"
        return f"{head}; {' and '.join(saved)} {verb} saved in {self.run_dir}; continue with: {resume_cmd}"

    def _write_metrics(self, row: dict[str, float], writer: Any) -> None:
        path = self.run_dir / METRICS_CSV
        new = not path.exists()
        with path.open("a", newline="") as handle:
            out = csv.DictWriter(handle, fieldnames=list(row))
            if new:
                out.writeheader()
            out.writerow(row)
        if writer is not None:
            for key, value in row.items():
                if key != "epoch":
                    writer.add_scalar(key, value, int(row["epoch"]))


def _read_partial(found: Any, epoch: int, steps: int) -> dict[str, Any] | None:
    """The within-epoch part of a checkpoint, checked against the run (ValueError if it does not fit)."""
    if found is None:
        return None
    part = {"epoch": int(found["epoch"]), "batches": int(found["batches"]),
            "batches_total": int(found["batches_total"]), "loss_sum": float(found["loss_sum"]),
            "seen": int(found["seen"]), "correct": int(found["correct"]), "seconds": float(found["seconds"])}
    if part["epoch"] != epoch or part["batches_total"] != steps or not 0 <= part["batches"] <= steps:
        raise ValueError(f"it holds {part['batches']} of {part['batches_total']} batches of epoch {part['epoch']}, "
                         f"the run continues at epoch {epoch} with {steps} batches per epoch")
    return part


def _has_split(root: str, split: str) -> bool:
    with (Path(root) / "chips.csv").open(newline="") as handle:
        return any(row.get("split") == split for row in csv.DictReader(handle))


def _original_classes(config: TrainConfig, grouped: SampleSet) -> list[str]:
    return load_samples(config.data, config.split_csv).classes if not grouped.info else list(grouped.info["classes"])


def _warmup_cosine(warmup_steps: int, total_steps: int) -> Any:
    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _cutmix(images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    lam = float(np.random.beta(1.0, 1.0))
    perm = torch.randperm(images.shape[0], device=images.device)
    h, w = images.shape[-2:]
    cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = np.random.randint(h), np.random.randint(w)
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    images = images.clone()
    images[..., y0:y1, x0:x1] = images[perm][..., y0:y1, x0:x1]
    lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    return images, targets[perm], lam


def _count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def _plot_curves(metrics_csv: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with metrics_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return
    epochs = [int(float(r["epoch"])) for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [float(r["train_loss"]) for r in rows], label="train")
    ax_loss.plot(epochs, [float(r["val_loss"]) for r in rows], label="val")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_loss.legend()
    if "train_accuracy" in rows[0]:
        ax_acc.plot(epochs, [float(r["train_accuracy"]) for r in rows], label="train")
    ax_acc.plot(epochs, [float(r["val_accuracy"]) for r in rows], label="val")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    ax_acc.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
