"""``geoclass predict``: classify a scene (or, with --batch, many scenes) into a land-cover map."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from geoclass.cli.options import (
    PANEL_MODEL,
    PANEL_OUTPUT,
    AmpOpt,
    BandsOpt,
    BatchSizeOpt,
    DeviceOpt,
    JsonOpt,
    ModelOpt,
    NodataOpt,
    OverwriteOpt,
    ResumeOpt,
    WorkersOpt,
    check_exclusive,
    output_option,
)
from geoclass.cli.render import cli_state, make_console, make_progress_callback, print_json

if TYPE_CHECKING:
    from geoclass.engine.predict import BatchResult, PredictResult

PANEL_WINDOWS = "Windows"
PANEL_VECTOR = "Vector output"
PANEL_CLUSTER = "Many scenes, many machines"

StrategyChoice = Literal["auto", "windows", "dense", "pixel"]


def _output_file(
    flag: str, metavar: str, help_text: str, panel: str = PANEL_OUTPUT
) -> typer.models.OptionInfo:
    return typer.Option(
        flag, metavar=metavar, help=help_text, rich_help_panel=panel, show_default=False
    )


def predict(
    ctx: typer.Context,
    output: Annotated[
        Path,
        output_option(
            "The class map: a GeoTIFF with the scene's grid, CRS and class names. With --batch, "
            "the folder of the maps (created if missing).",
            "MAP.tif",
        ),
    ],
    scenes: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="SCENE",
            help="The scene: one multi-band raster, or single-band rasters stacked in the order "
            "given (any GDAL-readable path: GeoTIFF, JP2, VRT, /vsicurl/ URL). Any size: it is "
            "read window by window. Not with --batch.",
            show_default=False,
        ),
    ] = None,
    model: ModelOpt = None,
    strategy: Annotated[
        StrategyChoice,
        typer.Option(
            "--strategy",
            metavar="NAME",
            help="How the model is run over the scene. windows: one forward pass per chip "
            "window, overlapping by --overlap (any model). dense: a chip classifier run fully "
            "convolutionally over large windows, scoring a chip every --output-stride pixels "
            "(about 2.4x the speed and 4x the cells of windows for the shipped model; tiled "
            "equals whole-scene output exactly); for CNNs whose head is global pooling + "
            "linear. pixel: per-pixel models (geoclass train SCENE --labels ...), in 512 px "
            "windows overlapping by their neighbourhood. auto: pixel for per-pixel models, "
            "dense where the model supports it, else windows (windows whenever --overlap is "
            "given).",
            rich_help_panel=PANEL_MODEL,
        ),
    ] = "auto",
    output_stride: Annotated[
        int | None,
        typer.Option(
            "--output-stride",
            min=1,
            metavar="PX",
            help="With the dense strategy: pixels between the chip positions scored (a multiple "
            "of the model's feature stride that divides its chip size); each pixel takes the "
            "class of the nearest chip centre, so smaller is finer. Default: the finest grid the "
            "model allows (16 px for the shipped model).",
            rich_help_panel=PANEL_MODEL,
            show_default=False,
        ),
    ] = None,
    bands: BandsOpt = None,
    nodata: NodataOpt = None,
    window: Annotated[
        int | None,
        typer.Option(
            "--window",
            min=1,
            metavar="PX",
            help="Window side in pixels. Default: the model's chip size (windows; segmenters may "
            "take another size), or fitted to the scene (dense: up to 1536 px plus the model's "
            "halo, 1696 px for the shipped model; larger windows waste less on the halo but "
            "hold more memory).",
            rich_help_panel=PANEL_WINDOWS,
            show_default=False,
        ),
    ] = None,
    stride: Annotated[
        int | None,
        typer.Option(
            "--stride",
            min=1,
            metavar="PX",
            help="Step between model windows in pixels. Default: from --overlap (windows), "
            "the window less its halo (dense).",
            rich_help_panel=PANEL_WINDOWS,
            show_default=False,
        ),
    ] = None,
    overlap: Annotated[
        float | None,
        typer.Option(
            "--overlap",
            min=0.0,
            max=0.9,
            metavar="FRACTION",
            help="Overlap between neighbouring windows of the windows strategy; overlapping "
            "scores are blended, which removes seams (given with --strategy auto, it picks "
            "windows). Default: 0.5 for chip classifiers, 0.25 for segmentation models.",
            rich_help_panel=PANEL_WINDOWS,
            show_default=False,
        ),
    ] = None,
    tta: Annotated[
        bool,
        typer.Option(
            "--tta",
            help="Test-time augmentation: average over two flips and a rotation (about 4x slower).",
            rich_help_panel=PANEL_WINDOWS,
        ),
    ] = False,
    probabilities: Annotated[
        Path | None,
        _output_file(
            "--probabilities",
            "PROBS.tif",
            "Also write per-class probabilities: one uint8 band per class, value / 250 "
            "(the band's GDAL scale) is the probability.",
        ),
    ] = None,
    confidence: Annotated[
        bool,
        typer.Option(
            "--confidence",
            help="Also write each pixel's confidence (the winning class's probability, in "
            "percent) to MAP.confidence.tif, beside MAP.",
            rich_help_panel=PANEL_OUTPUT,
        ),
    ] = False,
    preview: Annotated[
        Path | None,
        _output_file(
            "--preview",
            "PREVIEW.png",
            "Also write a small coloured preview of the map with a legend.",
        ),
    ] = None,
    cog: Annotated[
        bool,
        typer.Option(
            "--cog",
            help="Write MAP (and PROBS, confidence) as Cloud-Optimized GeoTIFFs, with overviews.",
            rich_help_panel=PANEL_OUTPUT,
        ),
    ] = False,
    vector: Annotated[
        Path | None,
        _output_file(
            "--vector",
            "OUT.gpkg",
            "Also write the map as polygons with a class attribute (.gpkg, .geojson or .shp).",
            PANEL_VECTOR,
        ),
    ] = None,
    min_area: Annotated[
        float | None,
        typer.Option(
            "--min-area",
            min=0.0,
            metavar="M2",
            help="Drop polygons smaller than this area, in the map's CRS units squared "
            "(square metres for a projected CRS).",
            rich_help_panel=PANEL_VECTOR,
            show_default=False,
        ),
    ] = None,
    simplify: Annotated[
        float | None,
        typer.Option(
            "--simplify",
            min=0.0,
            metavar="TOL",
            help="Simplify polygon outlines with this tolerance, in the map's CRS units.",
            rich_help_panel=PANEL_VECTOR,
            show_default=False,
        ),
    ] = None,
    batch_size: BatchSizeOpt = 64,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    amp: AmpOpt = "auto",
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    dask: Annotated[
        str | None,
        typer.Option(
            "--dask",
            metavar="ADDRESS",
            envvar="GEOCLASS_DASK",
            help="Score the windows on a running Dask cluster (tcp://host:8786; needs "
            "pip install 'geoclass\\[dask]'). The workers must see the scene and model at the same "
            "paths (shared file system) or URLs; the map is the same bytes as a local run.",
            rich_help_panel=PANEL_CLUSTER,
            show_default=False,
        ),
    ] = None,
    batch: Annotated[
        Path | None,
        typer.Option(
            "--batch",
            metavar="LIST.txt",
            help="Predict many scenes: a text file with one scene per line (several files on a "
            "line are stacked; quote paths with spaces; # comments; paths relative to the "
            "list's folder). -o is then a folder that gets one map per scene, named after its "
            "first file, and mosaic.vrt over the maps when they share a grid. Every scene is "
            "checked before the first map is begun; --resume skips finished maps. --preview "
            "names a folder for one PNG per map; --probabilities and --vector do not apply.",
            rich_help_panel=PANEL_CLUSTER,
            show_default=False,
        ),
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Classify a scene of any size into a land-cover map.

    The map keeps the scene's grid and CRS; the other outputs are optional.
    Without -m, the model shipped with geoclass is used. --batch LIST.txt predicts many scenes.
    """
    if bool(scenes) == (batch is not None):
        text = "give SCENE or --batch, not both" if scenes else "give a SCENE or --batch LIST.txt"
        raise typer.BadParameter(text, param_hint="'SCENE' / '--batch'")
    check_exclusive(stride=stride, overlap=overlap)
    check_exclusive(overwrite=overwrite, resume=resume)
    if vector is None:
        for flag, value in (("--min-area", min_area), ("--simplify", simplify)):
            if value is not None:
                raise typer.BadParameter("only applies with --vector", param_hint=f"'{flag}'")
    from geoclass.engine.predict import BatchResult, PredictConfig, predict_batch
    from geoclass.engine.predict import predict as run_predict

    config = PredictConfig(
        scenes=scenes or [],
        output=output,
        model=model,
        bands=bands,
        nodata=nodata,
        window=window,
        stride=stride,
        overlap=overlap,
        tta=tta,
        strategy=strategy,
        output_stride=output_stride,
        probabilities=probabilities,
        confidence=confidence,
        preview=preview,
        cog=cog,
        vector=vector,
        min_area=min_area,
        simplify=simplify,
        batch_size=batch_size,
        workers=workers,
        device=device,
        amp=amp,
        resume=resume,
        overwrite=overwrite,
        dask=dask,
    )
    callback, live = make_progress_callback(cli_state(ctx).quiet)
    with live:
        if batch is not None:
            result: PredictResult | BatchResult = predict_batch(batch, output, config, callback)
        else:
            result = run_predict(config, progress=callback)
    if json_output:
        print_json(result)
        return
    lines = batch_lines(result) if isinstance(result, BatchResult) else [summary_line(result)]
    console = make_console(stderr=False)
    for line in lines:
        console.print(line, soft_wrap=True, markup=False)


def batch_lines(result: BatchResult) -> list[str]:
    """One line per map of a batch (finished maps that were skipped say so), then the VRT's."""
    from geoclass.engine.predict import PredictResult

    lines = [
        summary_line(item) if isinstance(item, PredictResult) else f"{item.output}: {item.reason}, skipped"
        for item in result.results
    ]
    if result.vrt is not None:
        lines.append(f"{result.vrt}: VRT over the {len(result.results)} maps ({result.seconds:.1f}s in all)")
    else:
        lines.append(f"no mosaic.vrt: {result.vrt_reason}")
    return lines


def summary_line(result: PredictResult) -> str:
    """One line for the terminal: what was written, the main classes and the speed."""
    total = max(result.valid_pixels, 1)
    shares = sorted(result.class_pixels.items(), key=lambda kv: -kv[1])
    top = ", ".join(f"{name} {100 * n / total:.0f}%" for name, n in shares[:4] if n)
    if len(shares) > 4 and any(n for _, n in shares[4:]):
        top += ", ..."
    outputs = (result.probabilities, result.confidence, result.vector, result.preview)
    extras = [p for p in outputs if p]
    also = f"; also {', '.join(str(p) for p in extras)}" if extras else ""
    resumed = f", resumed at row {result.resumed_from_row}" if result.resumed_from_row else ""
    return (
        f"{result.output}: {result.width}x{result.height} px, {top or 'no valid pixels'} "
        f"({result.seconds:.1f}s, {result.megapixels_per_second:.2f} MP/s{resumed}){also}"
    )
