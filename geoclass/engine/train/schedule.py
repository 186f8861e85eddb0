"""What changes step by step in training: the warmup-cosine learning rate and CutMix."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """The learning-rate factor per step: linear warmup, then a cosine decay to 0."""
    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def cutmix(images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Paste a box of a shuffled batch into ``images``; the shuffled targets and the kept area share.

    Segmentation masks (``targets`` with the images' height and width) get the same box pasted,
    so the returned targets are the mixed masks and the share is 1.
    """
    lam = float(np.random.beta(1.0, 1.0))
    perm = torch.randperm(images.shape[0], device=images.device)
    h, w = images.shape[-2:]
    cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = np.random.randint(h), np.random.randint(w)
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    images = images.clone()
    images[..., y0:y1, x0:x1] = images[perm][..., y0:y1, x0:x1]
    if targets.dim() == 3 and targets.shape[-2:] == (h, w):
        masks = targets.clone()
        masks[..., y0:y1, x0:x1] = targets[perm][..., y0:y1, x0:x1]
        return images, masks, 1.0
    lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    return images, targets[perm], lam
