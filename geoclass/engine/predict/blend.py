"""Blending overlapping window scores into finished rows of output.

Two ways, chosen by the strategy:

- ``chip``: one score vector per window (a classifier's softmax for a chip) is spread over every
  pixel of the window and averaged where windows overlap, each window weighted by its fraction
  of valid pixels (so windows that are mostly nodata do not dominate their valid neighbours);
- ``pixel``: a score map per window (a segmenter's per-pixel softmax) is blended with a weight
  that ramps up from window edges shared with a neighbouring window (never from the scene's own
  edges, which no other window covers). Pixels within ``margin`` of a shared edge (the model's
  receptive radius) get a negligible weight, so a fully convolutional model gives the same map,
  to float precision, as one forward pass over the whole image;
- ``cell``: the dense strategy's scores on a lattice of cells (``lattice.Lattice``): each cell is
  taken from the one window that owns it, nothing is averaged, and a finished row of pixels takes
  its cells' class (classes and probabilities are worked out per cell, then spread to pixels).

Only a band of rows as tall as a window is held, so memory does not depend on the scene's height.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from geoclass.engine.predict.lattice import Lattice
from geoclass.engine.predict.plan import Win
from geoclass.io.raster_writer import NODATA, encode_confidence, encode_probabilities

__all__ = [
    "Blender",
    "Blending",
    "CellBlender",
    "ChipBlender",
    "PixelBlender",
    "Weights",
    "axis_weight",
    "make_blender",
]

Blending = Literal["chip", "pixel", "cell"]
_MARGIN_WEIGHT = 1e-6  # weight of pixels a window sees with less than its receptive field


def axis_weight(offset: int, size: int, extent: int, margin: int, ramp: int) -> np.ndarray:
    """1-D blending weight of a segmenter window: ramps from edges shared with a neighbour."""
    i = np.arange(size, dtype=np.float64)
    inf = np.full(size, np.inf)
    d_lo = i - margin if offset > 0 else inf
    d_hi = (size - 1 - i) - margin if offset + size < extent else inf
    d = np.minimum(d_lo, d_hi)
    w = np.minimum(1.0, (d + 1.0) / (ramp + 1.0))
    return np.where(d < 0, _MARGIN_WEIGHT, w)


class Weights:
    """Per-window 2-D weights (at most 16 distinct ones: which edges are shared)."""

    def __init__(self, size: int, stride: int, width: int, height: int, margin: int) -> None:
        self.size, self.width, self.height, self.margin = size, width, height, margin
        self.ramp = max(1, size - stride - 2 * margin)
        self._cache: dict[tuple[bool, ...], np.ndarray] = {}

    def get(self, row_off: int, col_off: int) -> np.ndarray:
        s = self.size
        key = (row_off > 0, row_off + s < self.height, col_off > 0, col_off + s < self.width)
        w = self._cache.get(key)
        if w is None:
            wy = axis_weight(row_off, s, self.height, self.margin, self.ramp)
            wx = axis_weight(col_off, s, self.width, self.margin, self.ramp)
            w = np.outer(wy, wx).astype(np.float32)
            self._cache[key] = w
        return w


class Blender:
    """Blends window scores into finished rows of output; runs in its own thread.

    Window rows arrive in order, each followed by ``mark(next_offset)``: rows before the next
    window row's offset can no longer change, so they are turned into class ids (and encoded
    probabilities / confidence) and handed to ``emit``. Rows a resumed run has already written
    (before ``start_row``) are computed but not emitted. Only a band of rows as tall as a window
    is held, so memory does not depend on the scene's height.
    """

    def __init__(
        self,
        *,
        classes: int,
        size: int,
        width: int,
        height: int,
        base: int,
        start_row: int,
        want_probs: bool,
        want_conf: bool,
        emit: Callable[[int, np.ndarray], None],
    ) -> None:
        self.classes, self.size, self.width, self.height = classes, size, width, height
        self.rows = min(size, height)
        self.valid = np.zeros((self.rows, width), bool)
        self.base, self.start_row = base, start_row
        self.want_probs, self.want_conf = want_probs, want_conf
        self.emit = emit

    def handle(self, events: list[tuple[Any, ...]]) -> None:
        for ev in events:
            if ev[0] == "win":
                self.add(ev[1], ev[2])
            else:
                self.mark(ev[1])

    def _span(self, win: Win) -> tuple[slice, slice, int, int]:
        """Buffer rows and scene columns a window covers, and their counts."""
        r0 = win.row_off - self.base
        nr = min(self.size, self.height - win.row_off)
        nc = min(self.size, self.width - win.col_off)
        return slice(r0, r0 + nr), slice(win.col_off, win.col_off + nc), nr, nc

    def add(self, win: Win, scores: np.ndarray) -> None:
        rs, cs, nr, nc = self._span(win)
        self.valid[rs, cs] |= win.valid[:nr, :nc]

    def mark(self, next_offset: int) -> None:
        n = next_offset - self.base
        if n <= 0:
            return
        skip = max(0, self.start_row - self.base)  # rows a resumed run has already written
        layers = self._finish(n)
        if skip < n:
            ok = self.valid[:n]
            for layer in layers:
                layer[:, ~ok] = NODATA
            out = layers[0] if len(layers) == 1 else np.concatenate(layers)
            self.emit(self.base + skip, out[:, skip:])
        self._shift(n)
        self.base = next_offset

    def _finish(self, n: int) -> list[np.ndarray]:
        """Class ids (and probabilities, confidence) of the first ``n`` held rows, as uint8
        ``(bands, n, width)`` layers; pixels without scores are NODATA."""
        raise NotImplementedError

    def _shift(self, n: int) -> None:
        """Drop the first ``n`` held rows (copied upwards in order, so the overlap is harmless)."""
        keep = self.rows - n
        for i in range(keep):
            self.valid[i] = self.valid[i + n]
        self.valid[keep:] = False

    def _encode(self, probs: np.ndarray) -> list[np.ndarray]:
        """Probability / confidence layers of ``probs`` ``(classes, ..., width)``, as asked for."""
        layers = []
        if self.want_probs:
            layers.append(encode_probabilities(probs))
        if self.want_conf:
            layers.append(encode_confidence(probs.max(axis=0))[None])
        return layers


class PixelBlender(Blender):
    """Segmenters: per-pixel scores, weighted by ``Weights``, summed over overlapping windows."""

    def __init__(self, *, weights: Weights, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.weights = weights
        self.acc = np.zeros((self.classes, self.rows, self.width), np.float32)
        self.wsum = np.zeros((self.rows, self.width), np.float32)

    def add(self, win: Win, scores: np.ndarray) -> None:
        rs, cs, nr, nc = self._span(win)
        w = self.weights.get(win.row_off, win.col_off)[:nr, :nc]
        self.acc[:, rs, cs] += scores[:, :nr, :nc] * w
        self.wsum[rs, cs] += w
        self.valid[rs, cs] |= win.valid[:nr, :nc]

    def _finish(self, n: int) -> list[np.ndarray]:
        acc, wsum = self.acc[:, :n], self.wsum[:n]
        classes = acc.argmax(axis=0).astype(np.uint8)
        classes[wsum <= 0] = NODATA
        layers = [classes[None]]
        if self.want_probs or self.want_conf:
            layers += self._encode(acc / np.where(wsum > 0, wsum, 1.0))
        return layers

    def _shift(self, n: int) -> None:
        keep = self.rows - n
        for i in range(keep):
            self.acc[:, i] = self.acc[:, i + n]
            self.wsum[i] = self.wsum[i + n]
        self.acc[:, keep:] = 0
        self.wsum[keep:] = 0
        super()._shift(n)


class ChipBlender(Blender):
    """Classifiers: each chip's scores cover all its pixels, averaged where chips overlap.

    All chips of a window row cover the same rows, so a row of chips reduces to one score vector
    per column (a difference array over the chips' column spans, weighted by each chip's valid
    fraction). A finished pixel row is the sum of the vectors of the window rows covering it, so
    blending costs per column, not per pixel.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._row: list[tuple[int, np.ndarray, float]] = []  # chips of the current window row
        self._row_off = 0
        # Window rows that may still cover unfinished rows: (first row, end row, sums) with sums
        # (classes + 1, width): weighted scores per class, then the weight.
        self._open: list[tuple[int, int, np.ndarray]] = []

    def add(self, win: Win, scores: np.ndarray) -> None:
        super().add(win, scores)
        self._row.append((win.col_off, scores, win.weight))
        self._row_off = win.row_off

    def mark(self, next_offset: int) -> None:
        self._close_row()
        super().mark(next_offset)
        self._open = [o for o in self._open if o[1] > self.base]

    def _close_row(self) -> None:
        if not self._row:
            return
        c = self.classes
        starts = np.array([col for col, _, _ in self._row])
        ends = np.minimum(starts + self.size, self.width)
        weights = np.array([w for _, _, w in self._row], np.float64)
        values = np.empty((len(self._row), c + 1), np.float64)
        values[:, :c] = np.stack([p for _, p, _ in self._row]) * weights[:, None]
        values[:, c] = weights
        diff = np.zeros((self.width + 1, c + 1), np.float64)
        np.add.at(diff, starts, values)
        np.add.at(diff, ends, -values)
        sums = np.cumsum(diff[:-1], axis=0).T.copy()  # (classes + 1, width)
        self._open.append((self._row_off, min(self._row_off + self.size, self.height), sums))
        self._row = []

    def _finish(self, n: int) -> list[np.ndarray]:
        a, b = self.base, self.base + n
        cuts = sorted({a, b} | {x for s, e, _ in self._open for x in (s, e) if a < x < b})
        classes = np.full((1, n, self.width), NODATA, np.uint8)
        extra = (self.classes if self.want_probs else 0) + (1 if self.want_conf else 0)
        more = np.full((extra, n, self.width), NODATA, np.uint8) if extra else None
        for u, v in zip(cuts[:-1], cuts[1:]):
            total: np.ndarray | None = None
            for s, e, sums in self._open:  # in window-row order: the same sums on resume
                if s <= u and e >= v:
                    total = sums.copy() if total is None else total + sums
            if total is None:
                continue
            wsum = total[self.classes]
            scored = wsum > 1e-12  # not exactly 0: the difference array leaves round-off
            row_classes = total[: self.classes].argmax(axis=0).astype(np.uint8)
            row_classes[~scored] = NODATA
            classes[0, u - a : v - a] = row_classes
            if more is not None:
                probs = (total[: self.classes] / np.where(scored, wsum, 1.0)).astype(np.float32)
                enc = np.concatenate(self._encode(probs))
                enc[:, ~scored] = NODATA
                more[:, u - a : v - a] = enc[:, None, :]
        return [classes] if more is None else [classes, more]


class CellBlender(Blender):
    """Dense strategy: each window's owned cells are stored, finished pixel rows take their cell's.

    Only the cells under a band of rows as tall as a window are held (``step`` squared times
    fewer values than per-pixel scores).
    """

    def __init__(self, *, lattice: Lattice, stride: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lattice = lattice
        step = lattice.step
        row_offsets, self.row_bounds = lattice.windows(self.height, self.size, stride)
        col_offsets, self.col_bounds = lattice.windows(self.width, self.size, stride)
        self.row_index = {off: k for k, off in enumerate(row_offsets)}
        self.col_index = {off: j for j, off in enumerate(col_offsets)}
        self.col_cells = lattice.pixel_cells(0, self.width, self.width)
        held = self.size // step + 2
        self.cells = np.zeros((self.classes, held, lattice.cells(self.width)), np.float32)
        self.filled = np.zeros((held, lattice.cells(self.width)), bool)
        self.first_cell = int(lattice.pixel_cells(self.base, self.base + 1, self.height)[0])

    def add(self, win: Win, scores: np.ndarray) -> None:
        """Store the cells ``win`` owns; ``scores`` is its ``(classes, cells, cells)`` map."""
        super().add(win, scores)
        k, j = self.row_index[win.row_off], self.col_index[win.col_off]
        r0, r1 = self.row_bounds[k], self.row_bounds[k + 1]
        c0, c1 = self.col_bounds[j], self.col_bounds[j + 1]
        wr, wc = win.row_off // self.lattice.step, win.col_off // self.lattice.step
        rows = slice(r0 - self.first_cell, r1 - self.first_cell)
        # Owned cells beyond a cropped window's scores cannot occur: the crop is the lattice.
        self.cells[:, rows, c0:c1] = scores[:, r0 - wr : r1 - wr, c0 - wc : c1 - wc]
        self.filled[rows, c0:c1] = True

    def _finish(self, n: int) -> list[np.ndarray]:
        pixel_rows = self.lattice.pixel_cells(self.base, self.base + n, self.height)
        lo, hi = int(pixel_rows[0]), int(pixel_rows[-1]) + 1
        held = slice(lo - self.first_cell, hi - self.first_cell)
        probs, filled = self.cells[:, held], self.filled[held]
        layers = [probs.argmax(axis=0).astype(np.uint8)[None]]
        if self.want_probs or self.want_conf:
            layers += self._encode(probs)
        cell_layers = np.concatenate(layers)
        cell_layers[:, ~filled] = NODATA
        # Cell layers -> pixel rows: a gather per row index, then per column.
        out = cell_layers[:, pixel_rows - lo][:, :, self.col_cells]
        return [out]

    def _shift(self, n: int) -> None:
        first = int(self.lattice.pixel_cells(self.base + n, self.base + n + 1, self.height)[0])
        d = first - self.first_cell
        if d > 0:
            keep = self.cells.shape[1] - d
            self.cells[:, :keep] = self.cells[:, d:].copy()
            self.filled[:keep] = self.filled[d:].copy()
            self.cells[:, keep:] = 0
            self.filled[keep:] = False
            self.first_cell = first
        super()._shift(n)


def make_blender(
    blending: Blending,
    *,
    stride: int,
    margin: int,
    lattice: Lattice | None = None,
    classes: int,
    size: int,
    width: int,
    height: int,
    base: int,
    start_row: int,
    want_probs: bool,
    want_conf: bool,
    emit: Callable[[int, np.ndarray], None],
) -> Blender:
    """The blender for a strategy's ``blending``; it hands finished rows to ``emit``."""
    common: dict[str, Any] = {
        "classes": classes,
        "size": size,
        "width": width,
        "height": height,
        "base": base,
        "start_row": start_row,
        "want_probs": want_probs,
        "want_conf": want_conf,
        "emit": emit,
    }
    if blending == "pixel":
        return PixelBlender(weights=Weights(size, stride, width, height, margin), **common)
    if blending == "cell":
        if lattice is None:
            raise ValueError("cell blending needs the dense strategy's lattice")
        return CellBlender(lattice=lattice, stride=stride, **common)
    return ChipBlender(**common)
