"""Finding labelled chips on disk: geoclass chip datasets and plain class-folder trees.

Two layouts are understood:

* a chip dataset written by ``geoclass tile``: ``dataset.json`` plus ``chips.csv`` with
  ``path,label,split`` (and ``mask`` for segmentation), paths relative to the dataset folder;
* a folder of class sub-folders (the EuroSAT layout), optionally narrowed by a split CSV with
  ``path,label`` rows whose paths are relative to the dataset folder.
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from geoclass.errors import DatasetError, InputNotFoundError

IMAGE_SUFFIXES = {".tif", ".tiff", ".jpg", ".jpeg", ".png", ".jp2", ".vrt"}
DATASET_JSON = "dataset.json"
CHIPS_CSV = "chips.csv"


@dataclass(frozen=True)
class Sample:
    """One labelled chip (and its mask, for segmentation)."""

    path: Path
    label: str
    mask: Path | None = None
    counted_from: tuple[int, int] = (0, 0)
    """Segmentation chips of a grid: the first row and column of the chip that no earlier chip of
    its scene covers (edge chips are shifted inward and overlap their neighbours). Evaluation
    scores only the mask from there on, so each scene pixel counts once."""


@dataclass
class SampleSet:
    """The chips of one dataset split, with the dataset's class list and description."""

    root: Path
    samples: list[Sample]
    classes: list[str]
    task: str = "classify"
    info: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        counter = Counter(s.label for s in self.samples)
        return {c: counter.get(c, 0) for c in self.classes}

    def fingerprint(self) -> str:
        """A hash of the (relative path, label) list: identifies the training data in model files."""
        digest = hashlib.sha256()
        for sample in sorted(self.samples, key=lambda s: str(s.path)):
            digest.update(f"{_relative(sample.path, self.root)}\t{sample.label}\n".encode())
        return digest.hexdigest()[:16]


def is_chip_dataset(root: Path) -> bool:
    return (root / DATASET_JSON).is_file()


def load_samples(root: str | Path, split_csv: str | Path | None = None, split: str | None = None) -> SampleSet:
    """List the labelled chips under ``root``.

    Args:
        root: A geoclass chip dataset or a folder of class sub-folders.
        split_csv: CSV with ``path,label`` rows selecting chips (paths relative to ``root``).
        split: For chip datasets, the value of the ``split`` column to keep (``train``/``val``).

    Raises:
        InputNotFoundError: ``root`` or the CSV does not exist.
        DatasetError: No chips, unknown classes in the CSV, listed files missing.
    """
    root = Path(root)
    if not root.exists():
        raise InputNotFoundError(f"{root}: dataset folder not found")
    if not root.is_dir():
        raise DatasetError(f"{root}: expected a folder of class sub-folders or a geoclass chip dataset, found a file")
    if is_chip_dataset(root):
        sample_set = _load_chip_dataset(root, split)
        if split_csv is not None:
            sample_set.samples = _samples_from_csv(Path(split_csv), root, sample_set.classes)
    else:
        classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and _has_images(p))
        if not classes:
            raise DatasetError(f"{root}: no class sub-folders with images (.tif, .jpg, .png) and no {DATASET_JSON}")
        if split_csv is not None:
            samples = _samples_from_csv(Path(split_csv), root, classes)
        else:
            samples = [Sample(p, c) for c in classes for p in sorted((root / c).iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
        sample_set = SampleSet(root, samples, classes)
    if not sample_set.samples:
        where = f" for split {split!r}" if split else ""
        raise DatasetError(f"{root}: no chips{where}")
    return sample_set


def holdout_split(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Stratified random split into (train, val); each class keeps at least one training chip."""
    rng = random.Random(seed)
    by_class: dict[str, list[Sample]] = {}
    for sample in samples:
        by_class.setdefault(sample.label, []).append(sample)
    train: list[Sample] = []
    val: list[Sample] = []
    for label in sorted(by_class):
        items = sorted(by_class[label], key=lambda s: str(s.path))
        rng.shuffle(items)
        n_val = min(int(round(len(items) * fraction)), len(items) - 1)
        val += items[:n_val]
        train += items[n_val:]
    return train, val


def apply_groups(sample_set: SampleSet, groups: dict[str, list[str]]) -> SampleSet:
    """Relabel chips into groups; classes not named in any group become ``other``.

    Raises:
        DatasetError: A group names a class the dataset does not have.
    """
    if not groups:
        return sample_set
    mapping = group_mapping(sample_set.classes, groups, sample_set.root)
    classes = list(groups) + (["other"] if any(v == "other" for v in mapping.values()) else [])
    samples = [replace(s, label=mapping[s.label]) for s in sample_set.samples]
    return SampleSet(sample_set.root, samples, classes, sample_set.task, sample_set.info)


def group_mapping(classes: list[str], groups: dict[str, list[str]], where: Path | str) -> dict[str, str]:
    """class -> group name for every class (unlisted classes map to ``other``)."""
    mapping: dict[str, str] = {}
    for group, members in groups.items():
        for member in members:
            if member not in classes:
                raise DatasetError(f"{where}: group {group!r} names class {member!r}, which is not one of: {', '.join(classes)}")
            mapping[member] = group
    return {c: mapping.get(c, "other") for c in classes}


def _load_chip_dataset(root: Path, split: str | None) -> SampleSet:
    try:
        info = json.loads((root / DATASET_JSON).read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{root / DATASET_JSON}: unreadable dataset description: {exc}") from exc
    index = root / CHIPS_CSV
    if not index.is_file():
        raise DatasetError(f"{root}: chip dataset without {CHIPS_CSV}")
    classes = list(info.get("classes", []))
    samples: list[Sample] = []
    places: list[tuple[str, int, int] | None] = []
    with index.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if split is not None and row.get("split") != split:
                continue
            mask = root / row["mask"] if row.get("mask") else None
            samples.append(Sample(root / row["path"], row.get("label", ""), mask))
            places.append(_place(row))
    task = info.get("task", "classify")
    size = info.get("chip_size")
    if task == "segment" and isinstance(size, int) and size > 0 and None not in places:
        samples = count_each_pixel_once(samples, places, size)  # type: ignore[arg-type]
    return SampleSet(root, samples, classes, task, info)


def _place(row: dict[str, str]) -> tuple[str, int, int] | None:
    """(scene key, row, column) of a chip in chips.csv, or None when the CSV does not say."""
    try:
        return f"{Path(row['path']).parent}|{row['scene']}", int(row["row"]), int(row["col"])
    except (KeyError, TypeError, ValueError):
        return None


def count_each_pixel_once(samples: list[Sample], places: list[tuple[str, int, int]], size: int) -> list[Sample]:
    """Set each chip's ``counted_from`` so that overlapping chips of one scene count a pixel once.

    A chip at (row, col) skips the rows it shares with the chip above it (the nearest earlier
    grid row, at the same column) and the columns it shares with the chip on its left. Chips
    the grid does not hold (e.g. skipped for nodata) leave their share to their neighbours.
    """
    taken: dict[str, set[tuple[int, int]]] = {}
    for scene, row, col in places:
        taken.setdefault(scene, set()).add((row, col))
    rows = {scene: sorted({r for r, _ in cells}) for scene, cells in taken.items()}
    cols = {scene: sorted({c for _, c in cells}) for scene, cells in taken.items()}

    def shared(starts: list[int], start: int) -> tuple[int | None, int]:
        """The nearest earlier start and how many pixels its chip shares with this one."""
        i = bisect.bisect_left(starts, start)
        if i == 0:
            return None, 0
        return starts[i - 1], max(0, min(size, starts[i - 1] + size - start))

    out: list[Sample] = []
    for sample, (scene, row, col) in zip(samples, places, strict=True):
        cells = taken[scene]
        above, first_row = shared(rows[scene], row)
        left, first_col = shared(cols[scene], col)
        first_row = first_row if (above, col) in cells else 0
        first_col = first_col if (row, left) in cells else 0
        out.append(replace(sample, counted_from=(first_row, first_col)) if first_row or first_col else sample)
    return out


def _samples_from_csv(csv_path: Path, root: Path, classes: list[str]) -> list[Sample]:
    if not csv_path.is_file():
        raise InputNotFoundError(f"{csv_path}: split CSV not found")
    samples: list[Sample] = []
    unknown: set[str] = set()
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"path", "label"} <= set(reader.fieldnames):
            raise DatasetError(f"{csv_path}: expected columns path,label, found {','.join(reader.fieldnames or [])}")
        for row in reader:
            if row["label"] not in classes:
                unknown.add(row["label"])
                continue
            path = root / row["path"]
            samples.append(Sample(path, row["label"]))
    if unknown:
        raise DatasetError(f"{csv_path}: labels {', '.join(sorted(unknown))} are not classes of {root} "
                           f"({', '.join(classes)})")
    missing = [s.path for s in samples[:1000] if not s.path.exists()]
    if missing:
        raise DatasetError(f"{csv_path}: {len(missing)} listed chips do not exist, e.g. {missing[0]}")
    return samples


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir())


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
