"""Accuracy metrics for classifiers and segmenters.

Macro averages (F1, precision, recall, mean IoU, one-vs-rest ROC-AUC) are taken over the classes
present in the reference labels: a class the evaluated data does not hold has no recall, F1 or
IoU, and counting it as 0 would make four correct images of one class score a macro F1 of 0.1
with a ten-class model. Such classes are reported as absent instead. The per-class numbers come
from the confusion matrix, so scikit-learn's undefined-metric warnings never arise.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix, rows = reference class, columns = predicted class."""
    truth = np.asarray(y_true, dtype=np.int64).ravel()
    pred = np.asarray(y_pred, dtype=np.int64).ravel()
    return np.bincount(truth * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def classification_summary(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, float]:
    """Overall accuracy and macro F1 (over the classes present in ``y_true``): the numbers watched during training."""
    return classification_scores(confusion(y_true, y_pred, num_classes))


def classification_scores(matrix: np.ndarray) -> dict[str, float]:
    """``classification_summary`` of a confusion matrix (e.g. summed over processes)."""
    scores = _per_class(matrix)
    return {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]}


def segmentation_summary(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, ignore_index: int) -> dict[str, Any]:
    """Pixel accuracy, per-class IoU and mean IoU over labelled pixels.

    A class with no labelled pixel has no IoU (``None``) and is left out of the mean; its index is
    listed under ``absent_labels``.
    """
    valid = y_true != ignore_index
    return segmentation_scores(confusion(y_true[valid], y_pred[valid], num_classes))


def segmentation_scores(matrix: np.ndarray) -> dict[str, Any]:
    """``segmentation_summary`` of a confusion matrix of labelled pixels (e.g. summed over processes)."""
    intersection = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - intersection
    present = matrix.sum(1) > 0
    iou = np.where(present, intersection / np.maximum(union, 1), np.nan)
    return {
        "pixel_accuracy": float(intersection.sum() / max(matrix.sum(), 1)),
        "iou": [None if np.isnan(v) else float(v) for v in iou],
        "mean_iou": float(np.nanmean(iou)) if present.any() else 0.0,
        "absent_labels": [int(k) for k in np.flatnonzero(~present)],
        "confusion_matrix": matrix.tolist(),
    }


def classification_report(y_true: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """The full report: per-class precision/recall/F1, macro/weighted F1, kappa, ROC-AUC, confusion matrix.

    Macro averages are over the classes present in ``y_true`` (named in ``macro_over``); the
    model's other classes are listed in ``classes_absent`` and their per-class entries have
    ``absent: true``, support 0 and no recall or F1 (precision is 0 where the model predicted
    them, else ``None``). Cohen's kappa is ``None`` where it is undefined (one class in both
    reference and prediction).
    """
    y_pred = probabilities.argmax(1)
    matrix = confusion(y_true, y_pred, len(classes))
    scores = _per_class(matrix)
    present = scores["present"]
    per_class: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(classes):
        predicted = int(scores["predicted"][k])
        per_class[name] = {
            "precision": None if not present[k] and predicted == 0 else float(scores["precision"][k]),
            "recall": float(scores["recall"][k]) if present[k] else None,
            "f1": float(scores["f1"][k]) if present[k] else None,
            "support": int(scores["support"][k]),
            "predicted": predicted,
            "absent": not present[k],
        }
    return {
        "samples": int(len(y_true)),
        "accuracy": scores["accuracy"],
        "macro_f1": scores["macro_f1"],
        "macro_precision": scores["macro_precision"],
        "macro_recall": scores["macro_recall"],
        "weighted_f1": scores["weighted_f1"],
        "cohen_kappa": _kappa(matrix),
        "macro_over": [name for k, name in enumerate(classes) if present[k]],
        "classes_absent": [name for k, name in enumerate(classes) if not present[k]],
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "classes": list(classes),
        "roc_auc": roc_auc(y_true, probabilities),
    }


def roc_auc(y_true: np.ndarray, probabilities: np.ndarray) -> float | None:
    """Binary ROC-AUC (positive = class 0, the first named group) or one-vs-rest macro; None if undefined.

    The one-vs-rest average is over the classes present in ``y_true`` (an absent class has no ROC
    curve); with fewer than two classes present there is none at all.
    """
    from sklearn import metrics as skm
    from sklearn.exceptions import UndefinedMetricWarning

    present = np.unique(y_true)
    if len(present) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        if probabilities.shape[1] == 2:
            return float(skm.roc_auc_score(y_true == 0, probabilities[:, 0]))
        scores = [skm.roc_auc_score(y_true == k, probabilities[:, k]) for k in present]
    return float(np.mean(scores))


def per_class_scores(matrix: np.ndarray) -> dict[str, Any]:
    """Per-class precision, recall, F1 and support (arrays) and their averages, from a confusion matrix."""
    return _per_class(matrix)


def _per_class(matrix: np.ndarray) -> dict[str, Any]:
    """Per-class and averaged scores from a confusion matrix, without 0/0 anywhere.

    A present class the model never predicts has precision 0 (scikit-learn's ``zero_division=0``).
    """
    tp = np.diag(matrix).astype(np.float64)
    support = matrix.sum(1)
    predicted = matrix.sum(0)
    present = support > 0
    precision = tp / np.maximum(predicted, 1)
    recall = tp / np.maximum(support, 1)
    f1 = 2 * tp / np.maximum(support + predicted, 1)
    total = int(support.sum())
    return {
        "present": present, "support": support, "predicted": predicted,
        "precision": precision, "recall": recall, "f1": f1,
        "accuracy": float(tp.sum() / max(total, 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "macro_precision": float(precision[present].mean()) if present.any() else 0.0,
        "macro_recall": float(recall[present].mean()) if present.any() else 0.0,
        "weighted_f1": float((f1 * support).sum() / max(total, 1)),
    }


def _kappa(matrix: np.ndarray) -> float | None:
    """Cohen's kappa (as scikit-learn's, unweighted); None where chance agreement is already 1."""
    total = matrix.sum()
    if total == 0:
        return None
    observed = np.trace(matrix) / total
    expected = float((matrix.sum(1) * matrix.sum(0)).sum()) / total**2
    if expected >= 1.0:
        return None
    return float((observed - expected) / (1.0 - expected))
