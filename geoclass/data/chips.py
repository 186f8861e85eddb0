"""Map-style torch datasets over chip files, read lazily by DataLoader workers."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from itertools import islice

import cv2
import numpy as np
import rasterio
import torch
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from torch.utils.data import Dataset, Sampler

from geoclass.data.chip_cache import ChipCache
from geoclass.data.samples import Sample
from geoclass.data.transforms import Augmenter
from geoclass.errors import DatasetError
from geoclass.models.model_file import ModelMeta

IGNORE_INDEX = 255


# Chip folders hold thousands of files: stop GDAL from listing the folder to look for sidecar
# files on every open (that listing made each 64x64 read ~15 ms).
_CHIP_GDAL_OPTIONS = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}
_worker_env: rasterio.Env | None = None


def init_chip_worker(worker_id: int = 0) -> None:
    """Set up a DataLoader worker process for chip reading, once.

    Entering the GDAL environment and the warning filter per chip cost more than reading a
    64x64 chip; a worker process is ours, so it keeps both for its whole life.
    """
    global _worker_env
    if _worker_env is None:
        _worker_env = rasterio.Env(**_CHIP_GDAL_OPTIONS)
        _worker_env.__enter__()
        warnings.simplefilter("ignore", NotGeoreferencedWarning)


def read_chip(path: str, bands: Sequence[int] | None = None) -> np.ndarray:
    """Read a chip file as (bands, h, w) in its own dtype, naming the file on failure."""
    try:
        if _worker_env is not None:
            return _read_chip(path, bands)
        with warnings.catch_warnings(), rasterio.Env(**_CHIP_GDAL_OPTIONS):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return _read_chip(path, bands)
    except RasterioIOError as exc:
        raise DatasetError(f"{path}: unreadable chip: {str(exc).splitlines()[0]}") from exc


def _read_chip(path: str, bands: Sequence[int] | None) -> np.ndarray:
    with rasterio.open(path) as src:
        if bands is not None and max(bands) > src.count:
            raise DatasetError(f"{path}: band {max(bands)} requested but the chip has {src.count} bands")
        return src.read(list(bands) if bands is not None else None)


class SeededSampler(Sampler[tuple[int, int]]):
    """Shuffles indices and pairs each with an augmentation seed, both drawn from ``generator``.

    Reseed the generator at the start of every epoch (``generator.manual_seed(...)``) and the
    epoch's order and augmentations depend only on that seed. Give the DataLoader a generator of
    its own, not this one: it draws its worker seed from its generator whenever it starts workers,
    which with persistent workers is only in the first epoch a process runs, so a shared generator
    would give a resumed run another order than an uninterrupted one.

    Set ``start`` to continue an epoch part way: the next pass draws the whole epoch's order and
    seeds as usual and yields them from item ``start`` on, so the items before it are never loaded.

    With ``world > 1`` (torchrun) every process draws the same order and takes every ``world``-th
    item from its ``rank`` on; the order is first wrapped round to a multiple of ``world``, so all
    processes take the same number of steps (DDP needs that). Each item keeps the augmentation
    seed it has in a one-process run.
    """

    def __init__(self, length: int, generator: torch.Generator, rank: int = 0, world: int = 1) -> None:
        self.length = length
        self.generator = generator
        self.rank = rank
        self.world = world
        self.start = 0

    def __len__(self) -> int:
        return max(-(-self.length // self.world) - self.start, 0)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = torch.randperm(self.length, generator=self.generator).tolist()
        seeds = torch.randint(0, 2**31 - 1, (self.length,), generator=self.generator).tolist()
        items = list(zip(order, seeds))
        if self.world > 1 and items:
            pad = (-len(items)) % self.world
            items += (items * (pad // len(items) + 1))[:pad]
            items = items[self.rank :: self.world]
        return islice(items, self.start, None)


def random_crops(images: np.ndarray, masks: np.ndarray, size: int, rng: np.random.Generator,
                 scale: tuple[float, float] = (1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` x ``size`` crop at a random place of each chip, the same for image and mask.

    Chips cut larger than the training size give each epoch other windows of the same pixels:
    random crops of large images, not the same grid every time. With a ``scale`` range each crop
    first covers ``size * s`` chip pixels (``s`` drawn log-uniformly, capped by the chip) and is
    then resized to ``size``: s > 1 zooms out (more context, smaller objects), s < 1 zooms in.
    The image is resampled by area (shrinking) or bilinearly, the mask by nearest neighbour.
    """
    n, bands, h, w = images.shape
    if size > min(h, w):
        raise DatasetError(f"--crop {size} is larger than the chips ({w}x{h} px); cut larger chips")
    low, high = scale
    spans = np.full(n, size)
    if (low, high) != (1.0, 1.0):
        drawn = np.exp(rng.uniform(np.log(low), np.log(high), n))
        spans = np.clip(np.rint(size * drawn).astype(int), 4, min(h, w))
    rows = rng.integers(0, h - spans + 1)
    cols = rng.integers(0, w - spans + 1)
    out_images = np.empty((n, bands, size, size), images.dtype)
    out_masks = np.empty((n, size, size), masks.dtype)
    for i, (r, c, span) in enumerate(zip(rows, cols, spans)):
        image, mask = images[i, :, r:r + span, c:c + span], masks[i, r:r + span, c:c + span]
        if span != size:
            interpolation = cv2.INTER_AREA if span > size else cv2.INTER_LINEAR
            resized = cv2.resize(np.ascontiguousarray(np.moveaxis(image, 0, -1)), (size, size),
                                 interpolation=interpolation)
            image = np.moveaxis(resized.reshape(size, size, bands), -1, 0)
            mask = cv2.resize(np.ascontiguousarray(mask), (size, size), interpolation=cv2.INTER_NEAREST)
        out_images[i], out_masks[i] = image, mask
    return out_images, out_masks


class ChipDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Labelled chips as normalised tensors, with optional augmentation.

    Files are opened in ``__getitem__``, so the dataset pickles as a list of paths and any number
    of DataLoader workers can read in parallel; nothing is held in memory between items.

    Args:
        samples: The chips.
        meta: The model description: class list, band count, radiometry and normalisation.
        bands: 1-based bands to read from each chip (None: all).
        augment: Training augmentation, or None for evaluation.
        cache: Decoded chips kept on disk after their first read (classification chips only).
        crop: Segmentation training: a random ``crop`` x ``crop`` window of each chip (and its
            mask) per draw; validation and evaluation always see the whole chips.
        crop_scale: Segmentation training: each crop covers ``crop * s`` chip pixels, ``s`` drawn
            from this range, resized to ``crop`` (see :func:`random_crops`).
    """

    def __init__(self, samples: Sequence[Sample], meta: ModelMeta, bands: Sequence[int] | None = None,
                 augment: Augmenter | None = None, cache: ChipCache | None = None,
                 crop: int | None = None, crop_scale: tuple[float, float] = (1.0, 1.0)) -> None:
        self.crop = crop if meta.task == "segment" and augment is not None else None
        self.crop_scale = crop_scale if augment is not None else (1.0, 1.0)
        self.samples = list(samples)
        self.meta = meta
        self.bands = list(bands) if bands else None
        self.augment = augment
        self.cache = cache if meta.task == "classify" else None
        self.class_index = {name: i for i, name in enumerate(meta.classes)}
        self.segment = meta.task == "segment"

    def __len__(self) -> int:
        return len(self.samples)

    def labels(self) -> np.ndarray:
        return np.array([self.class_index[s.label] for s in self.samples], dtype=np.int64)

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int | tuple[int, int]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A whole batch, which the DataLoader fetches in one call.

        With ``(index, seed)`` pairs from :class:`SeededSampler` the augmentation is seeded once per
        batch with the first pair's seed: the sampler fixes every batch's members and order, so a
        batch's augmentations still depend only on the run's seed and epoch, whichever worker reads
        it, and a resumed run repeats them exactly. (Reseeding costs more than augmenting a 64x64
        chip, so doing it per chip was a third of the data path.)
        """
        if indices and isinstance(indices[0], tuple) and self.augment is not None:
            self.augment.seed(indices[0][1])
        positions = [i[0] if isinstance(i, tuple) else i for i in indices]
        chips = [self._load(i) for i in positions]
        labels = [mask if mask is not None else self.class_index[self.samples[i].label]
                  for i, (_, mask) in zip(positions, chips)]
        if self.augment is None:  # chips of a segmentation set may differ in size
            images = [self.meta.normalize(self.meta.to_model_units(raw)) for raw, _ in chips]
        else:
            sizes = {raw.shape for raw, _ in chips}
            if len(sizes) > 1:
                raise DatasetError(f"{self.samples[positions[0]].path}: the chips of a training batch differ in size "
                                   f"({', '.join(sorted(str(s) for s in sizes))}); cut the data with one chip size")
            batch = self.meta.to_model_units(np.stack([raw for raw, _ in chips]))
            masks = np.stack(labels) if self.segment else None
            if masks is not None and (self.crop is not None or self.crop_scale != (1.0, 1.0)):
                size = self.crop or min(batch.shape[-2:])
                batch, masks = random_crops(batch, masks, size, self.augment.rng, self.crop_scale)
            batch, masks = self.augment(batch, masks)
            images = list(self.meta.normalize(batch, out=batch))
            if masks is not None:
                labels = list(masks)
        return [(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)), self._target(label))
                for image, label in zip(images, labels)]

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """One chip's raw pixels, and its mask for segmentation."""
        sample = self.samples[index]
        raw = self.cache.get(index) if self.cache is not None else None
        if raw is None:
            raw = read_chip(str(sample.path), self.bands)
            if raw.shape[0] != self.meta.in_chans:
                raise DatasetError(f"{sample.path}: expected {self.meta.in_chans} bands, found {raw.shape[0]}")
            size = self.meta.chip_size
            if not self.segment and raw.shape[1:] != (size, size):
                raise DatasetError(f"{sample.path}: expected a {size}x{size} chip, "
                                   f"found {raw.shape[2]}x{raw.shape[1]}")
            if self.cache is not None:
                self.cache.put(index, raw)
        mask = None
        if self.segment:
            if not sample.mask:
                raise DatasetError(f"{sample.path}: segmentation chip without a mask")
            mask = read_chip(str(sample.mask))[0].astype(np.uint8)
            if mask.shape != raw.shape[1:]:
                raise DatasetError(f"{sample.mask}: expected a {raw.shape[2]}x{raw.shape[1]} mask like its chip "
                                   f"{sample.path.name}, found {mask.shape[1]}x{mask.shape[0]}")
            if self.augment is None:  # evaluation: pixels an earlier chip of the grid covers count there
                first_row, first_col = sample.counted_from
                mask[:first_row] = IGNORE_INDEX
                mask[:, :first_col] = IGNORE_INDEX
        return raw, mask

    def _target(self, label: np.ndarray | int) -> torch.Tensor:
        if isinstance(label, np.ndarray):
            return torch.from_numpy(label.astype(np.int64))
        return torch.tensor(label, dtype=torch.int64)
