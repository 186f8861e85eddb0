"""Cutting a labelled scene into training chips (``geoclass tile``).

The scene is walked window by window (``Scene.windows``); each window's labels are looked at first
(cheap), then its pixels are read, checked for nodata and written as a georeferenced GeoTIFF chip.
Memory stays flat whatever the scene size: a few windows are in flight at any time, the index
rows stream to a temporary CSV, and per-band statistics are merged as chips go by.

Output layout (``OUT``)::

    chips/<class>/<scene>_<row>_<col>.tif     classify (chips/<scene>_<row>_<col>.tif unlabelled)
    images/<scene>_<row>_<col>.tif            segment: the image chips
    masks/<scene>_<row>_<col>.tif             segment: uint8 class ids, 255 = unlabelled
    chips.csv                                 path,label,split[,mask],scene,row,col
    index.gpkg                                chip footprints with class, split and scene
    dataset.json                              classes, bands, CRS, statistics, counts, config

Train/validation split: the scene is cut into square blocks of ``block_size`` x ``block_size``
chip steps; each block goes to train or val by a seeded hash of its position, so neighbouring
chips share a split and a run is reproducible.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import shutil
import struct
import sys
import threading
import time
import warnings
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import fiona
import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import MemoryFile
from rasterio.windows import Window

from geoclass.errors import (
    ConfigError,
    GeoclassError,
    Interrupted,
    OutputError,
    OutputExistsError,
)
from geoclass.io.labels import UNLABELLED, ClassSpec, open_labels, read_class_file
from geoclass.io.outputs import input_files
from geoclass.io.reader import Scene, open_scene
from geoclass.io.stats import BandStatistics
from geoclass.io.windows import window_transform
from geoclass.progress import ProgressCallback, Reporter

__all__ = [
    "DATASET_FORMAT",
    "SKIP_REASONS",
    "TileConfig",
    "TileResult",
    "block_split",
    "tile",
    "tile_scene",
]

DATASET_FORMAT = "geoclass-chips"
DATASET_VERSION = 1
SKIP_REASONS = ("nodata", "too_much_nodata", "unlabelled", "under_labelled")
"""Why a window gave no chip: all nodata, over ``max_nodata``, no label, under ``min_labelled``."""

STATE_FILE = ".geoclass-tile.json"
_PARTIAL_CSV = ".chips.csv.partial"
_OUTPUT_DIRS = ("chips", "images", "masks")
_OUTPUT_FILES = ("chips.csv", "index.gpkg", "dataset.json", STATE_FILE, _PARTIAL_CSV,
                 ".index.tmp.gpkg", ".dataset.json.tmp", ".chips.csv.tmp")
_PERCENTILES = (2.0, 98.0)
_TASK = "tile"

Task = Literal["classify", "segment"]


@dataclass
class TileConfig:
    """Everything ``tile`` needs; the CLI builds one from its options.

    Attributes:
        scenes: One raster, or single-band rasters stacked in the order given.
        output: Output folder.
        labels: Vector file (with ``label_field``) or class raster; None for unlabelled chips.
        label_field: Class attribute of vector labels (optional when there is only one field).
        classes: Classes file, names in id order, or ``{name: label value}``; default the label
            values found, sorted.
        bands: 1-based bands of the stacked scene to keep, in order; default all.
        size: Chip side in pixels.
        stride: Step between chips; default ``size``. Must not exceed ``size``.
        task: ``classify`` (one class per chip) or ``segment`` (chip + mask pairs).
        min_labelled: Minimum labelled fraction of a chip's pixels to keep it.
        max_nodata: Maximum nodata fraction of a chip's pixels to keep it.
        val_fraction: Share of spatial blocks that go to the validation split.
        block_size: Side of a split block, in chip steps.
        seed: Seed of the block hash.
        overwrite: Replace the outputs of an earlier run in ``output``.
        resume: Continue an interrupted run in ``output``, keeping the chips already written.
        label_layer: Layer of a multi-layer vector file; default the first.
        nodata: Treat this value as nodata in every band, overriding the files' own (for scenes
            with fill but no declared nodata, e.g. Landsat's zero fill).
        compress_level: DEFLATE level of the chips, 1 (fastest; the default, as compression is
            most of the cost of tiling) to 9 (smallest; GDAL's default is 6).
        workers: Threads reading and writing chips; None picks from the CPU count (none below 4
            CPUs), 0 works in the calling thread.
        command: The command line that made the dataset, recorded in ``dataset.json``.
    """

    scenes: Sequence[str | os.PathLike[str]] | str | os.PathLike[str]
    output: str | os.PathLike[str]
    labels: str | os.PathLike[str] | None = None
    label_field: str | None = None
    classes: str | os.PathLike[str] | ClassSpec | None = None
    bands: Sequence[int] | None = None
    size: int = 64
    stride: int | None = None
    task: Task = "classify"
    min_labelled: float = 0.5
    max_nodata: float = 0.0
    val_fraction: float = 0.2
    block_size: int = 8
    seed: int = 0
    overwrite: bool = False
    resume: bool = False
    label_layer: str | None = None
    nodata: float | None = None
    compress_level: int = 1
    workers: int | None = None
    command: str | None = None


@dataclass
class TileResult:
    """What a ``tile`` run produced.

    Attributes:
        output: The output folder.
        task: ``classify`` or ``segment``.
        classes: Class names in id order (empty without labels).
        windows: Windows looked at (the size of the chip grid).
        chips: Chips in the dataset.
        written: Chips written by this run.
        reused: Chips kept from an earlier, interrupted run (``resume``).
        counts: Chips per split and class (``""`` is the class of unlabelled chips).
        skipped: Windows without a chip, by reason (see ``SKIP_REASONS``).
        statistics: Per-band statistics of the train split's valid pixels (None without any).
        dataset_json: Path of ``dataset.json``.
        seconds: Wall time of the run.
    """

    output: Path
    task: str
    classes: list[str]
    windows: int
    chips: int
    written: int
    reused: int
    counts: dict[str, dict[str, int]]
    skipped: dict[str, int]
    statistics: BandStatistics | None
    dataset_json: Path
    seconds: float = 0.0

    def split_total(self, split: str) -> int:
        """Chips in one split."""
        return sum(self.counts.get(split, {}).values())


# --- split ------------------------------------------------------------------------------------


def _block_u(seed: int, block: tuple[int, int]) -> float:
    digest = hashlib.blake2b(f"{seed}/{block[0]}/{block[1]}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def block_split(row: int, col: int, block_px: int, val_fraction: float, seed: int) -> str:
    """Preliminary split of the chip at pixel offset (row, col): its block's seeded hash.

    ``tile`` may move one whole block afterwards so that a dataset of two or more blocks has both
    a train and a val split; ``chips.csv`` holds the final assignment.
    """
    block = (row // block_px, col // block_px)
    return "val" if _block_u(seed, block) < val_fraction else "train"


# --- statistics -------------------------------------------------------------------------------


@dataclass
class _Moments:
    """Mergeable per-band statistics of valid pixels.

    Integer types of up to 16 bits keep an exact histogram per band (cheap per chip, and mean,
    std, min, max and percentiles all follow from it exactly); other types keep count, mean, M2
    (Chan's parallel update), min and max.
    """

    count: int
    hist_offset: int | None
    n: int = 0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    hist: list[np.ndarray] | None = None

    @classmethod
    def of(cls, values: np.ndarray, hist_offset: int | None) -> _Moments:
        """Statistics of ``(count, n)`` values (the valid pixels of one chip)."""
        m = cls(values.shape[0], hist_offset, values.shape[1])
        if hist_offset is not None:
            shifted = values if hist_offset == 0 else values.astype(np.int32) - hist_offset
            m.hist = [np.bincount(shifted[b].ravel()) for b in range(values.shape[0])]
            return m
        v = values.astype(np.float64, copy=False)
        m.mean = v.mean(axis=1)
        m.m2 = ((v - m.mean[:, None]) ** 2).sum(axis=1)
        m.lo, m.hi = v.min(axis=1), v.max(axis=1)
        return m

    def merge(self, other: _Moments) -> None:
        if other.n == 0:
            return
        if other.hist is not None:
            if self.hist is None:
                self.hist = [np.zeros(256 if h.size <= 256 else 65536, np.int64) for h in other.hist]
            for b, h in enumerate(other.hist):
                if h.size > self.hist[b].size:
                    grown = np.zeros(65536, np.int64)
                    grown[: self.hist[b].size] = self.hist[b]
                    self.hist[b] = grown
                self.hist[b][: h.size] += h
        elif self.n == 0:
            assert other.mean is not None and other.m2 is not None
            self.mean, self.m2 = other.mean.copy(), other.m2.copy()
            self.lo, self.hi = other.lo, other.hi
        else:
            assert self.mean is not None and self.m2 is not None and self.lo is not None
            assert other.mean is not None and other.m2 is not None and other.lo is not None
            assert self.hi is not None and other.hi is not None
            total = self.n + other.n
            delta = other.mean - self.mean
            self.mean = self.mean + delta * (other.n / total)
            self.m2 = self.m2 + other.m2 + delta**2 * (self.n * other.n / total)
            self.lo, self.hi = np.minimum(self.lo, other.lo), np.maximum(self.hi, other.hi)
        self.n += other.n

    def result(self) -> BandStatistics | None:
        if self.n == 0:
            return None
        if self.hist is not None:
            off = self.hist_offset or 0
            mean, std, lo, hi = [], [], [], []
            for h in self.hist:
                vals = np.arange(h.size, dtype=np.float64) + off
                mu = float((h * vals).sum() / self.n)
                mean.append(mu)
                std.append(float(np.sqrt(max((h * (vals - mu) ** 2).sum() / self.n, 0.0))))
                nz = np.flatnonzero(h)
                lo.append(float(nz[0] + off))
                hi.append(float(nz[-1] + off))
            pct = {p: [_hist_percentile(h, self.n, p) + off for h in self.hist] for p in _PERCENTILES}
            return BandStatistics(mean=mean, std=std, min=lo, max=hi, percentiles=pct,
                                  pixel_count=int(self.n))
        assert self.mean is not None and self.m2 is not None
        assert self.lo is not None and self.hi is not None
        return BandStatistics(
            mean=[float(v) for v in self.mean],
            std=[float(v) for v in np.sqrt(np.maximum(self.m2 / self.n, 0.0))],
            min=[float(v) for v in self.lo],
            max=[float(v) for v in self.hi],
            pixel_count=int(self.n),
        )


def _hist_percentile(hist: np.ndarray, n: int, p: float) -> float:
    """``np.percentile(values, p)`` (linear) from a histogram of integer values."""
    cum = np.cumsum(hist)
    pos = p / 100.0 * (n - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    v_lo = int(np.searchsorted(cum, lo, side="right"))
    v_hi = int(np.searchsorted(cum, hi, side="right"))
    return float(v_lo + (pos - lo) * (v_hi - v_lo))


@dataclass
class _Aggregate:
    """Chip counts, pixel counts and statistics of a set of chips (a split, or one block)."""

    moments: _Moments
    chips: dict[str, int] = field(default_factory=dict)
    pixels: np.ndarray | None = None

    def add(self, outcome: _Outcome, stats: bool) -> None:
        self.chips[outcome.label] = self.chips.get(outcome.label, 0) + 1
        if outcome.pixels is not None:
            self.pixels = outcome.pixels.copy() if self.pixels is None else self.pixels + outcome.pixels
        if stats and outcome.moments is not None:
            self.moments.merge(outcome.moments)

    def merge(self, other: _Aggregate) -> None:
        for k, v in other.chips.items():
            self.chips[k] = self.chips.get(k, 0) + v
        if other.pixels is not None:
            self.pixels = other.pixels.copy() if self.pixels is None else self.pixels + other.pixels
        self.moments.merge(other.moments)

    @property
    def total(self) -> int:
        return sum(self.chips.values())


@dataclass
class _Candidate:
    """The block that would change split if one split ends up empty (see ``_Splitter``)."""

    key: tuple[float, tuple[int, int]]
    block: tuple[int, int]
    agg: _Aggregate


class _Splitter:
    """Assigns chips to splits by block, keeping just enough state to fix an empty split.

    Chips go to train or val by their block's hash. To guarantee a train split (whenever there is
    any chip) and a val split (whenever ``val_fraction > 0`` and there are two or more blocks) the
    one block that would move is tracked separately: the train block with the smallest hash and
    the val block with the largest. A block's first chip decides whether it becomes the
    candidate, so the candidate's aggregate always holds all of its chips: memory is O(1) in the
    number of blocks.
    """

    def __init__(self, block_px: int, val_fraction: float, seed: int, new: Callable[[], _Aggregate]) -> None:
        self.block_px = block_px
        self.val_fraction = val_fraction
        self.seed = seed
        self._new = new
        self.main = {"train": new(), "val": new()}
        self.cand: dict[str, _Candidate | None] = {"train": None, "val": None}
        self._first_train: tuple[int, int] | None = None
        self._many_train = False
        self.moved: dict[tuple[int, int], str] = {}

    def block_of(self, row: int, col: int) -> tuple[int, int]:
        return (row // self.block_px, col // self.block_px)

    def add(self, outcome: _Outcome) -> str:
        """Account for one chip; return its preliminary split (its block's hash)."""
        block = self.block_of(outcome.row, outcome.col)
        u = _block_u(self.seed, block)
        split = "val" if u < self.val_fraction else "train"
        # Train keeps its smallest-hash block apart, val its largest.
        key = (u, block) if split == "train" else (-u, (-block[0], -block[1]))
        if split == "train":
            if self._first_train is None:
                self._first_train = block
            elif block != self._first_train:
                self._many_train = True
        cand = self.cand[split]
        if cand is None or key < cand.key:
            if cand is not None:
                self.main[split].merge(cand.agg)
            cand = self.cand[split] = _Candidate(key, block, self._new())
        target = cand.agg if block == cand.block else self.main[split]
        # Val statistics are never reported, but the val candidate may still move to train.
        target.add(outcome, stats=split == "train" or target is cand.agg)
        return split

    def finish(self) -> dict[str, _Aggregate]:
        """Final aggregates per split; ``moved`` then names the block that changed split."""
        train_c, val_c = self.cand["train"], self.cand["val"]
        train, val = self.main["train"], self.main["val"]
        if train_c is None and val_c is not None:
            # No train chip at all: the val block closest to the threshold becomes train.
            self.moved[val_c.block] = "train"
            train.merge(val_c.agg)
            return {"train": train, "val": val}
        if val_c is not None:
            val.merge(val_c.agg)
        if train_c is not None:
            if val.total == 0 and self.val_fraction > 0 and self._many_train:
                self.moved[train_c.block] = "val"
                val.merge(train_c.agg)
            else:
                train.merge(train_c.agg)
        return {"train": train, "val": val}

    def final_split(self, row: int, col: int, split: str) -> str:
        return self.moved.get(self.block_of(row, col), split) if self.moved else split


# --- chip writing -----------------------------------------------------------------------------

_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}
# Tags the fast writer sets itself (strips, tiles and the per-chip tie point).
_LAYOUT_TAGS = {273, 278, 279, 322, 323, 324, 325, 33922, 34264}
_STRIP_BYTES = 1 << 18
# Above this many bytes a chip is written by GDAL: its libdeflate compresses ~2-4x faster than
# Python's zlib, which then outweighs GDAL's ~1 ms of per-file overhead.
_FAST_MAX_BYTES = 96 * 1024


def _parse_tiff_tags(buf: bytes) -> dict[int, tuple[int, int, bytes]] | None:
    """Tags of the first IFD of a little-endian classic TIFF: ``{tag: (type, count, bytes)}``."""
    if buf[:4] != b"II*\x00":
        return None
    off = struct.unpack_from("<I", buf, 4)[0]
    n = struct.unpack_from("<H", buf, off)[0]
    tags: dict[int, tuple[int, int, bytes]] = {}
    for i in range(n):
        tag, typ, cnt, val = struct.unpack_from("<HHI4s", buf, off + 2 + 12 * i)
        if typ not in _TIFF_TYPE_SIZES:
            return None
        size = _TIFF_TYPE_SIZES[typ] * cnt
        raw = val[:size] if size <= 4 else buf[struct.unpack("<I", val)[0]:][:size]
        tags[tag] = (typ, cnt, bytes(raw))
    if struct.unpack_from("<I", buf, off + 2 + 12 * n)[0] != 0:
        return None  # more IFDs (overviews, masks): not a layout this writer reproduces
    return tags


class _FastTiff:
    """Writes single-IFD, stripped, DEFLATE GeoTIFFs with the georeferencing GDAL chose.

    GDAL writes one template chip; its tags (CRS keys, pixel scale, nodata, band descriptions,
    colour map, sample format, ...) are copied verbatim and only the strips and the tie point
    change per chip. This avoids GDAL's per-file open/close cost, which dominates for small chips.
    """

    def __init__(self, tags: dict[int, tuple[int, int, bytes]], tie_delta: tuple[float, float],
                 height: int, row_bytes: int, level: int) -> None:
        self.level = level
        self.height = height
        self.row_bytes = row_bytes
        self.rows_per_strip = max(1, min(height, _STRIP_BYTES // max(1, row_bytes)))
        self.nstrips = -(-height // self.rows_per_strip)
        self.tie_delta = tie_delta
        tags = {k: v for k, v in tags.items() if k not in _LAYOUT_TAGS}
        ns = self.nstrips
        tags[273] = (4, ns, b"\0" * 4 * ns)
        tags[278] = (4, 1, struct.pack("<I", self.rows_per_strip))
        tags[279] = (4, ns, b"\0" * 4 * ns)
        tags[33922] = (12, 6, b"\0" * 48)
        order = sorted(tags)
        ifd_size = 2 + 12 * len(order) + 4
        head = bytearray(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(order)))
        head += b"\0" * (12 * len(order) + 4)
        extras = bytearray()
        extras_start = 8 + ifd_size
        self._pos: dict[int, int] = {}
        for k, tag in enumerate(order):
            typ, cnt, raw = tags[tag]
            entry = 10 + 12 * k
            if len(raw) <= 4:
                struct.pack_into("<HHI", head, entry, tag, typ, cnt)
                head[entry + 8: entry + 8 + len(raw)] = raw
                self._pos[tag] = entry + 8
            else:
                extras += b"\0" * (-(extras_start + len(extras)) % 8)
                where = extras_start + len(extras)
                struct.pack_into("<HHII", head, entry, tag, typ, cnt, where)
                extras += raw
                self._pos[tag] = where
        self._head = bytes(head + extras)

    def encode(self, data: np.ndarray, transform: Affine) -> bytes:
        """TIFF bytes of a ``(bands, h, w)`` chip whose top-left corner is at ``transform``."""
        pix = np.ascontiguousarray(np.moveaxis(data, 0, -1))
        if pix.dtype.byteorder == ">" or (pix.dtype.byteorder == "=" and sys.byteorder == "big"):
            pix = pix.astype(pix.dtype.newbyteorder("<"))
        raw = pix.data.cast("B")
        step = self.rows_per_strip * self.row_bytes
        strips = [zlib.compress(raw[i * step: (i + 1) * step], self.level) for i in range(self.nstrips)]
        head = bytearray(self._head)
        struct.pack_into("<6d", head, self._pos[33922], 0.0, 0.0, 0.0,
                         transform.c + self.tie_delta[0], transform.f + self.tie_delta[1], 0.0)
        offset = len(head)
        offsets = []
        for s in strips:
            offsets.append(offset)
            offset += len(s)
        struct.pack_into(f"<{self.nstrips}I", head, self._pos[273], *offsets)
        struct.pack_into(f"<{self.nstrips}I", head, self._pos[279], *(len(s) for s in strips))
        return b"".join([bytes(head), *strips])


class _ChipWriter:
    """Writes chips of one kind (image or mask) atomically: temp file in place, then rename.

    Uses ``_FastTiff`` for small chips when it reproduces GDAL's output exactly (checked once on
    a test chip), and GDAL itself otherwise (large chips, rotated grids, no georeferencing, chips
    with an internal mask).
    """

    def __init__(
        self,
        *,
        size: int,
        count: int,
        dtype: str,
        crs: CRS | None,
        transform: Affine,
        nodata: float | None,
        descriptions: Sequence[str] | None = None,
        colormap: dict[int, tuple[int, int, int, int]] | None = None,
        level: int = 6,
    ) -> None:
        self.level = level
        self.profile: dict[str, Any] = {
            "driver": "GTiff",
            "width": size,
            "height": size,
            "count": count,
            "dtype": dtype,
            "crs": crs,
            "transform": transform,
            "nodata": nodata,
            "compress": "deflate",
            "zlevel": level,
            "interleave": "pixel",
        }
        if crs is None:
            del self.profile["crs"]
        if nodata is None:
            del self.profile["nodata"]
        self.descriptions = list(descriptions) if descriptions else None
        self.colormap = colormap
        self.fast: _FastTiff | None = None
        try:
            self.fast = self._build_fast(transform)
        except Exception:  # noqa: BLE001 - any surprise just means the GDAL path is used
            self.fast = None

    def _gdal_bytes(self, data: np.ndarray, transform: Affine) -> bytes:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with MemoryFile() as mf:
                with mf.open(**{**self.profile, "transform": transform}) as dst:
                    self._decorate(dst)
                    dst.write(data)
                return bytes(mf.read())

    def _decorate(self, dst: Any) -> None:
        if self.descriptions:
            for i, d in enumerate(self.descriptions, start=1):
                dst.set_band_description(i, d)
        if self.colormap:
            dst.write_colormap(1, self.colormap)

    def _build_fast(self, transform: Affine) -> _FastTiff | None:
        p = self.profile
        dtype = np.dtype(p["dtype"])
        if dtype.kind not in "uif" or "crs" not in p:
            return None
        if p["width"] * p["height"] * p["count"] * dtype.itemsize > _FAST_MAX_BYTES:
            return None
        shape = (p["count"], p["height"], p["width"])
        template = self._gdal_bytes(np.zeros(shape, dtype), transform)
        tags = _parse_tiff_tags(template)
        if tags is None or 33922 not in tags or 34264 in tags or tags[33922][1] != 6:
            return None
        tie = struct.unpack("<6d", tags[33922][2])
        if tie[0] != 0.0 or tie[1] != 0.0:
            return None
        fast = _FastTiff(tags, (tie[3] - transform.c, tie[4] - transform.f), p["height"],
                         p["width"] * p["count"] * dtype.itemsize, self.level)
        # Self-test: a chip off the origin must read back exactly as GDAL would write it.
        rng = np.random.default_rng(0)
        if dtype.kind == "f":
            test = rng.normal(size=shape).astype(dtype)
        else:
            info = np.iinfo(dtype)
            test = rng.integers(max(info.min, -1000), min(info.max, 1000), size=shape, dtype=dtype,
                                endpoint=True)
        t = window_transform(transform, Window(7, 5, p["width"], p["height"]))
        with MemoryFile(fast.encode(test, t)) as mf, mf.open() as ds, \
                MemoryFile(self._gdal_bytes(test, t)) as mg, mg.open() as ref:
            same = (
                ds.transform == t == ref.transform
                and ds.crs == ref.crs
                and np.array_equal(np.array(ds.nodatavals, dtype=float),
                                   np.array(ref.nodatavals, dtype=float), equal_nan=True)
                and ds.dtypes == ref.dtypes
                and ds.descriptions == ref.descriptions
                and ds.compression == ref.compression
                and ds.colorinterp == ref.colorinterp
                and np.array_equal(ds.read(), test)
            )
        return fast if same else None

    def write(self, path: Path, data: np.ndarray, transform: Affine, mask: np.ndarray | None = None) -> None:
        """Write one chip at ``path``; ``mask`` (True = valid) is stored as an internal mask."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
        try:
            if self.fast is not None and mask is None:
                blob = self.fast.encode(data, transform)
                with open(tmp, "wb") as fh:
                    fh.write(blob)
            else:
                with warnings.catch_warnings(), rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
                    warnings.simplefilter("ignore", NotGeoreferencedWarning)
                    with rasterio.open(tmp, "w", **{**self.profile, "transform": transform}) as dst:
                        self._decorate(dst)
                        dst.write(data)
                        if mask is not None:
                            dst.write_mask(np.where(mask, 255, 0).astype(np.uint8))
            os.replace(tmp, path)
        except OSError as exc:
            _unlink(tmp)
            raise OutputError(f"{path}: cannot write chip ({exc.strerror or exc})") from exc
        except BaseException:
            _unlink(tmp)
            raise


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _read_chip(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """Pixels and validity of a chip written earlier, or None if it cannot be read."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                data = src.read()
                valid = np.all(src.read_masks() > 0, axis=0)
        return data, valid
    except (RasterioError, OSError):
        return None


# --- per-window work --------------------------------------------------------------------------


@dataclass
class _Outcome:
    """What one window gave: a skip reason, or a chip record."""

    row: int
    col: int
    skip: str | None = None
    label: str = ""
    path: str = ""
    mask: str = ""
    written: bool = False
    moments: _Moments | None = None
    pixels: np.ndarray | None = None


def _slug(text: str, limit: int = 60) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    return slug[:limit].rstrip("._-")


def _scene_prefix(paths: Sequence[Path]) -> str:
    stems = [_slug(p.stem) for p in paths]
    if len(stems) == 1:
        return stems[0] or "scene"
    common = os.path.commonprefix(stems)
    common = re.sub(r"[_-]?[Bb](and)?\d*$", "", common).rstrip("._-")
    return common if len(common) >= 3 else (stems[0] or "scene")


def _class_dirs(classes: Sequence[str]) -> list[str]:
    dirs: list[str] = []
    for i, name in enumerate(classes):
        slug = _slug(name) or f"class_{i}"
        if slug.lower() in (d.lower() for d in dirs):
            slug = f"{slug}_{i}"
        dirs.append(slug)
    return dirs


class _Worker:
    """Turns one grid window into an ``_Outcome`` (thread-safe; called from the pool)."""

    def __init__(self, scene: Scene, labels: Any, cfg: TileConfig, out: Path, resume: bool,
                 image_writer: _ChipWriter, mask_writer: _ChipWriter | None, prefix: str,
                 class_dirs: list[str], hist_offset: int | None) -> None:
        self.scene = scene
        self.labels = labels
        self.cfg = cfg
        self.out = out
        self.resume = resume
        self.image_writer = image_writer
        self.mask_writer = mask_writer
        self.prefix = prefix
        self.class_dirs = class_dirs
        self.classes = list(labels.classes) if labels is not None else []
        self.hist_offset = hist_offset
        self.digits = len(str(max(scene.width, scene.height)))
        self.npx = cfg.size * cfg.size

    def __call__(self, window: Window) -> _Outcome:
        row, col = int(window.row_off), int(window.col_off)
        oc = _Outcome(row, col)
        lab: np.ndarray | None = None
        label_id = -1
        if self.labels is not None:
            lab = self.labels.read(window)
            if lab is None:
                oc.skip = "unlabelled"
                return oc
            labelled = lab != UNLABELLED
            n_lab = int(np.count_nonzero(labelled))
            if n_lab == 0:
                oc.skip = "unlabelled"
                return oc
            if n_lab < self.cfg.min_labelled * self.npx:
                oc.skip = "under_labelled"
                return oc
            counts = np.bincount(lab[labelled], minlength=len(self.classes))
            label_id = int(np.argmax(counts))  # ties: the lowest class id
            oc.label = self.classes[label_id]

        name = f"{self.prefix}_{row:0{self.digits}d}_{col:0{self.digits}d}.tif"
        if self.cfg.task == "segment":
            rel, rel_mask = f"images/{name}", f"masks/{name}"
        elif label_id >= 0:
            rel, rel_mask = f"chips/{self.class_dirs[label_id]}/{name}", ""
        else:
            rel, rel_mask = f"chips/{name}", ""
        oc.path, oc.mask = rel, rel_mask
        path, mask_path = self.out / rel, (self.out / rel_mask if rel_mask else None)

        old = self._existing(path, mask_path) if self.resume else None
        if old is not None:
            data, valid, mask = old
        else:
            data, valid = self.scene.read_masked(window)
            mask = None
        n_valid = int(np.count_nonzero(valid))
        if n_valid == 0:
            oc.skip = "nodata"
            return oc
        if self.npx - n_valid > self.cfg.max_nodata * self.npx:
            oc.skip = "too_much_nodata"
            return oc
        partial = n_valid < self.npx
        if old is None:
            chip_mask: np.ndarray | None = None
            if partial:
                if self.scene.nodata is not None:
                    data[:, ~valid] = self.scene.nodata
                else:
                    chip_mask = valid
            if self.cfg.task == "segment":
                assert lab is not None and self.mask_writer is not None and mask_path is not None
                mask = lab.copy() if partial else lab
                if partial:
                    mask[~valid] = UNLABELLED
                self.mask_writer.write(mask_path, mask[None], self.scene.window_transform(window))
            self.image_writer.write(path, data, self.scene.window_transform(window), chip_mask)
            oc.written = True
        values = data[:, valid] if partial else data.reshape(data.shape[0], -1)
        oc.moments = _Moments.of(values, self.hist_offset)
        if mask is not None:
            m = mask[mask != UNLABELLED]
            oc.pixels = np.bincount(m, minlength=len(self.classes))[: len(self.classes)]
        return oc

    def _existing(self, path: Path, mask_path: Path | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
        if not path.is_file() or (mask_path is not None and not mask_path.is_file()):
            return None
        img = _read_chip(path)
        if img is None or img[0].shape[1:] != (self.cfg.size, self.cfg.size):
            return None
        mask = None
        if mask_path is not None:
            m = _read_chip(mask_path)
            if m is None:
                return None
            mask = m[0][0]
        return img[0], img[1], mask


def _ordered_map(fn: Callable[[Window], _Outcome], windows: Iterable[Window], workers: int) -> Iterator[_Outcome]:
    """``map(fn, windows)`` on a thread pool, in order, with a bounded number in flight."""
    if workers <= 0:
        for w in windows:
            yield fn(w)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="geoclass-tile")
    pending: deque[Future[_Outcome]] = deque()
    limit = 4 * workers
    try:
        for w in windows:
            pending.append(pool.submit(fn, w))
            if len(pending) >= limit:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()
        # Running chips finish (each is written atomically); queued ones are dropped.
        pool.shutdown(wait=True, cancel_futures=True)


# --- output folder ----------------------------------------------------------------------------


def _is_ours(out: Path) -> bool:
    if (out / STATE_FILE).is_file():
        return True
    try:
        return json.loads((out / "dataset.json").read_text()).get("format") == DATASET_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _clear_outputs(out: Path) -> None:
    for d in _OUTPUT_DIRS:
        if (out / d).is_dir():
            shutil.rmtree(out / d)
    for f in _OUTPUT_FILES:
        _unlink(out / f)


def _remove_temp_files(out: Path) -> None:
    """Drop half-written chips an interrupted run left (hidden ``.*.tmp`` files)."""
    for d in _OUTPUT_DIRS:
        if not (out / d).is_dir():
            continue
        for dirpath, _, files in os.walk(out / d):
            for f in files:
                if f.startswith(".") and f.endswith(".tmp"):
                    _unlink(Path(dirpath) / f)


def _check_inputs_outside(out: Path, scene_paths: list[str], labels: str | os.PathLike[str] | None) -> None:
    """Refuse an output folder that holds a file the inputs read (overwrite would delete it)."""
    folder = Path(os.path.realpath(out))
    inputs = input_files(scene_paths, "scene") + input_files([labels] if labels else [], "labels")
    for item in inputs:
        if item.path == folder or folder in item.path.parents:
            raise ConfigError(f"{out}: holds {item.describe()}; write the chips to another folder")


def _prepare_output(out: Path, overwrite: bool, resume: bool, fingerprint: dict[str, Any],
                    report: Reporter) -> bool:
    """Create or check the output folder; return True when resuming an earlier run."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder")
    try:
        non_empty = out.is_dir() and any(out.iterdir())
    except OSError as exc:
        raise OutputError(f"{out}: cannot read the output folder ({exc.strerror or exc})") from exc
    resuming = False
    if non_empty:
        if resume:
            state = out / STATE_FILE
            if not state.is_file():
                raise OutputExistsError(
                    f"{out}: nothing to resume (no unfinished 'geoclass tile' run here); "
                    "use --overwrite to replace its contents or choose an empty folder"
                )
            try:
                old = json.loads(state.read_text()).get("fingerprint", {})
            except (OSError, ValueError) as exc:
                raise OutputExistsError(f"{out}: unreadable {STATE_FILE}; use --overwrite") from exc
            diffs = [k for k in fingerprint if old.get(k) != fingerprint[k]]
            if diffs:
                shown = "; ".join(f"{k}: {old.get(k)!r} -> {fingerprint[k]!r}" for k in diffs[:3])
                raise ConfigError(
                    f"{out}: cannot resume with different options ({shown}); run with the same "
                    "options, or use --overwrite to start again"
                )
            _remove_temp_files(out)
            resuming = True
        elif overwrite:
            if not _is_ours(out):
                raise OutputExistsError(
                    f"{out}: is not empty and was not written by 'geoclass tile'; refusing to "
                    "delete its contents, choose an empty or new folder"
                )
            _clear_outputs(out)
        else:
            raise OutputExistsError(
                f"{out}: output folder is not empty; use --overwrite to replace it, or --resume "
                "to continue an interrupted run"
            )
    elif resume:
        report.info(f"{out}: nothing to resume, starting a new run")
    try:
        out.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(out / STATE_FILE, json.dumps({"fingerprint": fingerprint}, indent=2))
    except OSError as exc:
        raise OutputError(f"{out}: cannot create the output folder ({exc.strerror or exc})") from exc
    return resuming


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --- index outputs ----------------------------------------------------------------------------


def _footprint(transform: Affine, row: int, col: int, size: int) -> list[list[tuple[float, float]]]:
    t = window_transform(transform, Window(col, row, size, size))
    corners = [(0, 0), (size, 0), (size, size), (0, size), (0, 0)]
    return [[(t.c + x * t.a + y * t.b, t.f + x * t.d + y * t.e) for x, y in corners]]


def _write_index(out: Path, rows: Iterable[dict[str, Any]], scene: Scene, size: int, segment: bool) -> None:
    """Stream the chip rows into ``index.gpkg`` (footprint polygons), atomically."""
    props: dict[str, str] = {"path": "str", "label": "str", "split": "str"}
    if segment:
        props["mask"] = "str"
    props.update({"scene": "str", "row": "int", "col": "int"})
    schema = {"geometry": "Polygon", "properties": props}
    tmp = out / ".index.tmp.gpkg"
    _unlink(tmp)
    kwargs: dict[str, Any] = {}
    if scene.crs is not None:
        kwargs["crs_wkt"] = scene.crs.to_wkt()
    batch: list[fiona.Feature] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fiona.open(tmp, "w", driver="GPKG", schema=schema, layer="chips", **kwargs) as dst:
                for r in rows:
                    geom = fiona.Geometry(type="Polygon",
                                          coordinates=_footprint(scene.transform, r["row"], r["col"], size))
                    batch.append(fiona.Feature(geometry=geom, properties={k: r[k] for k in props}))
                    if len(batch) >= 2048:
                        dst.writerecords(batch)
                        batch.clear()
                if batch:
                    dst.writerecords(batch)
        os.replace(tmp, out / "index.gpkg")
    except OSError as exc:
        _unlink(tmp)
        raise OutputError(f"{out / 'index.gpkg'}: cannot write the index ({exc})") from exc


# --- the run ----------------------------------------------------------------------------------


def _validate(cfg: TileConfig) -> None:
    if cfg.task not in ("classify", "segment"):
        raise ConfigError(f"task must be 'classify' or 'segment', got {cfg.task!r}")
    if not isinstance(cfg.size, int) or cfg.size < 1:
        raise ConfigError(f"chip size must be a positive number of pixels, got {cfg.size!r}")
    if cfg.stride is not None and not 1 <= cfg.stride <= cfg.size:
        raise ConfigError(f"stride must be between 1 and the chip size ({cfg.size}), got {cfg.stride}")
    for name in ("min_labelled", "max_nodata"):
        v = getattr(cfg, name)
        if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
            raise ConfigError(f"--{name.replace('_', '-')} must be between 0 and 1, got {v}")
    if not (isinstance(cfg.val_fraction, (int, float)) and 0.0 <= cfg.val_fraction < 1.0):
        raise ConfigError(f"--val-fraction must be in [0, 1), got {cfg.val_fraction}")
    if not isinstance(cfg.block_size, int) or cfg.block_size < 1:
        raise ConfigError(f"--block-size must be >= 1 chip, got {cfg.block_size!r}")
    if cfg.overwrite and cfg.resume:
        raise ConfigError("use either overwrite or resume, not both")
    if cfg.task == "segment" and cfg.labels is None:
        raise ConfigError("--task segment needs --labels (the masks are made from them)")
    if not isinstance(cfg.compress_level, int) or not 1 <= cfg.compress_level <= 9:
        raise ConfigError(f"compress_level must be 1-9, got {cfg.compress_level!r}")
    if cfg.workers is not None and cfg.workers < 0:
        raise ConfigError(f"workers must be >= 0, got {cfg.workers}")


def _scene_paths(cfg: TileConfig) -> list[str]:
    if isinstance(cfg.scenes, (str, os.PathLike)):
        return [os.fspath(cfg.scenes)]
    return [os.fspath(p) for p in cfg.scenes]


def _abs(p: str | os.PathLike[str] | None) -> str | None:
    if p is None:
        return None
    s = os.fspath(p)
    return s if s.startswith("/vsi") or "://" in s else str(Path(s).resolve())


def _jsonable_config(cfg: TileConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in asdict(cfg).items():
        if k in ("command", "workers", "overwrite", "resume"):
            continue
        if isinstance(v, os.PathLike):
            v = os.fspath(v)
        elif isinstance(v, (list, tuple)):
            v = [os.fspath(x) if isinstance(x, os.PathLike) else x for x in v]
        out[k] = v
    return out


def tile(config: TileConfig, progress: ProgressCallback | None = None) -> TileResult:
    """Cut a scene (and its labels) into georeferenced chips with an index and a description.

    Args:
        config: What to tile and how (see ``TileConfig``).
        progress: Receives one ``tile`` task (total = windows in the chip grid) and notes.

    Returns:
        A ``TileResult`` with counts per split and class, skip counts and train statistics.

    Raises:
        ConfigError: Options out of range, or a chip larger than the scene.
        InputNotFoundError, RasterOpenError, BandError, GeoreferenceError: Unusable scene.
        LabelError: Unusable labels (missing field, no values, no overlap with the scene).
        OutputExistsError: ``output`` is not empty and neither overwrite nor resume was asked.
        OutputError: The output cannot be written.
        Interrupted: Ctrl-C; the chips written so far are kept for ``resume``.
    """
    started = time.monotonic()
    cfg = config
    _validate(cfg)
    report = Reporter(progress)
    out = Path(cfg.output)
    stride = cfg.stride or cfg.size
    scene_paths = _scene_paths(cfg)
    scene = open_scene(scene_paths, bands=list(cfg.bands) if cfg.bands is not None else None,
                       nodata=cfg.nodata)
    labels = None
    try:
        if cfg.size > scene.width or cfg.size > scene.height:
            raise ConfigError(
                f"chip size {cfg.size} px is larger than the scene ({scene.width}x{scene.height} px)"
            )
        classes_spec: Any = cfg.classes
        if isinstance(classes_spec, (str, os.PathLike)):
            classes_spec = read_class_file(classes_spec)
        if cfg.labels is not None:
            labels = open_labels(cfg.labels, scene, field=cfg.label_field, classes=classes_spec,
                                 layer=cfg.label_layer, progress=progress)
        elif cfg.label_field is not None or cfg.classes is not None:
            report.warn("--label-field and --classes have no effect without --labels")
        classes = list(labels.classes) if labels is not None else []
        fingerprint = {
            "scenes": [_abs(p) for p in scene_paths],
            "bands": list(scene.bands),
            "nodata": _nodata_json(scene.nodata),
            "size": cfg.size,
            "stride": stride,
            "task": cfg.task,
            "labels": _abs(cfg.labels),
            "label_field": getattr(labels, "field", None),
            "classes": classes,
            "min_labelled": cfg.min_labelled,
            "max_nodata": cfg.max_nodata,
            "val_fraction": cfg.val_fraction,
            "block_size": cfg.block_size,
            "seed": cfg.seed,
        }
        _check_inputs_outside(out, scene_paths, cfg.labels)
        resuming = _prepare_output(out, cfg.overwrite, cfg.resume, fingerprint, report)
        return _run(cfg, scene, labels, classes, out, stride, resuming, report, started)
    finally:
        if labels is not None:
            labels.close()
        scene.close()


tile_scene = tile
"""Alias of ``tile``."""


def _run(cfg: TileConfig, scene: Scene, labels: Any, classes: list[str], out: Path, stride: int,
         resuming: bool, report: Reporter, started: float) -> TileResult:
    # Imported here: model_file pulls in torch, which tiling does not otherwise need.
    from geoclass.palette import colors_for_classes

    segment = cfg.task == "segment"
    dtype = np.dtype(scene.dtype)
    hist_offset = int(np.iinfo(dtype).min) if dtype.kind in "ui" and dtype.itemsize <= 2 else None
    colors = colors_for_classes(classes) if classes else []
    image_writer = _ChipWriter(size=cfg.size, count=scene.count, dtype=scene.dtype, crs=scene.crs,
                               transform=scene.transform, nodata=scene.nodata,
                               descriptions=scene.band_names, level=cfg.compress_level)
    mask_writer = None
    if segment:
        cmap = {i: (*c, 255) for i, c in enumerate(colors)}
        cmap[UNLABELLED] = (0, 0, 0, 0)
        mask_writer = _ChipWriter(size=cfg.size, count=1, dtype="uint8", crs=scene.crs,
                                  transform=scene.transform, nodata=UNLABELLED, colormap=cmap,
                                  level=cfg.compress_level)
    class_dirs = _class_dirs(classes)
    try:
        if segment:
            (out / "images").mkdir(exist_ok=True)
            (out / "masks").mkdir(exist_ok=True)
        else:
            (out / "chips").mkdir(exist_ok=True)
            for d in class_dirs:
                (out / "chips" / d).mkdir(exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out}: cannot create chip folders ({exc.strerror or exc})") from exc

    prefix = _scene_prefix(scene.paths)
    scene_name = " + ".join(p.name for p in scene.paths)
    worker = _Worker(scene, labels, cfg, out, resuming, image_writer, mask_writer, prefix,
                     class_dirs, hist_offset)
    n_classes = len(classes)

    def new_agg() -> _Aggregate:
        return _Aggregate(_Moments(scene.count, hist_offset))

    splitter = _Splitter(cfg.block_size * stride, cfg.val_fraction, cfg.seed, new_agg)
    skipped = dict.fromkeys(SKIP_REASONS, 0)
    total = scene.num_windows(cfg.size, stride)
    workers = cfg.workers if cfg.workers is not None else _default_workers()
    written = reused = done = 0
    fields = ["path", "label", "split"] + (["mask"] if segment else []) + ["scene", "row", "col"]
    partial_csv = out / _PARTIAL_CSV

    report.start(_TASK, total=total)
    pending_steps = 0
    last_report = time.monotonic()
    try:
        # ``warnings.catch_warnings`` is not thread-safe: rasterio's own use of it in the worker
        # threads can briefly drop its filters and leak NotGeoreferencedWarning. Holding the
        # filter here, around the whole pool, keeps it in every state they restore.
        with warnings.catch_warnings(), open(partial_csv, "w", newline="", encoding="utf-8") as fh:
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            writer = csv.writer(fh)
            windows = (gw.read for gw in scene.windows(cfg.size, stride))
            for oc in _ordered_map(worker, windows, workers):
                done += 1
                pending_steps += 1
                now = time.monotonic()
                if pending_steps >= 256 or now - last_report > 0.2:
                    report.advance(_TASK, pending_steps)
                    pending_steps, last_report = 0, now
                if oc.skip is not None:
                    skipped[oc.skip] += 1
                    continue
                if oc.written:
                    written += 1
                else:
                    reused += 1
                split = splitter.add(oc)
                row = [oc.path, oc.label, split] + ([oc.mask] if segment else []) + [scene_name, oc.row, oc.col]
                writer.writerow(row)
    except KeyboardInterrupt:
        raise Interrupted(
            f"stopped after {done} of {total} windows ({written + reused} chips in {out}); run the "
            "same command with --resume to continue"
        ) from None
    except OSError as exc:
        if isinstance(exc, GeoclassError):
            raise
        raise OutputError(f"{partial_csv}: cannot write ({exc.strerror or exc})") from exc
    if pending_steps:
        report.advance(_TASK, pending_steps)
    report.end(_TASK)

    aggs = splitter.finish()
    if splitter.moved:
        (block, split), = splitter.moved.items()
        report.info(f"block {block} moved to {split} so that both splits have chips")

    def final_rows() -> Iterator[dict[str, Any]]:
        with open(partial_csv, newline="", encoding="utf-8") as fh:
            for rec in csv.DictReader(fh, fieldnames=fields):
                row, col = int(rec["row"]), int(rec["col"])
                out: dict[str, Any] = {**rec, "row": row, "col": col}
                out["split"] = splitter.final_split(row, col, rec["split"])
                yield out

    try:
        tmp_csv = out / ".chips.csv.tmp"
        with open(tmp_csv, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            for rec in final_rows():
                w.writerow(rec)
        _write_index(out, final_rows(), scene, cfg.size, segment)
        os.replace(tmp_csv, out / "chips.csv")
        _unlink(partial_csv)
    except OSError as exc:
        raise OutputError(f"{out}: cannot write the chip index ({exc.strerror or exc})") from exc

    label_names = classes if classes else [""]
    counts = {s: {c: int(aggs[s].chips.get(c, 0)) for c in label_names} for s in ("train", "val")}
    stats = aggs["train"].moments.result()
    info = _dataset_info(cfg, scene, labels, classes, colors, stride, counts, skipped, total, stats,
                         aggs if segment else None, n_classes)
    _atomic_write_text(out / "dataset.json", _dumps(info))
    n_chips = sum(sum(v.values()) for v in counts.values())
    if n_chips == 0:
        report.warn(
            f"no chip was kept out of {total} windows ("
            + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in skipped.items() if v)
            + "); try a smaller --size or --min-labelled, or a larger --max-nodata"
        )
    return TileResult(
        output=out,
        task=cfg.task,
        classes=classes,
        windows=total,
        chips=n_chips,
        written=written,
        reused=reused,
        counts=counts,
        skipped=skipped,
        statistics=stats,
        dataset_json=out / "dataset.json",
        seconds=time.monotonic() - started,
    )


def _default_workers() -> int:
    """Threads for reading, compressing and writing chips.

    DEFLATE, file writes and GDAL reads release the GIL, so a few threads overlap them; with two
    cores or fewer the GIL hand-offs cost more than they give, so the work stays in one thread.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cpus < 4 else min(4, cpus - 1)


def _crs_text(crs: CRS | None) -> str | None:
    if crs is None:
        return None
    epsg = crs.to_epsg(confidence_threshold=100)
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def _nodata_json(nodata: float | None) -> float | str | None:
    if nodata is None:
        return None
    if math.isnan(nodata):
        return "nan"
    return int(nodata) if float(nodata).is_integer() else float(nodata)


def _dataset_info(cfg: TileConfig, scene: Scene, labels: Any, classes: list[str],
                  colors: list[tuple[int, int, int]], stride: int, counts: dict[str, dict[str, int]],
                  skipped: dict[str, int], windows: int, stats: BandStatistics | None,
                  aggs: Mapping[str, _Aggregate] | None, n_classes: int) -> dict[str, Any]:
    from geoclass import __version__

    info: dict[str, Any] = {
        "format": DATASET_FORMAT,
        "version": DATASET_VERSION,
        "task": cfg.task,
        "classes": classes,
        "class_ids": {c: i for i, c in enumerate(classes)},
        "label_values": {c: _plain(v) for c, v in (labels.values.items() if labels else [])},
        "colors": [list(c) for c in colors],
        "chip_size": cfg.size,
        "stride": stride,
        "bands": list(scene.bands),
        "band_names": list(scene.band_names),
        "dtype": scene.dtype,
        "nodata": _nodata_json(scene.nodata),
        "crs": _crs_text(scene.crs),
        "scene": {
            "paths": [str(p) for p in scene.paths],
            "width": scene.width,
            "height": scene.height,
            "transform": list(scene.transform)[:6],
            "bounds": list(scene.bounds),
        },
        "labels": None if labels is None else {
            "path": str(labels.path),
            "kind": labels.kind,
            "field": getattr(labels, "field", None),
        },
        "statistics": stats.to_dict() if stats is not None else None,
        "statistics_split": "train",
        "counts": counts,
        "chips": {s: sum(v.values()) for s, v in counts.items()},
        "skipped": skipped,
        "windows": windows,
        "split": {
            "method": "spatial-blocks",
            "block_size": cfg.block_size,
            "block_px": cfg.block_size * stride,
            "val_fraction": cfg.val_fraction,
            "seed": cfg.seed,
        },
        "created_by": {
            "geoclass": __version__,
            "command": cfg.command,
            "config": _jsonable_config(cfg),
        },
    }
    if cfg.task == "segment":
        info["ignore_index"] = UNLABELLED
        info["min_labelled"] = cfg.min_labelled
        if aggs is not None:
            info["pixel_counts"] = {
                s: {c: int(a.pixels[i]) if a.pixels is not None else 0 for i, c in enumerate(classes)}
                for s, a in aggs.items()
            }
    return info


def _dumps(obj: Any) -> str:
    """Indented JSON with short lists of numbers kept on one line."""
    text = json.dumps(obj, indent=2, ensure_ascii=False)

    def join(m: re.Match[str]) -> str:
        items = [x.strip() for x in m.group(1).split(",")]
        line = "[" + ", ".join(items) + "]"
        return line if len(line) <= 100 else m.group(0)

    return re.sub(r"\[\s*((?:-?[\d.eE+-]+|null|true|false)(?:,\s*(?:-?[\d.eE+-]+|null|true|false))*)\s*\]",
                  join, text) + "\n"


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v
