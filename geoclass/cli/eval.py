"""``geoclass eval``: measure a model on labelled chips, or a classified map against reference data."""

from __future__ import annotations

from collections.abc import Callable
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

PANEL_MAP = "Map accuracy (with --reference)"


def check_map_options(**options: Any) -> None:
    """Usage error for chip-evaluation options given with --reference."""
    given = [name for name, value in options.items() if value]
    if given:
        raise typer.BadParameter("evaluates a model on chips; it cannot be used with --reference",
                                 param_hint=" / ".join(f"'--{n}'" for n in given))


def evaluate(
    ctx: typer.Context,
    data_paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="DATA",
            help="Labelled data: chips written by 'geoclass tile', or a folder with one "
            "sub-folder of images per class. With --label-colors: folders of whole images and "
            "their colour masks (images/ + masks/). With --reference: a classified map (one band "
            "of class values, from geoclass or any other tool).",
            show_default=False,
        ),
    ],
    model: ModelOpt = None,
    label_colors: Annotated[
        Path | None,
        typer.Option(
            "--label-colors",
            metavar="FILE",
            help="DATA are folders of images/ and colour-coded masks/ (see 'geoclass tile "
            "--label-colors'): each image is predicted whole, as 'geoclass predict' would, and "
            "scored against its mask, every pixel once: per-class IoU, precision, recall, F1, "
            "mean IoU, pixel accuracy, confusion matrix.",
            rich_help_panel=PANEL_INPUT,
            show_default=False,
        ),
    ] = None,
    tta: Annotated[
        bool,
        typer.Option("--tta", help="With --label-colors: predict with test-time augmentation.",
                     rich_help_panel=PANEL_INPUT),
    ] = False,
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
            help="Write the full report as JSON (chips: per-class precision/recall/F1, confusion "
            "matrix; a map: accuracies and areas with CIs, error matrices).",
            rich_help_panel=PANEL_OUTPUT,
            show_default=False,
        ),
    ] = None,
    plots: Annotated[
        Path | None,
        typer.Option(
            "--plots",
            metavar="DIR",
            help="Write plots as PNG files into DIR (chips: confusion matrix, ROC curves; a map: "
            "error matrix, mapped vs estimated areas).",
            rich_help_panel=PANEL_OUTPUT,
            show_default=False,
        ),
    ] = None,
    reference: Annotated[
        Path | None,
        typer.Option(
            "--reference",
            metavar="REF",
            help="Assess DATA as a classified map against reference data: points (a sample, "
            "e.g. from 'geoclass sample'), polygons (any OGR format and CRS) or a reference "
            "raster on any grid. Gives user's/producer's/overall accuracy and the area of each "
            "class with 95% confidence intervals (Olofsson et al. 2014).",
            rich_help_panel=PANEL_MAP,
            show_default=False,
        ),
    ] = None,
    label_field: Annotated[
        str | None,
        typer.Option(
            "--label-field",
            metavar="FIELD",
            help="Attribute of the reference features holding the reference class. "
            "Default: the only field, or 'reference' (the field 'geoclass sample' writes).",
            rich_help_panel=PANEL_MAP,
            show_default=False,
        ),
    ] = None,
    class_map: Annotated[
        Path | None,
        typer.Option(
            "--class-map",
            metavar="FILE.json",
            help='JSON {"reference label": "map class name or value"} for a reference legend '
            "that differs from the map's; null drops a label. Default: match by class name, "
            "then by value.",
            rich_help_panel=PANEL_MAP,
            show_default=False,
        ),
    ] = None,
    polygon_areas: Annotated[
        bool,
        typer.Option(
            "--polygon-areas",
            help="Also estimate class areas from reference polygons or a reference raster. "
            "Their pixels are not a probability sample, so the intervals are too narrow.",
            rich_help_panel=PANEL_MAP,
        ),
    ] = False,
    batch_size: BatchSizeOpt = 128,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    json_output: JsonOpt = False,
) -> None:
    """Measure a model's accuracy on labelled chips, overall and per class.

    With --group, groups of classes are also scored as one (e.g. all crops).

    With --reference, DATA is a classified map: its accuracy and the area of each class are
    estimated from the reference data, with 95% confidence intervals.
    """
    if label_colors is not None:
        from geoclass.engine.evaluate_masks import MaskEvalConfig, evaluate_masks

        mask_config = MaskEvalConfig(
            folders=[str(p) for p in data_paths], label_colors=str(label_colors), model=model, tta=tta,
            device=device, report=None if report is None else str(report),
            plots=None if plots is None else str(plots))
        _run_and_report(ctx, lambda progress: evaluate_masks(mask_config, progress=progress), json_output)
        return
    if tta:
        raise typer.BadParameter("applies with --label-colors (whole images)", param_hint="'--tta'")
    if len(data_paths) != 1:
        raise typer.BadParameter("one dataset or map (several folders only with --label-colors)",
                                 param_hint="'DATA'")
    data = data_paths[0]
    if reference is not None:
        check_map_options(model=model, split=split, group=groups)
        _assess_map(ctx, data, reference, label_field, class_map, report, plots, polygon_areas, json_output)
        return
    for name, value in (("label-field", label_field), ("class-map", class_map),
                        ("polygon-areas", polygon_areas)):
        if value is not None and value is not False:
            raise typer.BadParameter("needs --reference (a map assessed against reference data)",
                                     param_hint=f"'--{name}'")
    from geoclass.engine.evaluate import EvalConfig
    from geoclass.engine.evaluate import evaluate as run_evaluation

    config = EvalConfig(
        data=str(data), model=model, split_csv=None if split is None else str(split),
        groups=parse_groups(groups), batch_size=batch_size,
        workers=default_workers() if workers is None else workers, device=device,
        report=None if report is None else str(report), plots=None if plots is None else str(plots),
    )
    _run_and_report(ctx, lambda progress: run_evaluation(config, progress=progress), json_output)


def _run_and_report(ctx: typer.Context, run: Callable[[Any], dict[str, Any]], json_output: bool) -> None:
    """Run an evaluation with the progress display, then print its report (JSON or tables)."""
    from geoclass.cli.render import cli_state, make_progress_callback, print_json

    callback, live = make_progress_callback(cli_state(ctx).quiet)
    with live:
        result = run(callback)
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
        rows = result.get("per_class")
        if rows:  # whole images against their masks
            table = Table("class", "IoU", "precision", "recall", "F1", "pixels",
                          title=f"{result['images']} images, {result['pixels_scored']:,} pixels")
            for name, row in rows.items():
                table.add_row(name, "absent" if name in absent else _number(row["iou"]),
                              _number(row["precision"]), _number(row["recall"]), _number(row["f1"]),
                              f"{row['pixels']:,}")
        else:
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


# --- map accuracy (--reference) ---------------------------------------------------------------


def _assess_map(
    ctx: typer.Context, data: Path, reference: Path, label_field: str | None, class_map: Path | None,
    report: Path | None, plots: Path | None, polygon_areas: bool, json_output: bool,
) -> None:
    """Run ``assess_map`` and print its table (or its JSON)."""
    from geoclass.accuracy.assess import MapAccuracyConfig, assess_map
    from geoclass.cli.render import cli_state, make_progress_callback, print_json

    config = MapAccuracyConfig(
        map=str(data), reference=str(reference), label_field=label_field,
        class_map=None if class_map is None else str(class_map),
        report=None if report is None else str(report), plots=None if plots is None else str(plots),
        polygon_areas=polygon_areas,
    )
    callback, live = make_progress_callback(cli_state(ctx).quiet)
    with live:
        result = assess_map(config, progress=callback)
    if json_output:
        print_json(result)
    else:
        _print_map_report(result)


def _print_map_report(result: dict[str, Any]) -> None:
    """Per class: mapped area, user's and producer's accuracy, estimated area; then overall."""
    from rich import box
    from rich.table import Table

    from geoclass.cli.render import make_console

    console = make_console(stderr=False)
    areas = result["area_estimates"]
    kind = "probability sample" if result["probability_sample"] else "not a probability sample"
    title = f"{result['sample_size']} reference {_unit(result)} ({kind}); ± is the 95% CI half-width"
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("class", overflow="fold", min_width=8)
    for header in ["mapped ha", "n", "user's", "producer's"] + (["estimated ha"] if areas else []):
        table.add_column(header, justify="right", no_wrap=True)
    for name, row in result["classes"].items():
        cells = [name, _area(row["mapped_area_ha"]), str(row["sample_count"]),
                 _pm(row["users_accuracy"]), _pm(row["producers_accuracy"])]
        if areas:
            cells.append(_pm(row["area_ha"], area=True))
        table.add_row(*cells)
    console.print(table)
    console.print(f"overall accuracy {_pm(result['overall_accuracy'])}")
    if not areas:
        console.print("areas not estimated: the reference is not a probability sample (see --polygon-areas)")
    if result.get("classes_without_samples"):
        console.print("no sample in: " + ", ".join(result["classes_without_samples"])
                      + " (left out of the estimates)")


def _unit(result: dict[str, Any]) -> str:
    return "points" if result["reference_kind"] == "points" else "pixels"


def _area(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


def _pm(estimate: dict[str, Any], area: bool = False) -> str:
    """``0.880 ± 0.074`` (or ``21,158 ± 6,158`` for areas); ``-`` when undefined."""
    value, ci = estimate.get("estimate"), estimate.get("ci95")
    if value is None:
        return "-"
    text = _area(value) if area else f"{value:.3f}"
    if ci is None:
        return text
    if area:  # the interval with the estimate's precision
        return f"{text} ± {ci:,.0f}" if abs(value) >= 100 else f"{text} ± {ci:,.2f}"
    return f"{text} ± {ci:.3f}"
