"""The work on one window: look at its labels, read and check its pixels, write its chip(s).

``Worker`` is called from a small thread pool (``ordered_map``) that keeps results in grid order
with a bounded number of windows in flight.
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from geoclass.data.tiling.chip_writer import ChipWriter, read_existing_chip
from geoclass.data.tiling.config import TileConfig
from geoclass.io.labels import UNLABELLED
from geoclass.io.reader import Scene
from geoclass.io.stats import BandMoments

__all__ = ["Outcome", "Worker", "class_dirs", "ordered_map", "scene_prefix"]


@dataclass
class Outcome:
    """What one window gave: a skip reason, or a chip record."""

    row: int
    col: int
    skip: str | None = None
    label: str = ""
    path: str = ""
    mask: str = ""
    written: bool = False
    moments: BandMoments | None = None
    pixels: np.ndarray | None = None


def _slug(text: str, limit: int = 60) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    return slug[:limit].rstrip("._-")


def scene_prefix(paths: Sequence[Path]) -> str:
    """Chip file name prefix: the scene's stem, or the common stem of stacked band files."""
    stems = [_slug(p.stem) for p in paths]
    if len(stems) == 1:
        return stems[0] or "scene"
    common = os.path.commonprefix(stems)
    common = re.sub(r"[_-]?[Bb](and)?\d*$", "", common).rstrip("._-")
    return common if len(common) >= 3 else (stems[0] or "scene")


def class_dirs(classes: Sequence[str]) -> list[str]:
    """A unique, file-system-safe folder name per class."""
    dirs: list[str] = []
    for i, name in enumerate(classes):
        slug = _slug(name) or f"class_{i}"
        if slug.lower() in (d.lower() for d in dirs):
            slug = f"{slug}_{i}"
        dirs.append(slug)
    return dirs


class Worker:
    """Turns one grid window into an ``Outcome`` (thread-safe; called from the pool)."""

    def __init__(self, scene: Scene, labels: Any, cfg: TileConfig, out: Path, resume: bool,
                 image_writer: ChipWriter, mask_writer: ChipWriter | None, prefix: str,
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

    def __call__(self, window: Window) -> Outcome:
        row, col = int(window.row_off), int(window.col_off)
        oc = Outcome(row, col)
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
        oc.moments = BandMoments.of(values, self.hist_offset)
        if mask is not None:
            m = mask[mask != UNLABELLED]
            oc.pixels = np.bincount(m, minlength=len(self.classes))[: len(self.classes)]
        return oc

    def _existing(self, path: Path, mask_path: Path | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
        """Pixels, validity and mask of this window's chip from an earlier run, if complete."""
        if not path.is_file() or (mask_path is not None and not mask_path.is_file()):
            return None
        img = read_existing_chip(path)
        if img is None or img[0].shape[1:] != (self.cfg.size, self.cfg.size):
            return None
        mask = None
        if mask_path is not None:
            m = read_existing_chip(mask_path)
            if m is None:
                return None
            mask = m[0][0]
        return img[0], img[1], mask


def ordered_map(fn: Callable[[Window], Outcome], windows: Iterable[Window], workers: int) -> Iterator[Outcome]:
    """``map(fn, windows)`` on a thread pool, in order, with a bounded number in flight."""
    if workers <= 0:
        for w in windows:
            yield fn(w)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="geoclass-tile")
    pending: deque[Future[Outcome]] = deque()
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
