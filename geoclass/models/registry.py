"""The model registry: one name per architecture, one function to build any of them.

The table below is written out by hand (no registration by import side effects), so a reader
sees every architecture geoclass knows in one place. Any timm model is reachable as ``timm:NAME``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from geoclass.errors import ModelError
from geoclass.models.cnn import BaselineCNN, CompactResNet
from geoclass.models.hybrid import HybridCNNViT
from geoclass.models.local_weights import load_local_weights
from geoclass.models.pixel import PixelMLP, PixelTrees
from geoclass.models.segmentation import EncoderUNet, FPNSegmenter, SmallFCN, UNet
from geoclass.models.timm_models import create_timm_classifier

Task = Literal["classify", "segment"]


@dataclass(frozen=True)
class Architecture:
    """How to build one named architecture."""

    build: Callable[..., nn.Module]
    task: Task
    description: str
    uses_timm: bool = False


def _timm(name: str) -> Callable[..., nn.Module]:
    def build(num_classes: int, in_chans: int, chip_size: int = 64, pretrained: bool = False,
              pretrained_file: str | None = None, **kwargs: Any) -> nn.Module:
        return create_timm_classifier(name, num_classes, in_chans, chip_size, pretrained, pretrained_file, **kwargs)

    return build


def _local(cls: Callable[..., nn.Module], takes_chip_size: bool = False) -> Callable[..., nn.Module]:
    def build(num_classes: int, in_chans: int, chip_size: int = 64, pretrained: bool = False,
              pretrained_file: str | None = None, **kwargs: Any) -> nn.Module:
        if pretrained and pretrained_file is None:
            raise ModelError(f"{cls.__name__} has no published pretrained weights; pass --weights FILE or drop --pretrained")
        if takes_chip_size:
            kwargs["chip_size"] = chip_size
        model = cls(num_classes=num_classes, in_chans=in_chans, **kwargs)
        if pretrained_file is not None:
            load_local_weights(model, pretrained_file)
        return model

    return build


def _baseline_wide(**kwargs: Any) -> nn.Module:
    return BaselineCNN(wide=True, **kwargs)


def _fpn(num_classes: int, in_chans: int, chip_size: int = 256, pretrained: bool = False,
         pretrained_file: str | None = None, backbone: str = "resnet18", **kwargs: Any) -> nn.Module:
    return FPNSegmenter(num_classes, in_chans, backbone=backbone, chip_size=chip_size, pretrained=pretrained,
                        pretrained_file=pretrained_file, **kwargs)


def _swin_fpn(num_classes: int, in_chans: int, chip_size: int = 256, pretrained: bool = False,
              pretrained_file: str | None = None, **kwargs: Any) -> nn.Module:
    kwargs.setdefault("backbone", "swin_tiny_patch4_window7_224")
    return _fpn(num_classes, in_chans, chip_size, pretrained, pretrained_file, **kwargs)


def _encoder_unet(num_classes: int, in_chans: int, chip_size: int = 256, pretrained: bool = False,
                  pretrained_file: str | None = None, backbone: str = "efficientnet_lite0", **kwargs: Any) -> nn.Module:
    return EncoderUNet(num_classes, in_chans, backbone=backbone, pretrained=pretrained,
                       pretrained_file=pretrained_file, **kwargs)


def _unet_s4(**kwargs: Any) -> nn.Module:
    kwargs = {"width": 24, "stem_stride": 4, "blocks": 2, **kwargs}
    return UNet(**kwargs)


ARCHITECTURES: dict[str, Architecture] = {
    "cnn": Architecture(_local(BaselineCNN, takes_chip_size=True), "classify",
                        "EuroSAT baseline: conv16 -> conv8 -> max-pool 8 -> dense 32"),
    "cnn-wide": Architecture(_local(_baseline_wide, takes_chip_size=True), "classify",
                             "wider baseline CNN with batch norm and dropout"),
    "compact": Architecture(_local(CompactResNet), "classify",
                            "compact residual CNN (~1 M parameters), fast on CPUs; the default model"),
    "hybrid": Architecture(_local(HybridCNNViT, takes_chip_size=True), "classify",
                           "CNN stages + transformer encoder over the 8x8 feature tokens"),
    "resnet18": Architecture(_timm("resnet18"), "classify", "timm ResNet-18", uses_timm=True),
    "resnet50": Architecture(_timm("resnet50"), "classify", "timm ResNet-50", uses_timm=True),
    "efficientnet_b3": Architecture(_timm("efficientnet_b3"), "classify", "timm EfficientNet-B3", uses_timm=True),
    "fcn": Architecture(_local(SmallFCN), "segment", "small fully convolutional segmenter"),
    "unet": Architecture(_local(UNet), "segment",
                         "compact U-Net (residual encoder, skip connections, half-resolution stem; "
                         "width=24), trains on a CPU"),
    "unet-s4": Architecture(_local(_unet_s4), "segment",
                            "U-Net with a quarter-resolution stem and two residual blocks per stage "
                            "(width=24): twice as fast as unet to train on a CPU, more depth"),
    "unet-lite0": Architecture(_encoder_unet, "segment",
                               "U-Net decoder over a timm EfficientNet-Lite0 encoder (backbone=...): "
                               "for ImageNet weights (--weights FILE or --pretrained)", uses_timm=True),
    "pixel-mlp": Architecture(_local(PixelMLP), "segment",
                              "per-pixel MLP over band values, spectral indices and optional "
                              "neighbourhood texture; trained from a scene + labels"),
    "pixel-gbt": Architecture(_local(PixelTrees), "segment",
                              "per-pixel gradient-boosted trees (LightGBM) over the same features"),
    "pixel-rf": Architecture(_local(PixelTrees), "segment",
                             "per-pixel random forest (LightGBM's rf mode) over the same features"),
    "fpn": Architecture(_fpn, "segment", "FPN over a timm backbone (backbone=resnet18 by default)", uses_timm=True),
    "swin-fpn": Architecture(_swin_fpn, "segment", "FPN over a Swin-T backbone", uses_timm=True),
}


def list_models() -> list[str]:
    """Names accepted by :func:`create_model` (plus any ``timm:NAME``)."""
    return sorted(ARCHITECTURES)


def describe_models(num_classes: int = 10, in_chans: int = 3) -> list[dict[str, Any]]:
    """Each registered model: name, task, parameters (for ``num_classes`` x ``in_chans``), description."""
    rows = []
    for name in list_models():
        arch = ARCHITECTURES[name]
        chip = 256 if arch.task == "segment" else 64
        try:
            model = create_model(name, num_classes, in_chans, chip_size=chip)
            parameters = sum(p.numel() for p in model.parameters())
        except ModelError:
            parameters = 0
        rows.append({"name": name, "task": arch.task, "parameters": parameters,
                     "description": arch.description})
    return rows


def architecture_task(name: str) -> Task:
    """``classify`` or ``segment`` for a registered name (timm names are classifiers)."""
    return "classify" if name.startswith("timm:") else _lookup(name).task


def _lookup(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(ARCHITECTURES), n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise ModelError(
            f"unknown model {name!r}{hint} (known: {', '.join(list_models())}, or timm:NAME for any timm model)"
        ) from None


def create_model(name: str, num_classes: int, in_chans: int = 3, *, pretrained: bool = False,
                 weights: str | None = None, chip_size: int = 64, **kwargs: Any) -> nn.Module:
    """Build a model by name.

    Args:
        name: A registered name (see :func:`list_models`) or ``timm:NAME``.
        num_classes: Number of output classes.
        in_chans: Number of input bands.
        pretrained: Load published weights from the hub (needs network).
        weights: Local pretrained weights (.safetensors/.pth), adapted to ``in_chans`` and
            ``num_classes``; works offline.
        chip_size: Input size the model is built for.
        **kwargs: Architecture-specific arguments, stored in the model file.

    Raises:
        ModelError: Unknown name, or weights that cannot be fetched or loaded.
    """
    if num_classes < 1:
        raise ModelError(f"num_classes must be at least 1, got {num_classes}")
    if name.startswith("timm:"):
        build = _timm(name.removeprefix("timm:"))
    else:
        build = _lookup(name).build
    try:
        return build(num_classes=num_classes, in_chans=in_chans, chip_size=chip_size, pretrained=pretrained,
                     pretrained_file=weights, **kwargs)
    except TypeError as exc:
        raise ModelError(f"bad arguments for model {name!r}: {exc}") from exc
