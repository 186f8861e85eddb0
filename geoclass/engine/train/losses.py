"""Segmentation losses: weighted, smoothed cross-entropy plus an optional soft Dice term."""

from __future__ import annotations

import torch
from torch import nn

from geoclass.data.chips import IGNORE_INDEX

__all__ = ["DiceCrossEntropy", "segmentation_loss"]


class DiceCrossEntropy(nn.Module):
    """``cross_entropy + dice * (1 - soft Dice)``, both ignoring ``IGNORE_INDEX`` pixels.

    The Dice term is the mean over the classes present in the batch's labels (or predicted), so
    a small class counts as much as a large one, which pixel-wise cross-entropy does not.
    """

    def __init__(self, weight: torch.Tensor | None, label_smoothing: float, dice: float) -> None:
        super().__init__()
        self.ce = nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing, ignore_index=IGNORE_INDEX)
        self.dice = dice

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.ce(logits, target)
        if self.dice <= 0:
            return loss
        valid = (target != IGNORE_INDEX).unsqueeze(1)
        probs = logits.float().softmax(1) * valid
        onehot = nn.functional.one_hot(target.clamp(max=logits.shape[1] - 1), logits.shape[1])
        onehot = onehot.permute(0, 3, 1, 2).to(probs.dtype) * valid
        inter = (probs * onehot).sum((0, 2, 3))
        total = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
        present = total > 0
        dice = (2 * inter[present] + 1.0) / (total[present] + 1.0)
        return loss + self.dice * (1 - dice.mean())


def segmentation_loss(weight: torch.Tensor | None, label_smoothing: float, dice: float) -> nn.Module:
    """The loss of a segmenter run (``--dice`` > 0 adds the Dice term)."""
    return DiceCrossEntropy(weight, label_smoothing, dice)
