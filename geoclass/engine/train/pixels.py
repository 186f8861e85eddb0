"""Training a per-pixel model straight from a scene and labels (no chip step).

``train_pixels`` opens the scene (one file or a band stack, with predict's ``bands`` and
``nodata``), reads the labels onto its grid (polygons, points with a buffer, lines, or a class
raster), samples the labelled pixels as feature vectors computed by the model itself
(``data.pixel_samples``), holds out whole spatial blocks (or an independent label set, or an
area) for validation, trains the MLP on the sampled vectors with class-balanced loss and writes a
self-describing model file that ``geoclass predict -m RUN`` runs per pixel.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geoclass.data.pixel_samples import PixelSamples, sample_pixels, split_blocks, window_features
from geoclass.engine.metrics import classification_report
from geoclass.engine.train.config import FINAL_MODEL
from geoclass.errors import ConfigError, InputNotFoundError, LabelError, OutputExistsError
from geoclass.io.labels import ClassSpec, open_labels
from geoclass.io.outputs import atomic_output, check_output_path, file_digest, input_files
from geoclass.io.reader import Scene, open_scene
from geoclass.models.model_file import ModelMeta, save_model_file
from geoclass.models.pixel import (
    PixelFeatures,
    PixelMLP,
    PixelTrees,
    available_indices,
    common_band_name,
    feature_names,
)
from geoclass.models.registry import create_model
from geoclass.progress import ProgressCallback, Reporter

__all__ = ["PixelTrainConfig", "PixelTrainResult", "read_scene_list", "train_pixels"]

METRICS_JSON = "metrics.json"
_MIN_PER_CLASS = 10


@dataclass
class PixelTrainConfig:
    """A per-pixel training run.

    Attributes:
        scenes: The scene: one raster or band files stacked in order.
        labels: Vector labels (any OGR format and CRS) or a class raster.
        out_dir: Run folder (gets ``model.safetensors`` and ``metrics.json``).
        label_field: Class attribute of vector labels.
        classes: Class names in id order, ``{name: value or [values]}`` (groups several label
            values into one class), or a classes file.
        layer: Layer of a multi-layer vector file.
        bands: Bands to read (1-based), as in predict.
        nodata: Nodata value for scenes that do not declare one.
        band_names: Common band names (``red``, ``nir``, ...) for the indices; default from the
            file names (Sentinel-2) or band descriptions.
        indices: ``auto`` (every index the bands allow), or a list (may be empty).
        texture: Radius of the neighbourhood mean / std features (0: none; 1: 3x3, which
            lifted held-out balanced accuracy on T33UUU from 0.73 to 0.76).
        hidden: Hidden layer widths of the MLP.
        max_per_class: Labelled pixels sampled per class at most.
        point_buffer: Pixels around each point (and line) label that take its class.
        split: Validation takes whole ``features`` (polygons, points: vector labels) or whole
            spatial ``blocks`` (always for raster labels).
        block_size: Side of the spatial validation blocks, in pixels.
        val_fraction: Share of each class held out (whole blocks) without ``val_labels``.
        val_labels: An independent validation label file (same field and classes).
        val_bounds: ``(left, bottom, right, top)`` in the scene's CRS: labels inside validate.
        model: ``pixel-mlp`` (the default), ``pixel-gbt`` (LightGBM boosted trees) or ``pixel-rf``
            (LightGBM's random forest mode).
        trees: Trees (per class) of ``pixel-gbt`` / ``pixel-rf`` at most (early stopping).
        epochs: Passes of ``pixel-mlp`` over the sampled training pixels (at most; early stopping).
        batch_size: Pixels per step.
        lr: AdamW learning rate.
        seed: Seed of the sample, split and initialisation.
        overwrite: Replace an existing run folder's model.
        more: Further labelled scenes, ``(scene files, labels)``: the same bands, classes (by
            name, or ``classes``) and label field; sampled like the first, ``max_per_class`` in
            all, and validated the same way (their features and blocks stay apart).
    """

    scenes: list[str]
    labels: str
    out_dir: str
    label_field: str | None = None
    classes: ClassSpec | str | None = None
    layer: str | None = None
    bands: list[int] | None = None
    nodata: float | None = None
    band_names: list[str] | None = None
    indices: str | list[str] = "auto"
    texture: int = 1
    hidden: list[int] = field(default_factory=lambda: [32, 32])
    max_per_class: int = 20000
    point_buffer: int = 0
    split: str = "features"
    block_size: int = 32
    val_fraction: float = 0.2
    val_labels: str | None = None
    val_bounds: tuple[float, float, float, float] | None = None
    model: str = "pixel-mlp"
    trees: int = 400
    epochs: int = 60
    batch_size: int = 1024
    lr: float = 3e-3
    seed: int = 0
    overwrite: bool = False
    more: list[tuple[list[str], str]] = field(default_factory=list)

    def validate(self) -> None:
        if self.model not in ("pixel-mlp", "pixel-gbt", "pixel-rf"):
            raise ConfigError(f"per-pixel models are pixel-mlp, pixel-gbt and pixel-rf, got {self.model!r}")
        if self.max_per_class < _MIN_PER_CLASS:
            raise ConfigError(f"max per class must be at least {_MIN_PER_CLASS}, got {self.max_per_class}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val fraction must be in (0, 1), got {self.val_fraction}")
        if self.block_size < 1 or self.texture < 0 or self.point_buffer < 0:
            raise ConfigError("block size must be >= 1, texture and point buffer >= 0")
        if self.split not in ("features", "blocks"):
            raise ConfigError(f"split must be 'features' or 'blocks', got {self.split!r}")
        if self.val_labels is not None and self.val_bounds is not None:
            raise ConfigError("give either val labels or val bounds, not both")
        if self.val_bounds is not None:
            left, bottom, right, top = self.val_bounds
            if not (left < right and bottom < top):
                raise ConfigError(f"val bounds must be left bottom right top, got {self.val_bounds}")


@dataclass
class PixelTrainResult:
    """What a per-pixel run produced."""

    run_dir: Path
    model_path: Path
    metrics: dict[str, Any]
    train_pixels: int
    val_pixels: int
    epochs_run: int
    best_epoch: int
    seconds: float


def train_pixels(config: PixelTrainConfig, progress: ProgressCallback | None = None) -> PixelTrainResult:
    """Train a per-pixel model from a scene and labels (see the module docstring).

    Raises:
        ConfigError: Contradicting or out-of-range settings.
        OutputExistsError: The run folder already holds a model and ``overwrite`` is off.
        LabelError: Labels that miss the scene, fall on nodata, or leave fewer than two classes.
        InputNotFoundError, RasterOpenError, BandError: Unreadable scene or labels.
    """
    t0 = time.perf_counter()
    config.validate()
    report = Reporter(progress)
    run_dir = Path(config.out_dir)
    model_path = run_dir / FINAL_MODEL
    if model_path.exists() and not config.overwrite:
        raise OutputExistsError(f"{run_dir}: already holds a model (pass --overwrite to replace it)")
    torch.manual_seed(config.seed)
    scene = open_scene(config.scenes, bands=config.bands, nodata=config.nodata)
    try:
        labels = open_labels(config.labels, scene, field=config.label_field, classes=config.classes,
                             layer=config.layer, progress=progress, point_buffer=config.point_buffer)
        classes = list(labels.classes)
        stats = scene.statistics(seed=config.seed)
        mean = [float(v) for v in stats.mean]
        std = [max(float(v), 1e-6) for v in stats.std]
        band_names = _band_names(config, scene)
        indices = available_indices(band_names) if config.indices == "auto" else list(config.indices)
        arch_kwargs: dict[str, Any] = {"band_names": band_names, "indices": indices,
                                       "texture": config.texture}
        if config.model == "pixel-mlp":
            arch_kwargs["hidden"] = list(config.hidden)
        model = create_model(config.model, len(classes), scene.count, **arch_kwargs)
        assert isinstance(model, PixelFeatures)
        model.band_mean.copy_(torch.tensor(mean))
        model.band_std.copy_(torch.tensor(std))
        model.eval()
        # The model file's own preprocessing: training pixels are read exactly as predict reads them.
        input_meta = ModelMeta(architecture=config.model, task="segment", classes=classes,
                               in_chans=scene.count, chip_size=256, mean=mean, std=std,
                               train_dtype=str(scene.dtype))
        features = window_features(model, input_meta.preprocess)
        by_feature = config.split == "features" and hasattr(labels, "read_feature_ids")
        samples = sample_pixels(scene, labels, features, classes=len(classes), halo=config.texture,
                                max_per_class=config.max_per_class, block_size=config.block_size,
                                seed=config.seed, holdout_bounds=config.val_bounds,
                                by_feature=by_feature, progress=progress)
        labels.close()
        if config.more:
            samples = _more_scenes(config, scene, samples, features, classes, labels, by_feature,
                                   progress)
        keep = _check_classes(samples, classes, config.labels, report)
        if config.val_labels is not None:
            field = config.label_field or getattr(labels, "field", None)
            val_source = open_labels(config.val_labels, scene, field=field,
                                     classes=config.classes or classes,
                                     layer=config.layer, progress=progress,
                                     point_buffer=config.point_buffer)
            val_samples = sample_pixels(scene, val_source, features, classes=len(classes),
                                        halo=config.texture, max_per_class=config.max_per_class,
                                        block_size=config.block_size, seed=config.seed + 1,
                                        progress=progress)
            val_source.close()
            train_x, train_y, train_blocks = samples.features, samples.labels, samples.blocks
            val_x, val_y = val_samples.features, val_samples.labels
            split = f"independent labels ({config.val_labels})"
        else:
            if config.val_bounds is not None:
                is_val = samples.holdout
                split = f"labels inside {config.val_bounds}"
            else:
                is_val = split_blocks(samples.labels, samples.blocks, config.val_fraction, config.seed)
                unit = "whole features" if by_feature else f"{config.block_size} px blocks"
                split = f"{config.val_fraction:.0%} of each class by {unit}"
            train_x, train_y = samples.features[~is_val], samples.labels[~is_val]
            train_blocks = samples.blocks[~is_val]
            val_x, val_y = samples.features[is_val], samples.labels[is_val]
        if len(np.unique(train_y)) < 2:
            raise LabelError(f"{config.labels}: the training pixels hold fewer than two classes")
        if len(val_y) == 0:
            unit = "feature" if by_feature else "block"
            report.warn(f"no validation pixels (every class lies in a single {unit}); the metrics "
                        "below are on the training pixels (label more features, or pass "
                        "--val-labels)")
            val_x, val_y = train_x, train_y
            split = "the training pixels (no validation pixels)"
        report.info(f"{len(train_y):,} training and {len(val_y):,} validation pixels "
                    f"({split}); {model.num_features} features: "
                    f"{', '.join(feature_names(band_names, scene.count, indices, config.texture))}")
        # Early stopping watches blocks of the training pixels, never the validation pixels the
        # metrics are reported on.
        stop = split_blocks(train_y, train_blocks, 0.15, config.seed + 2)
        if not stop.any():
            stop = np.zeros(len(train_y), bool)
            stop[np.random.default_rng(config.seed).permutation(len(train_y))[: len(train_y) // 7]] = True
        fit_data = (train_x[~stop], train_y[~stop], train_x[stop], train_y[stop])
        if isinstance(model, PixelTrees):
            best_epoch, epochs_run = _fit_trees(model, *fit_data, len(classes), config, report)
            arch_kwargs["booster"] = model.booster.model_to_string()
        else:
            assert isinstance(model, PixelMLP)
            model.feature_mean.copy_(torch.from_numpy(train_x.mean(0)))
            model.feature_std.copy_(torch.from_numpy(np.maximum(train_x.std(0), 1e-6)))
            best_state, best_epoch, epochs_run = _fit(model, *fit_data, len(classes), config, report)
            model.load_state_dict(best_state)
        model.eval()
        probs = _predict_proba(model, val_x)
        metrics = classification_report(val_y, probs, classes)
        metrics["balanced_accuracy"] = metrics["macro_recall"]
        metrics["validation"] = split
        metrics["classes_trained"] = [classes[k] for k in keep]
        meta = replace(
            input_meta,
            arch_kwargs=arch_kwargs,
            band_names=band_names,
            metrics={k: metrics[k] for k in ("accuracy", "balanced_accuracy", "macro_f1",
                                             "cohen_kappa", "samples")},
            training_data={
                "scenes": [os.path.basename(p) for p in config.scenes]
                + [os.path.basename(p) for files, _ in config.more for p in files],
                "more_labels": [os.path.basename(labels_path) for _, labels_path in config.more],
                "labels": os.path.basename(config.labels),
                "labels_sha256": file_digest(Path(config.labels)) if Path(config.labels).is_file() else None,
                "label_field": getattr(labels, "field", None),
                "labelled_pixels": {c: int(n) for c, n in zip(classes, samples.labelled, strict=True)},
                "train_pixels": int(len(train_y)),
                "val_pixels": int(len(val_y)),
                "validation": split,
                "nodata": config.nodata,
                "bands": config.bands,
            },
        )
        inputs = input_files(config.scenes, "scene") + input_files(
            [p for p in (config.labels, config.val_labels) if p], "labels", raster=False)
        for target in (model_path, run_dir / METRICS_JSON):
            check_output_path(target, overwrite=True, inputs=inputs, kind="run output")
        save_model_file(model_path, model, meta)
        with atomic_output(run_dir / METRICS_JSON) as tmp:
            tmp.write_text(json.dumps({"config": _jsonable(asdict(config)), "metrics": metrics},
                                      indent=1))
        return PixelTrainResult(run_dir, model_path, metrics, int(len(train_y)), int(len(val_y)),
                                epochs_run, best_epoch, time.perf_counter() - t0)
    finally:
        scene.close()


def read_scene_list(path: str | os.PathLike[str]) -> list[tuple[list[str], str]]:
    """Read a ``--more-scenes`` file: a JSON list of ``{"scenes": [files], "labels": file}``
    (``scenes`` may be one file), paths relative to the file's folder.

    Raises:
        InputNotFoundError: The file does not exist.
        ConfigError: It is not such a list.
    """
    p = Path(path)
    if not p.is_file():
        raise InputNotFoundError(f"{p}: scene list not found")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{p}: not a JSON scene list ({exc})") from exc
    expected = 'expected a JSON list of {"scenes": [files], "labels": file}'
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{p}: {expected}, found {type(data).__name__}")
    out: list[tuple[list[str], str]] = []
    for i, entry in enumerate(data, start=1):
        scenes = entry.get("scenes") if isinstance(entry, dict) else None
        labels = entry.get("labels") if isinstance(entry, dict) else None
        if isinstance(scenes, str):
            scenes = [scenes]
        if not (isinstance(scenes, list) and scenes and all(isinstance(f, str) for f in scenes)
                and isinstance(labels, str)):
            raise ConfigError(f"{p}: entry {i}: {expected}")
        out.append(([str(p.parent / f) for f in scenes], str(p.parent / labels)))
    return out


def _more_scenes(config: PixelTrainConfig, first: Scene, samples: PixelSamples, features: Any,
                 classes: list[str], first_labels: Any, by_feature: bool,
                 progress: ProgressCallback | None) -> PixelSamples:
    """Add the labelled pixels of ``config.more`` to the first scene's, ``max_per_class`` in all."""
    parts = [samples]
    field_name = config.label_field or getattr(first_labels, "field", None)
    for i, (files, labels_path) in enumerate(config.more, start=1):
        with open_scene(files, bands=config.bands, nodata=config.nodata) as scene:
            if scene.count != first.count or scene.dtype != first.dtype:
                raise ConfigError(
                    f"{scene.name}: {scene.count} bands of {scene.dtype}, but the first scene has "
                    f"{first.count} of {first.dtype}; a model is trained on one kind of scene")
            labels = open_labels(labels_path, scene, field=field_name,
                                 classes=config.classes or classes, layer=config.layer,
                                 progress=progress, point_buffer=config.point_buffer)
            try:
                parts.append(sample_pixels(
                    scene, labels, features, classes=len(classes), halo=config.texture,
                    max_per_class=config.max_per_class, block_size=config.block_size,
                    seed=config.seed + i, block_offset=i << 40, holdout_bounds=config.val_bounds,
                    by_feature=by_feature, progress=progress))
            finally:
                labels.close()
    rng = np.random.default_rng(config.seed)
    labels_all = np.concatenate([p.labels for p in parts])
    keep = np.zeros(len(labels_all), bool)
    for k in np.unique(labels_all):  # a uniform sample of each class across the scenes
        members = np.flatnonzero(labels_all == k)
        keep[rng.permutation(members)[: config.max_per_class]] = True
    return PixelSamples(
        features=_concat([p.features for p in parts])[keep],
        labels=labels_all[keep],
        blocks=np.concatenate([p.blocks for p in parts])[keep],
        holdout=np.concatenate([p.holdout for p in parts])[keep],
        labelled=sum(p.labelled for p in parts),
        on_nodata=sum(p.on_nodata for p in parts),
    )


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    """Concatenate feature arrays, skipping empty ``(0, 0)`` ones."""
    kept = [a for a in arrays if a.size]
    return np.concatenate(kept) if kept else np.zeros((0, 0), np.float32)


def _band_names(config: PixelTrainConfig, scene: Scene) -> list[str]:
    if config.band_names is not None:
        if len(config.band_names) != scene.count:
            raise ConfigError(f"--band-names names {len(config.band_names)} bands, the scene has "
                              f"{scene.count}")
        names = [common_band_name(n) or "" for n in config.band_names]
        unknown = [n for n, c in zip(config.band_names, names, strict=True) if not c]
        if unknown:
            raise ConfigError(f"--band-names: unknown band name {unknown[0]!r} (use red, green, "
                              "blue, nir, swir1, swir2, rededge1..3, coastal, or a Sentinel-2 id)")
        return names
    names = [common_band_name(s or "") or "" for s in scene.band_names]  # descriptions / file names
    # Two bands with one name would make the indices ambiguous.
    seen = [n for n in names if n]
    return names if len(seen) == len(set(seen)) else [""] * scene.count


def _check_classes(samples: PixelSamples, classes: list[str], path: str, report: Reporter) -> list[int]:
    """Warn about classes with no usable pixels; the ids of those that have some."""
    keep = []
    for k, name in enumerate(classes):
        n, lost = int(samples.labelled[k]), int(samples.on_nodata[k])
        if n == 0 and lost:
            report.warn(f"{path}: class {name!r}: all {lost:,} labelled pixels fall on nodata; "
                        "trained without it")
        elif n == 0:
            report.warn(f"{path}: class {name!r}: no labelled pixel inside the scene; trained without it")
        elif n < _MIN_PER_CLASS:
            report.warn(f"{path}: class {name!r}: only {n} labelled pixel(s); its accuracy will "
                        "be poor")
            keep.append(k)
        else:
            keep.append(k)
    if not (samples.labelled > 0).any():
        lost = int(samples.on_nodata.sum())
        where = f"all {lost:,} labelled pixels fall on nodata" if lost else "no labelled pixel lies in the scene"
        raise LabelError(f"{path}: {where}; nothing to train on")
    if len(keep) < 2:
        raise LabelError(f"{path}: labelled pixels of only one class ({classes[keep[0]]!r}) in the "
                         "scene; a map needs at least two")
    return keep


def _fit(model: PixelMLP, train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray,
         val_y: np.ndarray, num_classes: int, config: PixelTrainConfig,
         report: Reporter) -> tuple[dict[str, torch.Tensor], int, int]:
    """Train on the vectors; the state with the best validation balanced accuracy."""
    x = torch.from_numpy(train_x)
    y = torch.from_numpy(train_y)
    counts = np.bincount(train_y, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max(1, (counts > 0).sum()), 0.0)
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32), label_smoothing=0.05)
    optimizer = torch.optim.AdamW(model.mlp.parameters(), lr=config.lr, weight_decay=1e-4)
    steps = config.epochs * max(1, -(-len(y) // config.batch_size))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    generator = torch.Generator().manual_seed(config.seed)
    best_score, best_epoch, patience = -1.0, 0, 0
    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    report.start("train", config.epochs)
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(len(y), generator=generator)
        for i in range(0, len(y), config.batch_size):
            idx = order[i : i + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model.classify_features(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
            schedule.step()
        model.eval()
        pred = _predict_proba(model, val_x).argmax(1)
        present = np.unique(val_y)
        score = float(np.mean([(pred[val_y == k] == k).mean() for k in present]))
        report.metrics("train", {"epoch": epoch, "loss": float(loss.detach()),
                                 "stop_balanced_accuracy": score})
        report.advance("train")
        if score > best_score + 1e-4:
            best_score, best_epoch, patience = score, epoch, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            patience += 1
            if patience >= 15:
                break
    report.end("train")
    return best_state, best_epoch, epoch


def _fit_trees(model: PixelTrees, train_x: np.ndarray, train_y: np.ndarray, stop_x: np.ndarray,
               stop_y: np.ndarray, num_classes: int, config: PixelTrainConfig,
               report: Reporter) -> tuple[int, int]:
    """Boost trees on the vectors, stopping on the stop set's log loss; (best, rounds run)."""
    import lightgbm

    counts = np.bincount(train_y, minlength=num_classes).astype(np.float64)
    per_class = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max(1, (counts > 0).sum()), 0.0)
    params = {
        "objective": "multiclass", "num_class": num_classes, "learning_rate": 0.1,
        "num_leaves": 31, "min_data_in_leaf": 20, "feature_fraction": 0.8, "bagging_fraction": 0.8,
        "bagging_freq": 1, "lambda_l2": 1.0, "seed": config.seed, "verbose": -1,
        "num_threads": os.cpu_count() or 1, "deterministic": True, "force_row_wise": True,
    }
    if config.model == "pixel-rf":  # bagged, fully grown trees averaged: a random forest
        params.update(boosting="rf", num_leaves=255, min_data_in_leaf=5, bagging_fraction=0.632,
                      feature_fraction=0.6)
    train_set = lightgbm.Dataset(train_x, train_y, weight=per_class[train_y])
    stop_set = lightgbm.Dataset(stop_x, stop_y, weight=per_class[stop_y], reference=train_set)
    rounds = config.trees
    report.start("train", rounds)

    def advance(env: Any) -> None:
        report.advance("train")

    booster = lightgbm.train(params, train_set, num_boost_round=rounds, valid_sets=[stop_set],
                             callbacks=[lightgbm.early_stopping(30, verbose=False), advance])
    report.end("train")
    best = booster.best_iteration or booster.current_iteration()
    model.set_booster(booster.model_to_string(num_iteration=best))
    return best, booster.current_iteration()


def _predict_proba(model: PixelFeatures, x: np.ndarray) -> np.ndarray:
    if isinstance(model, PixelTrees):
        return model.predict_features(x)
    assert isinstance(model, PixelMLP)
    with torch.inference_mode():
        out = [torch.softmax(model.classify_features(torch.from_numpy(x[i : i + 65536])), 1)
               for i in range(0, len(x), 65536)]
    return torch.cat(out).numpy() if out else np.zeros((0, model.mlp[-1].out_channels), np.float32)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
