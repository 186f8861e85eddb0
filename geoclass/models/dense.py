"""Dense scoring: a chip classifier run fully convolutionally over a large window.

A chip classifier whose head is pooling + linear layers over a translation-equivariant feature
extractor can score every chip position of a window at once: the features of the window are
computed once, and the head runs as a convolution over them. For a classifier with total feature
stride ``s``, chip size ``c`` and global average pooling + linear head, the head becomes an
average pool with kernel ``c / s`` and stride ``output_stride / s`` followed by the linear layer
as a 1x1 convolution (applied first: both are linear, so they commute, and that is cheaper). A
flattening head (``Flatten`` + ``Linear`` over the whole ``C x k x k`` feature map, as in the
baseline CNN) becomes a ``k x k`` convolution. Elementwise layers (ReLU, dropout in eval mode) pass
through unchanged.

Cell ``(i, j)`` of a window's output holds the class probabilities of the chip whose top-left
pixel is ``(i * output_stride, j * output_stride)`` in the window. On a window the size of one
chip the result equals ``softmax(model(x))`` up to float round-off. In larger windows the
features near a chip's border see real neighbouring pixels instead of the zero padding the chip
saw alone, so interior cells differ a little from chip-by-chip evaluation; that is expected.

Tiling: the score of a cell depends on the pixels of its chip plus ``radius`` pixels on every
side (the receptive reach of the features beyond their nominal footprint; a safe upper bound).
Two windows give the same score for a cell when both hold its chip plus ``radius`` pixels (or
end at the same scene edge) and both start at an offset congruent to the cell modulo ``stride``.
:attr:`DenseScorer.halo` is ``radius`` rounded up to a multiple of ``output_stride``, so windows
grown by ``halo`` keep cells on their grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from geoclass.errors import ConfigError
from geoclass.models.cnn import BaselineCNN, CompactResNet
from geoclass.models.model_file import ModelMeta

__all__ = ["DenseScorer", "dense_scorer", "dense_support"]

# Layers that only look at a bounded neighbourhood of each position, the same way everywhere.
_LOCAL_LEAVES: tuple[type[nn.Module], ...] = (
    nn.Conv2d,
    nn.BatchNorm2d,
    nn.ReLU,
    nn.ReLU6,
    nn.SiLU,
    nn.GELU,
    nn.LeakyReLU,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
)
# Layers of a head that act on each feature vector alone.
_ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.LeakyReLU, nn.Identity, nn.Dropout)
# Blocks whose forward combines local layers only (checked by their class, since forward is code).
_LOCAL_BLOCKS = (
    "geoclass.models.cnn.ResidualBlock",
    "timm.models.resnet.BasicBlock",
    "timm.models.resnet.Bottleneck",
)


@dataclass(frozen=True)
class _Parts:
    features: nn.Module | None  # None: the timm model's forward_features
    feature_modules: list[nn.Module]
    head: list[nn.Module]


def _qualname(module: nn.Module) -> str:
    return f"{type(module).__module__}.{type(module).__name__}"


def _parts(model: nn.Module) -> _Parts | str:
    """The feature extractor and head of a supported classifier, or why it is not supported."""
    if isinstance(model, CompactResNet):
        return _Parts(None, [model.stem, model.stages], list(model.head))
    if isinstance(model, BaselineCNN):
        return _Parts(model.features, [model.features], list(model.classifier))
    name = type(model).__name__
    if (
        "Transformer" in name
        or "ViT" in name
        or "Attention" in {type(m).__name__ for m in model.modules()}
        or any(isinstance(m, nn.MultiheadAttention) for m in model.modules())
    ):
        return f"{name}: attention mixes the whole window, so a dense run is not the chip model"
    if type(model).__module__.startswith("timm.") and hasattr(model, "forward_features"):
        pool = getattr(model, "global_pool", None)
        classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
        if getattr(pool, "pool_type", None) != "avg" or not isinstance(classifier, nn.Linear):
            return f"timm {name}: the head is not global average pooling + linear"
        if getattr(model, "head_hidden_size", None) not in (None, classifier.in_features):
            return f"timm {name}: the head has layers besides pooling + linear"
        skip = {id(pool), id(classifier)}
        body = [m for m in model.children() if id(m) not in skip]
        return _Parts(None, body, [nn.AdaptiveAvgPool2d(1), nn.Flatten(), classifier])
    return f"{name}: not a known fully convolutional classifier"


def _nonlocal_module(modules: list[nn.Module]) -> str | None:
    """Why some module's output at a position may depend on far-away pixels, or None."""
    every = [module for top in modules for module in top.modules()]
    for module in every:
        name = type(module).__name__
        if (
            "Excite" in name
            or "Eca" in name
            or isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))
        ):
            return f"{name} pools over the whole input (squeeze-excitation / global context)"
    for top in modules:
        for module in top.modules():
            if isinstance(module, nn.Sequential) or _qualname(module) in _LOCAL_BLOCKS:
                continue
            if (
                type(module) not in _LOCAL_LEAVES
            ):  # exact types: subclasses (Conv2dSame...) pad by input size
                return f"{type(module).__name__} is not a layer known to be local"
    return None


def dense_support(model: nn.Module, meta: ModelMeta) -> str | None:
    """Why ``model`` cannot be run densely, or None when it can (exactly).

    Args:
        model: The classifier, as built from ``meta``.
        meta: Its metadata (task, chip size, bands).
    """
    return _analyse(model, meta)[1]


def dense_scorer(
    model: nn.Module, meta: ModelMeta, output_stride: int | None = None
) -> DenseScorer | None:
    """The dense form of ``model``, or None where it would not be exact (see :func:`dense_support`).

    Args:
        model: The classifier (eval mode: batch norm uses its running statistics).
        meta: Its metadata.
        output_stride: Pixels between output cells; a multiple of the feature stride that
            divides the chip size. None: the feature stride (the finest grid).

    Raises:
        ConfigError: ``output_stride`` breaks these rules.
    """
    geometry, _ = _analyse(model, meta)
    if geometry is None:
        return None
    parts, stride, radius = geometry
    return DenseScorer(
        model,
        parts,
        meta.chip_size,
        stride,
        radius,
        _check_output_stride(output_stride, stride, meta.chip_size),
    )


def _check_output_stride(output_stride: int | None, stride: int, chip: int) -> int:
    if output_stride is None:
        return stride
    if output_stride < 1 or output_stride % stride or chip % output_stride:
        raise ConfigError(
            f"--output-stride {output_stride}: must be a multiple of the model's feature stride "
            f"({stride}) that divides its chip size ({chip})"
        )
    return output_stride


def _analyse(
    model: nn.Module, meta: ModelMeta
) -> tuple[tuple[_Parts, int, int] | None, str | None]:
    """(parts, feature stride, receptive radius) of a supported model, else (None, reason)."""
    if meta.task != "classify":
        return (
            None,
            f"{meta.architecture} is a {meta.task} model (per-pixel output); "
            "dense is for chip classifiers",
        )
    parts = _parts(model)
    if isinstance(parts, str):
        return None, parts
    bad = _nonlocal_module(parts.feature_modules)
    if bad is not None:
        return None, f"{type(model).__name__}: {bad}, so a dense run would not be the chip model"
    reason = _head_reason(parts.head)
    if reason is not None:
        return None, f"{type(model).__name__}: {reason}"
    stride, radius = _probe(model, parts, meta)
    if stride is None:
        return (
            None,
            f"{type(model).__name__}: chip size {meta.chip_size} is not a multiple of the "
            "feature stride",
        )
    return (parts, stride, radius), None


def _head_reason(head: list[nn.Module]) -> str | None:
    layers = list(head)
    pooled = bool(layers) and isinstance(layers[0], nn.AdaptiveAvgPool2d)
    if pooled:
        if layers[0].output_size not in (1, (1, 1)):
            return "the head pools to more than one cell"
        layers = layers[1:]
    if not layers or not isinstance(layers[0], nn.Flatten):
        return "the head does not flatten pooled features"
    rest = layers[1:]
    linear = [i for i, m in enumerate(rest) if isinstance(m, nn.Linear)]
    if not linear:
        return "the head has no linear layer"
    if pooled and any(type(m) not in (nn.Dropout, nn.Identity) for m in rest[: linear[0]]):
        return "the head applies a nonlinearity between pooling and its linear layer"
    for module in rest:
        if not isinstance(module, nn.Linear) and type(module) not in _ELEMENTWISE:
            return f"the head has a {type(module).__name__} layer"
    return None


def _features(model: nn.Module, parts: _Parts, x: torch.Tensor) -> torch.Tensor:
    if parts.features is not None:
        return parts.features(x)
    if isinstance(model, CompactResNet):
        return model.features(x)
    return model.forward_features(x)


def _probe(model: nn.Module, parts: _Parts, meta: ModelMeta) -> tuple[int | None, int]:
    """Feature stride and receptive radius, from one forward pass over a chip of zeros.

    The radius sums, over every spatial layer, how far its kernel reaches past its stride step on
    either side, times the pixel spacing of its input. Layers of parallel branches are all counted,
    which over-estimates the radius (safe: a larger halo changes no score).
    """
    chip = meta.chip_size
    reach: list[float] = []

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        jump = chip / inputs[0].shape[-1]
        k, s, p, d = (
            _pair(getattr(module, a, 1))[0]
            for a in ("kernel_size", "stride", "padding", "dilation")
        )
        span = (k - 1) * d + 1
        reach.append(max(p, span - s - p, 0) * jump)

    handles = [
        m.register_forward_hook(hook)
        for top in parts.feature_modules
        for m in top.modules()
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d))
    ]
    param = next(model.parameters(), None)
    x = torch.zeros(
        1, meta.in_chans, chip, chip, device=param.device if param is not None else "cpu"
    )
    try:
        with torch.no_grad():
            fmap = _features(model, parts, x)
    finally:
        for handle in handles:
            handle.remove()
    fh, fw = fmap.shape[-2:]
    if fh != fw or fh < 1 or chip % fh:
        return None, 0
    return chip // fh, math.ceil(sum(reach))


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[-1]))


class DenseScorer(nn.Module):
    """Class probabilities of every chip position on an ``output_stride`` grid of a window.

    Attributes:
        chip_size: The model's chip size in pixels.
        stride: Total stride of the feature extractor.
        output_stride: Pixels between output cells.
        radius: Receptive reach of the features past a chip's edge, in pixels (upper bound).
        halo: ``radius`` rounded up to a multiple of ``output_stride``.
    """

    def __init__(
        self,
        model: nn.Module,
        parts: _Parts,
        chip_size: int,
        stride: int,
        radius: int,
        output_stride: int,
    ) -> None:
        super().__init__()
        self.model = model
        self._parts = parts
        self.chip_size, self.stride, self.output_stride, self.radius = (
            chip_size,
            stride,
            output_stride,
            radius,
        )
        self.halo = -(-radius // output_stride) * output_stride
        self.pooled = self._pooled(parts.head)
        self.kernel = chip_size // stride
        self.step = output_stride // stride
        self.head = nn.ModuleList(self._conv_head(parts.head))

    @staticmethod
    def _pooled(head: list[nn.Module]) -> bool:
        return bool(head) and isinstance(head[0], nn.AdaptiveAvgPool2d)

    def _conv_head(self, head: list[nn.Module]) -> list[nn.Module]:
        """The head's layers after Flatten, linear layers as convolutions."""
        layers: list[nn.Module] = []
        first = True
        for module in head[(2 if self.pooled else 1) :]:
            if isinstance(module, nn.Linear):
                k = 1 if (self.pooled or not first) else self.kernel
                stride = 1 if (self.pooled or not first) else self.step
                conv = nn.Conv2d(
                    module.in_features // (k * k),
                    module.out_features,
                    k,
                    stride,
                    bias=module.bias is not None,
                )
                conv = conv.to(device=module.weight.device, dtype=module.weight.dtype)
                with torch.no_grad():
                    conv.weight.copy_(module.weight.reshape(conv.weight.shape))
                    if module.bias is not None:
                        conv.bias.copy_(module.bias)
                layers.append(conv)
                first = False
            else:
                layers.append(module)
        return layers

    def cells(self, extent: int) -> int:
        """Output cells along an axis of ``extent`` pixels (0 when it holds no whole chip)."""
        return 0 if extent < self.chip_size else (extent - self.chip_size) // self.output_stride + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, bands, H, W)`` normalised pixels -> ``(N, classes, cells(H), cells(W))``."""
        h, w = x.shape[-2:]
        if h < self.chip_size or w < self.chip_size:
            raise ConfigError(
                f"dense window {w}x{h} is smaller than one chip ({self.chip_size} px)"
            )
        fmap = _features(self.model, self._parts, x)
        fmap = fmap[
            ..., : h // self.stride, : w // self.stride
        ]  # a partial last cell belongs to no chip
        rest = list(self.head)
        if self.pooled:
            # Linear first, then the average: both are linear, so they commute, and C -> classes
            # channels first is cheaper. Only dropout (identity in eval) may come before it.
            first = next(i for i, m in enumerate(rest) if isinstance(m, nn.Conv2d))
            conv = rest[first]
            fmap = nn.functional.avg_pool2d(
                nn.functional.conv2d(fmap, conv.weight), self.kernel, self.step
            )
            if conv.bias is not None:
                fmap = fmap + conv.bias[:, None, None]
            rest = rest[first + 1 :]
        for layer in rest:
            fmap = layer(fmap)
        return torch.softmax(fmap, dim=1)
