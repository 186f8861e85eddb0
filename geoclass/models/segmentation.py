"""Segmentation models: per-pixel class scores at the input resolution."""

from __future__ import annotations

import torch
from torch import nn

from geoclass.models.cnn import conv_bn_act


class SmallFCN(nn.Module):
    """A small fully convolutional network (no pooling, no padding tricks at window edges).

    Fully convolutional with a fixed receptive field (``2 * depth + 1`` pixels), so a prediction
    made window by window with a halo of ``depth`` pixels equals one made on the whole image.
    """

    def __init__(self, num_classes: int, in_chans: int = 3, width: int = 16, depth: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_chans
        for _ in range(depth):
            layers += [nn.Conv2d(prev, width, 3, padding=1), nn.ReLU(inplace=True)]
            prev = width
        layers.append(nn.Conv2d(prev, num_classes, 1))
        self.net = nn.Sequential(*layers)
        self.receptive_radius = depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class FPNSegmenter(nn.Module):
    """A feature pyramid network over any timm backbone that supports ``features_only``.

    Swin backbones return NHWC maps; they are permuted to NCHW. The fused map is upsampled to the
    input size, so the output has the input's height and width.
    """

    def __init__(self, num_classes: int, in_chans: int = 3, backbone: str = "resnet18", chip_size: int = 256,
                 fpn_dim: int = 96, pretrained: bool = False, pretrained_file: str | None = None) -> None:
        super().__init__()
        from geoclass.models.timm_models import build_timm, timm_kwargs

        kwargs = timm_kwargs(backbone, chip_size, pretrained, pretrained_file)
        self.backbone = build_timm(backbone, pretrained_file, features_only=True, in_chans=in_chans, **kwargs)
        channels = self.backbone.feature_info.channels()
        self.nhwc = "swin" in backbone
        self.lateral = nn.ModuleList(nn.Conv2d(c, fpn_dim, 1) for c in channels)
        self.smooth = conv_bn_act(fpn_dim, fpn_dim)
        self.classifier = nn.Conv2d(fpn_dim, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        if self.nhwc:
            feats = [f.permute(0, 3, 1, 2).contiguous() for f in feats]
        fused = self.lateral[-1](feats[-1])
        for lateral, feat in zip(reversed(self.lateral[:-1]), reversed(feats[:-1])):
            fused = nn.functional.interpolate(fused, size=feat.shape[-2:], mode="nearest") + lateral(feat)
        logits = self.classifier(self.smooth(fused))
        return nn.functional.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
