"""ChipDataset batches: segmentation masks move with their augmented chips; mixed sizes are a clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from geoclass.data.chips import ChipDataset
from geoclass.data.samples import Sample
from geoclass.data.transforms import Augmenter
from geoclass.errors import DatasetError
from geoclass.models.model_file import ModelMeta


def _write(path: Path, array: np.ndarray) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=array.shape[2], height=array.shape[1],
                       count=array.shape[0], dtype=array.dtype.name) as dst:
        dst.write(array)
    return path


def _segment_chips(root: Path, sizes: list[int]) -> list[Sample]:
    rng = np.random.default_rng(0)
    samples = []
    for i, size in enumerate(sizes):
        mask = rng.integers(0, 3, (1, size, size)).astype(np.uint8)
        image = np.repeat(mask * 100, 3, axis=0).astype(np.uint8)  # every band shows the mask
        samples.append(Sample(_write(root / f"chip_{i}.tif", image), "", _write(root / f"mask_{i}.tif", mask)))
    return samples


def _meta(size: int) -> ModelMeta:
    return ModelMeta(architecture="fcn", task="segment", classes=["a", "b", "c"], in_chans=3, chip_size=size,
                     mean=[50.0] * 3, std=[2.0] * 3, train_dtype="uint8")


def test_segmentation_masks_follow_the_flips_and_rotations(tmp_path: Path) -> None:
    samples = _segment_chips(tmp_path, [16] * 8)
    dataset = ChipDataset(samples, _meta(16), None, Augmenter("light", 255.0))
    batch = dataset.__getitems__([(i, 5) for i in range(8)])
    moved = 0
    for (image, mask), sample in zip(batch, samples):
        assert image.dtype == torch.float32 and mask.dtype == torch.int64 and mask.shape == (16, 16)
        assert torch.equal(image[0], (mask.float() * 100 - 50) / 2)  # normalised with the model's mean and std
        with rasterio.open(sample.mask) as src:
            moved += not np.array_equal(src.read(1), mask.numpy())
    assert moved > 0


def test_a_training_batch_of_mixed_chip_sizes_names_the_data(tmp_path: Path) -> None:
    samples = _segment_chips(tmp_path, [16, 16, 24])
    dataset = ChipDataset(samples, _meta(16), None, Augmenter("strong", 255.0))
    with pytest.raises(DatasetError, match="chip_0.tif: the chips of a training batch differ in size"):
        dataset.__getitems__([0, 1, 2])
    plain = ChipDataset(samples, _meta(16), None, None)  # evaluation reads each chip as it is
    assert [image.shape[-1] for image, _ in plain.__getitems__([0, 1, 2])] == [16, 16, 24]


def test_strong_augmentation_of_segmentation_batches(tmp_path: Path) -> None:
    samples = _segment_chips(tmp_path, [16] * 8)
    dataset = ChipDataset(samples, _meta(16), None, Augmenter("strong", 255.0))
    first = dataset.__getitems__([(i, 9) for i in range(8)])
    again = dataset.__getitems__([(i, 9) for i in range(8)])
    for (image, mask), (image2, mask2) in zip(first, again):
        assert image.shape == (3, 16, 16) and mask.shape == (16, 16) and mask.dtype == torch.int64
        assert set(mask.unique().tolist()) <= {0, 1, 2}
        assert torch.equal(image, image2) and torch.equal(mask, mask2)


def test_a_mask_of_another_size_is_named(tmp_path: Path) -> None:
    samples = _segment_chips(tmp_path, [16])
    _write(samples[0].mask, np.zeros((1, 12, 16), np.uint8))
    with pytest.raises(DatasetError, match=r"mask_0.tif: expected a 16x16 mask like its chip chip_0.tif, found 16x12"):
        ChipDataset(samples, _meta(16), None, None)[0]
