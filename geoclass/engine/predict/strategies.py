"""How a model turns windows into class scores.

A strategy takes batches of preprocessed windows and returns softmax scores, and says how those
scores are blended (``blend.Blending``):

- ``windows``: any model, one forward pass per window: a classifier scores each chip (blended as
  ``chip``), a segmenter scores each pixel of its window (blended as ``pixel``);
- ``dense``: a chip classifier run fully convolutionally over large windows (plugs in through
  ``STRATEGIES``; see ``select_strategy``);
- ``pixel``: per-pixel models (``geoclass train SCENE --labels``): large windows overlapping by
  the model's neighbourhood, scored per pixel (blended as ``pixel``).

``select_strategy`` turns ``--strategy auto|windows|dense|pixel`` into a strategy for a model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
import torch
from torch import nn

from geoclass.engine.device import Precision
from geoclass.engine.predict.blend import Blending
from geoclass.engine.predict.plan import grid_size, offsets
from geoclass.errors import ConfigError, ModelError
from geoclass.models.model_file import ModelMeta

__all__ = [
    "STRATEGIES",
    "STRATEGY_NAMES",
    "PixelStrategy",
    "Strategy",
    "StrategyFactory",
    "StrategyOptions",
    "WindowStrategy",
    "dense_scorer_for",
    "is_per_pixel",
    "select_strategy",
]

STRATEGY_NAMES = ("auto", "windows", "dense", "pixel")
_NO_DENSE = "dense inference is not available in this version of geoclass"


@dataclass(frozen=True)
class StrategyOptions:
    """What a strategy needs besides the model.

    Attributes:
        device: Device the model is on.
        precision: Autocast settings.
        tta: Average over flips and a rotation of each window.
        output_stride: Pixels between dense output cells (dense only; None: its default).
        scorer: The model's dense scorer (``geoclass.models.dense.dense_scorer``), for dense.
    """

    device: torch.device
    precision: Precision
    tta: bool = False
    output_stride: int | None = None
    scorer: object | None = None


class Strategy(Protocol):
    """A way of running a model over windows.

    Attributes:
        name: ``windows``, ``dense`` or ``pixel``: recorded in the result and resume state.
        blending: ``chip`` (one score vector per window), ``pixel`` (a score map per window) or
            ``cell`` (a map of lattice cells per window, each cell owned by one window).
        margin: Pixels along shared window edges that the ``pixel`` blending all but ignores.
    """

    name: str
    blending: Blending
    margin: int

    def grid(
        self,
        *,
        window: int | None,
        stride: int | None,
        overlap: float | None,
        width: int,
        height: int,
    ) -> tuple[int, int]:
        """Window side and stride from the options, for a ``width`` x ``height`` scene (raises
        ConfigError when out of range)."""
        ...

    def offsets(self, extent: int, size: int, stride: int) -> list[int]:
        """Window offsets along an axis of ``extent`` pixels."""
        ...

    def prepare(self, size: int, width: int, height: int) -> None:
        """Get ready to run ``size`` px windows over a ``width`` x ``height`` scene (called once,
        before the first batch)."""
        ...

    def __call__(self, xs: list[np.ndarray]) -> np.ndarray:
        """Softmax scores of a batch of ``(size, size, bands)`` windows, as float32 numpy:
        ``(N, classes)`` for ``chip`` blending, ``(N, classes, size, size)`` for ``pixel``,
        ``(N, classes, cells, cells)`` for ``cell``."""
        ...


StrategyFactory = Callable[[nn.Module, ModelMeta, StrategyOptions], Strategy]


def tta_views(
    task: str,
) -> list[tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]]:
    """(transform, inverse for score maps) pairs: identity, two flips, a 90 degree rotation."""
    ident = (lambda t: t, lambda t: t)
    views = [
        ident,
        (lambda t: torch.flip(t, dims=(3,)), lambda t: torch.flip(t, dims=(3,))),
        (lambda t: torch.flip(t, dims=(2,)), lambda t: torch.flip(t, dims=(2,))),
        (lambda t: torch.rot90(t, 1, dims=(2, 3)), lambda t: torch.rot90(t, -1, dims=(2, 3))),
    ]
    if task == "classify":
        views = [(f, lambda t: t) for f, _ in views]
    return views


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over axis 1 of ``(N, classes)`` logits."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class WindowStrategy:
    """Any model, one forward pass per window (and per TTA view)."""

    name = "windows"
    memory_format = torch.channels_last  # convolutions run fastest on NHWC on CPUs and GPUs
    reader_bound = False  # True: reading the scene costs more than the model (see run._pipeline)

    def __init__(self, model: nn.Module, meta: ModelMeta, options: StrategyOptions) -> None:
        self.model, self.meta = model, meta
        self.device, self.precision = options.device, options.precision
        self.task = meta.task
        self.blending: Blending = "chip" if self.task == "classify" else "pixel"
        radius = getattr(model, "receptive_radius", 0) if self.task == "segment" else 0
        self.margin = int(radius or 0)
        self.views = tta_views(self.task) if options.tta else tta_views(self.task)[:1]
        self.size = meta.chip_size

    def grid(
        self,
        *,
        window: int | None,
        stride: int | None,
        overlap: float | None,
        width: int,
        height: int,
    ) -> tuple[int, int]:
        return grid_size(self.meta, self.task, window=window, stride=stride, overlap=overlap)

    def offsets(self, extent: int, size: int, stride: int) -> list[int]:
        return offsets(extent, size, stride)

    def prepare(self, size: int, width: int, height: int) -> None:
        self.size = size
        self.model = self.model.to(memory_format=self.memory_format)

    def __call__(self, xs: list[np.ndarray]) -> np.ndarray:
        x = torch.from_numpy(np.stack(xs))  # (N, H, W, C)
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2)  # NCHW shape, channels-last memory: no copy
        total: np.ndarray | torch.Tensor | None = None
        with torch.inference_mode(), self.precision.autocast():
            for forward, inverse in self.views:
                xv = forward(x).contiguous(memory_format=self.memory_format)
                out = self.model(xv).float()
                self._check(out, x.shape[0])
                p: np.ndarray | torch.Tensor
                if self.task == "classify":
                    # A few numbers per chip: numpy, without waking torch's thread pool.
                    p = softmax(out.cpu().numpy())
                else:
                    p = inverse(torch.softmax(out, dim=1))
                total = p if total is None else total + p
        assert total is not None
        if len(self.views) > 1:
            total = total / len(self.views)
        return total if isinstance(total, np.ndarray) else total.cpu().numpy()

    def _check(self, out: torch.Tensor, n: int) -> None:
        c = self.meta.num_classes
        want = (n, c) if self.task == "classify" else (n, c, self.size, self.size)
        if tuple(out.shape) != want:
            raise ModelError(
                f"the model returned scores of shape {tuple(out.shape)}, expected {want} "
                f"for a {self.task} model with {c} classes"
            )


class PixelStrategy(WindowStrategy):
    """Per-pixel models (``per_pixel`` set, e.g. ``pixel-mlp``): large windows overlapping by
    twice the model's receptive radius, so every pixel is scored by a window that sees its whole
    neighbourhood and the map equals a whole-scene pass."""

    name = "pixel"
    default_window = 512
    memory_format = torch.contiguous_format  # per-pixel features: ~15% faster on NCHW rows
    reader_bound = True  # a per-pixel model costs less than decoding its bands
    # Windows per forward call: two 512 px windows of a 13-band stack are already ~27 MB of input;
    # larger batches only fill memory (the model runs windows one by one).
    max_batch = 2

    def grid(
        self,
        *,
        window: int | None,
        stride: int | None,
        overlap: float | None,
        width: int,
        height: int,
    ) -> tuple[int, int]:
        halo = 2 * self.margin
        if overlap is not None:
            raise ConfigError(
                "--overlap does not apply to --strategy pixel: its windows overlap by twice the "
                f"model's neighbourhood radius ({halo} px); give --window or --stride instead"
            )
        size = window if window is not None else self.default_window
        if size <= halo:
            raise ConfigError(
                f"--window {size}: the pixel strategy needs more than twice the model's "
                f"neighbourhood radius ({halo} px)"
            )
        if stride is None:
            stride = size - halo
        elif stride > size - halo:
            raise ConfigError(
                f"--stride {stride}: at most the window less twice the model's neighbourhood "
                f"radius ({size - halo} px), or the map would depend on the windows"
            )
        return size, stride

    def prepare(self, size: int, width: int, height: int) -> None:
        super().prepare(size, width, height)
        # A scene smaller than the window: run the model on the scene's part only, so its
        # neighbourhood features end at the scene edge exactly as in a larger scene.
        self.crop = (min(size, height), min(size, width))

    def __call__(self, xs: list[np.ndarray]) -> np.ndarray:
        h, w = self.crop
        if (h, w) == (self.size, self.size):
            return super().__call__(xs)
        scores = super().__call__([x[:h, :w] for x in xs])
        out = np.zeros((*scores.shape[:2], self.size, self.size), np.float32)
        out[:, :, :h, :w] = scores
        return out

    def _check(self, out: torch.Tensor, n: int) -> None:
        want = (n, self.meta.num_classes, *self.crop)
        if tuple(out.shape) != want:
            raise ModelError(f"the model returned scores of shape {tuple(out.shape)}, expected {want}")


def is_per_pixel(model: nn.Module) -> bool:
    """Whether ``model`` classifies each pixel from its own features (``--strategy pixel``)."""
    return bool(getattr(model, "per_pixel", False))


# The strategies that exist, by name; ``"dense"`` (engine/predict/dense.py) is registered at the
# end of this module and finds the model's dense scorer in ``options.scorer``.
STRATEGIES: dict[str, StrategyFactory] = {"windows": WindowStrategy}

# Whether ``auto`` picks dense where a model supports it: dense is exact tile for tile at every
# scene size and ~2.4x the throughput of windows on the shipped model (bench/predict_strategies_bench.py).
AUTO_PICKS_DENSE = True


def dense_scorer_for(
    model: nn.Module, meta: ModelMeta, output_stride: int | None
) -> tuple[object | None, str]:
    """The model's dense scorer, or None and why it cannot run densely.

    Raises:
        ConfigError: ``output_stride`` does not fit the model (from the dense module).
    """
    try:
        from geoclass.models import dense
    except ImportError:  # the dense module is not part of this version
        return None, _NO_DENSE
    scorer = dense.dense_scorer(model, meta, output_stride=output_stride)
    if scorer is not None:
        return scorer, ""
    if meta.task == "segment":
        return None, "a segmentation model already scores every pixel of its window"
    why = getattr(dense, "dense_support", lambda *_: None)(model, meta)
    return None, why or "its head is not global pooling + a linear layer"


def select_strategy(
    name: str,
    model: nn.Module,
    meta: ModelMeta,
    options: StrategyOptions,
    label: str,
    overlap_given: bool = False,
) -> Strategy:
    """The strategy ``name`` (``auto``, ``windows``, ``dense`` or ``pixel``) for a model.

    ``auto`` is ``dense`` where the model can run densely (with ``AUTO_PICKS_DENSE``) and no chip
    overlap was asked for, else ``windows``.

    Args:
        name: The strategy asked for.
        model: The loaded model.
        meta: Its model file's metadata.
        options: Device, precision, TTA and output stride.
        label: The model file, to name in errors.
        overlap_given: A chip overlap (``--overlap``) was given: a windows option, so ``auto``
            runs windows.

    Raises:
        ConfigError: An unknown name; ``dense`` for a model that cannot run densely; ``pixel``
            (no per-pixel model exists yet); an output stride for a strategy without one.
    """
    if name not in STRATEGY_NAMES:
        raise ConfigError(f"strategy must be one of {', '.join(STRATEGY_NAMES)}, got {name!r}")
    kind = "segmentation model" if meta.task == "segment" else "chip classifier"
    model_kind = f"{meta.architecture} {kind}"
    if is_per_pixel(model) and (name == "pixel" or (name == "auto" and not overlap_given)):
        if options.output_stride is not None:
            raise ConfigError(
                f"{label}: --output-stride {options.output_stride} applies only to --strategy "
                "dense, and this per-pixel model runs with --strategy pixel"
            )
        return PixelStrategy(model, meta, options)
    if name == "pixel":
        raise ConfigError(
            f"{label}: --strategy pixel needs a per-pixel model (geoclass train SCENE --labels "
            f"...), and this is a {model_kind}: use --strategy auto or windows"
        )
    why = ""
    if name == "auto" and overlap_given:
        why = "--overlap asks for overlapping chip windows"
    elif name == "dense" or (name == "auto" and AUTO_PICKS_DENSE):
        if "dense" in STRATEGIES:
            scorer, why = dense_scorer_for(model, meta, options.output_stride)
            if scorer is not None:
                return STRATEGIES["dense"](model, meta, replace(options, scorer=scorer))
        else:
            why = _NO_DENSE
    if name == "dense":
        raise ConfigError(
            f"{label}: a {model_kind} cannot run with --strategy dense: {why}; "
            "use --strategy windows"
        )
    if options.output_stride is not None:
        reason = f" ({why})" if why else ""
        raise ConfigError(
            f"{label}: --output-stride {options.output_stride} applies only to --strategy dense, "
            f"and this {model_kind} runs with windows{reason}"
        )
    return STRATEGIES["windows"](model, meta, options)


def _register_dense() -> None:
    from geoclass.engine.predict.dense import DenseStrategy  # imports this module: registered last

    STRATEGIES["dense"] = DenseStrategy


_register_dense()
