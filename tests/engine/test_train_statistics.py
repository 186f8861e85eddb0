"""Band statistics of a new run (engine/train/meta.py) against a plain numpy computation over all chips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoclass.data.chips import read_chip
from geoclass.data.samples import Sample, load_samples
from geoclass.engine.train import compute_band_statistics
from geoclass.models.model_file import ModelMeta
from tests.conftest import SHARED_DATA, needs_shared_data
from tests.engine.test_train_eval import make_class_folders

EUROSAT_MS = SHARED_DATA / "eurosat-ms-subset/data/subset/ds/images/remote_sensing/otherDatasets/sentinel_2/tif"


def _meta(samples: list[Sample]) -> ModelMeta:
    first = read_chip(str(samples[0].path), None)
    bands = first.shape[0]
    return ModelMeta(architecture="cnn", task="classify", classes=["a"], in_chans=bands, chip_size=first.shape[1],
                     mean=[0.0] * bands, std=[1.0] * bands, train_dtype=first.dtype.name)


def _check_against_numpy(samples: list[Sample]) -> None:
    meta = _meta(samples)
    mean, std, value_range, floor = compute_band_statistics(samples, meta, None, len(samples), 0)
    chips = [meta.to_model_units(read_chip(str(s.path), None)).astype(np.float64).reshape(meta.in_chans, -1)
             for s in samples]
    every = np.concatenate(chips, axis=1)
    np.testing.assert_allclose(mean, every.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(std, every.std(axis=1), rtol=1e-6)
    # the levels stay medians over chips of each chip's percentiles (a different statistic)
    per_chip = np.stack([np.percentile(c, [0.5, 99.5], axis=1) for c in chips])
    assert floor == pytest.approx(float(np.min(np.median(per_chip[:, 0], axis=0))))
    expected = 255.0 if meta.train_dtype == "uint8" else float(np.max(np.median(per_chip[:, 1], axis=0)))
    assert value_range == pytest.approx(expected)


def test_uint8_chips_match_numpy(tmp_path: Path) -> None:
    _check_against_numpy(load_samples(make_class_folders(tmp_path / "data")).samples)


def test_bright_uint16_chips_match_numpy(tmp_path: Path) -> None:
    # a large offset with a small spread: where a sum-of-squares variance loses digits
    rng = np.random.default_rng(3)
    samples = []
    for i in range(12):
        path = tmp_path / f"chip_{i}.tif"
        pixels = (40000 + rng.normal(0, 3 + i, (4, 16, 16))).astype(np.uint16)
        with rasterio.open(path, "w", driver="GTiff", width=16, height=16, count=4, dtype="uint16") as dst:
            dst.write(pixels)
        samples.append(Sample(path, "a"))
    _check_against_numpy(samples)


@needs_shared_data
def test_eurosat_multispectral_chips_match_numpy() -> None:
    paths = sorted(EUROSAT_MS.glob("*/*.tif"))
    assert paths
    _check_against_numpy([Sample(p, p.parent.name) for p in paths])
