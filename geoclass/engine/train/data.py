"""What a run trains and validates on: the sample sets, the chip loaders, the decoded-chip cache."""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from geoclass.data.chip_cache import ChipCache, chip_cache_bytes
from geoclass.data.chips import ChipDataset, SeededSampler, init_chip_worker
from geoclass.data.samples import Sample, SampleSet, apply_groups, holdout_split, load_samples
from geoclass.data.transforms import Augmenter, max_value_of
from geoclass.engine.device import Precision
from geoclass.engine.train.config import CACHE_DIR, TrainConfig
from geoclass.engine.train.distributed import Ranks
from geoclass.errors import DatasetError
from geoclass.io.outputs import free_bytes
from geoclass.models.model_file import ModelMeta
from geoclass.progress import Reporter


def sample_sets(config: TrainConfig, report: Reporter) -> tuple[SampleSet, list[Sample]]:
    """The training set and the validation chips (given, a split of the dataset, or held out).

    Raises:
        DatasetError: Validation labels that are not training classes.
    """
    c = config
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
        report.info(f"no validation data given: holding out {len(val_samples)} chips ({c.val_fraction:.0%})")
    if c.groups:
        train_set = apply_groups(train_set, c.groups)
        val_samples = apply_groups(SampleSet(train_set.root, val_samples, list(_original_classes(c, train_set))),
                                   c.groups).samples
    unknown = sorted({s.label for s in val_samples} - set(train_set.classes))
    if unknown:
        raise DatasetError(f"{c.val or c.val_split_csv or c.data}: validation labels {', '.join(unknown)} "
                           f"are not training classes ({', '.join(train_set.classes)})")
    return train_set, val_samples


def make_loaders(config: TrainConfig, run_dir: Path, report: Reporter, train_set: SampleSet,
                 val_samples: list[Sample], meta: ModelMeta, precision: Precision,
                 ranks: Ranks | None = None) -> tuple[DataLoader[Any], DataLoader[Any], torch.Generator]:
    """The training and validation loaders, and the generator to seed before each epoch's order.

    Under torchrun (``ranks.world > 1``) both are this process's shard, and a training batch is
    ``batch_size / world`` chips: the global batch is the configured one.
    """
    c = config
    ranks = ranks or Ranks()
    augment = None
    if c.augment:
        reflectance_like = meta.training_data.get("value_floor", 0.0) >= 0
        if not reflectance_like:
            report.info("the training data has negative values (e.g. SAR in dB): augmenting with flips, "
                        "rotations, warps and blur only, not illumination, haze or gamma")
        augment = Augmenter(c.augment_strength, meta.training_data["value_range"], max_value_of(meta.train_dtype),
                            radiometric=reflectance_like)
    # One cache per process: processes of one run never write the same file.
    suffix = f"-rank{ranks.rank}" if ranks.distributed else ""
    train_cache = _cache(config, run_dir, report, "train" + suffix, train_set.samples, meta)
    train_ds = ChipDataset(train_set.samples, meta, c.bands, augment, train_cache, crop=c.crop,
                           crop_scale=tuple(c.crop_scale) if c.crop_scale else (1.0, 1.0))
    val_ds = ChipDataset(val_samples, meta, c.bands, None,
                         _cache(config, run_dir, report, "val" + suffix, val_samples, meta))
    generator = torch.Generator()
    common: dict[str, Any] = {"num_workers": c.workers, "pin_memory": precision.device.type == "cuda",
                              "worker_init_fn": _seed_worker}
    if c.workers > 0:
        common.update(persistent_workers=True, prefetch_factor=4)
    # The loader draws its worker seed from a generator of its own (see SeededSampler).
    loader_generator = torch.Generator().manual_seed(c.seed + ranks.rank)
    batch = c.batch_size // ranks.world
    sampler = SeededSampler(len(train_ds), generator, ranks.rank, ranks.world)
    train_loader = DataLoader(train_ds, batch_size=batch, sampler=sampler, drop_last=len(sampler) > batch,
                              generator=loader_generator, **common)
    val_shard = list(range(ranks.rank, len(val_ds), ranks.world))  # each chip scored by one process
    val_loader = DataLoader(val_ds, batch_size=batch * 2, sampler=val_shard, **common)
    return train_loader, val_loader, generator


def class_weights(config: TrainConfig, train_set: SampleSet, meta: ModelMeta,
                  device: torch.device) -> torch.Tensor | None:
    """Inverse-frequency loss weights per class (``--class-weights auto``), or None.

    Classifiers count chips. Segmenters count labelled pixels (``pixel_counts`` of the tiled
    dataset's training split) and take the square root of the inverse frequency: full inverse
    weights over pixels make a rare class's every pixel worth dozens of common ones, and the
    map over-paints it.
    """
    if config.class_weights == "none":
        return None
    if meta.task == "segment":
        pixels = (train_set.info or {}).get("pixel_counts", {}).get("train", {})
        if not pixels:
            return None
        counts = np.array([pixels.get(name, 0) for name in meta.classes], dtype=np.float64)
        weights = np.where(counts > 0, np.sqrt(counts.sum() / (len(counts) * np.maximum(counts, 1))), 0.0)
    else:
        counts = np.array([train_set.counts().get(name, 0) for name in meta.classes], dtype=np.float64)
        weights = np.where(counts > 0, counts.sum() / (len(counts) * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32, device=device)


def _cache(config: TrainConfig, run_dir: Path, report: Reporter, name: str, samples: list[Sample],
           meta: ModelMeta) -> ChipCache | None:
    """A decoded-chip cache in RUN_DIR/cache for classification chips, if the disk has room."""
    if not config.cache or meta.task != "classify" or not samples:
        return None
    folder = run_dir / CACHE_DIR / name
    bands = ",".join(map(str, config.bands or []))
    shape = (meta.in_chans, meta.chip_size, meta.chip_size)
    needed = chip_cache_bytes(len(samples), shape, meta.train_dtype)
    if needed * 1.1 > (free_bytes(run_dir) or 0):
        report.info(f"not caching decoded {name} chips: they need {needed / 1e9:.1f} GB, "
                    f"the disk of {run_dir} has less free")
        return None
    return ChipCache(folder, [f"{s.path}|{bands}" for s in samples], shape, meta.train_dtype)


def _seed_worker(worker_id: int) -> None:
    """Start a loader worker: chip reading set up, numpy and random seeded from torch's seed."""
    init_chip_worker()
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _has_split(root: str, split: str) -> bool:
    """Whether the tiled dataset's chips.csv names any chip of ``split``."""
    with (Path(root) / "chips.csv").open(newline="") as handle:
        return any(row.get("split") == split for row in csv.DictReader(handle))


def _original_classes(config: TrainConfig, grouped: SampleSet) -> list[str]:
    """The dataset's classes before ``--groups`` merged them."""
    return load_samples(config.data, config.split_csv).classes if not grouped.info else list(grouped.info["classes"])
