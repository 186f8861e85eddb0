"""Training: streaming chips, augmentation, AMP, checkpoints, early stopping, resume.

The data flow of a run: ``config`` (what defines it) -> ``data`` (sample sets, loaders, cache) and
``meta`` (model description, band statistics) -> ``loop`` (epochs, validation, ``schedule``) ->
``checkpoint`` and ``records`` (what it leaves in its folder); ``run`` starts or resumes one.
"""

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
from geoclass.engine.train.meta import compute_band_statistics
from geoclass.engine.train.run import resume, train

__all__ = [
    "BEST_MODEL", "CACHE_DIR", "CONFIG_JSON", "FINAL_MODEL", "LAST_CKPT", "LAST_MODEL", "METRICS_CSV", "TrainConfig",
    "TrainResult", "compute_band_statistics", "resume", "train",
]
