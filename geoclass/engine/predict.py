"""Predict a land-cover map of a scene of any size.

The scene is cut into model windows on a regular grid (``geoclass.io.windows``). Class scores of
overlapping windows are blended per pixel, so the map has no seams:

- a classifier's softmax scores for a chip are spread over every pixel of the chip and averaged
  where chips overlap, each chip weighted by its fraction of valid pixels (so chips that are
  mostly nodata do not dominate their valid neighbours);
- a segmenter's per-pixel softmax maps are blended with a weight that ramps up from window edges
  shared with a neighbouring window (never from the scene's own edges, which no other window
  covers). Pixels within the model's receptive radius (``model.receptive_radius`` where the model
  declares one) of a shared edge get a negligible weight, so a fully convolutional model gives
  the same map, to float precision, as one forward pass over the whole image.

Memory is flat in the scene's height and linear in its width: scores are accumulated for one band
of rows as tall as a window, and rows are written out as soon as no later window can touch them.
Reading (a thread pool), inference (the calling thread), blending and writing (one thread each)
overlap. Outputs are written to hidden partial files and renamed into place when complete; with
``resume`` an interrupted run continues from its last finished 256-row strip and produces the
same bytes as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window
from torch import nn

from geoclass import __version__
from geoclass.engine.device import Precision, select_device, select_precision
from geoclass.errors import (
    BandError,
    ConfigError,
    InputNotFoundError,
    Interrupted,
    ModelError,
    OutputExistsError,
    RasterOpenError,
)
from geoclass.io.raster_writer import (
    BLOCK_SIZE,
    NODATA,
    StripAssembler,
    StripWriter,
    confidence_path,
    confidence_setup,
    encode_confidence,
    encode_probabilities,
    partial_path,
    probability_setup,
)
from geoclass.io.outputs import OutputLock, check_output_path, input_files, write_error
from geoclass.io.vector_files import check_vector_output, vector_driver
from geoclass.io.reader import Scene, open_scene
from geoclass.io.windows import iter_window_grid
from geoclass.models.model_file import (
    ModelMeta,
    default_model_path,
    load_model_file,
    resolve_model_path,
)
from geoclass.progress import ProgressCallback, Reporter

__all__ = ["DEFAULT_OVERLAP", "PredictConfig", "PredictResult", "predict"]

# Default overlap between neighbouring windows, per task. Classifier maps are blocky at the chip
# size; a half-chip overlap averages four chips per pixel and halves the block size.
DEFAULT_OVERLAP = {"classify": 0.5, "segment": 0.25}
_MARGIN_WEIGHT = 1e-6  # weight of pixels a window sees with less than its receptive field
_SIDECAR_VERSION = 1
_TASK = "predict"


@dataclass
class PredictConfig:
    """Everything that defines a prediction run.

    Attributes:
        scenes: One raster, or single-band rasters stacked in order.
        output: The class map to write (``.tif``).
        model: Model file (or a training run folder); None uses the shipped default model.
        bands: 1-based bands of the (stacked) scene in model order; None takes all bands when
            their number matches the model.
        nodata: Treat this value as nodata in every band (overrides what the files declare).
        stride: Step between windows in pixels (exclusive with ``overlap``).
        overlap: Fraction of a window shared with its neighbour, in [0, 1); default 0.5 for
            classifiers, 0.25 for segmenters.
        window: Window side for segmenters (default: the model's chip size). Classifiers always
            use their chip size.
        batch_size: Windows per model call.
        workers: Reader threads (0 reads in the calling thread); default from the CPU count.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        amp: Mixed precision: ``auto``, ``on`` or ``off`` (see ``select_precision``).
        tta: Average the predictions for the window, its two flips and its 90 degree rotation.
        probabilities: Also write per-class probabilities here (uint8, ``value / 250``).
        confidence: Also write the winning probability in percent to ``MAP.confidence.tif``.
        vector: Also write polygons here (``.gpkg``, ``.geojson`` or ``.shp``).
        min_area: Drop polygons smaller than this (CRS units squared; only with ``vector``).
        simplify: Polygon simplification tolerance in CRS units (only with ``vector``).
        preview: Also write a PNG quick-look with a legend here.
        cog: Write the rasters as Cloud-Optimized GeoTIFFs with overviews.
        resume: Continue an interrupted run from its partial files; the scene, model and
            options (batch size, device and precision included) must be the same.
        overwrite: Replace existing outputs.
    """

    scenes: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
    output: str | os.PathLike[str]
    model: str | os.PathLike[str] | None = None
    bands: Sequence[int] | None = None
    nodata: float | None = None
    stride: int | None = None
    overlap: float | None = None
    window: int | None = None
    batch_size: int = 64
    workers: int | None = None
    device: str = "auto"
    amp: str = "auto"
    tta: bool = False
    probabilities: str | os.PathLike[str] | None = None
    confidence: bool = False
    vector: str | os.PathLike[str] | None = None
    min_area: float | None = None
    simplify: float | None = None
    preview: str | os.PathLike[str] | None = None
    cog: bool = False
    resume: bool = False
    overwrite: bool = False


@dataclass
class PredictResult:
    """What a prediction run produced.

    Attributes:
        output: The class map.
        probabilities: The probabilities raster, if written.
        confidence: The confidence raster, if written.
        vector: The polygon file, if written.
        preview: The PNG preview, if written.
        width: Map width in pixels (the scene's).
        height: Map height in pixels.
        crs: The map's CRS as a string, or None.
        model: The model file used.
        task: ``classify`` or ``segment``.
        classes: Class names; index = class id in the map.
        class_pixels: Pixels per class.
        valid_pixels: Pixels with a class.
        nodata_pixels: Pixels set to nodata (255).
        window: Window side in pixels.
        stride: Step between windows.
        windows: Windows in the grid (of the part processed by this run).
        windows_skipped: Windows skipped because they held no valid pixel.
        device: Device the model ran on.
        precision: ``fp32``, ``bfloat16`` or ``float16``.
        resumed_from_row: First row computed by this run (0 unless resumed).
        seconds: Wall time.
        megapixels_per_second: Scene pixels processed per second by this run.
        vector_result: What the polygonizer returned, if ``vector`` was asked for.
    """

    output: Path
    probabilities: Path | None
    confidence: Path | None
    vector: Path | None
    preview: Path | None
    width: int
    height: int
    crs: str | None
    model: Path
    task: str
    classes: list[str]
    class_pixels: dict[str, int]
    valid_pixels: int
    nodata_pixels: int
    window: int
    stride: int
    windows: int
    windows_skipped: int
    device: str
    precision: str
    resumed_from_row: int
    seconds: float
    megapixels_per_second: float
    vector_result: Any | None = None


# --- setup ------------------------------------------------------------------------------------


def _scene_paths(scenes: Any) -> list[str]:
    if isinstance(scenes, (str, os.PathLike)):
        return [os.fspath(scenes)]
    paths = [os.fspath(s) for s in scenes]
    if not paths:
        raise ConfigError("predict: no scene given")
    return paths


def _model_path(model: str | os.PathLike[str] | None) -> Path:
    path = resolve_model_path(None if model is None else Path(model))
    if model is None and not path.exists():
        raise ModelError(
            f"{default_model_path()}: the default model is not installed; pass -m MODEL.safetensors"
        )
    if path.is_dir():
        inner = path / "model.safetensors"
        if not inner.is_file():
            raise InputNotFoundError(
                f"{path}: is a folder without model.safetensors "
                "(expected a model file or a training run folder)"
            )
        path = inner
    return path


def _check_bands(
    scene: Scene, paths: list[str], bands: Sequence[int] | None, meta: ModelMeta
) -> None:
    """Raise BandError unless the scene's (selected) bands are as many as the model expects."""
    if scene.count == meta.in_chans:
        return
    label = paths[0] if len(paths) == 1 else f"the stack of {len(paths)} files ({paths[0]}, ...)"
    names = f" ({', '.join(meta.band_names)})" if meta.band_names else ""
    if bands is None:
        plural = "s" if scene.count != 1 else ""
        raise BandError(
            f"{label} has {scene.count} band{plural}, the model expects {meta.in_chans}{names}: "
            "pass --bands"
        )
    raise BandError(
        f"--bands selects {scene.count} bands of {label}, the model expects {meta.in_chans}{names}"
    )


def _grid_size(config: PredictConfig, meta: ModelMeta, task: str) -> tuple[int, int]:
    """Window side and stride."""
    if config.stride is not None and config.overlap is not None:
        raise ConfigError("give either stride or overlap, not both")
    if task == "classify":
        if config.window is not None and config.window != meta.chip_size:
            raise ConfigError(
                f"window {config.window}: a classifier always uses its chip size ({meta.chip_size})"
            )
        size = meta.chip_size
    else:
        size = config.window or meta.chip_size
    if size < 1:
        raise ConfigError(f"window size must be >= 1, got {size}")
    if config.stride is not None:
        if not 1 <= config.stride <= size:
            raise ConfigError(
                f"stride {config.stride} must be between 1 and the window size ({size}); "
                "a larger stride would leave pixels unclassified"
            )
        return size, config.stride
    overlap = DEFAULT_OVERLAP[task] if config.overlap is None else config.overlap
    if not 0.0 <= overlap < 1.0:
        raise ConfigError(f"overlap must be in [0, 1), got {overlap}")
    return size, max(1, round(size * (1.0 - overlap)))


def _offsets(extent: int, size: int, stride: int) -> list[int]:
    """Window offsets along one axis, as the shared window grid places them."""
    if extent <= size:
        return [0]
    return [int(gw.read.col_off) for gw in iter_window_grid(extent, 1, size, stride)]


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _scene_identity(path: str) -> dict[str, Any]:
    p = Path(path)
    if p.exists():
        st = p.stat()
        return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return {"path": path}


# --- window weights ---------------------------------------------------------------------------


def _axis_weight(offset: int, size: int, extent: int, margin: int, ramp: int) -> np.ndarray:
    """1-D blending weight of a segmenter window: ramps from edges shared with a neighbour."""
    i = np.arange(size, dtype=np.float64)
    inf = np.full(size, np.inf)
    d_lo = i - margin if offset > 0 else inf
    d_hi = (size - 1 - i) - margin if offset + size < extent else inf
    d = np.minimum(d_lo, d_hi)
    w = np.minimum(1.0, (d + 1.0) / (ramp + 1.0))
    return np.where(d < 0, _MARGIN_WEIGHT, w)


class _Weights:
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
            wy = _axis_weight(row_off, s, self.height, self.margin, self.ramp)
            wx = _axis_weight(col_off, s, self.width, self.margin, self.ramp)
            w = np.outer(wy, wx).astype(np.float32)
            self._cache[key] = w
        return w


# --- pipeline stages --------------------------------------------------------------------------


_STOP = object()


class _Stage(threading.Thread):
    """A worker thread fed through a bounded queue; it keeps its first error for the caller.

    After an error, or after ``abort``, it keeps draining its queue so producers never block.
    """

    def __init__(self, name: str, handle: Callable[[Any], None], maxsize: int) -> None:
        super().__init__(name=name, daemon=True)
        self._handle = handle
        self.queue: queue.Queue[Any] = queue.Queue(maxsize)
        self.error: BaseException | None = None
        self.aborted = threading.Event()

    def run(self) -> None:
        while True:
            item = self.queue.get()
            if item is _STOP:
                return
            if self.error is not None or self.aborted.is_set():
                continue
            try:
                self._handle(item)
            except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
                self.error = exc

    def put(
        self, item: Any, upstream_error: Callable[[], BaseException | None] | None = None
    ) -> None:
        """Queue ``item``; raises a stage's error instead of blocking forever behind it."""
        while True:
            err = self.error or (upstream_error() if upstream_error else None)
            if err is not None:
                raise _StageFailed(err)
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def finish(self, abort: bool = False) -> None:
        if abort:
            self.aborted.set()
        while self.is_alive():
            try:
                self.queue.put(_STOP, timeout=0.1)
                break
            except queue.Full:
                continue
        self.join()


class _StageFailed(Exception):
    """Wraps an error raised in a pipeline thread."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class _Win:
    """One window read and preprocessed, waiting for the model."""

    row_off: int
    col_off: int
    x: np.ndarray  # (S, S, bands) normalised float32
    valid: np.ndarray  # (S, S) bool
    weight: float  # classifiers: fraction of valid pixels


class _Blender:
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

    def _span(self, win: _Win) -> tuple[slice, slice, int, int]:
        """Buffer rows and scene columns a window covers, and their counts."""
        r0 = win.row_off - self.base
        nr = min(self.size, self.height - win.row_off)
        nc = min(self.size, self.width - win.col_off)
        return slice(r0, r0 + nr), slice(win.col_off, win.col_off + nc), nr, nc

    def add(self, win: _Win, scores: np.ndarray) -> None:
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


class _PixelBlender(_Blender):
    """Segmenters: per-pixel scores, weighted by ``_Weights``, summed over overlapping windows."""

    def __init__(self, *, weights: _Weights, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.weights = weights
        self.acc = np.zeros((self.classes, self.rows, self.width), np.float32)
        self.wsum = np.zeros((self.rows, self.width), np.float32)

    def add(self, win: _Win, scores: np.ndarray) -> None:
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


class _ChipBlender(_Blender):
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

    def add(self, win: _Win, scores: np.ndarray) -> None:
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


class _Outputs:
    """The output rasters and the resume sidecar; runs in the writer thread."""

    def __init__(
        self,
        writers: list[tuple[StripWriter, slice]],
        width: int,
        height: int,
        count: int,
        start_row: int,
        sidecar: Path,
        fingerprint: dict[str, Any],
        histogram: np.ndarray,
    ) -> None:
        self.writers = writers
        self.height = height
        self.assembler = StripAssembler(width, height, count, start_row)
        self.sidecar, self.fingerprint = sidecar, fingerprint
        self.histogram = histogram
        self.rows_done = start_row

    def handle(self, item: tuple[int, np.ndarray]) -> None:
        row0, chunk = item
        for s0, strip in self.assembler.push(row0, chunk):
            for writer, bands in self.writers:
                writer.write(s0, strip[bands])
            self.histogram += np.bincount(strip[0].ravel(), minlength=256)
            self.rows_done = s0 + strip.shape[1]
            try:
                _write_sidecar(self.sidecar, self.fingerprint, self.rows_done, self.histogram)
            except OSError as exc:
                needed = sum(w.size_bytes for w, _ in self.writers)
                raise write_error(exc, self.writers[0][0].target, needed, self.writers[0][0].hint) from exc


def _write_sidecar(
    path: Path, fingerprint: dict[str, Any], rows_done: int, histogram: np.ndarray
) -> None:
    doc = {
        "version": _SIDECAR_VERSION,
        "fingerprint": fingerprint,
        "rows_done": rows_done,
        "histogram": [int(v) for v in histogram],
    }
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("version") != _SIDECAR_VERSION:
        return None
    return doc


# --- inference --------------------------------------------------------------------------------


def _tta_views(
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


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over axis 1 of ``(N, classes)`` logits."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class _Runner:
    """Runs batches through the model: softmax scores as float32 numpy arrays."""

    def __init__(
        self,
        model: nn.Module,
        meta: ModelMeta,
        device: torch.device,
        precision: Precision,
        task: str,
        size: int,
        tta: bool,
    ) -> None:
        self.model = model.to(memory_format=torch.channels_last)
        self.meta, self.device, self.precision = meta, device, precision
        self.task, self.size = task, size
        self.views = _tta_views(task) if tta else _tta_views(task)[:1]

    def __call__(self, xs: list[np.ndarray]) -> np.ndarray:
        x = torch.from_numpy(np.stack(xs))  # (N, H, W, C)
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2)  # NCHW shape, channels-last memory: no copy
        total: np.ndarray | torch.Tensor | None = None
        with torch.inference_mode(), self.precision.autocast():
            for forward, inverse in self.views:
                xv = forward(x).contiguous(memory_format=torch.channels_last)
                out = self.model(xv).float()
                self._check(out, x.shape[0])
                p: np.ndarray | torch.Tensor
                if self.task == "classify":
                    # A few numbers per chip: numpy, without waking torch's thread pool.
                    p = _softmax(out.cpu().numpy())
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


def _load_chunk(
    scene: Scene, meta: ModelMeta, row_off: int, col_offs: list[int], size: int
) -> list[_Win | None]:
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
    out: list[_Win | None] = []
    for c in col_offs:
        v = valid[:, c - c0 : c - c0 + size]
        out.append(
            _Win(row_off, c, x[:, c - c0 : c - c0 + size], v, float(v.mean())) if v.any() else None
        )
    return out


# --- the run ----------------------------------------------------------------------------------


def predict(config: PredictConfig, progress: ProgressCallback | None = None) -> PredictResult:
    """Classify a scene into a class map on the scene's own grid.

    Args:
        config: What to predict and where to write it.
        progress: Optional progress callback (task ``predict``: one step per window).

    Returns:
        A ``PredictResult``.

    Raises:
        InputNotFoundError, RasterOpenError: A scene or the model cannot be read; or every pixel
            of the scene is nodata.
        BandError: The scene's bands do not match what the model expects.
        ModelError: The model file is unusable.
        ConfigError: Contradictory or out-of-range options, or ``resume`` with a partial run made
            with different settings.
        OutputExistsError: An output exists and neither ``overwrite`` nor ``resume`` was given.
        OutputError: An output folder is not writable.
        Interrupted: Ctrl-C after some rows were finished; rerun with ``resume`` to continue.
    """
    t_start = time.perf_counter()
    if config.resume and config.overwrite:
        raise ConfigError("give either resume or overwrite, not both")
    if config.batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {config.batch_size}")
    if config.workers is not None and config.workers < 0:
        raise ConfigError(f"workers must be >= 0, got {config.workers}")
    if config.vector is None and (config.min_area is not None or config.simplify is not None):
        raise ConfigError("min_area and simplify only apply with vector")

    output = Path(config.output)
    if output.suffix.lower() not in (".tif", ".tiff"):
        raise ConfigError(f"{output}: the class map is a GeoTIFF; give it a .tif name")
    paths = _scene_paths(config.scenes)
    scene = open_scene(paths, bands=list(config.bands) if config.bands is not None else None, nodata=config.nodata,
                       keep_gcps=True)
    try:
        model_path = _model_path(config.model)
        device = select_device(config.device)
        precision = select_precision(device, config.amp)
        model, meta = load_model_file(model_path, device)
        if meta.task not in ("classify", "segment"):
            raise ModelError(
                f"{model_path}: unknown task {meta.task!r} (expected classify or segment)"
            )
        if meta.num_classes > NODATA:
            raise ModelError(
                f"{model_path}: {meta.num_classes} classes do not fit a uint8 map (at most 255)"
            )
        size, stride = _grid_size(config, meta, meta.task)
        _check_bands(scene, paths, config.bands, meta)
        run = _Run(config, progress, output, paths, model_path, model, meta, scene)
        run.device, run.precision = device, precision
        run.size, run.stride, run.t_start = size, stride, t_start
        return run.run()
    finally:
        scene.close()


class _Run:
    """One run: outputs, resume state and the read -> infer -> blend -> write pipeline."""

    def __init__(
        self,
        config: PredictConfig,
        progress: ProgressCallback | None,
        output: Path,
        paths: list[str],
        model_path: Path,
        model: nn.Module,
        meta: ModelMeta,
        scene: Scene,
    ) -> None:
        self.config, self.progress, self.reporter = config, progress, Reporter(progress)
        self.output, self.paths, self.model_path = output, paths, model_path
        self.model, self.meta, self.scene = model, meta, scene
        # Set by ``predict`` after construction.
        self.device = torch.device("cpu")
        self.precision = Precision(self.device, None, False)
        self.size, self.stride, self.t_start = meta.chip_size, meta.chip_size, time.perf_counter()
        self.task = meta.task
        self.width, self.height = scene.width, scene.height
        self.probs_path = Path(config.probabilities) if config.probabilities is not None else None
        self.conf_path = confidence_path(output) if config.confidence else None
        self.sidecar = partial_path(output, ".partial.json")
        radius = getattr(model, "receptive_radius", 0) if self.task == "segment" else 0
        self.margin = int(radius or 0)

    # -- outputs and resume -------------------------------------------------------------------

    def _check_outputs(self) -> None:
        c = self.config
        named = [
            ("map", self.output),
            ("probabilities", self.probs_path),
            ("confidence", self.conf_path),
            ("vector", Path(c.vector) if c.vector else None),
            ("preview", Path(c.preview) if c.preview else None),
        ]
        given = [(k, p) for k, p in named if p is not None]
        seen: dict[Path, str] = {}
        for kind, p in given:
            key = p.resolve()
            if key in seen:
                raise ConfigError(f"{p}: given as both the {seen[key]} and the {kind} output")
            seen[key] = kind
        if c.vector is not None and Path(c.vector).suffix.lower() not in (
            ".gpkg",
            ".geojson",
            ".json",
            ".shp",
        ):
            raise ConfigError(f"{c.vector}: unknown vector format; use .gpkg, .geojson or .shp")
        if c.vector is not None and self.scene.gcps is not None:
            raise ConfigError(
                f"{self.scene.name}: is located by ground control points, not a geotransform, so "
                "polygons cannot be placed; warp the scene first (gdalwarp) or leave out --vector"
            )
        # Every file the run reads, through VRTs and symlinks, so no output can replace one.
        inputs = input_files(self.paths, "scene") + input_files([self.model_path], "model", raster=False)
        for kind, p in given:
            if kind == "vector":  # all of a shapefile's files, before any work is done
                check_vector_output(p, vector_driver(p), overwrite=c.overwrite or c.resume, inputs=inputs, kind=kind)
            else:
                check_output_path(p, overwrite=c.overwrite, allow_existing=c.resume, inputs=inputs, kind=kind)

    def _fingerprint(self) -> dict[str, Any]:
        st = self.model_path.stat()
        return {
            "geoclass": __version__,
            "model": {
                "path": str(self.model_path.resolve()),
                "size": st.st_size,
                "sha256": _file_digest(self.model_path),
            },
            "scenes": [_scene_identity(p) for p in self.paths],
            "bands": list(self.scene.bands),
            "nodata": self.config.nodata,
            "width": self.width,
            "height": self.height,
            "window": self.size,
            "stride": self.stride,
            "tta": bool(self.config.tta),
            "batch_size": self.config.batch_size,
            "device": self.device.type,
            "precision": self.precision.label,
            "probabilities": str(self.probs_path.resolve()) if self.probs_path else None,
            "confidence": bool(self.conf_path),
        }

    def _resume_state(
        self, fingerprint: dict[str, Any], writers: list[StripWriter]
    ) -> tuple[int, np.ndarray]:
        """Rows already finished by an interrupted run, and their class histogram."""
        fresh = (0, np.zeros(256, np.int64))
        doc = _read_sidecar(self.sidecar) if self.sidecar.exists() else None
        if not self.config.resume:
            if doc is not None:
                self.reporter.info(
                    f"{self.output}: an unfinished earlier run is discarded "
                    "(use --resume to continue one)"
                )
            return fresh
        if doc is None:
            if self.output.exists():
                raise OutputExistsError(
                    f"{self.output}: already exists and there is no interrupted run to resume "
                    "(pass --overwrite to predict it again)"
                )
            self.reporter.info(
                f"{self.output}: no interrupted run to resume; starting from the first row"
            )
            return fresh
        old = doc.get("fingerprint", {})
        if old != fingerprint:
            diff = sorted(
                k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k)
            )
            raise ConfigError(
                f"{self.output}: cannot resume: the interrupted run used a different "
                f"{', '.join(diff)} "
                "(run with the same scene, model and options, or pass --overwrite to start again)"
            )
        rows = int(doc.get("rows_done", 0))
        missing = [w.partial for w in writers if not w.partial.exists()]
        if rows and missing:
            self.reporter.warn(f"{missing[0]}: partial file missing; starting from the first row")
            return fresh
        hist = np.asarray(doc.get("histogram", [0] * 256), np.int64)
        return rows, hist if hist.shape == (256,) else fresh[1]

    def _make_writers(self) -> list[tuple[StripWriter, slice]]:
        """The output rasters, each with the bands of a blended row chunk it takes."""
        from geoclass.io.class_map import write_class_metadata

        meta, scene = self.meta, self.scene
        colors = [(int(c[0]), int(c[1]), int(c[2])) for c in meta.colors]
        # Partial files are kept for --resume only when the run was started with it.
        resume_hint = "then run the same command again with --resume" if self.config.resume else ""

        def writer(
            path: Path, count: int, predictor: bool, setup: Callable[[Any], None]
        ) -> StripWriter:
            return StripWriter(
                path,
                width=self.width,
                height=self.height,
                count=count,
                crs=scene.crs,
                transform=scene.transform,
                predictor=predictor,
                setup=setup,
                gcps=scene.gcps,
                hint=resume_hint,
            )

        out = [
            (
                writer(
                    self.output, 1, False, lambda ds: write_class_metadata(ds, meta.classes, colors)
                ),
                slice(0, 1),
            )
        ]
        band = 1
        if self.probs_path is not None:
            n = meta.num_classes
            setup = probability_setup(list(meta.classes))
            out.append((writer(self.probs_path, n, True, setup), slice(band, band + n)))
            band += n
        if self.conf_path is not None:
            out.append((writer(self.conf_path, 1, True, confidence_setup), slice(band, band + 1)))
        return out

    # -- run ----------------------------------------------------------------------------------

    def run(self) -> PredictResult:
        self._check_outputs()
        # One run per raster output: partial files have fixed names, so a second run writing the
        # same map (or probabilities, confidence) would splice its rows into this one's.
        with ExitStack() as locks:
            for path in (self.output, self.probs_path, self.conf_path):
                if path is not None:
                    locks.enter_context(OutputLock(path))
            return self._run()

    def _run(self) -> PredictResult:
        c, scene, meta = self.config, self.scene, self.meta
        if scene.gcps is not None:
            self.reporter.warn(
                f"{scene.name}: is located by {len(scene.gcps[0])} ground control points, not a "
                "geotransform; the map keeps them on the scene's pixel grid (warp it for a regular grid)"
            )
        elif scene.crs is None:
            self.reporter.warn(
                f"{scene.name}: has no CRS; the map is written on its pixel grid "
                "without georeferencing"
            )
        if meta.radiometry_for(scene.dtype) is None and scene.dtype != meta.train_dtype:
            self.reporter.warn(
                f"{scene.name}: {scene.dtype} pixels, but the model was trained on "
                f"{meta.train_dtype} "
                "and stores no scaling for this type; values are used as they are"
            )
        self._warn_small_scene()
        writers = self._make_writers()
        fingerprint = self._fingerprint()
        rows_done, histogram = self._resume_state(fingerprint, [w for w, _ in writers])
        if rows_done == 0:
            # A stale sidecar must never describe the partial files this run is about to write.
            self.sidecar.unlink(missing_ok=True)

        rows = _offsets(self.height, self.size, self.stride)
        cols = _offsets(self.width, self.size, self.stride)
        # First window row that still touches an unfinished row.
        start_r = next((r for r, off in enumerate(rows) if off + self.size > rows_done), len(rows))
        if rows_done >= self.height:
            start_r = len(rows)
        total = (len(rows) - start_r) * len(cols)
        self.reporter.info(
            f"{scene.name}: {self.width}x{self.height} px, {scene.count} bands {scene.dtype}; "
            f"{self.task} model, {meta.num_classes} classes, "
            f"{self.size} px windows every {self.stride} px; "
            f"{self.device.type} {self.precision.label}"
        )
        if rows_done:
            self.reporter.info(f"{self.output}: resuming at row {rows_done} of {self.height}")

        count = 1 + (meta.num_classes if self.probs_path else 0) + (1 if self.conf_path else 0)
        outputs = _Outputs(
            writers, self.width, self.height, count, rows_done, self.sidecar, fingerprint, histogram
        )
        t0 = time.perf_counter()
        skipped = self._pipeline(rows, cols, start_r, rows_done, outputs, total)
        seconds_predict = time.perf_counter() - t0

        valid = int(outputs.histogram[:NODATA].sum())
        if valid == 0:
            self._discard(writers)
            raise RasterOpenError(
                f"{scene.name}: every pixel is nodata (or masked); there is nothing to classify"
            )
        self._publish(writers)

        vector_result = self._vector()
        preview = self._preview()
        seconds = time.perf_counter() - self.t_start
        done_px = (self.height - rows_done) * self.width
        hist = outputs.histogram
        return PredictResult(
            output=self.output,
            probabilities=self.probs_path,
            confidence=self.conf_path,
            vector=Path(c.vector) if c.vector else None,
            preview=preview,
            width=self.width,
            height=self.height,
            crs=scene.crs.to_string() if scene.crs else None,
            model=self.model_path,
            task=self.task,
            classes=list(meta.classes),
            class_pixels={name: int(hist[i]) for i, name in enumerate(meta.classes)},
            valid_pixels=valid,
            nodata_pixels=int(hist[NODATA]),
            window=self.size,
            stride=self.stride,
            windows=total,
            windows_skipped=skipped,
            device=str(self.device),
            precision=self.precision.label,
            resumed_from_row=rows_done,
            seconds=seconds,
            megapixels_per_second=done_px / 1e6 / max(seconds_predict, 1e-9),
            vector_result=vector_result,
        )

    def _warn_small_scene(self) -> None:
        """A scene smaller than a window is predicted from a mostly padded window: say so."""
        if self.width >= self.size and self.height >= self.size:
            return
        real = min(self.width, self.size) * min(self.height, self.size)
        padding = 100 * (1 - real / (self.size * self.size))
        shown = f"{padding:.0f}" if padding < 99.5 else f"{padding:.2f}"
        self.reporter.warn(
            f"{self.scene.name}: {self.width}x{self.height} px is smaller than the model's "
            f"{self.size}x{self.size} px window; the map comes from windows that are {shown}% padding "
            f"({real:,} real pixel{'s' if real != 1 else ''} each), so expect it to be less reliable"
        )

    def _publish(self, writers: list[tuple[StripWriter, slice]]) -> None:
        if self.config.cog:
            self.reporter.info("writing Cloud-Optimized GeoTIFFs with overviews")
        # The class map last: once it exists under its name, everything else does too.
        for writer, _ in reversed(writers):
            writer.publish(
                cog=self.config.cog,
                overview_resampling="nearest" if writer.target == self.output else "average",
            )
        self.sidecar.unlink(missing_ok=True)

    def _discard(self, writers: list[tuple[StripWriter, slice]]) -> None:
        for writer, _ in writers:
            writer.discard()
        self.sidecar.unlink(missing_ok=True)
        self.sidecar.with_name(self.sidecar.name + ".tmp").unlink(missing_ok=True)

    def _vector(self) -> Any | None:
        c = self.config
        if c.vector is None:
            return None
        from geoclass.io.vector_writer import polygonize_class_map

        return polygonize_class_map(
            self.output,
            c.vector,
            min_area=c.min_area or 0.0,
            simplify=c.simplify or 0.0,
            overwrite=c.overwrite or c.resume,
            progress=self.progress,
        )

    def _preview(self) -> Path | None:
        c = self.config
        if c.preview is None:
            return None
        from geoclass.engine.preview import render_preview

        return render_preview(self.output, c.preview, overwrite=c.overwrite or c.resume)

    # -- the pipeline -------------------------------------------------------------------------

    def _pipeline(
        self,
        rows: list[int],
        cols: list[int],
        start_r: int,
        rows_done: int,
        outputs: _Outputs,
        total: int,
    ) -> int:
        """Read, infer, blend and write window rows from ``start_r``; returns windows skipped."""
        c, meta, scene, size = self.config, self.meta, self.scene, self.size
        workers = c.workers if c.workers is not None else max(1, min(4, (os.cpu_count() or 2) // 2))
        base = rows[start_r] if start_r < len(rows) else self.height
        writer = _Stage("geoclass-predict-writer", outputs.handle, maxsize=8)
        common: dict[str, Any] = {
            "classes": meta.num_classes,
            "size": size,
            "width": self.width,
            "height": self.height,
            "base": base,
            "start_row": rows_done,
            "want_probs": self.probs_path is not None,
            "want_conf": self.conf_path is not None,
            "emit": lambda row0, chunk: writer.put((row0, chunk)),
        }
        blender: _Blender
        if self.task == "segment":
            weights = _Weights(size, self.stride, self.width, self.height, self.margin)
            blender = _PixelBlender(weights=weights, **common)
        else:
            blender = _ChipBlender(**common)
        sink = _Stage("geoclass-predict-blend", blender.handle, maxsize=2)
        runner = _Runner(self.model, meta, self.device, self.precision, self.task, size, c.tta)
        pool = ThreadPoolExecutor(workers, "geoclass-read") if workers > 0 else None
        # Batches never span these window rows (where a resumed run starts), so a resumed run
        # sees exactly the batches an uninterrupted one did and computes the same bits.
        breaks = {
            next((r for r, off in enumerate(rows) if off + size > k), len(rows))
            for k in range(BLOCK_SIZE, self.height, BLOCK_SIZE)
        }
        # Windows are read in chunks of neighbours (one read each), bounded to ~32 MB of input.
        max_span = (32 << 20) // (size * scene.count * 4)
        group = max(1, min(len(cols), c.batch_size, (max_span - size) // self.stride + 1))
        groups = [cols[i : i + group] for i in range(0, len(cols), group)]
        prefetch = max(2, math.ceil(2 * c.batch_size / group), 2 * workers)
        self.reporter.start(_TASK, total=total)
        writer.start()
        sink.start()

        def load(r_off: int, c_offs: list[int]) -> list[_Win | None]:
            return _load_chunk(scene, meta, r_off, c_offs, size)

        def events() -> Iterator[tuple[Any, ...]]:
            pending: deque[tuple[Any, ...]] = deque()
            in_flight = 0

            def resolve(ev: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
                if ev[0] != "chunk":
                    yield ev
                    return
                job = ev[1]
                for win in job.result() if isinstance(job, Future) else load(*job):
                    yield ("win", win)

            try:
                for r in range(start_r, len(rows)):
                    pending.append(("row", r))
                    for g in groups:
                        job: Any = pool.submit(load, rows[r], g) if pool else (rows[r], g)
                        pending.append(("chunk", job))
                        in_flight += 1
                        while in_flight > prefetch:
                            ev = pending.popleft()
                            in_flight -= ev[0] == "chunk"
                            yield from resolve(ev)
                    pending.append(("mark", rows[r + 1] if r + 1 < len(rows) else self.height))
                while pending:
                    yield from resolve(pending.popleft())
            finally:
                for ev in pending:
                    if ev[0] == "chunk" and isinstance(ev[1], Future):
                        ev[1].cancel()

        def upstream() -> BaseException | None:
            return writer.error

        batch: list[tuple[Any, ...]] = []
        xs: list[np.ndarray] = []
        consumed = 0
        skipped = 0

        def flush() -> None:
            nonlocal batch, xs, consumed
            if xs:
                scores = runner(xs)
                out, i = [], 0
                for ev in batch:
                    if ev[0] == "win":
                        out.append(("win", ev[1], scores[i]))
                        i += 1
                    else:
                        out.append(ev)
                sink.put(out, upstream)
            batch, xs = [], []
            if consumed:
                n, consumed = consumed, 0
                self.reporter.advance(_TASK, n)

        error: BaseException | None = None
        try:
            for ev in events():
                kind = ev[0]
                if kind == "row":
                    if ev[1] in breaks:
                        flush()
                elif kind == "win":
                    consumed += 1
                    if ev[1] is None:
                        skipped += 1
                    else:
                        batch.append(ev)
                        xs.append(ev[1].x)
                        if len(xs) >= c.batch_size:
                            flush()
                elif xs:
                    batch.append(ev)  # a row mark must follow the windows before it
                else:
                    sink.put([ev], upstream)
                    flush()  # only reports progress (skipped windows)
            flush()
        except BaseException as exc:  # noqa: BLE001 - sorted out below, after the threads stop
            error = exc
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        # After Ctrl-C, still blend and write what was already inferred, so the partial files
        # hold every strip that could be completed; after an error, just stop.
        drain = error is None or isinstance(error, KeyboardInterrupt)
        try:
            sink.finish(abort=not drain)
            writer.finish(abort=not drain)
        except KeyboardInterrupt as exc:  # a second Ctrl-C: stop now
            sink.finish(abort=True)
            writer.finish(abort=True)
            error = error or exc
        error = error or sink.error or writer.error
        while isinstance(error, _StageFailed):
            error = error.error
        if error is None:
            self.reporter.end(_TASK)
            return skipped
        if isinstance(error, KeyboardInterrupt) and outputs.rows_done > 0:
            raise Interrupted(
                f"{self.output}: stopped at row {outputs.rows_done} of {self.height}; run the same "
                "command with --resume to continue"
            ) from None
        if not c.resume or isinstance(error, KeyboardInterrupt):
            self._discard(outputs.writers)
        raise error
