"""``geoclass tile``: cut a labelled scene into training chips."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.text import Text

from geoclass.cli.options import (
    PANEL_INPUT,
    BandsOpt,
    JsonOpt,
    NodataOpt,
    OverwriteOpt,
    ResumeOpt,
    SeedOpt,
    check_exclusive,
    output_option,
)
from geoclass.cli.render import (
    cli_state,
    make_console,
    make_progress_callback,
    print_json,
)

if TYPE_CHECKING:
    from geoclass.data.tiling import TileResult

_REASONS = {
    "nodata": "all nodata",
    "too_much_nodata": "too much nodata",
    "unlabelled": "unlabelled",
    "under_labelled": "under-labelled",
}

PANEL_CHIPS = "Chips"
PANEL_SPLIT = "Train/validation split"


def tile(
    ctx: typer.Context,
    scenes: Annotated[
        list[str],
        typer.Argument(
            metavar="SCENE",
            help="The scene: one multi-band raster, or single-band rasters stacked in the order "
            "given (any GDAL-readable path: GeoTIFF, JP2, VRT, /vsicurl/ URL).",
            show_default=False,
        ),
    ],
    output: Annotated[Path, output_option("Folder for the chips and their index.", "OUT_DIR")],
    labels: Annotated[
        str | None,
        typer.Option(
            "--labels",
            metavar="LABELS",
            help="Labels: polygons or points (GeoPackage, GeoJSON, Shapefile) or a class raster. "
            "Reprojected to the scene's CRS when needed. Without labels, chips are unlabelled.",
            rich_help_panel=PANEL_INPUT,
            show_default=False,
        ),
    ] = None,
    label_field: Annotated[
        str | None,
        typer.Option(
            "--label-field",
            metavar="FIELD",
            help="Attribute of vector labels that holds the class (name or integer id).",
            rich_help_panel=PANEL_INPUT,
            show_default=False,
        ),
    ] = None,
    classes: Annotated[
        Path | None,
        typer.Option(
            "--classes",
            metavar="FILE",
            help="Class names, one per line (or a JSON list), in class-id order, or a JSON "
            "object {name: label value}. Default: the label values found, sorted.",
            rich_help_panel=PANEL_INPUT,
            show_default=False,
        ),
    ] = None,
    label_colors: Annotated[
        Path | None,
        typer.Option(
            "--label-colors",
            metavar="FILE",
            help="The labels are colour-coded masks (RGB PNG/TIFF, or one band with a colour "
            "table); FILE says which colour is which class: JSON {\"Water\": \"#E2A929\", ..., "
            "\"ignore\": [\"#9B9B9B\", \"#000000\"]}, a classes.json with title/color (a class "
            "titled Unlabeled is ignored), or a QGIS colour map export. A colour in a mask that "
            "FILE lacks is an error listing it.",
            rich_help_panel=PANEL_INPUT,
            show_default=False,
        ),
    ] = None,
    bands: BandsOpt = None,
    size: Annotated[
        int,
        typer.Option(
            "--size", min=8, metavar="PX", help="Chip size in pixels.", rich_help_panel=PANEL_CHIPS
        ),
    ] = 64,
    stride: Annotated[
        int | None,
        typer.Option(
            "--stride",
            min=1,
            metavar="PX",
            help="Step between chips in pixels. Default: the chip size (no overlap).",
            rich_help_panel=PANEL_CHIPS,
            show_default=False,
        ),
    ] = None,
    task: Annotated[
        Literal["classify", "segment"],
        typer.Option(
            "--task",
            help="classify: one class per chip (the majority label); "
            "segment: a label mask per chip.",
            rich_help_panel=PANEL_CHIPS,
        ),
    ] = "classify",
    sample: Annotated[
        Literal["grid", "labels"],
        typer.Option(
            "--sample",
            help="grid: chips on a regular grid; labels: a chip centred on each point and on "
            "--per-feature points inside each polygon or line, for sparse labels (use with "
            "--task segment: masks are 255 where unlabelled).",
            rich_help_panel=PANEL_CHIPS,
        ),
    ] = "grid",
    per_feature: Annotated[
        int,
        typer.Option(
            "--per-feature",
            min=1,
            metavar="N",
            help="With --sample labels: chips per polygon or line (its representative point, "
            "then random points inside it).",
            rich_help_panel=PANEL_CHIPS,
        ),
    ] = 1,
    min_labelled: Annotated[
        float | None,
        typer.Option(
            "--min-labelled",
            min=0.0,
            max=1.0,
            metavar="FRACTION",
            help="Keep a chip only if at least this fraction of it is labelled. Default: 0.5 on "
            "the grid, 0 with --sample labels.",
            rich_help_panel=PANEL_CHIPS,
            show_default=False,
        ),
    ] = None,
    max_nodata: Annotated[
        float,
        typer.Option(
            "--max-nodata",
            min=0.0,
            max=1.0,
            metavar="FRACTION",
            help="Drop chips with more than this fraction of nodata pixels.",
            rich_help_panel=PANEL_CHIPS,
        ),
    ] = 0.0,
    val_fraction: Annotated[
        float,
        typer.Option(
            "--val-fraction",
            min=0.0,
            max=0.9,
            metavar="FRACTION",
            help="Share of chips set aside for validation (0 for none).",
            rich_help_panel=PANEL_SPLIT,
        ),
    ] = 0.2,
    block_size: Annotated[
        int,
        typer.Option(
            "--block-size",
            min=1,
            metavar="CHIPS",
            help="Spatial split: whole blocks of NxN chips go to train or validation, so "
            "neighbouring chips do not leak across the split. 1 splits chip by chip.",
            rich_help_panel=PANEL_SPLIT,
        ),
    ] = 8,
    nodata: NodataOpt = None,
    seed: SeedOpt = 0,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Cut a scene and its labels into chips for training.

    Writes the chips and an index of them (class, position, split) to OUT_DIR.
    The chip grid covers the whole scene, edges included.
    """
    check_exclusive(overwrite=overwrite, resume=resume)
    from geoclass.data.tiling import TileConfig
    from geoclass.data.tiling import tile as run_tile

    config = TileConfig(
        scenes=scenes,
        output=output,
        labels=labels,
        label_field=label_field,
        classes=classes,
        label_colors=label_colors,
        bands=bands,
        size=size,
        stride=stride,
        task=task,
        min_labelled=min_labelled if min_labelled is not None else (0.0 if sample == "labels" else 0.5),
        sample=sample,
        per_feature=per_feature,
        max_nodata=max_nodata,
        val_fraction=val_fraction,
        block_size=block_size,
        seed=seed,
        overwrite=overwrite,
        resume=resume,
        nodata=nodata,
        command=_command_line(),
    )
    callback, live = make_progress_callback(cli_state(ctx).quiet)
    with live:
        result = run_tile(config, progress=callback)
    if json_output:
        print_json(result)
    else:
        _print_summary(result)


def _command_line() -> str | None:
    """The command as typed, when run as ``geoclass`` (not, e.g., from a test runner)."""
    prog = Path(sys.argv[0]).name if sys.argv else ""
    if not prog.startswith("geoclass"):
        return None
    return shlex.join(["geoclass", *sys.argv[1:]])


def _print_summary(result: TileResult) -> None:
    """A few lines on stdout: chips per split and class, and why windows were skipped."""
    console = make_console(stderr=False)
    train, val = result.split_total("train"), result.split_total("val")
    head = Text(f"{result.chips:,} chips", style="bold")
    head.append(f" ({train:,} train, {val:,} val) in {result.output}")
    if result.reused:
        head.append(f"; {result.reused:,} kept from the earlier run")
    console.print(head, soft_wrap=True)
    if result.classes and result.pixel_counts:
        # Segmentation: what the masks hold, in pixels (the chips' majority class hides the rest).
        width = max(len(c) for c in result.classes)
        totals = {s: max(sum(result.pixel_counts.get(s, {}).values()), 1) for s in ("train", "val")}
        for name in result.classes:
            shares = [100 * result.pixel_counts.get(s, {}).get(name, 0) / totals[s] for s in ("train", "val")]
            line = f"  {name:<{width}}  {shares[0]:5.1f}% of train px  {shares[1]:5.1f}% of val px"
            console.print(Text(line), soft_wrap=True)
    elif result.classes:
        width = max(len(c) for c in result.classes)
        for name in result.classes:
            n_train = result.counts["train"].get(name, 0)
            n_val = result.counts["val"].get(name, 0)
            line = f"  {name:<{width}}  {n_train:>7,} train  {n_val:>6,} val"
            console.print(Text(line), soft_wrap=True)
    skipped = {k: v for k, v in result.skipped.items() if v}
    if skipped:
        reasons = ", ".join(f"{v:,} {_REASONS.get(k, k)}" for k, v in skipped.items())
        line = f"skipped {sum(skipped.values()):,} of {result.windows:,} windows: {reasons}"
        console.print(Text(line, style="dim"), soft_wrap=True)
