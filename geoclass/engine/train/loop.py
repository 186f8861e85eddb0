"""The training loop: epochs, validation, best-model tracking, checkpoints within and between epochs,
resuming from one, and what a Ctrl-C says."""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.utils import ModelEmaV3
from torch import nn
from torch.utils.data import DataLoader

from geoclass.data.chips import IGNORE_INDEX, SeededSampler
from geoclass.engine.device import Precision, select_device, select_precision
from geoclass.engine.metrics import classification_scores, confusion, segmentation_scores
from geoclass.engine.train.checkpoint import get_rng_state, read_partial, save_checkpoint, set_rng_state
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
)
from geoclass.engine.train.data import class_weights, make_loaders, sample_sets
from geoclass.engine.train.distributed import Ranks, all_sum, rank_device, wrap_model
from geoclass.engine.train.losses import segmentation_loss
from geoclass.engine.train.meta import build_meta
from geoclass.engine.train.records import open_tensorboard, plot_curves, write_metrics
from geoclass.engine.train.schedule import cutmix, warmup_cosine
from geoclass.errors import Interrupted, ModelError
from geoclass.models.model_file import ModelMeta, save_model_file
from geoclass.models.registry import create_model
from geoclass.progress import ProgressCallback, Reporter


class Trainer:
    """One run in its run folder, from its start or from its last checkpoint to its end."""

    def __init__(self, config: TrainConfig, run_dir: Path, progress: ProgressCallback | None,
                 ranks: Ranks | None = None) -> None:
        self.config = config
        self.run_dir = run_dir
        self.ranks = ranks or Ranks()
        # One voice: under torchrun only rank 0 reports (and writes the run folder).
        self.report = Reporter(progress if self.ranks.is_main else None)
        # What last.ckpt holds: (completed epochs, batches of the next epoch, its batch count).
        self._saved = (0, 0, 0)
        self._last_save = time.monotonic()

    def run(self, resume_state: dict[str, Any] | None) -> TrainResult:
        """Train to the last epoch (or an early stop); ``resume_state`` is a loaded last.ckpt.

        Raises:
            ModelError: ``resume_state`` does not fit this run.
            Interrupted: Ctrl-C; the message says what is saved and how to go on.
        """
        c = self.config
        torch.manual_seed(c.seed)
        random.seed(c.seed)
        np.random.seed(c.seed)
        ranks, main = self.ranks, self.ranks.is_main
        device = rank_device(select_device(c.device), ranks)
        precision = select_precision(device, c.amp)
        train_set, val_samples = sample_sets(c, self.report)
        if resume_state is not None:
            try:
                meta = ModelMeta.from_json(resume_state["meta"])
            except (TypeError, ValueError) as exc:
                raise ModelError(f"{self.run_dir / LAST_CKPT}: unreadable model description ({exc})") from None
        else:
            meta = build_meta(c, train_set)
        if main:
            (self.run_dir / CONFIG_JSON).write_text(json.dumps(asdict(c), indent=2))
        model = create_model(c.model, meta.num_classes, meta.in_chans, pretrained=c.pretrained, weights=c.weights,
                             chip_size=meta.chip_size, **meta.arch_kwargs).to(device)
        memory_format = torch.channels_last if c.channels_last else torch.contiguous_format
        model = model.to(memory_format=memory_format)
        train_loader, val_loader, generator = make_loaders(c, self.run_dir, self.report, train_set, val_samples,
                                                           meta, precision, ranks)
        steps_per_epoch = max(len(train_loader), 1)
        optimizer = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(int(c.warmup_epochs * steps_per_epoch), c.epochs * steps_per_epoch))
        scaler = torch.amp.GradScaler(device.type, enabled=precision.use_scaler)
        weight = class_weights(c, train_set, meta, device)
        if weight is not None and meta.task == "segment":
            self.report.info("class weights (labelled pixels, square-root inverse frequency): " + ", ".join(
                f"{name} {w:.2f}" for name, w in zip(meta.classes, weight.tolist(), strict=True)))
        criterion = segmentation_loss(weight, c.label_smoothing, c.dice) if meta.task == "segment" else \
            nn.CrossEntropyLoss(weight=weight, label_smoothing=c.label_smoothing, ignore_index=IGNORE_INDEX)
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
                partial = read_partial(resume_state.get("partial"), start_epoch, steps_per_epoch)
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
        parameters = sum(p.numel() for p in model.parameters())
        processes = f" x {ranks.world} processes" if ranks.distributed else ""
        self.report.info(f"training {c.model} ({parameters / 1e6:.2f} M parameters) on "
                         f"{len(train_set.samples)} chips, validating on {len(val_samples)}; device {device}"
                         f"{processes}, precision {precision.label}")
        stepper = wrap_model(model, ranks, device)  # DDP under torchrun: gradients averaged
        writer = open_tensorboard(self.run_dir) if main else None
        stopped_early = False
        epoch = start_epoch - 1

        def save_within_epoch(done: dict[str, Any]) -> None:
            self._save_checkpoint(model, ema, optimizer, scheduler, scaler, meta, epoch - 1, best_score, best_epoch,
                                  bad_epochs, best_metrics, partial=done)

        try:
            for epoch in range(start_epoch, c.epochs + 1):
                generator.manual_seed(c.seed * 1000 + epoch)
                row = self._train_epoch(stepper, model, ema, train_loader, optimizer, scheduler, scaler, criterion, precision,
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
                self.report.metrics(f"epoch {epoch}/{c.epochs}", {**row, "best": improved})
                meta.metrics = {"epoch": epoch, **{k: float(v) for k, v in row.items()}}
                if main:
                    write_metrics(self.run_dir / METRICS_CSV, row, writer)
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
        if main:
            shutil.copyfile(self.run_dir / BEST_MODEL, self.run_dir / FINAL_MODEL)
            shutil.rmtree(self.run_dir / CACHE_DIR, ignore_errors=True)
            plot_curves(self.run_dir / METRICS_CSV, self.run_dir / "curves.png")
        return TrainResult(self.run_dir, self.run_dir / FINAL_MODEL, best_epoch, best_metrics, epoch, stopped_early)

    def _train_epoch(self, stepper: nn.Module, model: nn.Module, ema: ModelEmaV3 | None, loader: DataLoader[Any],
                     optimizer: torch.optim.Optimizer,
                     scheduler: Any, scaler: torch.amp.GradScaler, criterion: nn.Module, precision: Precision,
                     epoch: int, memory_format: torch.memory_format, meta: ModelMeta,
                     partial: dict[str, Any] | None = None,
                     save_within: Callable[[dict[str, Any]], None] | None = None) -> dict[str, float]:
        """One epoch of training; ``partial`` (from a checkpoint within it) skips the batches it covers.

        ``stepper`` is the module the steps call (``model`` itself, or its DDP wrapper).
        """
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
                mixed = self.config.cutmix > 0 and random.random() < self.config.cutmix
                with precision.autocast():
                    if mixed and meta.task == "segment":  # the masks are mixed with the images
                        images, targets, _ = cutmix(images, targets)
                        logits = stepper(images)
                        loss = criterion(logits, targets)
                    elif mixed:
                        images, targets_b, lam = cutmix(images, targets)
                        logits = stepper(images)
                        loss = lam * criterion(logits, targets) + (1 - lam) * criterion(logits, targets_b)
                    else:
                        logits = stepper(images)
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
                if (save_within is not None and interval > 0 and self.ranks.is_main
                        and time.monotonic() - self._last_save >= interval):
                    save_within({"epoch": epoch, "batches": done, "batches_total": steps, "loss_sum": total_loss,
                                 "seen": seen, "correct": correct, "seconds": before + time.perf_counter() - start})
                self.report.advance(task)
        finally:
            sampler.start = 0
        self.report.end(task)
        elapsed = before + time.perf_counter() - start
        total_loss, seen, correct = all_sum(np.array([total_loss, seen, correct], np.float64), self.ranks).tolist()
        row = {"epoch": epoch, "train_loss": total_loss / max(seen, 1), "train_images_per_s": seen / max(elapsed, 1e-9),
               "epoch_seconds": elapsed}
        if meta.task == "classify":
            row["train_accuracy"] = correct / max(seen, 1)
        return row

    def _validate(self, model: nn.Module, loader: DataLoader[Any], criterion: nn.Module, precision: Precision,
                  memory_format: torch.memory_format, meta: ModelMeta, epoch: int) -> dict[str, float]:
        """Validation loss and accuracy (and macro F1, or mIoU for segmenters) of ``model``."""
        model.eval()
        classes = meta.num_classes
        matrix = np.zeros((classes, classes), np.int64)
        losses, seen = 0.0, 0
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
                truth, pred = targets.cpu().numpy(), logits.argmax(1).cpu().numpy()
                labelled = truth != IGNORE_INDEX
                matrix += confusion(truth[labelled], pred[labelled], classes)
                self.report.advance(task)
        self.report.end(task)
        # Under torchrun each process scored its shard: the sums make every rank's numbers equal.
        matrix = all_sum(matrix, self.ranks)
        losses, seen = all_sum(np.array([losses, seen], np.float64), self.ranks).tolist()
        if meta.task == "segment":
            summary = segmentation_scores(matrix)
            return {"val_loss": losses / max(seen, 1), "val_accuracy": summary["pixel_accuracy"],
                    "val_miou": summary["mean_iou"]}
        scores = classification_scores(matrix)
        return {"val_loss": losses / max(seen, 1), "val_accuracy": scores["accuracy"], "val_macro_f1": scores["macro_f1"]}

    def _save_checkpoint(self, model: nn.Module, ema: ModelEmaV3 | None, optimizer: torch.optim.Optimizer,
                         scheduler: Any, scaler: torch.amp.GradScaler, meta: ModelMeta, epoch: int, best_score: float,
                         best_epoch: int, bad_epochs: int, best_metrics: dict[str, float],
                         partial: dict[str, Any] | None = None) -> None:
        """Write last.ckpt: the state after ``epoch`` completed epochs, plus ``partial`` (batches done
        in the next epoch and its running sums) for a checkpoint within an epoch. Rank 0 only."""
        if not self.ranks.is_main:
            return
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
