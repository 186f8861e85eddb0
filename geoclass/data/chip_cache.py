"""Decoded chips in a memory-mapped file on disk, filled as the first epoch reads them.

Opening and decoding a small chip file (a 64x64 JPEG or GeoTIFF) costs far more than the chip
is worth: on a 2-core CPU it is most of the data path's time, and that time is taken from the
model's own threads. A training run reads every chip once per epoch, so after the first epoch it
reads the decoded pixels back from one ``.npy`` file (N x bands x h x w, the chips' own dtype)
instead. The file is on disk and memory-mapped: the operating system pages it in and out, the
process does not hold the dataset.

Every DataLoader worker opens the file itself (the cache pickles as paths) and writes only the
chips it reads; a sampler hands each index to one worker per epoch, so writes never overlap.
A chip's "filled" flag is set after its pixels are written.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np


class ChipCache:
    """A fixed-shape array of decoded chips plus one "filled" flag per chip.

    Args:
        folder: Where the cache files live (created).
        keys: One string per chip (its path and bands): the cache is rebuilt when they change.
        shape: ``(bands, height, width)`` of every chip.
        dtype: The chips' dtype; chips of another dtype or shape are simply not cached.
    """

    def __init__(self, folder: str | Path, keys: list[str], shape: tuple[int, int, int], dtype: str) -> None:
        self.folder = Path(folder)
        self.count = len(keys)
        self.shape = tuple(int(v) for v in shape)
        self.dtype = np.dtype(dtype)
        digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
        self.data_path = self.folder / f"chips-{digest}.npy"
        self.flags_path = self.folder / f"filled-{digest}.npy"
        self._data: np.ndarray | None = None
        self._flags: np.ndarray | None = None
        self._create()

    def _create(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        info = self.folder / "cache.json"
        wanted = {"data": self.data_path.name, "shape": [self.count, *self.shape], "dtype": self.dtype.name}
        if self.data_path.is_file() and self.flags_path.is_file() and _read_json(info) == wanted:
            return  # a resumed run keeps what its earlier epochs decoded
        for stale in self.folder.glob("*.npy"):
            stale.unlink()
        np.lib.format.open_memmap(self.data_path, mode="w+", dtype=self.dtype, shape=(self.count, *self.shape)).flush()
        np.lib.format.open_memmap(self.flags_path, mode="w+", dtype=np.uint8, shape=(self.count,)).flush()
        info.write_text(json.dumps(wanted))

    def _open(self) -> tuple[np.ndarray, np.ndarray]:
        if self._data is None or self._flags is None:
            self._data = np.load(self.data_path, mmap_mode="r+")
            self._flags = np.load(self.flags_path, mmap_mode="r+")
        return self._data, self._flags

    def get(self, index: int) -> np.ndarray | None:
        """The decoded chip, or None when it has not been cached yet."""
        data, flags = self._open()
        return np.array(data[index]) if flags[index] else None

    def put(self, index: int, chip: np.ndarray) -> None:
        """Keep a decoded chip (chips that do not fit the cache's shape or dtype are skipped)."""
        if chip.shape != self.shape or chip.dtype != self.dtype:
            return
        data, flags = self._open()
        data[index] = chip
        flags[index] = 1

    def filled(self) -> int:
        """How many chips are cached."""
        return int(self._open()[1].sum())

    def remove(self) -> None:
        """Delete the cache files."""
        self._data = self._flags = None
        shutil.rmtree(self.folder, ignore_errors=True)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_data"] = state["_flags"] = None  # each worker maps the files itself
        return state


def chip_cache_bytes(count: int, shape: tuple[int, int, int], dtype: str) -> int:
    """Disk bytes a cache of ``count`` chips of ``shape`` and ``dtype`` takes (its flags aside)."""
    return count * int(np.prod(shape)) * np.dtype(dtype).itemsize


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
