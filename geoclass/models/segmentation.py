"""Segmentation models: per-pixel class scores at the input resolution."""

from __future__ import annotations

import torch
from torch import nn

from geoclass.errors import ModelError
from geoclass.models.cnn import conv_bn_act
from geoclass.models.local_weights import load_local_weights
from geoclass.models.timm_models import build_timm, require_hub


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


class EncoderUNet(nn.Module):
    """A U-Net decoder over a timm ``features_only`` encoder (EfficientNet-Lite0 by default).

    The point is a pretrained encoder: ImageNet features give a small aerial set what it cannot
    learn from a few dozen images. The decoder merges the encoder's maps from stride 32 down to
    stride 4 (two 3x3 convolutions per step, widths ``decoder``) and upsamples the class scores
    bilinearly from there, as ``unet-s4`` does. Any band count (timm adapts the first convolution),
    any input size (padded by reflection to a multiple of 32 and cropped back).

    Args:
        num_classes: Output classes.
        in_chans: Input bands.
        backbone: A timm model name with ``features_only`` support and five feature levels.
        decoder: Channels of the decoder steps at strides 16, 8 and 4.
        pretrained: Fetch the backbone's published weights from the hub.
        pretrained_file: Local backbone weights (timm names, or the same tensors in the same
            order under other names, e.g. the efficientnet_pytorch layout), read without pickle.
    """

    def __init__(self, num_classes: int, in_chans: int = 3, backbone: str = "efficientnet_lite0",
                 decoder: tuple[int, ...] | list[int] = (128, 64, 48), pretrained: bool = False,
                 pretrained_file: str | None = None) -> None:
        super().__init__()
        if pretrained and pretrained_file is None:
            require_hub(backbone)
        self.encoder = build_timm(backbone, None, features_only=True, in_chans=in_chans,
                                  pretrained=pretrained and pretrained_file is None)
        if pretrained_file is not None:
            load_local_weights(self.encoder, pretrained_file)
        chans = self.encoder.feature_info.channels()
        reductions = self.encoder.feature_info.reduction()
        if len(chans) != 5 or reductions[1:] != [4, 8, 16, 32] or len(decoder) != 3:
            raise ModelError(f"{backbone}: expected five feature levels at strides 2-32 and three decoder "
                             f"widths, found strides {reductions} and {len(decoder)} widths")
        self.up = nn.ModuleList()
        prev = chans[4]
        for skip, width in zip((chans[3], chans[2], chans[1]), decoder):
            self.up.append(nn.Sequential(conv_bn_act(prev + skip, width), conv_bn_act(width, width)))
            prev = width
        self.head = nn.Conv2d(prev, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % 32, (-w) % 32
        if ph or pw:  # reflection needs the pad to be smaller than the image; tiny inputs repeat the edge
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = nn.functional.pad(x, (0, pw, 0, ph), mode=mode)
        feats = self.encoder(x)
        y = feats[4]
        for block, skip in zip(self.up, (feats[3], feats[2], feats[1])):
            y = nn.functional.interpolate(y, size=skip.shape[-2:], mode="nearest")
            y = block(torch.cat([y, skip], 1))
        logits = nn.functional.interpolate(self.head(y), scale_factor=4, mode="bilinear", align_corners=False)
        return logits[..., :h, :w]
