"""``geoclass sample``: a stratified random sample of a class map, for labelling reference data."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from geoclass.cli.options import (
    JsonOpt,
    NodataOpt,
    OverwriteOpt,
    SeedOpt,
    output_option,
)
from geoclass.cli.render import cli_state, make_console, make_progress_callback, print_json

if TYPE_CHECKING:
    from geoclass.accuracy.sample import SampleResult

PANEL_ALLOCATION = "Allocation"


def parse_expected_accuracy(items: list[str] | None) -> tuple[float | None, dict[str, float]]:
    """``--expected-accuracy`` values: ``0.85`` for every class, ``CLASS=0.7`` for one class.

    Returns:
        ``(default, by_class)``; ``default`` is None when no plain number was given.

    Raises:
        typer.BadParameter: A value is not a number, or a plain number is given twice.
    """
    default: float | None = None
    by_class: dict[str, float] = {}
    for item in items or []:
        label, sep, number = item.rpartition("=")
        try:
            value = float(number)
        except ValueError:
            raise typer.BadParameter(
                f"{item!r}: expected a number such as 0.85, or CLASS=0.85 for one class",
                param_hint="'--expected-accuracy'",
            ) from None
        if not 0 < value < 1 or not math.isfinite(value):
            raise typer.BadParameter(
                f"{item!r}: an expected accuracy is between 0 and 1 (exclusive)",
                param_hint="'--expected-accuracy'",
            )
        if not sep:
            if default is not None:
                raise typer.BadParameter(
                    "give one accuracy for all classes, and CLASS=U for single classes",
                    param_hint="'--expected-accuracy'",
                )
            default = value
        elif not label.strip():
            raise typer.BadParameter(f"{item!r}: the class name is missing", param_hint="'--expected-accuracy'")
        else:
            by_class[label.strip()] = value
    return default, by_class


def sample(
    ctx: typer.Context,
    map_path: Annotated[
        Path,
        typer.Argument(
            metavar="MAP",
            help="A class map: one band of class values, from 'geoclass predict' or any other "
            "tool. Any size: it is read block by block.",
            show_default=False,
        ),
    ],
    points: Annotated[
        int,
        typer.Option(
            "-n",
            "--points",
            min=1,
            metavar="N",
            help="Number of sample points in all.",
            rich_help_panel=PANEL_ALLOCATION,
            show_default=False,
        ),
    ],
    output: Annotated[
        Path,
        output_option(
            "The sample points (.gpkg, .geojson or .shp), in the map's CRS, with map_class, "
            "map_class_name and an empty reference field to fill in.",
            "SAMPLE.gpkg",
        ),
    ],
    allocation: Annotated[
        Literal["proportional", "equal", "neyman"],
        typer.Option(
            "--allocation",
            help="How the points are shared among the classes: in proportion to their mapped "
            "area, equally, or by Neyman's rule (area x sqrt(U(1-U)), U the expected user's "
            "accuracy).",
            rich_help_panel=PANEL_ALLOCATION,
        ),
    ] = "proportional",
    min_per_class: Annotated[
        int,
        typer.Option(
            "--min-per-class",
            min=0,
            metavar="N",
            help="Points each class gets at least (all its pixels when it has fewer), so rare "
            "classes keep a usable share (Olofsson et al. 2014).",
            rich_help_panel=PANEL_ALLOCATION,
        ),
    ] = 50,
    expected_accuracy: Annotated[
        list[str] | None,
        typer.Option(
            "--expected-accuracy",
            metavar="U|CLASS=U",
            help="Expected user's accuracy for --allocation neyman: one number for every class "
            "(default 0.85), CLASS=U for one class (by name or value). Repeat for more classes.",
            rich_help_panel=PANEL_ALLOCATION,
            show_default=False,
        ),
    ] = None,
    nodata: NodataOpt = None,
    seed: SeedOpt = 0,
    overwrite: OverwriteOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Draw a stratified random sample of a class map's pixels, to label as reference data.

    The strata are the map's classes. Label each point's 'reference' field (e.g. from
    high-resolution imagery), then measure the map's accuracy and class areas with
    'geoclass eval MAP --reference SAMPLE.gpkg --label-field reference'.
    """
    default, by_class = parse_expected_accuracy(expected_accuracy)
    if expected_accuracy and allocation != "neyman":
        raise typer.BadParameter(
            "only applies with --allocation neyman", param_hint="'--expected-accuracy'"
        )
    from geoclass.accuracy.sample import SampleConfig, draw_sample

    config = SampleConfig(
        map_path=map_path,
        output=output,
        n=points,
        allocation=allocation,
        min_per_class=min_per_class,
        expected_accuracy=0.85 if default is None else default,
        expected_accuracy_by_class=by_class,
        seed=seed,
        nodata=nodata,
        overwrite=overwrite,
    )
    callback, live = make_progress_callback(cli_state(ctx).quiet)
    with live:
        result = draw_sample(config, progress=callback)
    if json_output:
        print_json(result)
    else:
        _print_allocation(result, str(map_path))


def _area(m2: float) -> str:
    if not math.isfinite(m2):
        return "-"
    return f"{m2 / 1e4:,.1f}" if m2 < 1e8 else f"{m2 / 1e4:,.0f}"


def _print_allocation(result: SampleResult, map_path: str) -> None:
    """The allocation table and one summary line, on stdout."""
    from rich.table import Table

    console = make_console(stderr=False)
    named = any(s.name for s in result.strata)
    neyman = result.allocation == "neyman"
    table = Table(title=f"{result.allocation} allocation")
    table.add_column("value", justify="right")
    if named:
        table.add_column("class")
    table.add_column("pixels", justify="right")
    table.add_column("area (ha)", justify="right")
    table.add_column("share", justify="right")
    if neyman:
        table.add_column("expected U", justify="right")
    table.add_column("points", justify="right")
    for s in result.strata:
        row = [str(s.value)]
        if named:
            row.append(s.name or "")
        row += [f"{s.pixels:,}", _area(s.area_m2), f"{100 * s.weight:.2f}%"]
        if neyman:
            row.append(f"{s.expected_accuracy:.2f}" if s.expected_accuracy is not None else "")
        row.append(str(s.n))
        table.add_row(*row)
    console.print(table)
    console.print(
        f"{result.path}: {result.n} points from {len(result.strata)} classes "
        f"(at least {result.min_per_class} per class, seed {result.seed}, {result.seconds:.1f}s); "
        f"fill in 'reference', then: geoclass eval {map_path} --reference {result.path} "
        "--label-field reference",
        soft_wrap=True,
        markup=False,
        highlight=False,
    )
