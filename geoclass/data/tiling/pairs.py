"""Many image/mask pairs tiled into one dataset (the layout of most published segmentation sets).

``tile`` is given folders instead of scenes: each folder holds ``images/`` and ``masks/`` (or the
images, with ``labels`` naming the masks folder); an image and its mask share a file stem
(``image_part_001.jpg`` + ``image_part_001.png``). Each pair is tiled by ``tile`` into
``OUT/pairs/NNN-stem/`` (so a Ctrl-C costs one pair and ``resume`` skips the finished ones), then
``OUT/chips.csv`` and ``OUT/dataset.json`` describe them as one dataset. Validation holds out whole
images (``val_fraction`` of them), never chips of an image that also trains.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from geoclass.data.tiling.config import TileConfig, TileResult, validate
from geoclass.data.tiling.describe import dumps
from geoclass.data.tiling.resume import STATE_FILE, atomic_write_text
from geoclass.errors import ConfigError, DatasetError, InputNotFoundError, OutputError, OutputExistsError
from geoclass.io.outputs import atomic_output
from geoclass.io.stats import BandStatistics
from geoclass.progress import ProgressCallback, Reporter

__all__ = ["IMAGE_SUFFIXES", "Pair", "find_pairs", "is_pair_folders", "tile_pairs"]

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2", ".bmp", ".webp")
PAIRS_DIR = "pairs"
_STATE = ".geoclass-tile-pairs.json"


@dataclass(frozen=True)
class Pair:
    """An image and its mask."""

    image: Path
    mask: Path

    @property
    def name(self) -> str:
        return self.image.stem


def is_pair_folders(scenes: Any) -> bool:
    """Whether ``tile`` was given folders of image/mask pairs rather than raster files."""
    paths = [scenes] if isinstance(scenes, (str, os.PathLike)) else list(scenes)
    return bool(paths) and all(Path(p).is_dir() for p in paths)


def _images(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."):
            if p.stem in found:
                raise DatasetError(f"{folder}: {found[p.stem].name} and {p.name} share the stem "
                                   f"{p.stem!r}; images and masks are paired by stem")
            found[p.stem] = p
    return found


def find_pairs(folders: list[Path], masks: Path | None = None) -> list[Pair]:
    """Pair each image with the mask of the same stem.

    Args:
        folders: Folders holding ``images/`` and ``masks/``; or, with ``masks``, one folder of
            images.
        masks: The masks folder of the one images folder.

    Raises:
        InputNotFoundError: A folder or its ``images``/``masks`` sub-folder is missing.
        DatasetError: An image without a mask (or a mask without an image), or no images.
    """
    if masks is not None and len(folders) != 1:
        raise ConfigError("--labels names the masks of ONE images folder; with several folders, "
                          "give each its images/ and masks/ sub-folders")
    pairs: list[Pair] = []
    for folder in folders:
        if masks is not None:
            image_dir, mask_dir = folder, masks
        else:
            image_dir, mask_dir = folder / "images", folder / "masks"
            for d in (image_dir, mask_dir):
                if not d.is_dir():
                    raise InputNotFoundError(f"{folder}: expected images/ and masks/ sub-folders "
                                             f"(or --labels MASKS_DIR), found no {d.name}/")
        if not mask_dir.is_dir():
            raise InputNotFoundError(f"{mask_dir}: masks folder not found")
        images, found = _images(image_dir), _images(mask_dir)
        if not images:
            raise DatasetError(f"{image_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
        lonely = sorted(set(images) - set(found))
        if lonely:
            raise DatasetError(f"{image_dir / images[lonely[0]].name}: no mask with stem "
                               f"{lonely[0]!r} in {mask_dir}"
                               + (f" ({len(lonely) - 1} more images lack masks)" if len(lonely) > 1 else ""))
        orphans = sorted(set(found) - set(images))
        if orphans:
            raise DatasetError(f"{mask_dir / found[orphans[0]].name}: a mask without an image "
                               f"(stem {orphans[0]!r}) in {image_dir}")
        pairs += [Pair(images[s], found[s]) for s in sorted(images)]
    return pairs


def tile_pairs(config: TileConfig, progress: ProgressCallback | None = None) -> TileResult:
    """Tile every image/mask pair of the folders in ``config.scenes`` into one dataset.

    Raises:
        The errors of ``tile``, with the pair's files named; ``DatasetError`` for unpaired files.
    """
    from geoclass.data.tiling.run import tile

    if config.task != "segment":
        raise ConfigError("folders of image/mask pairs are segmentation data: give --task segment")
    validate(replace(config, labels=config.labels or "masks/"))  # the masks are in the folders
    report = Reporter(progress)
    scenes = [config.scenes] if isinstance(config.scenes, (str, os.PathLike)) else list(config.scenes)
    masks = Path(config.labels) if config.labels is not None else None
    pairs = find_pairs([Path(s) for s in scenes], masks)
    out = Path(config.output)
    names = [f"{i:03d}-{p.name}" for i, p in enumerate(pairs, 1)]
    state = {"pairs": [[str(p.image.resolve()), str(p.mask.resolve())] for p in pairs],
             "size": config.size, "stride": config.stride, "val_fraction": config.val_fraction,
             "seed": config.seed, "min_labelled": config.min_labelled, "bands": config.bands,
             "label_colors": str(config.label_colors) if config.label_colors is not None else None}
    _prepare(out, config, state)
    _warn_if_plain(pairs[0].image, report)
    val = _val_images(len(pairs), config.val_fraction, config.seed)
    report.info(f"{len(pairs)} image/mask pairs; {len(val)} images held out for validation")
    rows: list[dict[str, Any]] = []
    infos: list[dict[str, Any]] = []
    for i, (pair, name) in enumerate(zip(pairs, names, strict=True)):
        sub = out / PAIRS_DIR / name
        report.info(f"pair {i + 1}/{len(pairs)}: {pair.image.name} + {pair.mask.name}")
        if not _finished(sub):
            tile(replace(config, scenes=[str(pair.image)], labels=str(pair.mask), output=sub,
                         val_fraction=0.0, overwrite=False, resume=sub.exists()), progress)
        info = json.loads((sub / "dataset.json").read_text())
        split = "val" if i in val else "train"
        with (sub / "chips.csv").open(newline="", encoding="utf-8") as fh:
            for rec in csv.DictReader(fh):
                rec["path"] = f"{PAIRS_DIR}/{name}/{rec['path']}"
                rec["mask"] = f"{PAIRS_DIR}/{name}/{rec['mask']}"
                rec["split"] = split
                rows.append(rec)
        infos.append({**info, "_split": split})
    return _describe(config, out, rows, infos, pairs, names)


def _warn_if_plain(image: Path, report: Reporter) -> None:
    """One warning for images without georeferencing (JPEG/PNG): they are cut on pixel grids."""
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(image) as ds:
                plain = ds.crs is None and ds.transform.is_identity
    except RasterioError:
        return  # tile names the unreadable file
    if plain:
        report.warn(f"{image.parent}: images without georeferencing; chips are cut on each "
                    "image's pixel grid and have no CRS")


def _prepare(out: Path, config: TileConfig, state: dict[str, Any]) -> None:
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder")
    marker = out / _STATE
    if out.is_dir() and any(out.iterdir()):
        if config.resume and marker.is_file():
            if json.loads(marker.read_text()) != state:
                raise ConfigError(f"{out}: cannot resume with other pairs or options; run the same "
                                  "command, or pass --overwrite to start again")
            return
        ours = marker.is_file() or (out / PAIRS_DIR).is_dir()
        if not config.overwrite or not ours:
            raise OutputExistsError(f"{out}: not empty; pass --overwrite to replace a geoclass "
                                    "dataset there, or choose an empty folder")
        import shutil

        shutil.rmtree(out / PAIRS_DIR, ignore_errors=True)
        for f in ("chips.csv", "dataset.json", _STATE):
            (out / f).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, json.dumps(state))


def _finished(sub: Path) -> bool:
    return (sub / "dataset.json").is_file() and (sub / "chips.csv").is_file() and not (sub / STATE_FILE).exists()


def _val_images(n: int, fraction: float, seed: int) -> set[int]:
    """Indices of the images held out: ``fraction`` of them, at least one when n > 1."""
    if n < 2 or fraction <= 0:
        return set()
    k = min(n - 1, max(1, round(n * fraction)))
    return set(random.Random(seed).sample(range(n), k))


def _merge_stats(infos: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Pooled mean/std/min/max of the training images' statistics (percentiles left out)."""
    stats = [BandStatistics.from_dict(i["statistics"]) for i in infos
             if i["_split"] == "train" and i.get("statistics")]
    stats = [s for s in stats if s.pixel_count > 0]
    if not stats:
        return None
    n = sum(s.pixel_count for s in stats)
    bands = len(stats[0].mean)
    mean = [sum(s.mean[b] * s.pixel_count for s in stats) / n for b in range(bands)]
    var = [sum(s.pixel_count * (s.std[b] ** 2 + (s.mean[b] - mean[b]) ** 2) for s in stats) / n
           for b in range(bands)]
    return BandStatistics(mean=mean, std=[math.sqrt(v) for v in var],
                          min=[min(s.min[b] for s in stats) for b in range(bands)],
                          max=[max(s.max[b] for s in stats) for b in range(bands)],
                          pixel_count=n).to_dict()


def _describe(config: TileConfig, out: Path, rows: list[dict[str, Any]], infos: list[dict[str, Any]],
              pairs: list[Pair], names: list[str]) -> TileResult:
    first = infos[0]
    classes: list[str] = first["classes"]
    for info, pair in zip(infos, pairs, strict=True):
        if info["classes"] != classes or info["bands"] != first["bands"]:
            raise DatasetError(f"{pair.image}: its classes or bands differ from {pairs[0].image}'s; "
                               "one dataset needs the same classes (give --label-colors) and bands")
    counts = {s: dict.fromkeys(classes, 0) for s in ("train", "val")}
    for rec in rows:
        counts[rec["split"]][rec["label"]] = counts[rec["split"]].get(rec["label"], 0) + 1
    pixels = {s: dict.fromkeys(classes, 0) for s in ("train", "val")}
    for info in infos:
        for c, n in info.get("pixel_counts", {}).get("train", {}).items():
            pixels[info["_split"]][c] += int(n)
    skipped: dict[str, int] = {}
    for info in infos:
        for k, v in info["skipped"].items():
            skipped[k] = skipped.get(k, 0) + int(v)
    windows = sum(int(i["windows"]) for i in infos)
    info = {k: v for k, v in first.items() if k not in ("_split", "scene", "labels", "split")}
    info.update({
        "counts": counts, "chips": {s: sum(v.values()) for s, v in counts.items()},
        "pixel_counts": pixels, "skipped": skipped, "windows": windows,
        "statistics": _merge_stats(infos), "crs": None if any(i.get("crs") is None for i in infos) else first["crs"],
        "pairs": [{"image": str(p.image), "mask": str(p.mask), "split": i["_split"], "folder": f"{PAIRS_DIR}/{n}"}
                  for p, i, n in zip(pairs, infos, names, strict=True)],
        "split": {"method": "whole-images", "val_fraction": config.val_fraction, "seed": config.seed},
    })
    fields = ["path", "label", "split", "mask", "scene", "row", "col"]
    with atomic_output(out / "chips.csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    atomic_write_text(out / "dataset.json", dumps(info))
    (out / _STATE).unlink(missing_ok=True)
    return TileResult(
        output=out, task="segment", classes=classes, windows=windows, chips=len(rows),
        written=len(rows), reused=0, counts=counts, skipped=skipped,
        statistics=BandStatistics.from_dict(info["statistics"]) if info["statistics"] else None,
        dataset_json=out / "dataset.json",
        pixel_counts=pixels,
    )
