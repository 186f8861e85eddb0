"""Training augmentation: deterministic per seed, any band count, radiometric transforms do what they say."""

from __future__ import annotations

import numpy as np
import pytest

from geoclass.data.transforms import Augmenter, Haze, train_augmentation


@pytest.mark.parametrize("bands", [3, 13])
def test_augmentation_is_reproducible_and_keeps_range(bands: int) -> None:
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (bands, 64, 64)).astype(np.float32)
    augment = Augmenter(train_augmentation("strong"), value_range=255.0)
    outputs = []
    for _ in range(2):
        augment.pipeline.set_random_seed(7)
        out, _ = augment(image)
        outputs.append(out)
    assert np.array_equal(outputs[0], outputs[1])
    assert outputs[0].shape == (bands, 64, 64)
    assert outputs[0].dtype == np.float32
    assert 0.0 <= outputs[0].min() and outputs[0].max() <= 255.0
    augment.pipeline.set_random_seed(8)
    assert not np.array_equal(augment(image)[0], outputs[0])


def test_light_augmentation_only_moves_pixels() -> None:
    image = np.arange(3 * 8 * 8, dtype=np.float32).reshape(3, 8, 8)
    augment = Augmenter(train_augmentation("light"), value_range=255.0)
    for seed in range(5):
        augment.pipeline.set_random_seed(seed)
        out, _ = augment(image)
        assert np.allclose(np.sort(out.ravel()), np.sort(image.ravel()), atol=1e-3)


def test_haze_brightens_dark_chips() -> None:
    dark = np.full((8, 8, 3), 0.1, dtype=np.float32)
    out = Haze(p=1.0).apply(dark, amount=0.3, level=0.7)
    assert np.allclose(out, 0.1 * 0.7 + 0.3 * 0.7)
