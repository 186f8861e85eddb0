"""The windows to run: their size and stride, their offsets, and where a resumed run starts.

Windows lie on the shared grid of ``geoclass.io.windows``. They are visited one window row at a
time; a row of windows is read in chunks of neighbours (one read each). Output is written in
256-row strips, and a resumed run starts at the first window row that still touches an
unfinished row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from geoclass.errors import ConfigError
from geoclass.io.raster_writer import BLOCK_SIZE
from geoclass.io.reader import Scene
from geoclass.io.windows import iter_window_grid
from geoclass.models.model_file import ModelMeta

__all__ = ["DEFAULT_OVERLAP", "Plan", "Win", "grid_size", "load_chunk", "offsets"]

# Default overlap between neighbouring windows, per task. Classifier maps are blocky at the chip
# size; a half-chip overlap averages four chips per pixel and halves the block size.
DEFAULT_OVERLAP = {"classify": 0.5, "segment": 0.25}
_READ_CHUNK_BYTES = 32 << 20  # input of one chunk of neighbouring windows, as float32


def grid_size(
    meta: ModelMeta, task: str, *, window: int | None, stride: int | None, overlap: float | None
) -> tuple[int, int]:
    """Window side and stride from the options and the model.

    Raises:
        ConfigError: Both stride and overlap, a classifier window other than its chip size, or
            a value out of range.
    """
    if stride is not None and overlap is not None:
        raise ConfigError("give either stride or overlap, not both")
    if task == "classify":
        if window is not None and window != meta.chip_size:
            raise ConfigError(
                f"window {window}: a classifier always uses its chip size ({meta.chip_size})"
            )
        size = meta.chip_size
    else:
        size = window or meta.chip_size
    if size < 1:
        raise ConfigError(f"window size must be >= 1, got {size}")
    if stride is not None:
        if not 1 <= stride <= size:
            raise ConfigError(
                f"stride {stride} must be between 1 and the window size ({size}); "
                "a larger stride would leave pixels unclassified"
            )
        return size, stride
    overlap = DEFAULT_OVERLAP[task] if overlap is None else overlap
    if not 0.0 <= overlap < 1.0:
        raise ConfigError(f"overlap must be in [0, 1), got {overlap}")
    return size, max(1, round(size * (1.0 - overlap)))


def offsets(extent: int, size: int, stride: int) -> list[int]:
    """Window offsets along one axis, as the shared window grid places them."""
    if extent <= size:
        return [0]
    return [int(gw.read.col_off) for gw in iter_window_grid(extent, 1, size, stride)]


@dataclass(frozen=True)
class Plan:
    """The window grid of a scene, and the part of it a (resumed) run still has to do.

    Attributes:
        width: Scene width in pixels.
        height: Scene height in pixels.
        size: Window side.
        stride: Step between windows.
        rows: Row offsets of the window rows.
        cols: Column offsets of the windows in a row.
        rows_done: Scene rows finished by an interrupted run (0 for a fresh run).
    """

    width: int
    height: int
    size: int
    stride: int
    rows: list[int]
    cols: list[int]
    rows_done: int = 0

    @classmethod
    def build(
        cls,
        width: int,
        height: int,
        size: int,
        stride: int,
        rows_done: int = 0,
        place: Callable[[int, int, int], list[int]] | None = None,
    ) -> Plan:
        """The plan of a ``width`` x ``height`` scene with ``rows_done`` rows already written.

        ``place(extent, size, stride)`` gives the window offsets along an axis (default:
        ``offsets``, the shared window grid).
        """
        place = place or offsets
        rows, cols = place(height, size, stride), place(width, size, stride)
        return cls(width, height, size, stride, rows, cols, rows_done)

    def first_row_touching(self, row: int) -> int:
        """Index of the first window row that covers scene row ``row`` or a later one."""
        return next((r for r, off in enumerate(self.rows) if off + self.size > row), len(self.rows))

    @property
    def start(self) -> int:
        """Index of the first window row this run computes."""
        if self.rows_done >= self.height:
            return len(self.rows)
        return self.first_row_touching(self.rows_done)

    @property
    def base(self) -> int:
        """First scene row the run's blending holds: the offset of its first window row."""
        return self.rows[self.start] if self.start < len(self.rows) else self.height

    @property
    def windows(self) -> int:
        """Windows this run visits."""
        return (len(self.rows) - self.start) * len(self.cols)

    def next_offset(self, r: int) -> int:
        """Offset of the window row after ``r`` (the scene height after the last)."""
        return self.rows[r + 1] if r + 1 < len(self.rows) else self.height

    def batch_breaks(self) -> set[int]:
        """Window rows that no batch may span: where a run resumed at a strip would start.

        A resumed run then sees exactly the batches an uninterrupted one did, and computes the
        same bits.
        """
        return {self.first_row_touching(k) for k in range(BLOCK_SIZE, self.height, BLOCK_SIZE)}

    def column_groups(self, bands: int, batch_size: int) -> list[list[int]]:
        """Column offsets split into chunks of neighbours read at once (~32 MB of input each)."""
        max_span = _READ_CHUNK_BYTES // (self.size * bands * 4)
        group = max(1, min(len(self.cols), batch_size, (max_span - self.size) // self.stride + 1))
        return [self.cols[i : i + group] for i in range(0, len(self.cols), group)]


@dataclass
class Win:
    """One window read and preprocessed, waiting for the model."""

    row_off: int
    col_off: int
    x: np.ndarray  # (S, S, bands) normalised float32
    valid: np.ndarray  # (S, S) bool
    weight: float  # classifiers: fraction of valid pixels


def load_chunk(
    scene: Scene, meta: ModelMeta, row_off: int, col_offs: list[int], size: int
) -> list[Win | None]:
    """Read and preprocess neighbouring windows of one row with one read.

    Returns one entry per window: None for a window without any valid pixel.
    """
    c0 = col_offs[0]
    span = col_offs[-1] - c0 + size
    data, valid = scene.read_masked(Window(c0, row_off, span, size))
    if not valid.any():
        return [None] * len(col_offs)
    # Height x width x bands: batches stack into channels-last tensors without another copy.
    x = np.ascontiguousarray(meta.preprocess(data, scene.dtype).transpose(1, 2, 0), np.float32)
    if not valid.all():
        # Invalid pixels become the training mean (0 after normalisation): no signal, no edge.
        x[~valid] = 0.0
    out: list[Win | None] = []
    for c in col_offs:
        v = valid[:, c - c0 : c - c0 + size]
        out.append(
            Win(row_off, c, x[:, c - c0 : c - c0 + size], v, float(v.mean())) if v.any() else None
        )
    return out
