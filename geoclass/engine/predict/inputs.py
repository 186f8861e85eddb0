"""What a prediction reads: the scene's files and the model, checked against each other."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geoclass.errors import BandError, ConfigError, ModelError
from geoclass.io.raster_writer import NODATA
from geoclass.io.reader import Scene
from geoclass.models.fold import fold_batch_norm
from geoclass.models.model_file import (
    ModelMeta,
    default_model_path,
    load_model_file,
    resolve_model_path,
)
from geoclass.progress import Reporter

__all__ = ["check_bands", "load_model", "model_path", "scene_paths", "warn_about_scene"]


def scene_paths(scenes: Any) -> list[str]:
    """The scene's files: one path, or several single-band files to stack."""
    if isinstance(scenes, (str, os.PathLike)):
        return [os.fspath(scenes)]
    paths = [os.fspath(s) for s in scenes]
    if not paths:
        raise ConfigError("predict: no scene given")
    return paths


def model_path(model: str | os.PathLike[str] | None) -> Path:
    """The model file: the one given, the one in a training run folder, or the default one."""
    path = resolve_model_path(None if model is None else Path(model))
    if model is None and not path.exists():
        raise ModelError(
            f"{default_model_path()}: the default model is not installed; pass -m MODEL.safetensors"
        )
    return path


def load_model(path: Path, device: torch.device) -> tuple[nn.Module, ModelMeta]:
    """Load a model that can make a uint8 class map (a classifier or segmenter, <= 255 classes)."""
    model, meta = load_model_file(path, device)
    if meta.task not in ("classify", "segment"):
        raise ModelError(f"{path}: unknown task {meta.task!r} (expected classify or segment)")
    if meta.num_classes > NODATA:
        raise ModelError(f"{path}: {meta.num_classes} classes do not fit a uint8 map (at most 255)")
    fold_batch_norm(model.eval())  # one pass over the activations instead of two
    return model, meta


def check_bands(
    scene: Scene, paths: list[str], bands: Sequence[int] | None, meta: ModelMeta
) -> None:
    """Raise BandError unless the scene's (selected) bands are as many as the model expects."""
    if scene.count == meta.in_chans:
        return
    label = paths[0] if len(paths) == 1 else f"the stack of {len(paths)} files ({paths[0]}, ...)"
    names = f" ({', '.join(meta.band_names)})" if meta.band_names else ""
    if bands is None:
        plural = "s" if scene.count != 1 else ""
        raise BandError(
            f"{label} has {scene.count} band{plural}, the model expects {meta.in_chans}{names}: "
            "pass --bands"
        )
    raise BandError(
        f"--bands selects {scene.count} bands of {label}, the model expects {meta.in_chans}{names}"
    )


def warn_about_scene(
    scene: Scene, meta: ModelMeta, size: int, reporter: Reporter, unit: str = "window"
) -> None:
    """Warn about what makes the map less regular or less reliable than it looks."""
    if scene.gcps is not None:
        reporter.warn(
            f"{scene.name}: is located by {len(scene.gcps[0])} ground control points, not a "
            "geotransform; the map keeps them on the scene's pixel grid (warp it for a regular grid)"
        )
    elif scene.crs is None:
        reporter.warn(
            f"{scene.name}: has no CRS; the map is written on its pixel grid without georeferencing"
        )
    if meta.radiometry_for(scene.dtype) is None and scene.dtype != meta.train_dtype:
        reporter.warn(
            f"{scene.name}: {scene.dtype} pixels, but the model was trained on "
            f"{meta.train_dtype} "
            "and stores no scaling for this type; values are used as they are"
        )
    _warn_small_scene(scene, size, reporter, unit)


def _warn_small_scene(scene: Scene, size: int, reporter: Reporter, unit: str) -> None:
    """A scene smaller than a window (or chip) is predicted from mostly padding: say so."""
    width, height = scene.width, scene.height
    if width >= size and height >= size:
        return
    real = min(width, size) * min(height, size)
    padding = 100 * (1 - real / (size * size))
    shown = f"{padding:.0f}" if padding < 99.5 else f"{padding:.2f}"
    reporter.warn(
        f"{scene.name}: {width}x{height} px is smaller than the model's "
        f"{size}x{size} px {unit}; the map comes from {unit}s that are {shown}% padding "
        f"({real:,} real pixel{'s' if real != 1 else ''} each), so expect it to be less reliable"
    )
