"""Small convolutional classifiers sized for 64x64 chips on a CPU."""

from __future__ import annotations

import torch
from torch import nn


class BaselineCNN(nn.Module):
    """The classic small EuroSAT baseline.

    conv 16 3x3 -> conv 8 3x3 -> max-pool 8 -> dense 32 -> classes. ``wide=True`` doubles the
    convolutions, adds a third one and dropout: a stronger but still tiny model.
    """

    def __init__(self, num_classes: int, in_chans: int = 3, chip_size: int = 64, wide: bool = False,
                 dropout: float = 0.3) -> None:
        super().__init__()
        c1, c2 = (32, 64) if wide else (16, 8)
        layers: list[nn.Module] = [
            nn.Conv2d(in_chans, c1, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(inplace=True),
        ]
        if wide:
            layers += [nn.MaxPool2d(2), nn.Conv2d(c2, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(inplace=True)]
            pooled = chip_size // 2 // 8
        else:
            pooled = chip_size // 8
        layers.append(nn.MaxPool2d(8))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout if wide else 0.0),
            nn.Linear(c2 * max(pooled, 1) ** 2, 32), nn.ReLU(inplace=True),
            nn.Dropout(dropout if wide else 0.0),
            nn.Linear(32, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def conv_bn_act(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution, batch norm, SiLU."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False), nn.BatchNorm2d(out_ch), nn.SiLU(inplace=True))


class ResidualBlock(nn.Module):
    """A basic residual block (two 3x3 convolutions) with an optional stride-2 projection."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn_act(in_ch, out_ch, stride)
        self.conv2 = nn.Sequential(nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False), nn.BatchNorm2d(out_ch))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class CompactResNet(nn.Module):
    """A compact residual network for 64x64 chips (about 1 M parameters).

    One cheap convolution at full resolution, then a stride-2 stage so the expensive layers run
    at 32x32 and below (on a CPU, the first full-resolution layers dominate the cost).
    ``features()`` returns the last feature map, which the CNN-ViT hybrid reuses.
    """

    def __init__(self, num_classes: int, in_chans: int = 3, widths: tuple[int, ...] = (32, 64, 128, 192),
                 stem_width: int = 24, dropout: float = 0.2) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn_act(in_chans, stem_width), conv_bn_act(stem_width, widths[0], stride=2))
        stages: list[nn.Module] = []
        prev = widths[0]
        for i, width in enumerate(widths):
            stages.append(ResidualBlock(prev, width, stride=1 if i == 0 else 2))
            prev = width
        self.stages = nn.Sequential(*stages)
        self.num_features = prev
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(prev, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
