"""The decoded-chip cache: same pixels as the files, survives a resume, removed at the end."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import rasterio
import torch

from geoclass.data.chip_cache import ChipCache
from geoclass.data.chips import ChipDataset
from geoclass.data.samples import Sample
from geoclass.data.transforms import Augmenter
from geoclass.models.model_file import ModelMeta


def _chips(root: Path, n: int = 5) -> list[Sample]:
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        path = root / f"chip_{i}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=3, dtype="uint16") as dst:
            dst.write(rng.integers(0, 4000, (3, 8, 8), dtype=np.uint16))
        samples.append(Sample(path, "a" if i % 2 else "b"))
    return samples


def _meta() -> ModelMeta:
    return ModelMeta(architecture="cnn", task="classify", classes=["a", "b"], in_chans=3, chip_size=8,
                     mean=[2000.0] * 3, std=[1000.0] * 3, train_dtype="uint16", training_data={"value_range": 4000.0})


def test_cache_round_trip_and_pickles_without_its_maps(tmp_path: Path) -> None:
    cache = ChipCache(tmp_path / "c", ["k0", "k1"], (3, 8, 8), "uint16")
    chip = np.arange(192, dtype=np.uint16).reshape(3, 8, 8)
    assert cache.get(0) is None
    cache.put(0, chip)
    cache.put(1, chip.astype(np.float32))  # another dtype: not cached
    np.testing.assert_array_equal(cache.get(0), chip)
    assert cache.get(1) is None and cache.filled() == 1
    clone = pickle.loads(pickle.dumps(cache))
    assert clone._data is None
    np.testing.assert_array_equal(clone.get(0), chip)  # a worker maps the same file
    # Same keys: what was decoded stays; other keys: a fresh cache.
    assert ChipCache(tmp_path / "c", ["k0", "k1"], (3, 8, 8), "uint16").filled() == 1
    assert ChipCache(tmp_path / "c", ["k0", "k2"], (3, 8, 8), "uint16").filled() == 0
    cache.remove()
    assert not (tmp_path / "c").exists()


def test_cached_dataset_gives_the_same_tensors(tmp_path: Path) -> None:
    samples = _chips(tmp_path)
    meta = _meta()
    plain = ChipDataset(samples, meta, None, Augmenter("strong", 4000.0))
    cache = ChipCache(tmp_path / "cache", [str(s.path) for s in samples], (3, 8, 8), "uint16")
    cached = ChipDataset(samples, meta, None, Augmenter("strong", 4000.0), cache)
    batch = [(i, 7 + i) for i in range(len(samples))]
    expected = plain.__getitems__(batch)
    for _ in range(2):  # the first pass fills the cache, the second reads it
        for (a, la), (b, lb) in zip(expected, cached.__getitems__(batch)):
            assert torch.equal(a, b) and int(la) == int(lb)
    assert cache.filled() == len(samples)
    # The cache really is what the second pass reads.
    for sample in samples:
        sample.path.unlink()
    for (a, _), (b, _) in zip(expected, cached.__getitems__(batch)):
        assert torch.equal(a, b)
