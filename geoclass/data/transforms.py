"""Augmentation on the fly, built to cover real radiometric variation.

A model trained on one set of chips meets scenes with other sun angles, seasons, haze and
sensor calibrations. Besides flips, 90-degree rotations and small affine warps the training
pipeline therefore varies illumination (multiplicative gain), per-band gain (season and sensor
tint), brightness and contrast, gamma, haze (a blend toward a bright veil) and sensor noise.
Everything works for any band count and is drawn independently per chip.

The loader workers share the CPU with training, so a batch is augmented at once and every draw
comes from one numpy generator: flips, rotations and the radiometric steps are numpy operations
on the whole batch, and only the chips drawn for a warp or a blur go, one by one, through
albumentations' functional affine warp and OpenCV's separable filter. (albumentations' transform
objects cost ~0.2-0.3 ms per call on a 64x64 chip, ten times the warp itself; calling them for
every chip and step made augmentation the larger part of the data path.)

Images are augmented in ``[0, 1]`` units: model units divided by the model's value range (255 for
8-bit data; for other data a bright percentile, which real pixels may exceed: they are clipped
only at what the data type can hold, never at 1). The radiometric steps assume non-negative,
reflectance-like values; data with negative values (SAR backscatter in dB, indices) gets the
geometric steps only.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from albumentations.augmentations.geometric.functional import center, create_affine_transformation_matrix, warp_affine

SQRT12 = float(np.sqrt(12.0))


@dataclass(frozen=True)
class RadiometricJitter:
    """Radiometric augmentation of a batch in ``[0, 1]`` units, drawn independently per chip.

    Steps in order, each with its own probability and clipped to ``[0, ceiling]``: gain (whole chip)
    and tint (per band) multiply, ``x * (1 + c) + b`` (contrast about zero and brightness, as
    albumentations' RandomBrightnessContrast does on float images), gamma ``x ** g``, haze
    ``x * (1 - a) + a * level``, and zero-mean noise per pixel and band.
    """

    gain: tuple[float, float] = (0.6, 1.4)
    gain_p: float = 0.7
    tint: tuple[float, float] = (0.85, 1.15)
    tint_p: float = 0.5
    contrast: tuple[float, float] = (-0.3, 0.3)
    brightness: tuple[float, float] = (-0.08, 0.08)
    brightness_contrast_p: float = 0.5
    gamma: tuple[float, float] = (0.7, 1.45)
    gamma_p: float = 0.5
    haze: tuple[float, float] = (0.0, 0.3)  # blend amount
    haze_level: tuple[float, float] = (0.55, 0.9)
    haze_p: float = 0.25
    noise_std: tuple[float, float] = (0.0, 0.02)
    noise_p: float = 0.2

    def __call__(self, images: np.ndarray, rng: np.random.Generator, ceiling: float = 1.0) -> np.ndarray:
        """Jitter a float32 (n, bands, h, w) batch in place and return it.

        ``ceiling`` is the largest value the data can hold (1.0 for 8-bit data in ``[0, 1]`` units).
        """
        n, bands = images.shape[:2]

        def draw(limits: tuple[float, float], count: int, per_band: bool = False) -> np.ndarray:
            return rng.uniform(*limits, (count, bands if per_band else 1, 1, 1)).astype(np.float32)

        scale = np.ones((n, bands, 1, 1), np.float32)
        picked = _chosen(rng, n, self.gain_p)
        scale[picked] = draw(self.gain, len(picked))
        picked = _chosen(rng, n, self.tint_p)
        scale[picked] *= draw(self.tint, len(picked), per_band=True)
        images *= scale
        np.clip(images, 0.0, ceiling, out=images)

        picked = _chosen(rng, n, self.brightness_contrast_p)
        if len(picked):
            alpha = 1.0 + draw(self.contrast, len(picked))
            images[picked] = np.clip(images[picked] * alpha + draw(self.brightness, len(picked)), 0.0, ceiling)
        picked = _chosen(rng, n, self.gamma_p)
        if len(picked):
            images[picked] = np.power(images[picked], draw(self.gamma, len(picked)))
        picked = _chosen(rng, n, self.haze_p)
        if len(picked):
            amount, level = draw(self.haze, len(picked)), draw(self.haze_level, len(picked))
            images[picked] = images[picked] * (1.0 - amount) + amount * level
        picked = _chosen(rng, n, self.noise_p)
        if len(picked):
            # Uniform noise with the drawn standard deviation: at <= 2% of the range its shape does
            # not matter, and numpy draws it 4x faster than Gaussian noise.
            noise = rng.random((len(picked), *images.shape[1:]), dtype=np.float32) - np.float32(0.5)
            noise *= draw(self.noise_std, len(picked)) * SQRT12
            images[picked] = np.clip(images[picked] + noise, 0.0, ceiling)
        return images


def _chosen(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    """Indices of the chips (of ``n``) that a step with probability ``p`` applies to."""
    return np.flatnonzero(rng.random(n) < p)


def dihedral(images: np.ndarray, masks: np.ndarray | None, rng: np.random.Generator) -> None:
    """Flip and rotate every chip by its own random element of the square's symmetry group, in place.

    The 8 elements (4 rotations, each with or without a flip) are equally likely; chips sharing
    one are transformed in one numpy call. Non-square chips only turn by 0 or 180 degrees.
    """
    elements = rng.integers(0, 8, len(images))
    if images.shape[-2] != images.shape[-1]:
        elements &= ~1  # 90 and 270 degrees would swap height and width
    for element in np.unique(elements[elements > 0]):
        picked = np.flatnonzero(elements == element)
        rotations, flip = int(element) % 4, element >= 4
        for array in (images, masks):
            if array is None:
                continue
            chips = array[picked]
            if flip:
                chips = chips[..., ::-1]
            array[picked] = np.rot90(chips, rotations, axes=(-2, -1))


@dataclass(frozen=True)
class SpatialJitter:
    """Small affine warps (as albumentations' Affine, reflecting at the border) and 3x3 Gaussian blur.

    Each chip is warped with probability ``warp_p`` by its own scale, shift (a fraction of the
    chip size) and rotation (degrees), and blurred with probability ``blur_p``. Neither clips:
    both are weighted means of the chip's own pixels, so they work in any units.
    """

    scale: tuple[float, float] = (0.9, 1.1)
    shift: tuple[float, float] = (-0.06, 0.06)
    rotate: tuple[float, float] = (-15.0, 15.0)
    warp_p: float = 0.3
    blur_sigma: tuple[float, float] = (0.5, 3.0)
    blur_p: float = 0.1

    def __call__(self, images: np.ndarray, masks: np.ndarray | None, rng: np.random.Generator) -> None:
        """Warp and blur chips of a float32 (n, bands, h, w) batch and their (n, h, w) masks in place."""
        n, _, height, width = images.shape
        for i in _chosen(rng, n, self.warp_p):
            scale = rng.uniform(*self.scale)
            matrix = create_affine_transformation_matrix(
                {"x": int(rng.uniform(*self.shift) * width), "y": int(rng.uniform(*self.shift) * height)},
                {"x": 0.0, "y": 0.0}, {"x": scale, "y": scale}, rng.uniform(*self.rotate), center((height, width)))
            warped = warp_affine(_hwc(images[i]), matrix, cv2.INTER_LINEAR, 0, cv2.BORDER_REFLECT_101, (height, width))
            images[i] = np.moveaxis(warped.reshape(height, width, -1), -1, 0)
            if masks is not None:
                masks[i] = warp_affine(masks[i], matrix, cv2.INTER_NEAREST, 0, cv2.BORDER_REFLECT_101, (height, width))
        for i in _chosen(rng, n, self.blur_p):
            # OpenCV directly: albumentations' float convolution clips to [0, 1].
            kernel = cv2.getGaussianKernel(3, rng.uniform(*self.blur_sigma), cv2.CV_32F)
            blurred = cv2.sepFilter2D(_hwc(images[i]), -1, kernel, kernel, borderType=cv2.BORDER_REFLECT_101)
            images[i] = np.moveaxis(blurred.reshape(height, width, -1), -1, 0)


class Augmenter:
    """Augments batches of (bands, h, w) chips in model units, each chip with its own draw.

    Call :meth:`seed` before a batch to make its augmentation depend only on that seed.

    Args:
        strength: ``strong`` (geometry and radiometry) or ``light`` (flips and rotations only).
        value_range: Model units that map to 1.0 (255 for 8-bit trained models).
        max_value: The largest value the data can hold, in model units (255 for 8-bit data, the
            type's maximum for other integer data, ``inf`` for floats); default ``value_range``.
        radiometric: False skips the radiometric steps (for data that is not reflectance-like).
    """

    def __init__(self, strength: str, value_range: float, max_value: float | None = None,
                 radiometric: bool = True) -> None:
        if strength not in ("strong", "light"):
            raise ValueError(f"augmentation strength must be 'strong' or 'light', not {strength!r}")
        self.strong = strength == "strong"
        self.spatial = SpatialJitter()
        self.radiometric = RadiometricJitter() if radiometric else None
        self.value_range = float(value_range) if value_range > 0 else 1.0  # e.g. SAR dB: all negative
        self.ceiling = (float(max_value) if max_value is not None else self.value_range) / self.value_range
        self.rng = np.random.default_rng(0)

    def seed(self, seed: int) -> None:
        """Restart the random stream from ``seed``."""
        self.rng = np.random.default_rng(seed)

    def __call__(self, images: np.ndarray,
                 masks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Augment a (n, bands, h, w) batch and its (n, h, w) masks; returns new float32 arrays."""
        out = np.array(images, dtype=np.float32)
        out_masks = None if masks is None else masks.copy()
        dihedral(out, out_masks, self.rng)
        if self.strong:
            out *= 1.0 / self.value_range
            self.spatial(out, out_masks, self.rng)
            if self.radiometric is not None:
                self.radiometric(out, self.rng, self.ceiling)
            out *= self.value_range
        return out, out_masks


def max_value_of(dtype: str) -> float:
    """The largest value data of ``dtype`` can hold (``inf`` for floating-point data)."""
    kind = np.dtype(dtype)
    return float(np.iinfo(kind).max) if np.issubdtype(kind, np.integer) else float("inf")


def _hwc(chip: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(chip, 0, -1))
