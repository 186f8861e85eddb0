"""The dense strategy: a chip classifier run fully convolutionally over large windows.

Each window goes through the model's :class:`~geoclass.models.dense.DenseScorer` once, which
gives the class probabilities of every chip position on an ``output_stride`` grid of the window.
The windows lie on the scene's cell lattice (``lattice.Lattice``): each owns a block of cells and
holds those cells' chips plus the receptive halo, so every cell is computed exactly as one pass
over the whole scene would compute it, for any scene and window size (tiled == whole, no seams),
and the ``cell`` blending only stores each cell once and spreads it to its pixels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from geoclass.engine.predict.blend import Blending
from geoclass.engine.predict.lattice import Lattice
from geoclass.errors import ConfigError
from geoclass.models.dense import DenseScorer
from geoclass.models.model_file import ModelMeta

if TYPE_CHECKING:  # strategies.py registers this module: import it lazily, not at load time
    from geoclass.engine.predict.strategies import StrategyOptions

__all__ = ["DEFAULT_CORE", "DenseStrategy"]

DEFAULT_CORE = 1536  # pixels of cells a window owns (its stride); the window adds the overlap
_PIXELS_PER_CALL = 1 << 21  # input pixels per forward pass (about 2 MP: bounded activations)


class DenseStrategy:
    """Chip classifiers whose head is pooling + linear layers (see ``geoclass.models.dense``).

    Attributes:
        lattice: The cell lattice (chip, output stride, halo).
        max_batch: Windows worth batching per call (about 2 MP of input); larger batches only
            hold more score maps in memory.
    """

    name = "dense"
    blending: Blending = "cell"
    margin = 0  # cells are owned by one window: nothing is blended across window edges

    def __init__(self, model: nn.Module, meta: ModelMeta, options: StrategyOptions) -> None:
        if not isinstance(options.scorer, DenseScorer):
            raise ConfigError(
                f"{meta.architecture}: the dense strategy needs the model's dense scorer"
            )
        self.meta, self.scorer = meta, options.scorer
        self.device, self.precision = options.device, options.precision
        from geoclass.engine.predict.strategies import tta_views

        # The score-map views: a flip of a window flips its cell grid (the windows' extents less a
        # chip are multiples of the output stride, so flipped chip positions are chip positions).
        self.views = tta_views("segment")[: 4 if options.tta else 1]
        self.lattice = Lattice(meta.chip_size, self.scorer.output_stride, self.scorer.halo)
        self.size = meta.chip_size
        self.crop = (self.size, self.size)
        self.max_batch = 1  # windows per call that keep one forward pass near _PIXELS_PER_CALL

    def grid(
        self,
        *,
        window: int | None,
        stride: int | None,
        overlap: float | None,
        width: int,
        height: int,
    ) -> tuple[int, int]:
        """Window side and stride for a ``width`` x ``height`` scene.

        The default window owns up to ``DEFAULT_CORE`` pixels of cells, shrunk so that the windows
        score as few pixels as they can (``Lattice.fit``).

        Raises:
            ConfigError: A window that is not a multiple of the output stride or too small to own
                a cell, a stride that is not a multiple of it or too large for the window, or an
                overlap (dense needs its own).
        """
        step, overlap_px = self.lattice.step, self.lattice.overlap
        if overlap is not None:
            raise ConfigError(
                "--overlap does not apply to --strategy dense: its windows overlap by one chip "
                f"and the receptive field ({overlap_px} px); give --window or --stride instead"
            )
        if window is not None:
            size = window
        else:
            largest = DEFAULT_CORE + overlap_px
            size = self.lattice.fit(height, width, largest)
        if size % step or size < overlap_px + step:
            raise ConfigError(
                f"--window {size}: the dense strategy needs a multiple of the output stride "
                f"({step}) of at least one chip, the receptive field and one cell "
                f"({overlap_px + step} px)"
            )
        if stride is None:
            stride = size - overlap_px
        elif stride < step or stride > size - overlap_px or stride % step:
            raise ConfigError(
                f"--stride {stride}: the dense strategy needs a multiple of the output stride "
                f"({step}) up to the window less one chip and the receptive field "
                f"({size - overlap_px})"
            )
        return size, stride

    def offsets(self, extent: int, size: int, stride: int) -> list[int]:
        """Window offsets along an axis: on the cell lattice (see ``Lattice.windows``)."""
        return self.lattice.windows(extent, size, stride)[0]

    def prepare(self, size: int, width: int, height: int) -> None:
        self.size = size
        self.max_batch = max(1, _PIXELS_PER_CALL // (size * size))
        # A scene smaller than a window is scored on its lattice extent, as any window would be.
        scored = self.lattice.scored(size)
        self.crop = (
            min(scored, self.lattice.extent(height)),
            min(scored, self.lattice.extent(width)),
        )
        self.scorer = self.scorer.to(memory_format=torch.channels_last)

    def __call__(self, xs: list[np.ndarray]) -> np.ndarray:
        """Cell probabilities ``(N, classes, n, n)`` of ``(size, size, bands)`` windows, ``n``
        cells per side (cells past a cropped window's lattice extent are 0)."""
        h, w = self.crop
        n = self.lattice.cells(self.lattice.scored(self.size))
        out = np.zeros((len(xs), self.meta.num_classes, n, n), np.float32)
        per_call = self.max_batch  # stacked a few at a time: windows are large
        with torch.inference_mode(), self.precision.autocast():
            for i in range(0, len(xs), per_call):
                batch = np.stack([x[:h, :w] for x in xs[i : i + per_call]])
                xb = torch.from_numpy(batch).to(self.device, non_blocking=True)
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
                cells = (total / len(self.views)).cpu().numpy()
                out[i : i + len(batch), :, : cells.shape[2], : cells.shape[3]] = cells
        return out
