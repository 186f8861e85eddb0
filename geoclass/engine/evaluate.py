"""Evaluation of a model file on labelled chips: metrics, JSON report, plots."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from geoclass.data.chips import IGNORE_INDEX, ChipDataset, init_chip_worker
from geoclass.data.samples import Sample, group_mapping, is_chip_dataset, load_samples
from geoclass.engine.device import select_device, select_precision
from geoclass.engine.metrics import classification_report, segmentation_summary
from geoclass.errors import ConfigError, DatasetError
from geoclass.io.outputs import atomic_output, check_output_path, input_files
from geoclass.models.model_file import ModelMeta, load_model_file, resolve_model_path
from geoclass.progress import ProgressCallback, Reporter


@dataclass
class EvalConfig:
    """What to evaluate and where to put the results.

    Attributes:
        data: A chip dataset or a folder of class sub-folders.
        model: A model file; None means the model shipped with geoclass.
        split_csv: CSV with ``path,label`` rows selecting the chips to evaluate.
        split: For chip datasets: which split (default ``val`` when there is one, else all chips).
        groups: Evaluate grouped classes, e.g. ``{"agri": ["AnnualCrop", "Pasture"]}``; the
            model's class probabilities are summed per group and the rest form ``other``.
        report: Write the JSON report here.
        plots: Write confusion-matrix and ROC PNGs into this folder.
    """

    data: str
    model: str | None = None
    split_csv: str | None = None
    split: str | None = None
    groups: dict[str, list[str]] = field(default_factory=dict)
    batch_size: int = 128
    workers: int = 2
    device: str = "auto"
    amp: str = "auto"
    report: str | None = None
    plots: str | None = None


def evaluate(config: EvalConfig, progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Run the model over the labelled chips and compute the metrics.

    Returns:
        The report: overall accuracy, per-class precision/recall/F1, macro and weighted F1,
        Cohen's kappa, ROC-AUC and the confusion matrix (IoU metrics for segmenters). Macro
        averages are over the classes present in the data (``macro_over``); the model's other
        classes are listed in ``classes_absent`` (and noted through ``progress``).

    Raises:
        DatasetError: Labels the model does not know, or unreadable chips (named).
    """
    if config.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {config.batch_size}")
    report_to = Reporter(progress)
    model_path = resolve_model_path(config.model)
    if config.report:
        _check_report_path(Path(config.report), model_path, config)
    device = select_device(config.device)
    precision = select_precision(device, config.amp)
    model, meta = load_model_file(model_path, device)
    split = config.split
    if split is None and config.split_csv is None and is_chip_dataset(Path(config.data)):
        split = "val" if _chip_dataset_has(Path(config.data), "val") else None
    sample_set = load_samples(config.data, config.split_csv, split=split)
    samples = _labels_for_model(sample_set.samples, sample_set.classes, meta, config.data)
    dataset = ChipDataset(samples, meta)
    loader = DataLoader(dataset, batch_size=config.batch_size, num_workers=config.workers, shuffle=False,
                        persistent_workers=False, worker_init_fn=init_chip_worker)
    report_to.info(f"evaluating {model_path.name} on {len(samples)} chips of {config.data}")
    report_to.start("eval", len(loader))
    scores: list[np.ndarray] = []
    truths: list[np.ndarray] = []
    start = time.perf_counter()
    with torch.inference_mode():
        for images, targets in loader:
            images = images.to(device).to(memory_format=torch.channels_last)
            with precision.autocast():
                logits = model(images)
            scores.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
            truths.append(targets.numpy())
            report_to.advance("eval")
    report_to.end("eval")
    elapsed = time.perf_counter() - start
    y_true = np.concatenate(truths)
    probabilities = np.concatenate(scores)
    if meta.task == "segment":
        result: dict[str, Any] = segmentation_summary(y_true, probabilities.argmax(1), meta.num_classes, IGNORE_INDEX)
        result["classes"] = list(meta.classes)
        result["classes_absent"] = [meta.classes[k] for k in result.pop("absent_labels")]
        result["macro_over"] = [c for c in meta.classes if c not in result["classes_absent"]]
    else:
        classes = list(meta.classes)
        if config.groups:
            y_true, probabilities, classes = _group(y_true, probabilities, classes, config.groups, config.data)
        result = classification_report(y_true, probabilities, classes)
    absent, present = result["classes_absent"], result["macro_over"]
    if absent and present:
        report_to.info(f"{config.data} holds {len(present)} of the model's {len(result['classes'])} classes; "
                       f"macro averages are over those present (absent: {', '.join(absent)})")
    result.update({
        "model": str(model_path), "data": str(config.data), "split": split or config.split_csv or "all",
        "task": meta.task, "seconds": round(elapsed, 3), "chips_per_second": round(len(samples) / max(elapsed, 1e-9), 1),
    })
    if config.report:
        _write_json_atomic(Path(config.report), result)
    if config.plots and meta.task == "classify":
        result["plots"] = write_plots(Path(config.plots), y_true, probabilities, result["classes"])
    return result


def _labels_for_model(samples: list[Sample], data_classes: list[str], meta: ModelMeta, where: str) -> list[Sample]:
    """Map the data's labels into the model's classes (through the model's groups if it has any)."""
    if meta.groups:
        mapping = group_mapping(data_classes, meta.groups, where)
        samples = [replace(s, label=mapping[s.label]) for s in samples]
    if meta.task == "segment":
        return samples
    unknown = sorted({s.label for s in samples} - set(meta.classes))
    if unknown:
        raise DatasetError(f"{where}: labels {', '.join(unknown)} are not classes of the model "
                           f"(model: {', '.join(meta.classes)}; data: {', '.join(data_classes)})")
    return samples


def _group(y_true: np.ndarray, probabilities: np.ndarray, classes: list[str], groups: dict[str, list[str]],
           where: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    mapping = group_mapping(classes, groups, where)
    names = list(groups) + (["other"] if "other" in mapping.values() else [])
    index = np.array([names.index(mapping[c]) for c in classes])
    grouped = np.zeros((probabilities.shape[0], len(names)), dtype=np.float64)
    for k in range(len(names)):
        grouped[:, k] = probabilities[:, index == k].sum(1)
    return index[y_true], grouped, names


def _chip_dataset_has(root: Path, split: str) -> bool:
    import csv

    with (root / "chips.csv").open(newline="") as handle:
        return any(row.get("split") == split for row in csv.DictReader(handle))


def _check_report_path(report: Path, model_path: Path, config: EvalConfig) -> None:
    """The report may replace an earlier report, never the model, a split file or a chip of the data."""
    inputs = input_files([model_path], "model", raster=False)
    inputs += input_files([config.split_csv] if config.split_csv else [], "split file", raster=False)
    data = Path(config.data)
    if data.is_file():
        inputs += input_files([data], "data", raster=False)
    elif report.exists() and data.is_dir() and data.resolve() in report.resolve().parents:
        raise ConfigError(f"{report}: is a file inside the data folder {data}; write the report elsewhere")
    check_output_path(report, overwrite=True, inputs=inputs, kind="report")


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))


def write_plots(folder: Path, y_true: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> list[str]:
    """Confusion matrix (row-normalised) and one-vs-rest ROC curves as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix, roc_curve

    labels = list(range(len(classes)))
    matrix = confusion_matrix(y_true, probabilities.argmax(1), labels=labels)
    confusion_png = plot_confusion(folder, matrix, classes)

    fig, ax = plt.subplots(figsize=(6, 6))
    for k, name in enumerate(classes):
        positives = y_true == k
        if positives.any() and (~positives).any():
            fpr, tpr, _ = roc_curve(positives, probabilities[:, k])
            ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (one vs rest)")
    if ax.get_legend_handles_labels()[0]:  # no curve when the data hold a single class
        ax.legend(fontsize=8)
    fig.tight_layout()
    roc_png = folder / "roc_curves.png"
    fig.savefig(roc_png, dpi=110)
    plt.close(fig)
    return [str(confusion_png), str(roc_png)]


def plot_confusion(folder: Path, matrix: np.ndarray, classes: list[str]) -> str:
    """``folder/confusion_matrix.png``: the row-normalised matrix with counts; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    labels = list(range(len(classes)))
    counts = np.asarray(matrix, np.float64)
    normalised = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = max(5.0, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(labels, classes, rotation=45, ha="right")
    ax.set_yticks(labels, classes)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (row-normalised)")
    for i in labels:
        for j in labels:
            if counts[i, j]:
                ax.text(j, i, f"{int(counts[i, j]):,}", ha="center", va="center",
                        color="white" if normalised[i, j] > 0.5 else "black", fontsize=7)
    fig.tight_layout()
    path = folder / "confusion_matrix.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
