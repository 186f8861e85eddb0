"""Training augmentation: deterministic per seed, any band count, radiometric steps do what they say."""

from __future__ import annotations

from dataclasses import replace

import albumentations as A
import numpy as np
import pytest

from geoclass.data.transforms import Augmenter, RadiometricJitter, SpatialJitter, dihedral, max_value_of

NOTHING = RadiometricJitter(gain_p=0, tint_p=0, brightness_contrast_p=0, gamma_p=0, haze_p=0, noise_p=0)


@pytest.mark.parametrize("bands", [1, 3, 5, 13])
def test_augmentation_is_reproducible_and_keeps_range(bands: int) -> None:
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (8, bands, 64, 64)).astype(np.float32)
    augment = Augmenter("strong", value_range=255.0)
    outputs = []
    for _ in range(2):
        augment.seed(7)
        out, _ = augment(images)
        outputs.append(out)
    assert np.array_equal(outputs[0], outputs[1])
    assert outputs[0].shape == (8, bands, 64, 64)
    assert outputs[0].dtype == np.float32
    assert 0.0 <= outputs[0].min() and outputs[0].max() <= 255.0
    assert not np.array_equal(outputs[0], images)
    augment.seed(8)
    assert not np.array_equal(augment(images)[0], outputs[0])


def test_light_augmentation_flips_and_rotates_each_chip_on_its_own() -> None:
    images = np.arange(64 * 3 * 8 * 8, dtype=np.float32).reshape(64, 3, 8, 8)
    augment = Augmenter("light", value_range=255.0)
    augment.seed(0)
    out, _ = augment(images)
    seen = set()
    for chip, original in zip(out, images):
        symmetries = [np.rot90(flipped, k, axes=(1, 2)) for flipped in (original, original[..., ::-1]) for k in range(4)]
        matches = [i for i, candidate in enumerate(symmetries) if np.array_equal(chip, candidate)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == set(range(8))  # all eight symmetries occur in 64 chips (fails with p ~ 1e-3)


def test_masks_follow_the_geometry() -> None:
    rng = np.random.default_rng(1)
    masks = rng.integers(0, 5, (6, 16, 16)).astype(np.uint8)
    images = np.repeat(masks[:, None].astype(np.float32), 3, axis=1)
    augment = Augmenter("light", value_range=255.0)
    augment.seed(3)
    out, out_masks = augment(images, masks)
    assert out_masks is not None and out_masks.dtype == np.uint8
    assert np.array_equal(out[:, 0], out_masks.astype(np.float32))
    assert not np.array_equal(out_masks, masks)  # 6 chips all left as they were is (1/8)^6 unlikely


def _one_chip(value: float | None = None) -> np.ndarray:
    chip = np.random.default_rng(2).uniform(0.05, 0.95, (1, 3, 16, 16)).astype(np.float32)
    return np.full_like(chip, value) if value is not None else chip


@pytest.mark.parametrize(("jitter", "reference"), [
    (replace(NOTHING, gain_p=1, gain=(1.3, 1.3)),
     A.MultiplicativeNoise(multiplier=(1.3, 1.3), per_channel=False, elementwise=False, p=1)),
    (replace(NOTHING, brightness_contrast_p=1, contrast=(0.2, 0.2), brightness=(0.05, 0.05)),
     A.RandomBrightnessContrast(brightness_limit=(0.05, 0.05), contrast_limit=(0.2, 0.2), p=1)),
    (replace(NOTHING, gamma_p=1, gamma=(1.4, 1.4)), A.RandomGamma(gamma_limit=(140, 140), p=1)),
])
def test_radiometric_steps_match_albumentations(jitter: RadiometricJitter, reference: A.BasicTransform) -> None:
    chip = _one_chip()
    expected = reference(image=np.moveaxis(chip[0], 0, -1).copy())["image"]
    out = jitter(chip.copy(), np.random.default_rng(0))
    np.testing.assert_allclose(out[0], np.moveaxis(expected, -1, 0), atol=1e-6)


def test_each_chip_draws_its_own_radiometry() -> None:
    batch = np.full((16, 3, 4, 4), 0.5, np.float32)
    out = replace(NOTHING, gain_p=1)(batch, np.random.default_rng(0))
    gains = out[:, 0, 0, 0] / 0.5
    assert len(np.unique(gains)) == 16 and gains.min() >= 0.6 and gains.max() <= 1.4
    assert np.all(out == out[:, :1, :1, :1])  # one gain for the whole chip
    tinted = replace(NOTHING, tint_p=1)(np.full((4, 3, 4, 4), 0.5, np.float32), np.random.default_rng(0))
    assert np.all(tinted[:, 0] != tinted[:, 1])  # a gain per band


def test_haze_brightens_dark_chips_and_noise_stays_in_range() -> None:
    dark = _one_chip(0.1)
    hazy = replace(NOTHING, haze_p=1)(dark.copy(), np.random.default_rng(0))
    assert np.all(hazy > 0.1) and np.all(hazy < 0.1 * 0.7 + 0.3 * 0.9 + 1e-6)
    bright = _one_chip(0.999)
    noisy = replace(NOTHING, noise_p=1, noise_std=(0.5, 0.5))(bright.copy(), np.random.default_rng(0))
    assert noisy.max() <= 1.0 and noisy.min() >= 0.0 and noisy.std() > 0.01


def test_strength_is_checked() -> None:
    with pytest.raises(ValueError, match="strong"):
        Augmenter("heavy", 255.0)


def test_blur_smooths_and_warp_moves_but_keeps_the_values() -> None:
    chips = np.random.default_rng(3).uniform(0, 1, (4, 13, 32, 32)).astype(np.float32)
    blurred = chips.copy()
    SpatialJitter(warp_p=0, blur_p=1)(blurred, None, np.random.default_rng(0))
    for chip, original in zip(blurred, chips):
        assert 0.05 < chip.std() < 0.8 * original.std()
        assert abs(chip.mean() - original.mean()) < 0.01
    warped = chips.copy()
    masks = (chips[:, 0] > 0.5).astype(np.uint8)
    warped_masks = masks.copy()
    SpatialJitter(warp_p=1, blur_p=0)(warped, warped_masks, np.random.default_rng(0))
    assert not np.array_equal(warped, chips) and not np.array_equal(warped_masks, masks)
    assert warped.min() >= 0.0 and warped.max() <= 1.0 and set(np.unique(warped_masks)) <= {0, 1}


def test_strong_augmentation_never_flattens_a_chip() -> None:
    chips = np.random.default_rng(4).uniform(40, 200, (64, 3, 16, 16)).astype(np.float32)
    augment = Augmenter("strong", value_range=255.0)
    for seed in range(5):
        augment.seed(seed)
        out, _ = augment(chips)
        assert np.all(out.std(axis=(1, 2, 3)) > 1.0)


def test_warped_masks_stay_on_their_pixels() -> None:
    rng = np.random.default_rng(5)
    masks = np.kron(rng.integers(0, 4, (6, 4, 4)), np.ones((8, 8), int)).astype(np.uint8)  # 8x8 blocks, 32x32
    images = np.repeat(masks[:, None] / 4.0, 2, axis=1).astype(np.float32)
    SpatialJitter(warp_p=1, blur_p=0)(images, masks, np.random.default_rng(0))
    level = images[:, 0] * 4
    # Away from block edges the image is not interpolated; on an edge an interpolated value can
    # still land on a class level (halfway between 0 and 2), hence 98%, not all.
    inside = np.isclose(level, np.round(level), atol=1e-4)
    assert inside.mean() > 0.6
    assert np.mean(np.round(level[inside]).astype(np.uint8) == masks[inside]) > 0.98


def test_non_square_chips_keep_their_shape() -> None:
    images = np.arange(16 * 2 * 4 * 8, dtype=np.float32).reshape(16, 2, 4, 8)
    out = images.copy()
    dihedral(out, None, np.random.default_rng(0))
    for chip, original in zip(out, images):
        assert any(np.array_equal(chip, candidate)
                   for candidate in (original, original[..., ::-1], original[..., ::-1, :], original[..., ::-1, ::-1]))
    augment = Augmenter("strong", 255.0)
    assert augment(np.full((4, 3, 16, 24), 100.0, np.float32))[0].shape == (4, 3, 16, 24)


def test_bright_pixels_are_clipped_only_at_what_the_data_type_holds() -> None:
    chips = np.full((32, 4, 8, 8), 5000.0, np.float32)  # uint16 data, value range (a bright percentile) 3000
    augment = Augmenter("strong", value_range=3000.0, max_value=max_value_of("uint16"))
    augment.seed(0)
    out, _ = augment(chips)
    assert out.max() > 3000.0 and np.median(out) > 3000.0
    assert Augmenter("light", 3000.0)(chips)[0].max() == 5000.0
    assert max_value_of("uint8") == 255.0 and max_value_of("float32") == float("inf")


def test_negative_data_keeps_its_values_without_radiometry() -> None:
    chips = np.random.default_rng(6).uniform(-25, -5, (16, 2, 16, 16)).astype(np.float32)  # SAR backscatter, dB
    augment = Augmenter("strong", value_range=-5.0, max_value=float("inf"), radiometric=False)
    augment.seed(0)
    out, _ = augment(chips)
    assert np.isfinite(out).all() and out.min() >= -25.0 and out.max() <= -5.0
    assert not np.array_equal(out, chips)
