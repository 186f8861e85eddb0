"""``geoclass eval``: measure a model on labelled chips."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from geoclass.cli.options import (
    PANEL_INPUT,
    PANEL_OUTPUT,
    BatchSizeOpt,
    DeviceOpt,
    GroupOpt,
    JsonOpt,
    ModelOpt,
    WorkersOpt,
    default_workers,
    parse_groups,
)


def evaluate(
    ctx: typer.Context,
    data: Annotated[
        Path,
        typer.Argument(
            metavar="DATA",
            help="Labelled data: chips written by 'geoclass tile', or a folder with one "
            "sub-folder of images per class.",
            show_default=False,
        ),
    ],
    model: ModelOpt = None,
    split: Annotated[
        Path | None,
        typer.Option(
            "--split",
            metavar="CSV",
            help="Evaluate only the files listed in CSV (columns path,label; paths relative to "
            "DATA). Default: the validation chips of a tiled dataset, else all of DATA.",
            rich_help_panel=PANEL_INPUT,
            show_default=False,
        ),
    ] = None,
    groups: GroupOpt = None,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            metavar="REPORT.json",
            help="Write the full report (per-class precision/recall/F1, confusion matrix) as JSON.",
            rich_help_panel=PANEL_OUTPUT,
            show_default=False,
        ),
    ] = None,
    plots: Annotated[
        Path | None,
        typer.Option(
            "--plots",
            metavar="DIR",
            help="Write plots (confusion matrix, per-class scores) as PNG files into DIR.",
            rich_help_panel=PANEL_OUTPUT,
            show_default=False,
        ),
    ] = None,
    batch_size: BatchSizeOpt = 128,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    json_output: JsonOpt = False,
) -> None:
    """Measure a model's accuracy on labelled chips, overall and per class.

    With --group, groups of classes are also scored as one (e.g. all crops).
    """
    from geoclass.cli.render import cli_state, make_progress_callback, print_json
    from geoclass.engine.evaluate import EvalConfig
    from geoclass.engine.evaluate import evaluate as run_evaluation

    config = EvalConfig(
        data=str(data), model=model, split_csv=None if split is None else str(split),
        groups=parse_groups(groups), batch_size=batch_size,
        workers=default_workers() if workers is None else workers, device=device,
        report=None if report is None else str(report), plots=None if plots is None else str(plots),
    )
    callback, live = make_progress_callback(cli_state(ctx).quiet)
    with live:
        result = run_evaluation(config, progress=callback)
    if json_output:
        print_json(result)
    else:
        _print_report(result)


def _print_report(result: dict[str, Any]) -> None:
    """A per-class table and the headline numbers, on stdout."""
    from rich.table import Table

    from geoclass.cli.render import make_console

    console = make_console(stderr=False)
    absent = result.get("classes_absent") or []
    if result.get("task") == "segment":
        table = Table("class", "IoU", title="per-class IoU")
        for name, iou in zip(result["classes"], result["iou"]):
            table.add_row(name, "absent" if name in absent else _number(iou))
        console.print(table)
        console.print(f"pixel accuracy {result['pixel_accuracy']:.4f}   mean IoU {result['mean_iou']:.4f}"
                      f"{_over(result)}")
        return
    table = Table("class", "precision", "recall", "F1", "support", title=f"{result['samples']} chips")
    for name, row in result["per_class"].items():
        support = f"{row['support']} (absent)" if row.get("absent") else str(row["support"])
        table.add_row(name, _number(row["precision"]), _number(row["recall"]), _number(row["f1"]), support)
    console.print(table)
    console.print(
        f"accuracy {result['accuracy']:.4f}   macro F1 {result['macro_f1']:.4f}{_over(result)}   "
        f"weighted F1 {result['weighted_f1']:.4f}   kappa {_number(result['cohen_kappa'])}   "
        f"ROC-AUC {_number(result.get('roc_auc'))}"
    )


def _number(value: float | None) -> str:
    """Four decimals, or ``-`` for a metric that is undefined on this data."""
    return "-" if value is None else f"{value:.4f}"


def _over(result: dict[str, Any]) -> str:
    """`` (over N of M classes)`` when some of the model's classes are absent from the data."""
    if not result.get("classes_absent"):
        return ""
    return f" (over {len(result['macro_over'])} of {len(result['classes'])} classes)"
