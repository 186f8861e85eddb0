"""``tile``: open the scene and labels, prepare the output folder, walk the windows, write the index.

Memory stays flat whatever the scene size: a few windows are in flight at any time, the index rows
stream to a temporary CSV, and per-band statistics are merged as chips go by.
"""

from __future__ import annotations

import csv
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rasterio.errors import NotGeoreferencedWarning

from geoclass.data.tiling.chip_writer import ChipWriter, unlink
from geoclass.data.tiling.config import SKIP_REASONS, TileConfig, TileResult, validate
from geoclass.data.tiling.describe import dataset_info, dumps, write_index
from geoclass.data.tiling.pairs import is_pair_folders, tile_pairs
from geoclass.data.tiling.plan import Aggregate, Splitter
from geoclass.data.tiling.resume import (
    PARTIAL_CSV,
    atomic_write_text,
    check_inputs_outside,
    fingerprint,
    prepare_output,
)
from geoclass.data.tiling.sample_windows import label_windows
from geoclass.data.tiling.worker import Worker, class_dirs, ordered_map, scene_prefix
from geoclass.errors import ConfigError, GeoclassError, Interrupted, OutputError
from geoclass.io.color_map import ColorMap, read_color_map
from geoclass.io.color_masks import ColorMaskLabels
from geoclass.io.labels import UNLABELLED, open_labels, read_class_file
from geoclass.io.outputs import atomic_output
from geoclass.io.reader import Scene, open_scene
from geoclass.io.stats import BandMoments, hist_offset
from geoclass.palette import colors_for_classes
from geoclass.progress import ProgressCallback, Reporter

__all__ = ["tile"]

_TASK = "tile"


def _scene_paths(cfg: TileConfig) -> list[str]:
    if isinstance(cfg.scenes, (str, os.PathLike)):
        return [os.fspath(cfg.scenes)]
    return [os.fspath(p) for p in cfg.scenes]


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
    if is_pair_folders(config.scenes):
        return tile_pairs(config, progress)
    started = time.monotonic()
    cfg = config
    validate(cfg)
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
        if cfg.labels is not None and cfg.label_colors is not None:
            if cfg.classes is not None or cfg.label_field is not None:
                raise ConfigError("--label-colors names the classes of a colour mask; drop "
                                  "--classes / --label-field")
            colors = cfg.label_colors
            if not isinstance(colors, ColorMap):
                colors = read_color_map(colors)
            labels = ColorMaskLabels(cfg.labels, scene, colors)
        elif cfg.labels is not None:
            labels = open_labels(cfg.labels, scene, field=cfg.label_field, classes=classes_spec,
                                 layer=cfg.label_layer, progress=progress)
        elif cfg.label_colors is not None:
            raise ConfigError("--label-colors needs --labels (the colour masks)")
        elif cfg.label_field is not None or cfg.classes is not None:
            report.warn("--label-field and --classes have no effect without --labels")
        classes = list(labels.classes) if labels is not None else []
        if cfg.sample == "labels" and not hasattr(labels, "geometries"):
            raise ConfigError(f"{cfg.labels}: --sample labels centres chips on vector features, "
                              "and this is a class raster: tile it on the grid")
        check_inputs_outside(out, scene_paths, cfg.labels)
        state = fingerprint(cfg, scene_paths, scene, labels, classes, stride)
        resuming = prepare_output(out, cfg.overwrite, cfg.resume, state, report)
        return _run(cfg, scene, labels, classes, out, stride, resuming, report, started)
    finally:
        if labels is not None:
            labels.close()
        scene.close()


def _run(cfg: TileConfig, scene: Scene, labels: Any, classes: list[str], out: Path, stride: int,
         resuming: bool, report: Reporter, started: float) -> TileResult:
    """Walk the windows, write chips and the index, and describe the dataset."""
    segment = cfg.task == "segment"
    offset = hist_offset(scene.dtype)
    if isinstance(labels, ColorMaskLabels):
        colors = list(labels.colors.colors)  # the masks' own colours
    else:
        colors = colors_for_classes(classes) if classes else []
    image_writer = ChipWriter(size=cfg.size, count=scene.count, dtype=scene.dtype, crs=scene.crs,
                              transform=scene.transform, nodata=scene.nodata,
                              descriptions=scene.band_names, level=cfg.compress_level)
    mask_writer = None
    if segment:
        cmap = {i: (*c, 255) for i, c in enumerate(colors)}
        cmap[UNLABELLED] = (0, 0, 0, 0)
        mask_writer = ChipWriter(size=cfg.size, count=1, dtype="uint8", crs=scene.crs,
                                 transform=scene.transform, nodata=UNLABELLED, colormap=cmap,
                                 level=cfg.compress_level)
    dirs = class_dirs(classes)
    try:
        if segment:
            (out / "images").mkdir(exist_ok=True)
            (out / "masks").mkdir(exist_ok=True)
        else:
            (out / "chips").mkdir(exist_ok=True)
            for d in dirs:
                (out / "chips" / d).mkdir(exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out}: cannot create chip folders ({exc.strerror or exc})") from exc

    prefix = scene_prefix(scene.paths)
    scene_name = " + ".join(p.name for p in scene.paths)
    worker = Worker(scene, labels, cfg, out, resuming, image_writer, mask_writer, prefix, dirs, offset)
    n_classes = len(classes)

    def new_agg() -> Aggregate:
        return Aggregate(BandMoments(scene.count, offset))

    splitter = Splitter(cfg.block_size * stride, cfg.val_fraction, cfg.seed, new_agg)
    skipped = dict.fromkeys(SKIP_REASONS, 0)
    if cfg.sample == "labels":
        sampled = label_windows(labels.geometries, scene, cfg.size, cfg.per_feature, cfg.seed)
        report.info(f"{len(sampled)} chip windows centred on {len(labels.geometries)} labelled features")
        total = len(sampled)
    else:
        total = scene.num_windows(cfg.size, stride)
    workers = cfg.workers if cfg.workers is not None else _default_workers()
    written = reused = done = 0
    fields = ["path", "label", "split"] + (["mask"] if segment else []) + ["scene", "row", "col"]
    partial_csv = out / PARTIAL_CSV

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
            windows = (iter(sampled) if cfg.sample == "labels"
                       else (gw.read for gw in scene.windows(cfg.size, stride)))
            for oc in ordered_map(worker, windows, workers):
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

    # chips.csv replaces an earlier one only once index.gpkg is written too.
    with atomic_output(out / "chips.csv") as tmp_csv:
        with open(tmp_csv, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            for rec in final_rows():
                w.writerow(rec)
        write_index(out, final_rows(), scene, cfg.size, segment)
    unlink(partial_csv)

    label_names = classes if classes else [""]
    counts = {s: {c: int(aggs[s].chips.get(c, 0)) for c in label_names} for s in ("train", "val")}
    stats = aggs["train"].moments.result()
    info = dataset_info(cfg, scene, labels, classes, colors, stride, counts, skipped, total, stats,
                         aggs if segment else None, n_classes)
    atomic_write_text(out / "dataset.json", dumps(info))
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
        pixel_counts=info.get("pixel_counts"),
    )


def _default_workers() -> int:
    """Threads for reading, compressing and writing chips.

    DEFLATE, file writes and GDAL reads release the GIL, so a few threads overlap them; with two
    cores or fewer the GIL hand-offs cost more than they give, so the work stays in one thread.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cpus < 4 else min(4, cpus - 1)
