"""A segmenter scored on whole images against their colour-coded masks, each pixel counted once.

Chip datasets overlap at image edges (the last chip of a row is shifted inward so the edge is
covered), so scoring chips counts those pixels twice. Here every image is predicted whole by
``predict`` (the same windows, blending and TTA a user gets) into a temporary map, which is then
compared with the decoded mask pixel by pixel, streamed in row blocks.
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from geoclass.data.tiling.pairs import find_pairs
from geoclass.engine.metrics import confusion, per_class_scores, segmentation_scores
from geoclass.engine.predict import PredictConfig, predict
from geoclass.errors import ConfigError, LabelError
from geoclass.io.color_map import IGNORE, ColorMap, read_color_map
from geoclass.io.color_masks import ColorMaskLabels
from geoclass.io.outputs import atomic_output
from geoclass.io.raster_writer import NODATA
from geoclass.io.reader import open_scene
from geoclass.models.model_file import read_model_meta, resolve_model_path
from geoclass.progress import ProgressCallback, Reporter

__all__ = ["MaskEvalConfig", "evaluate_masks"]

_ROWS = 512


@dataclass
class MaskEvalConfig:
    """Whole images and their colour masks, and how to predict them.

    Attributes:
        folders: Folders with ``images/`` and ``masks/`` (or one images folder with ``masks``).
        label_colors: The masks' colour map (file or ``ColorMap``).
        model: A segmentation model file (or run folder).
        masks: The masks folder of a single images folder.
        tta: Predict with test-time augmentation (flips and a rotation).
        window: Predict window side (default the model's chip size).
        overlap: Window overlap (default the predict default for segmenters).
        device: ``auto``, ``cpu`` or ``cuda``.
        report: Write the JSON report here.
        plots: Write the confusion matrix PNG into this folder.
    """

    folders: list[str]
    label_colors: str | ColorMap
    model: str | None = None
    masks: str | None = None
    tta: bool = False
    window: int | None = None
    overlap: float | None = None
    device: str = "auto"
    report: str | None = None
    plots: str | None = None


def evaluate_masks(config: MaskEvalConfig, progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Predict every image whole and score it against its mask.

    Returns:
        The report: per-class IoU, precision, recall, F1; mean IoU (over classes present), pixel
        accuracy, the confusion matrix (rows = mask class), per-image mean IoU, pixels scored.

    Raises:
        LabelError: A mask colour the map lacks, a model class the map does not name.
        DatasetError: Unpaired images or masks.
    """
    report = Reporter(progress)
    colors = config.label_colors if isinstance(config.label_colors, ColorMap) else read_color_map(config.label_colors)
    model_path = resolve_model_path(config.model)
    meta = read_model_meta(model_path)
    if meta.task != "segment":
        raise ConfigError(f"{model_path}: a {meta.task} model; scoring against masks needs a segmentation model")
    missing = [c for c in meta.classes if c not in colors.classes]
    if missing:
        raise LabelError(f"{colors.source}: names no colour for the model's classes {', '.join(missing)} "
                         f"(it has {', '.join(colors.classes)})")
    # Mask ids (colour-map order) -> model ids; mask classes the model lacks are not scored.
    to_model = np.full(256, IGNORE, np.uint8)
    for i, name in enumerate(colors.classes):
        if name in meta.classes:
            to_model[i] = meta.classes.index(name)
    pairs = find_pairs([Path(f) for f in config.folders], Path(config.masks) if config.masks else None)
    k = meta.num_classes
    total = np.zeros((k, k), np.int64)
    per_image: list[dict[str, Any]] = []
    unscored = 0
    start = time.perf_counter()
    report.start("eval", len(pairs))
    with tempfile.TemporaryDirectory(prefix="geoclass-eval-") as tmp:
        for pair in pairs:
            out = Path(tmp) / "map.tif"
            predict(PredictConfig(scenes=str(pair.image), output=out, model=str(model_path), tta=config.tta,
                                  window=config.window, overlap=config.overlap, device=config.device,
                                  overwrite=True))
            matrix, skipped = _score(pair.image, pair.mask, out, colors, to_model, k)
            total += matrix
            unscored += skipped
            per_image.append({"image": str(pair.image), "mask": str(pair.mask),
                              "mean_iou": segmentation_scores(matrix)["mean_iou"],
                              "pixels": int(matrix.sum())})
            report.advance("eval")
    report.end("eval")
    seg = segmentation_scores(total)
    scores = per_class_scores(total)
    classes = list(meta.classes)
    absent = [classes[i] for i in seg["absent_labels"]]
    result: dict[str, Any] = {
        "task": "segment", "model": str(model_path), "classes": classes,
        "iou": seg["iou"], "mean_iou": seg["mean_iou"], "pixel_accuracy": seg["pixel_accuracy"],
        "per_class": {c: {"iou": seg["iou"][i], "precision": float(scores["precision"][i]),
                          "recall": float(scores["recall"][i]), "f1": float(scores["f1"][i]),
                          "pixels": int(scores["support"][i])} for i, c in enumerate(classes)},
        "classes_absent": absent, "macro_over": [c for c in classes if c not in absent],
        "confusion_matrix": total.tolist(), "images": len(pairs), "pixels_scored": int(total.sum()),
        "pixels_unscored": unscored, "per_image": per_image, "tta": config.tta,
        "seconds": round(time.perf_counter() - start, 2),
    }
    if config.report:
        Path(config.report).parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(Path(config.report)) as tmp_report:
            tmp_report.write_text(json.dumps(result, indent=2))
    if config.plots:
        from geoclass.engine.evaluate import plot_confusion

        result["plots"] = [plot_confusion(Path(config.plots), total, classes)]
    return result


def _score(image: Path, mask: Path, map_path: Path, colors: ColorMap, to_model: np.ndarray,
           k: int) -> tuple[np.ndarray, int]:
    """Confusion of one image's map against its mask, and the labelled pixels left unscored."""
    scene = open_scene([str(image)])
    labels = ColorMaskLabels(mask, scene, colors)
    matrix = np.zeros((k, k), np.int64)
    unscored = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(map_path) as m:
                for r in range(0, scene.height, _ROWS):
                    win = Window(0, r, scene.width, min(_ROWS, scene.height - r))
                    truth = labels.read(win)
                    if truth is None:
                        continue
                    truth = to_model[truth]
                    pred = m.read(1, window=win)
                    scored = (truth != IGNORE) & (pred != NODATA)
                    unscored += int(((truth != IGNORE) & (pred == NODATA)).sum())
                    matrix += confusion(truth[scored], pred[scored], k)
    finally:
        labels.close()
        scene.close()
    return matrix, unscored
