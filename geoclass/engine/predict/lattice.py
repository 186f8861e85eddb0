"""The cell lattice of a dense run: where its windows go and which cells each one owns.

A dense run scores chips on one lattice of the whole scene: cell ``i`` along an axis is the chip
starting at pixel ``i * step``, for ``i`` in ``[0, n)`` with ``n = (extent - chip) // step + 1``
(one cell, padded, on an axis shorter than a chip). Pixels past the last whole chip feed no cell,
so the scene is scored as if cropped to its *lattice extent* ``(n - 1) * step + chip``.

Every cell is taken from exactly one window, its *owner*, which holds the cell's chip plus
``halo`` pixels on each side (or reaches the same scene edge). A cell's score depends on no other
pixels, and window offsets are multiples of ``step``, so every window computes the cell exactly as
one pass over the whole scene would: tiled == whole for any scene and window size, with no
blending. A pixel takes the cell whose chip centre is nearest (the edge cells reach the scene
edges), so the map is a grid of ``step`` px cells centred on chip centres.

A window reads ``size`` pixels but scores only the first ``size - step``: the last window then
still reads the pixels past the lattice extent (fewer than a step), whose nodata mask the map needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Lattice"]


@dataclass(frozen=True)
class Lattice:
    """Chip size, cell step and halo of a dense scorer, all in pixels.

    Attributes:
        chip: Chip side of the classifier.
        step: Pixels between cells (the output stride); divides ``chip``.
        halo: Pixels a cell's score may depend on past its chip (a multiple of ``step``).
    """

    chip: int
    step: int
    halo: int

    @property
    def overlap(self) -> int:
        """Pixels a window reads besides the chips of the cells it owns: two halos and the
        step read past the scored part (``chip - step + 2 * halo + step``)."""
        return self.chip + 2 * self.halo

    def scored(self, size: int) -> int:
        """Pixels of a ``size`` px window that are scored (see the module docstring)."""
        return size - self.step

    def cells(self, extent: int) -> int:
        """Cells along an axis of ``extent`` pixels (1 for an axis shorter than a chip)."""
        return max(0, extent - self.chip) // self.step + 1

    def extent(self, extent: int) -> int:
        """The lattice extent: the pixels the cells' chips cover (a chip when shorter)."""
        return (self.cells(extent) - 1) * self.step + self.chip

    def fit(self, height: int, width: int, max_size: int) -> int:
        """The window side that scores a ``height`` x ``width`` scene with the fewest pixels.

        Windows of ``max_size`` would overshoot the scene's edges by up to a whole window (the
        last one is shifted back over its neighbour). For each count of windows along each axis
        (a few above the fewest possible), the smallest side that covers the scene is found, and
        the count whose windows score the fewest pixels in all wins; the side is at most
        ``max_size`` and never below half of it unless the scene is smaller.
        """
        step, ov = self.step, self.overlap - self.step  # ov: scored pixels shared by neighbours
        z_max = self.scored(max_size)

        def side(end: int, k: int) -> int:
            """Smallest scored side (a multiple of ``step``) for ``k`` windows over ``end``."""
            return -(-(end + (k - 1) * ov) // (k * step)) * step

        def counts(end: int) -> range:
            fewest = 1 if end <= z_max else -(-(end - z_max) // (z_max - ov)) + 1
            return range(fewest, fewest + 4)

        ends = (self.extent(height), self.extent(width))
        floor = min(z_max // (2 * step) * step, max(ends))
        best: tuple[int, int] | None = None
        for kr in counts(ends[0]):
            for kc in counts(ends[1]):
                z = max(side(ends[0], kr), side(ends[1], kc), floor)
                if z > z_max:
                    continue
                z = min(z, max(ends))  # one window over a small scene: no larger than it
                cost = kr * kc * z * z
                if best is None or cost < best[0]:
                    best = (cost, z)
        assert best is not None  # the fewest counts always fit in z_max
        return max(best[1] + step, self.overlap + step)

    def windows(self, extent: int, size: int, stride: int) -> tuple[list[int], list[int]]:
        """Window offsets along an axis, and the cell bounds they own.

        Windows start every ``stride`` pixels, the last one shifted back so that its scored part
        ends at the lattice extent. Window ``k`` owns cells ``[bounds[k], bounds[k + 1])``: those whose chip starts in
        ``[k * stride + halo, (k + 1) * stride + halo)`` (from 0 for the first window, to the end
        for the last), so it holds each owned chip with ``halo`` pixels on both sides.

        Args:
            extent: Scene pixels along the axis.
            size: Window side: a multiple of ``step``, at least ``stride + overlap``.
            stride: Pixels between windows: a multiple of ``step``.
        """
        end, n, size = self.extent(extent), self.cells(extent), self.scored(size)
        offsets, bounds = [0], [0]
        while offsets[-1] + size < end:
            k = len(offsets)
            offsets.append(min(k * stride, end - size))
            bounds.append((k * stride + self.halo) // self.step)
        bounds.append(n)
        return offsets, bounds

    def pixel_cells(self, start: int, stop: int, extent: int) -> np.ndarray:
        """The cell of each pixel in ``[start, stop)``: the one whose chip centre is nearest."""
        p = np.arange(start, stop)
        return np.clip((p - (self.chip - self.step) // 2) // self.step, 0, self.cells(extent) - 1)
