"""What a run records per epoch: metrics.csv, TensorBoard scalars, and the curves plot."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


def open_tensorboard(run_dir: Path) -> Any:
    """A TensorBoard writer into RUN_DIR/tensorboard, or None without tensorboard installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def write_metrics(path: Path, row: dict[str, float], writer: Any) -> None:
    """Append one epoch's ``row`` to the metrics CSV at ``path`` (and to ``writer`` if any)."""
    new = not path.exists()
    with path.open("a", newline="") as handle:
        out = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            out.writeheader()
        out.writerow(row)
    if writer is not None:
        for key, value in row.items():
            if key != "epoch":
                writer.add_scalar(key, value, int(row["epoch"]))


def plot_curves(metrics_csv: Path, out: Path) -> None:
    """Loss and accuracy per epoch, training and validation, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with metrics_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return
    epochs = [int(float(r["epoch"])) for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [float(r["train_loss"]) for r in rows], label="train")
    ax_loss.plot(epochs, [float(r["val_loss"]) for r in rows], label="val")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_loss.legend()
    if "train_accuracy" in rows[0]:
        ax_acc.plot(epochs, [float(r["train_accuracy"]) for r in rows], label="train")
    ax_acc.plot(epochs, [float(r["val_accuracy"]) for r in rows], label="val")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    ax_acc.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
