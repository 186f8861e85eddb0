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


class UNet(nn.Module):
    """A compact U-Net: residual encoder (four stride-2 stages), decoder with skip connections.

    Any band count, any input size (padded internally to a multiple of its total stride and
    cropped back). ``width`` sets the first stage's channels (doubling per stage, capped at 8x).
    ``stem_stride`` 2 (default) works at half resolution from the first layer and upsamples the
    class scores bilinearly: about 4x cheaper than full resolution on a CPU, for boundaries
    within a pixel of the full-resolution ones. ``stem_stride`` 4 halves the cost again (two
    stride-2 convolutions); the time saved buys ``blocks`` residual blocks per encoder stage.
    """

    def __init__(self, num_classes: int, in_chans: int = 3, width: int = 24, depth: int = 4,
                 stem_stride: int = 2, blocks: int = 1) -> None:
        super().__init__()
        from geoclass.models.cnn import ResidualBlock

        if stem_stride not in (1, 2, 4):
            raise ValueError(f"stem_stride must be 1, 2 or 4, got {stem_stride}")
        chans = [min(width * 2**i, width * 8) for i in range(depth + 1)]
        if stem_stride == 4:
            stem = [conv_bn_act(in_chans, chans[0] // 2, stride=2), conv_bn_act(chans[0] // 2, chans[0], stride=2)]
        else:
            stem = [conv_bn_act(in_chans, chans[0], stride=stem_stride)]
        self.stem = nn.Sequential(*stem, conv_bn_act(chans[0], chans[0]))
        self.stem_stride = stem_stride
        # One block per stage is a bare ResidualBlock (the state-dict layout of the first unet models).
        self.down = nn.ModuleList(
            ResidualBlock(chans[i], chans[i + 1], stride=2) if blocks == 1 else
            nn.Sequential(ResidualBlock(chans[i], chans[i + 1], stride=2),
                          *(ResidualBlock(chans[i + 1], chans[i + 1]) for _ in range(blocks - 1)))
            for i in range(depth)
        )
        self.up = nn.ModuleList(
            nn.Sequential(conv_bn_act(chans[i + 1] + chans[i], chans[i]), conv_bn_act(chans[i], chans[i]))
            for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(chans[0], num_classes, 1)
        self.multiple = 2**depth * stem_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        if ph or pw:
            x = nn.functional.pad(x, (0, pw, 0, ph), mode="reflect")
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(skips[-1]))
        y = skips.pop()
        for block in self.up:
            skip = skips.pop()
            y = nn.functional.interpolate(y, size=skip.shape[-2:], mode="nearest")
            y = block(torch.cat([y, skip], 1))
        logits = self.head(y)
        if self.stem_stride > 1:
            logits = nn.functional.interpolate(logits, scale_factor=self.stem_stride, mode="bilinear",
                                               align_corners=False)
        return logits[..., :h, :w]
