"""Accuracy metrics for classifiers and segmenters (scikit-learn underneath)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics as skm


def classification_summary(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, float]:
    """Overall accuracy and macro F1: the numbers watched during training."""
    labels = list(range(num_classes))
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "macro_f1": float(skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
    }


def segmentation_summary(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, ignore_index: int) -> dict[str, Any]:
    """Pixel accuracy, per-class IoU and mean IoU over labelled pixels."""
    valid = y_true != ignore_index
    truth, pred = y_true[valid].ravel(), y_pred[valid].ravel()
    matrix = np.bincount(truth * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)
    intersection = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - intersection
    present = union > 0
    iou = np.where(present, intersection / np.maximum(union, 1), np.nan)
    return {
        "pixel_accuracy": float(intersection.sum() / max(matrix.sum(), 1)),
        "iou": [None if np.isnan(v) else float(v) for v in iou],
        "mean_iou": float(np.nanmean(iou)) if present.any() else 0.0,
        "confusion_matrix": matrix.tolist(),
    }


def classification_report(y_true: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """The full report: per-class precision/recall/F1, macro/weighted F1, kappa, ROC-AUC, confusion matrix."""
    labels = list(range(len(classes)))
    y_pred = probabilities.argmax(1)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    report: dict[str, Any] = {
        "samples": int(len(y_true)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "macro_f1": float(skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(skm.f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "cohen_kappa": float(skm.cohen_kappa_score(y_true, y_pred, labels=labels)),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i])}
            for i, name in enumerate(classes)
        },
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "classes": list(classes),
    }
    report["roc_auc"] = roc_auc(y_true, probabilities)
    return report


def roc_auc(y_true: np.ndarray, probabilities: np.ndarray) -> float | None:
    """Binary ROC-AUC (positive = class 0, the first named group) or one-vs-rest macro; None if undefined."""
    present = np.unique(y_true)
    if len(present) < 2:
        return None
    if probabilities.shape[1] == 2:
        return float(skm.roc_auc_score(y_true == 0, probabilities[:, 0]))
    # One-vs-rest over the classes present in the data (absent classes have no ROC curve).
    scores = [skm.roc_auc_score(y_true == k, probabilities[:, k]) for k in present]
    return float(np.mean(scores))
