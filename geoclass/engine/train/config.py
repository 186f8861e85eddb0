"""What defines a training run (``TrainConfig``), what it produced, and the names in its run folder."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from geoclass.errors import ConfigError

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
    dice: float = 0.0
    crop: int | None = None
    crop_scale: list[float] | None = None
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
        """Check the values a user can set; a bad one is a one-line ConfigError."""
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
        if self.crop_scale is not None and (len(self.crop_scale) != 2
                                            or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 8):
            raise ConfigError(f"--crop-scale must be MIN,MAX with 0 < MIN <= MAX <= 8, got {','.join(map(str, self.crop_scale))}")
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


def read_config(path: Path) -> TrainConfig:
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
