"""``geoclass mosaic``: join class maps of neighbouring scenes into one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from geoclass.cli.options import PANEL_INPUT, PANEL_OUTPUT, NodataOpt, OverwriteOpt, output_option
from geoclass.cli.render import cli_state, make_progress_callback
from geoclass.engine.mosaic import MosaicConfig, MosaicInput
from geoclass.engine.mosaic import mosaic as run_mosaic


def parse_input(text: str) -> MosaicInput:
    """One INPUT argument: a file, or ``a.tif,b.tif,c.tif`` stacked into one scene.

    A name that exists as a file is always that file (file names may contain commas); only a name
    that does not exist and whose comma-separated parts all exist is read as a stack.
    """
    if Path(text).exists() or "," not in text:
        return MosaicInput((Path(text),))
    parts = [p.strip() for p in text.split(",")]
    if all(p and Path(p).is_file() for p in parts):
        return MosaicInput(tuple(Path(p) for p in parts))
    return MosaicInput((Path(text),))  # reported as not found, under the name given


def mosaic(
    ctx: typer.Context,
    inputs: Annotated[
        list[str],
        typer.Argument(
            metavar="INPUT",
            help="Class maps written by 'geoclass predict' (they must share their classes), or raw "
            "scenes with the same band count. B2.tif,B3.tif,B4.tif stacks single-band files "
            "into one input.",
            show_default=False,
        ),
    ],
    output: Annotated[Path, output_option("The mosaic (GeoTIFF, or VRT with --vrt).", "OUT.tif")],
    method: Annotated[
        Literal["first", "last", "max-confidence"],
        typer.Option(
            "--method",
            help="Where maps overlap, take the first or last map given, or the most confident "
            "prediction (needs maps written with --confidence).",
        ),
    ] = "first",
    crs: Annotated[
        str | None,
        typer.Option(
            "--crs",
            metavar="EPSG:N",
            help="CRS of the mosaic. Default: the first input's CRS.",
            show_default=False,
        ),
    ] = None,
    res: Annotated[
        float | None,
        typer.Option(
            "--res",
            min=0.0,
            metavar="R",
            help="Pixel size in CRS units. Default: the finest input resolution.",
            show_default=False,
        ),
    ] = None,
    nodata: NodataOpt = None,
    resampling: Annotated[
        str | None,
        typer.Option(
            "--resampling",
            metavar="NAME",
            help="Resampling of reprojected inputs. Default: nearest for class maps (or mode), "
            "bilinear for scenes.",
            rich_help_panel=PANEL_INPUT,
            show_default=False,
        ),
    ] = None,
    vrt: Annotated[
        bool,
        typer.Option(
            "--vrt",
            help="Write a GDAL VRT that references the inputs instead of copying pixels "
            "(instant, but the inputs must stay in place and share one grid).",
            rich_help_panel=PANEL_OUTPUT,
        ),
    ] = False,
    overwrite: OverwriteOpt = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Write the mosaic even when its canvas is huge and mostly empty (inputs far "
            "apart: over 250 megapixels and over 4x the pixels the inputs cover).",
            rich_help_panel=PANEL_OUTPUT,
        ),
    ] = False,
) -> None:
    """Mosaic class maps of neighbouring scenes into one map.

    Maps in other CRSs are reprojected (nearest neighbour: classes stay classes). Inputs
    without a CRS are joined when they all lack one and share one pixel grid.
    """
    config = MosaicConfig(
        inputs=[parse_input(text) for text in inputs],
        output=output,
        method=method,
        crs=crs,
        res=res,
        vrt=vrt,
        overwrite=overwrite,
        nodata=nodata,
        resampling=resampling,
        force=force,
    )
    callback, live = make_progress_callback(cli_state(ctx).quiet)
    with live:
        result = run_mosaic(config, progress=callback)
    what = f"{len(result.classes)} classes" if result.classes else f"{result.count} band(s)"
    covered = "" if result.valid_fraction is None else f", {result.valid_fraction:.1%} with data"
    typer.echo(
        f"wrote {result.output} ({result.format}): {result.width}x{result.height} px, "
        f"{result.crs or 'no CRS'}, {what}, {len(result.inputs)} inputs"
        f"{f' ({len(result.reprojected)} reprojected)' if result.reprojected else ''}{covered}"
    )
