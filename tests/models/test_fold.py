"""Batch norm folded into convolutions: the same scores, fewer layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from geoclass.models.fold import fold_batch_norm
from geoclass.models.registry import create_model


@pytest.mark.parametrize("name", ["cnn", "compact", "fcn", "resnet18"])
def test_folded_model_gives_the_same_scores(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, 5, 4, chip_size=64).eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):  # statistics that matter
            module.running_mean.normal_(0, 0.3)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.normal_(1, 0.2)
            module.bias.data.normal_(0, 0.2)
    x = torch.randn(3, 4, 64, 64)
    with torch.inference_mode():
        before = model(x)
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    folded = fold_batch_norm(model)
    with torch.inference_mode():
        after = model(x)
    left = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert left == norms - folded
    if name == "compact":  # every batch norm of it follows a conv in a Sequential
        assert folded > 0 and left == 0
    assert (before - after).abs().max().item() < 1e-4 * max(1.0, before.abs().max().item())


def test_folding_a_training_model_is_refused() -> None:
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norm(nn.Sequential(nn.Conv2d(1, 1, 3), nn.BatchNorm2d(1)))
