"""Augmentation on the fly (albumentations), built to cover real radiometric variation.

A model trained on one set of chips meets scenes with other sun angles, seasons, haze and
sensor calibrations. Besides flips and 90-degree rotations the training pipeline therefore
varies illumination (multiplicative gain), contrast, gamma, per-band gain (season and sensor
tint) and adds haze (a blend toward a bright veil). Everything works for any band count.
Images are augmented in ``[0, 1]`` units: model units divided by the model's value range.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import numpy as np


class Haze(A.ImageOnlyTransform):
    """Blend every band toward one bright veil level (thin haze; lowers contrast, lifts dark surfaces)."""

    def __init__(self, max_amount: float = 0.3, p: float = 0.3) -> None:
        super().__init__(p=p)
        self.max_amount = max_amount

    def get_params(self) -> dict[str, Any]:
        return {"amount": self.py_random.uniform(0.0, self.max_amount), "level": self.py_random.uniform(0.55, 0.9)}

    def apply(self, img: np.ndarray, amount: float = 0.0, level: float = 0.7, **params: Any) -> np.ndarray:
        return (img * (1.0 - amount) + amount * level).astype(img.dtype, copy=False)


def train_augmentation(strength: str = "strong") -> A.Compose:
    """The training pipeline; ``light`` keeps only geometric flips and rotations."""
    geometric = [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomRotate90(p=0.5)]
    if strength == "light":
        return A.Compose(geometric)
    radiometric = [
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.06, 0.06), rotate=(-15, 15), border_mode=4, p=0.3),
        A.MultiplicativeNoise(multiplier=(0.6, 1.4), per_channel=False, elementwise=False, p=0.7),
        A.MultiplicativeNoise(multiplier=(0.85, 1.15), per_channel=True, elementwise=False, p=0.5),
        A.RandomBrightnessContrast(brightness_limit=0.08, contrast_limit=0.3, p=0.5),
        A.RandomGamma(gamma_limit=(70, 145), p=0.5),
        Haze(max_amount=0.3, p=0.25),
        A.GaussianBlur(blur_limit=(3, 3), p=0.1),
        A.GaussNoise(std_range=(0.0, 0.02), p=0.2),
    ]
    return A.Compose(geometric + radiometric)


class Augmenter:
    """Applies an albumentations pipeline to (bands, h, w) arrays in model units.

    Args:
        pipeline: The albumentations pipeline.
        value_range: Model units that map to 1.0 (255 for 8-bit trained models).
    """

    def __init__(self, pipeline: A.Compose, value_range: float) -> None:
        self.pipeline = pipeline
        self.value_range = float(value_range)

    def __call__(self, image: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        hwc = np.ascontiguousarray(np.moveaxis(image, 0, -1) / self.value_range, dtype=np.float32)
        if mask is None:
            out = self.pipeline(image=hwc)
        else:
            out = self.pipeline(image=hwc, mask=mask)
        augmented = np.clip(out["image"], 0.0, 1.0) * self.value_range
        return np.ascontiguousarray(np.moveaxis(augmented, -1, 0)), out.get("mask")
