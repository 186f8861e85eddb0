"""The dense strategy: a chip classifier run fully convolutionally over large windows.

Each window goes through the model's :class:`~geoclass.models.dense.DenseScorer` once, which
gives the class probabilities of every chip position on an ``output_stride`` grid of the window.
Cell ``i`` (chip at ``i * output_stride``) covers the ``output_stride`` pixels centred on its
chip's centre; the pixels between the window edge and the first/last centre take the nearest
cell, so a window's score map covers all of it. The maps are blended per pixel like a
segmenter's.

Seams: windows overlap by at least twice ``margin`` plus a ramp, ``margin`` being the distance
from a window edge within which a pixel's cell does not see its whole chip plus the receptive
radius. The blending gives those pixels a negligible weight next to a window that sees them
whole, and window offsets are multiples of ``output_stride`` (window side and stride are), so
neighbouring windows compute the same cells where their weights meet: the map is seam-free and
the same for any window size. The one exception is a last row / column of windows shifted back to
end at the scene edge when the scene's extent is not a multiple of ``output_stride``: its cells
lie on a lattice shifted by that remainder (still chip positions of the scene, at its edge).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from geoclass.engine.predict.blend import Blending
from geoclass.errors import ConfigError
from geoclass.models.dense import DenseScorer
from geoclass.models.model_file import ModelMeta

if TYPE_CHECKING:  # strategies.py registers this module: import it lazily, not at load time
    from geoclass.engine.predict.strategies import StrategyOptions

__all__ = ["DEFAULT_CORE", "DenseStrategy"]

DEFAULT_CORE = 768  # pixels a window adds to the map (its stride); the window adds the overlap
_PIXELS_PER_CALL = 1 << 21  # input pixels per forward pass (about 2 MP: bounded activations)


class DenseStrategy:
    """Chip classifiers whose head is pooling + linear layers (see ``geoclass.models.dense``).

    Attributes:
        max_batch: Windows worth batching per call (about 2 MP of input); larger batches only
            hold more score maps in memory.
    """

    name = "dense"
    blending: Blending = "pixel"

    def __init__(self, model: nn.Module, meta: ModelMeta, options: StrategyOptions) -> None:
        if not isinstance(options.scorer, DenseScorer):
            raise ConfigError(
                f"{meta.architecture}: the dense strategy needs the model's dense scorer"
            )
        self.meta, self.scorer = meta, options.scorer
        self.device, self.precision = options.device, options.precision
        from geoclass.engine.predict.strategies import tta_views

        # The score-map views: a flip of a window flips its cell grid (window and chip sides are
        # multiples of the output stride, so flipped chip positions are chip positions).
        self.views = tta_views("segment")[: 4 if options.tta else 1]
        step = self.scorer.output_stride
        # A pixel this close to a window edge may take a cell whose chip + radius leaves the window.
        self.margin = meta.chip_size // 2 + step // 2 + self.scorer.halo
        self.overlap = -(-2 * self.margin // step) * step + step  # 2 margins + a ramp of one cell
        self.size = meta.chip_size
        self.max_batch = 1  # windows per call that keep one forward pass near _PIXELS_PER_CALL
        self._index: np.ndarray | None = None

    def grid(
        self, *, window: int | None, stride: int | None, overlap: float | None
    ) -> tuple[int, int]:
        """Window side (``window``, default ``DEFAULT_CORE`` plus the overlap) and stride.

        Raises:
            ConfigError: A window smaller than a chip or not a multiple of the output stride, a
                stride that is not a multiple of it, or an overlap (dense sets its own).
        """
        step, chip = self.scorer.output_stride, self.meta.chip_size
        if overlap is not None:
            raise ConfigError(
                "--overlap does not apply to --strategy dense: its windows overlap by the "
                f"receptive field ({self.overlap} px); give --window or --stride instead"
            )
        size = window if window is not None else DEFAULT_CORE + self.overlap
        if size < chip or size % step:
            raise ConfigError(
                f"--window {size}: the dense strategy needs a multiple of the output stride "
                f"({step}) of at least one chip ({chip} px)"
            )
        if stride is None:
            stride = max(step, size - self.overlap)
        elif stride < 1 or stride > size or stride % step:
            raise ConfigError(
                f"--stride {stride}: the dense strategy needs a multiple of the output stride "
                f"({step}) up to the window size ({size})"
            )
        return size, stride

    def prepare(self, size: int) -> None:
        self.size = size
        self.max_batch = max(1, _PIXELS_PER_CALL // (size * size))
        step, chip, n = self.scorer.output_stride, self.meta.chip_size, self.scorer.cells(size)
        # Pixel -> cell: the cell whose chip centre is nearest (edge cells extend to the edge).
        self._index = np.clip((np.arange(size) - (chip - step) // 2) // step, 0, n - 1)
        self.scorer = self.scorer.to(memory_format=torch.channels_last)

    def cells(self, xs: list[np.ndarray]) -> np.ndarray:
        """Cell probabilities ``(N, classes, n, n)`` of ``(size, size, bands)`` windows."""
        per_call = self.max_batch  # stacked a few at a time: windows are large
        parts = []
        with torch.inference_mode(), self.precision.autocast():
            for i in range(0, len(xs), per_call):
                xb = torch.from_numpy(np.stack(xs[i : i + per_call])).to(
                    self.device, non_blocking=True
                )
                xb = xb.permute(0, 3, 1, 2)  # NCHW shape, channels-last memory
                total = None
                for forward, inverse in self.views:
                    p = inverse(
                        self.scorer(
                            forward(xb).contiguous(memory_format=torch.channels_last)
                        ).float()
                    )
                    total = p if total is None else total + p
                assert total is not None
                parts.append((total / len(self.views)).cpu())
        return torch.cat(parts).numpy()

    def __call__(self, xs: list[np.ndarray]) -> np.ndarray:
        """Per-pixel probabilities ``(N, classes, size, size)``: each pixel takes its cell's."""
        if self._index is None:
            self.prepare(xs[0].shape[0])
        assert self._index is not None
        idx = self._index
        cells = self.cells(xs)
        return cells[:, :, idx][:, :, :, idx]
