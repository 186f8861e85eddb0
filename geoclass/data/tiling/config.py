"""What ``geoclass tile`` is asked to do (``TileConfig``) and what it produced (``TileResult``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from geoclass.errors import ConfigError
from geoclass.io.color_map import ColorMap
from geoclass.io.labels import ClassSpec
from geoclass.io.stats import BandStatistics

__all__ = ["DATASET_FORMAT", "DATASET_VERSION", "SKIP_REASONS", "Task", "TileConfig", "TileResult", "validate"]

DATASET_FORMAT = "geoclass-chips"
DATASET_VERSION = 1
SKIP_REASONS = ("nodata", "too_much_nodata", "unlabelled", "under_labelled")
"""Why a window gave no chip: all nodata, over ``max_nodata``, no label, under ``min_labelled``."""

Task = Literal["classify", "segment"]


@dataclass
class TileConfig:
    """Everything ``tile`` needs; the CLI builds one from its options.

    Attributes:
        scenes: One raster, or single-band rasters stacked in the order given.
        output: Output folder.
        labels: Vector file (with ``label_field``) or class raster; None for unlabelled chips.
        label_field: Class attribute of vector labels (optional when there is only one field).
        classes: Classes file, names in id order, or ``{name: label value}``; default the label
            values found, sorted.
        bands: 1-based bands of the stacked scene to keep, in order; default all.
        size: Chip side in pixels.
        stride: Step between chips; default ``size``. Must not exceed ``size``.
        task: ``classify`` (one class per chip) or ``segment`` (chip + mask pairs).
        min_labelled: Minimum labelled fraction of a chip's pixels to keep it.
        max_nodata: Maximum nodata fraction of a chip's pixels to keep it.
        val_fraction: Share of spatial blocks that go to the validation split.
        block_size: Side of a split block, in chip steps.
        seed: Seed of the block hash.
        overwrite: Replace the outputs of an earlier run in ``output``.
        resume: Continue an interrupted run in ``output``, keeping the chips already written.
        label_layer: Layer of a multi-layer vector file; default the first.
        nodata: Treat this value as nodata in every band, overriding the files' own (for scenes
            with fill but no declared nodata, e.g. Landsat's zero fill).
        compress_level: DEFLATE level of the chips, 1 (fastest; the default, as compression is
            most of the cost of tiling) to 9 (smallest; GDAL's default is 6).
        workers: Threads reading and writing chips; None picks from the CPU count (none below 4
            CPUs), 0 works in the calling thread.
        command: The command line that made the dataset, recorded in ``dataset.json``.
        sample: ``grid`` (chips on a regular grid) or ``labels`` (chips centred on each point
            and on ``per_feature`` points inside each polygon or line; for sparse labels).
        per_feature: Chips per polygon or line with ``sample="labels"``.
        label_colors: The labels are a colour-coded mask: the colour map (a file, see
            ``geoclass.io.color_map``, or a ``ColorMap``) that says which colour is which class.
    """

    scenes: Sequence[str | os.PathLike[str]] | str | os.PathLike[str]
    output: str | os.PathLike[str]
    labels: str | os.PathLike[str] | None = None
    label_field: str | None = None
    classes: str | os.PathLike[str] | ClassSpec | None = None
    bands: Sequence[int] | None = None
    size: int = 64
    stride: int | None = None
    task: Task = "classify"
    min_labelled: float = 0.5
    max_nodata: float = 0.0
    val_fraction: float = 0.2
    block_size: int = 8
    seed: int = 0
    overwrite: bool = False
    resume: bool = False
    label_layer: str | None = None
    nodata: float | None = None
    compress_level: int = 1
    workers: int | None = None
    command: str | None = None
    sample: str = "grid"
    per_feature: int = 1
    label_colors: str | os.PathLike[str] | ColorMap | None = None


@dataclass
class TileResult:
    """What a ``tile`` run produced.

    Attributes:
        output: The output folder.
        task: ``classify`` or ``segment``.
        classes: Class names in id order (empty without labels).
        windows: Windows looked at (the size of the chip grid).
        chips: Chips in the dataset.
        written: Chips written by this run.
        reused: Chips kept from an earlier, interrupted run (``resume``).
        counts: Chips per split and class (``""`` is the class of unlabelled chips).
        skipped: Windows without a chip, by reason (see ``SKIP_REASONS``).
        statistics: Per-band statistics of the train split's valid pixels (None without any).
        dataset_json: Path of ``dataset.json``.
        seconds: Wall time of the run.
        pixel_counts: Segmentation: labelled pixels per split and class (a chip's majority class
            says little about a mask).
    """

    output: Path
    task: str
    classes: list[str]
    windows: int
    chips: int
    written: int
    reused: int
    counts: dict[str, dict[str, int]]
    skipped: dict[str, int]
    statistics: BandStatistics | None
    dataset_json: Path
    seconds: float = 0.0
    pixel_counts: dict[str, dict[str, int]] | None = None

    def split_total(self, split: str) -> int:
        """Chips in one split."""
        return sum(self.counts.get(split, {}).values())


def validate(cfg: TileConfig) -> None:
    """Raise ``ConfigError`` for options out of range."""
    if cfg.task not in ("classify", "segment"):
        raise ConfigError(f"task must be 'classify' or 'segment', got {cfg.task!r}")
    if not isinstance(cfg.size, int) or cfg.size < 1:
        raise ConfigError(f"chip size must be a positive number of pixels, got {cfg.size!r}")
    if cfg.stride is not None and not 1 <= cfg.stride <= cfg.size:
        raise ConfigError(f"stride must be between 1 and the chip size ({cfg.size}), got {cfg.stride}")
    for name in ("min_labelled", "max_nodata"):
        v = getattr(cfg, name)
        if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
            raise ConfigError(f"--{name.replace('_', '-')} must be between 0 and 1, got {v}")
    if not (isinstance(cfg.val_fraction, (int, float)) and 0.0 <= cfg.val_fraction < 1.0):
        raise ConfigError(f"--val-fraction must be in [0, 1), got {cfg.val_fraction}")
    if not isinstance(cfg.block_size, int) or cfg.block_size < 1:
        raise ConfigError(f"--block-size must be >= 1 chip, got {cfg.block_size!r}")
    if cfg.overwrite and cfg.resume:
        raise ConfigError("use either overwrite or resume, not both")
    if cfg.sample not in ("grid", "labels"):
        raise ConfigError(f"sample must be 'grid' or 'labels', got {cfg.sample!r}")
    if cfg.sample == "labels" and cfg.labels is None:
        raise ConfigError("--sample labels needs --labels (the chips are centred on them)")
    if not isinstance(cfg.per_feature, int) or cfg.per_feature < 1:
        raise ConfigError(f"--per-feature must be >= 1, got {cfg.per_feature!r}")
    if cfg.task == "segment" and cfg.labels is None:
        raise ConfigError("--task segment needs --labels (the masks are made from them)")
    if not isinstance(cfg.compress_level, int) or not 1 <= cfg.compress_level <= 9:
        raise ConfigError(f"compress_level must be 1-9, got {cfg.compress_level!r}")
    if cfg.workers is not None and cfg.workers < 0:
        raise ConfigError(f"workers must be >= 0, got {cfg.workers}")
