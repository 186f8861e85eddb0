"""Labelled pixels of a scene, as feature vectors: the training data of per-pixel models.

The scene is streamed window by window; only windows that hold labels are read. Each window is
read with enough context for the model's neighbourhood features (clipped at the scene's edge,
exactly as predict sees it), its features are computed by the model itself, and the labelled,
valid pixels are kept, at most ``max_per_class`` per class by a uniform random sample (a
priority sample, so memory holds about twice that per class whatever the label area).

Every pixel carries its group for validation splits, never by random pixels: the vector feature
(polygon, point) that labels it, or its spatial block (``block_size`` x ``block_size`` pixels).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from rasterio.windows import Window

from geoclass.io.labels import UNLABELLED, LabelSource
from geoclass.io.reader import Scene
from geoclass.io.windows import iter_window_grid
from geoclass.progress import ProgressCallback, Reporter

__all__ = ["PixelSamples", "sample_pixels", "split_blocks"]

FeatureFn = Callable[[np.ndarray], np.ndarray]  # raw (bands, h, w) -> features (F, h, w)
_WINDOW = 512


@dataclass
class PixelSamples:
    """Sampled labelled pixels.

    Attributes:
        features: ``(n, F)`` float32 feature vectors.
        labels: ``(n,)`` class ids.
        blocks: ``(n,)`` spatial block ids (unique across scenes).
        holdout: ``(n,)`` True for pixels inside the validation bounds.
        labelled: Labelled pixels per class before sampling (valid ones).
        on_nodata: Labelled pixels per class that fall on nodata (not used).
    """

    features: np.ndarray
    labels: np.ndarray
    blocks: np.ndarray
    holdout: np.ndarray
    labelled: np.ndarray
    on_nodata: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class _Reservoir:
    """At most ``limit`` items per class, a uniform sample by random priority."""

    classes: int
    limit: int
    rng: np.random.Generator
    parts: list[list[tuple[np.ndarray, ...]]] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.parts = [[] for _ in range(self.classes)]
        self.sizes = [0] * self.classes

    def add(self, k: int, *arrays: np.ndarray) -> None:
        keys = self.rng.random(len(arrays[0]))
        self.parts[k].append((keys, *arrays))
        self.sizes[k] += len(keys)
        if self.sizes[k] > 2 * self.limit:
            self._shrink(k)

    def _shrink(self, k: int) -> None:
        merged = [np.concatenate(col) for col in zip(*self.parts[k])]
        if len(merged[0]) > self.limit:
            keep = np.argpartition(merged[0], self.limit)[: self.limit]
            merged = [col[keep] for col in merged]
        self.parts[k] = [tuple(merged)]
        self.sizes[k] = len(merged[0])

    def result(self) -> list[tuple[np.ndarray, ...]]:
        out = []
        for k in range(self.classes):
            if self.parts[k]:
                self._shrink(k)
                out.append(self.parts[k][0][1:])
        return out


def sample_pixels(
    scene: Scene,
    labels: LabelSource,
    features: FeatureFn,
    *,
    classes: int,
    halo: int,
    max_per_class: int,
    block_size: int,
    seed: int = 0,
    block_offset: int = 0,
    holdout_bounds: tuple[float, float, float, float] | None = None,
    by_feature: bool = False,
    progress: ProgressCallback | None = None,
) -> PixelSamples:
    """Feature vectors of the labelled, valid pixels of ``scene``.

    Args:
        scene: The scene (its bands as the model reads them).
        labels: Labels on the scene's grid (class ids, ``UNLABELLED`` elsewhere).
        features: Raw window pixels -> features, as the model computes them.
        classes: Number of classes.
        halo: Context the features need around each pixel (the model's receptive radius).
        max_per_class: Keep at most this many pixels per class (a uniform random sample).
        block_size: Side of the spatial blocks used for validation splits, in pixels.
        seed: Seed of the sample.
        block_offset: Added to block ids (to keep those of several scenes apart).
        holdout_bounds: ``(left, bottom, right, top)`` in the scene's CRS: pixels whose centre
            lies inside are marked ``holdout``.
        by_feature: Group pixels by the vector feature that labels them (``blocks`` then holds
            the feature index) instead of by spatial block, for splits by whole polygons.
        progress: Receives progress events (task ``sample``).
    """
    report = Reporter(progress)
    rng = np.random.default_rng(seed)
    reservoir = _Reservoir(classes, max_per_class, rng)
    labelled = np.zeros(classes, np.int64)
    on_nodata = np.zeros(classes, np.int64)
    block_cols = -(-scene.width // block_size)
    grid = list(iter_window_grid(scene.width, scene.height, _WINDOW))
    report.start("sample", len(grid))
    for gw in grid:
        core = gw.core
        r0, c0 = int(core.row_off), int(core.col_off)
        h, w = int(core.height), int(core.width)
        ids = labels.read(core)
        if ids is None or not (ids != UNLABELLED).any():
            report.advance("sample")
            continue
        # The context predict sees: clipped at the scene edge, where the model pads.
        top, left = max(0, r0 - halo), max(0, c0 - halo)
        bottom, right = min(scene.height, r0 + h + halo), min(scene.width, c0 + w + halo)
        data, valid = scene.read_masked(Window(left, top, right - left, bottom - top))
        feats = features(data)[:, r0 - top : r0 - top + h, c0 - left : c0 - left + w]
        valid = valid[r0 - top : r0 - top + h, c0 - left : c0 - left + w]
        is_labelled = ids != UNLABELLED
        np.add.at(on_nodata, ids[is_labelled & ~valid].astype(np.int64), 1)
        rows, cols = np.nonzero(is_labelled & valid)
        if len(rows):
            ks = ids[rows, cols].astype(np.int64)
            np.add.at(labelled, ks, 1)
            vectors = feats[:, rows, cols].T.astype(np.float32)
            grow, gcol = rows + r0, cols + c0
            if by_feature:
                feature_ids = labels.read_feature_ids(core)  # type: ignore[attr-defined]
                blocks = block_offset + feature_ids[rows, cols].astype(np.int64)
            else:
                blocks = block_offset + (grow // block_size) * block_cols + gcol // block_size
            holdout = _inside(scene, grow, gcol, holdout_bounds)
            for k in np.unique(ks):
                sel = ks == k
                reservoir.add(int(k), vectors[sel], blocks[sel], holdout[sel])
        report.advance("sample")
    report.end("sample")
    parts = reservoir.result()
    kept = [(k, p) for k, p in zip(np.flatnonzero(labelled), parts, strict=True)]
    if not kept:
        return PixelSamples(np.zeros((0, 0), np.float32), np.zeros(0, np.int64),
                            np.zeros(0, np.int64), np.zeros(0, bool), labelled, on_nodata)
    return PixelSamples(
        features=np.concatenate([p[0] for _, p in kept]),
        labels=np.concatenate([np.full(len(p[0]), k, np.int64) for k, p in kept]),
        blocks=np.concatenate([p[1] for _, p in kept]),
        holdout=np.concatenate([p[2] for _, p in kept]),
        labelled=labelled,
        on_nodata=on_nodata,
    )


def _inside(scene: Scene, rows: np.ndarray, cols: np.ndarray,
            bounds: tuple[float, float, float, float] | None) -> np.ndarray:
    if bounds is None:
        return np.zeros(len(rows), bool)
    t = scene.transform
    x = t.c + (cols + 0.5) * t.a + (rows + 0.5) * t.b
    y = t.f + (cols + 0.5) * t.d + (rows + 0.5) * t.e
    left, bottom, right, top = bounds
    return (x >= left) & (x <= right) & (y >= bottom) & (y <= top)


def split_blocks(labels: np.ndarray, blocks: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """A validation mask that takes whole spatial blocks, about ``fraction`` of each class.

    Classes are served rarest first: blocks holding the class are drawn at random into
    validation until it holds ``fraction`` of the class's pixels; a class found in a single
    block stays in training (it cannot be validated without losing it).
    """
    rng = np.random.default_rng(seed)
    val_blocks: set[int] = set()
    order = np.argsort(np.bincount(labels))
    for k in order:
        members = labels == k
        total = int(members.sum())
        if total == 0:
            continue
        kblocks, counts = np.unique(blocks[members], return_counts=True)
        if len(kblocks) < 2:
            continue
        in_val = sum(int(c) for b, c in zip(kblocks, counts, strict=True) if int(b) in val_blocks)
        for i in rng.permutation(len(kblocks)):
            if in_val >= fraction * total:
                break
            b = int(kblocks[i])
            if b in val_blocks:
                continue
            # Never move every block of the class to validation.
            if in_val + counts[i] >= total:
                continue
            val_blocks.add(b)
            in_val += int(counts[i])
    return np.isin(blocks, np.fromiter(val_blocks, np.int64, len(val_blocks)))


def window_features(model: torch.nn.Module, normalize: Callable[[np.ndarray], np.ndarray]) -> FeatureFn:
    """The model's features (``model.features``) of raw window pixels, as numpy."""

    def fn(data: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(normalize(data)))[None]
        with torch.inference_mode():
            return model.features(x)[0].numpy()

    return fn
