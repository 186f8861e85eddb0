"""The model description of a new run: classes, bands, task, and the band statistics of its chips."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from geoclass.data.chips import read_chip
from geoclass.data.samples import Sample, SampleSet
from geoclass.engine.train.config import TrainConfig
from geoclass.errors import DatasetError
from geoclass.io.stats import StatsAccumulator
from geoclass.models.model_file import ModelMeta
from geoclass.models.registry import architecture_task


def build_meta(config: TrainConfig, train_set: SampleSet) -> ModelMeta:
    """The ``ModelMeta`` a new run trains and saves: read from its first chip and the dataset.

    Raises:
        DatasetError: A segmenting model on classification chips.
    """
    c = config
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


def compute_band_statistics(samples: list[Sample], meta: ModelMeta, bands: list[int] | None, limit: int,
                            seed: int) -> tuple[list[float], list[float], float, float]:
    """Band statistics in model units over (a sample of at most ``limit``) training chips.

    Mean and std per band come from ``geoclass.io.stats`` (chips merged one by one); the value range
    (a bright level) and floor (a dark level) are the medians over chips of each chip's 99.5th and
    0.5th percentile, the brightest band's and the darkest band's.

    Returns:
        ``(mean, std, value_range, floor)``; the std is at least 1e-6, the range 255 for uint8 data.
    """
    rng = random.Random(seed)
    chosen = samples if len(samples) <= limit else rng.sample(samples, limit)
    moments: StatsAccumulator | None = None
    high: list[np.ndarray] = []
    low: list[np.ndarray] = []
    for sample in chosen:
        values = meta.to_model_units(read_chip(str(sample.path), bands)).astype(np.float64)
        flat = values.reshape(values.shape[0], -1)
        if moments is None:
            moments = StatsAccumulator(flat.shape[0], np.float64, percentiles=())
        moments.update(flat)
        dark, bright = np.percentile(flat, [0.5, 99.5], axis=1)
        low.append(dark)
        high.append(bright)
    assert moments is not None
    stats = moments.result()
    value_range = 255.0 if meta.train_dtype == "uint8" else float(np.max(np.median(np.stack(high), axis=0)))
    floor = float(np.min(np.median(np.stack(low), axis=0)))
    return list(stats.mean), np.maximum(stats.std, 1e-6).tolist(), value_range, floor
