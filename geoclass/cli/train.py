"""``geoclass train``: train a model on a chip dataset, or per pixel on a scene and its labels."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from geoclass.cli.options import (
    PANEL_INPUT,
    PANEL_MODEL,
    PANEL_OUTPUT,
    PANEL_RUNTIME,
    PANEL_TRAINING,
    AmpOpt,
    BandsOpt,
    BatchSizeOpt,
    DeviceOpt,
    GroupOpt,
    JsonOpt,
    NodataOpt,
    OverwriteOpt,
    SeedOpt,
    WorkersOpt,
    default_workers,
    parse_groups,
)

PANEL_LABELS = "Scene + labels (per-pixel models)"


def _path_option(flag: str, metavar: str, help_text: str, panel: str) -> typer.models.OptionInfo:
    return typer.Option(
        flag, metavar=metavar, help=help_text, rich_help_panel=panel, show_default=False
    )


def train(
    ctx: typer.Context,
    data: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="DATA | SCENE...",
            help="Training data: chips written by 'geoclass tile', or a folder with one "
            "sub-folder of images per class (e.g. EuroSAT). With --labels: the scene, one "
            "raster or band files stacked in the order given, as for predict. Required unless "
            "--resume.",
            show_default=False,
        ),
    ] = None,
    labels: Annotated[
        Path | None,
        _path_option(
            "--labels",
            "LABELS",
            "Train a per-pixel model (pixel-mlp) straight from the scene and these labels: "
            "polygons (their pixels), points or lines (the pixels under them, see --buffer) in "
            "any OGR format and CRS, or a class raster on any grid. No chip step.",
            PANEL_LABELS,
        ),
    ] = None,
    label_field: Annotated[
        str | None,
        _path_option("--label-field", "FIELD", "Class attribute of vector labels.", PANEL_LABELS),
    ] = None,
    more_scenes: Annotated[
        Path | None,
        _path_option(
            "--more-scenes",
            "FILE",
            'Further labelled scenes of the same bands: a JSON list of {"scenes": [files], '
            '"labels": file}, paths relative to FILE.',
            PANEL_LABELS,
        ),
    ] = None,
    classes: Annotated[
        Path | None,
        _path_option(
            "--classes",
            "FILE",
            "Class names: one per line, a JSON list, {name: value}, or {name: [values]} to "
            'group label values, e.g. {"water": ["water", "wetland"], "agri": ["farm", '
            '"meadow"]}. Default: each label value is a class.',
            PANEL_LABELS,
        ),
    ] = None,
    bands: BandsOpt = None,
    nodata: NodataOpt = None,
    band_names: Annotated[
        str | None,
        _path_option(
            "--band-names",
            "N,N,...",
            "Common names of the bands (blue, green, red, nir, swir1, swir2, rededge1..3, "
            "coastal, or Sentinel-2 ids like B08), for spectral indices (NDVI, NDWI, MNDWI, "
            "NDBI). Default: from Sentinel-2 file names or band descriptions.",
            PANEL_LABELS,
        ),
    ] = None,
    texture: Annotated[
        int,
        typer.Option(
            "--texture",
            min=0,
            max=8,
            metavar="R",
            help="Also use the mean and standard deviation of each band over (2R+1) px squares.",
            rich_help_panel=PANEL_LABELS,
        ),
    ] = 1,
    max_per_class: Annotated[
        int,
        typer.Option(
            "--max-per-class",
            min=10,
            metavar="N",
            help="Labelled pixels sampled per class at most (a uniform random sample).",
            rich_help_panel=PANEL_LABELS,
        ),
    ] = 20000,
    buffer: Annotated[
        int,
        typer.Option(
            "--buffer",
            min=0,
            metavar="PX",
            help="Pixels around each point or line label that take its class (0: the pixel "
            "under it).",
            rich_help_panel=PANEL_LABELS,
        ),
    ] = 0,
    val_by: Annotated[
        Literal["features", "blocks"],
        typer.Option(
            "--val-by",
            help="What validation holds out, never random pixels: whole labelled features "
            "(polygons, points) or whole spatial blocks of --block-size px (always for a class "
            "raster).",
            rich_help_panel=PANEL_LABELS,
        ),
    ] = "features",
    block_size: Annotated[
        int,
        typer.Option(
            "--block-size",
            min=1,
            metavar="PX",
            help="Side of the spatial blocks of --val-by blocks.",
            rich_help_panel=PANEL_LABELS,
        ),
    ] = 32,
    val_labels: Annotated[
        Path | None,
        _path_option(
            "--val-labels",
            "LABELS",
            "Independent validation labels (same field and classes) instead of held-out blocks.",
            PANEL_LABELS,
        ),
    ] = None,
    val_bounds: Annotated[
        str | None,
        _path_option(
            "--val-bounds",
            "L,B,R,T",
            "Validate on the labels inside this box (left,bottom,right,top in the scene's CRS) "
            "and train on the others: an area held out.",
            PANEL_LABELS,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            metavar="NAME",
            help="Architecture: cnn, cnn-wide, compact, hybrid, resnet18, resnet50, "
            "efficientnet_b3 (classifiers), fcn, fpn, swin-fpn (segmenters), or timm:NAME for "
            "any timm model. Required unless --resume. With --labels: pixel-mlp (default), "
            "pixel-gbt or pixel-rf (LightGBM boosted trees / random forest: 0.70 / 0.72 vs the "
            "MLP's 0.76 held out on T33UUU, and slower to predict).",
            rich_help_panel=PANEL_MODEL,
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            metavar="RUN_DIR",
            help="Run folder for checkpoints, the log and the final model. "
            "Required unless --resume.",
            rich_help_panel=PANEL_OUTPUT,
            show_default=False,
        ),
    ] = None,
    val: Annotated[
        Path | None,
        _path_option(
            "--val", "DATA", "Separate validation data (same layout as DATA).", PANEL_INPUT
        ),
    ] = None,
    split: Annotated[
        Path | None,
        _path_option(
            "--split",
            "CSV",
            "Train only on the files listed in CSV (columns path,label; paths relative to DATA).",
            PANEL_INPUT,
        ),
    ] = None,
    val_split: Annotated[
        Path | None,
        _path_option(
            "--val-split", "CSV", "Validate on the files of DATA listed in CSV.", PANEL_INPUT
        ),
    ] = None,
    groups: GroupOpt = None,
    radiometry: Annotated[
        Path | None,
        _path_option(
            "--radiometry",
            "FILE",
            "JSON mapping raw values of other data types to the training data's units, e.g. "
            '{"uint16": {"scale": [...], "offset": [...], "clip_min": 0, "clip_max": 255}} so that '
            "predict on uint16 Sentinel-2 scenes feeds a model trained on 8-bit chips what it saw "
            "(see examples/default_model/fit_radiometry.py). Stored in the model file.",
            PANEL_INPUT,
        ),
    ] = None,
    val_fraction: Annotated[
        float,
        typer.Option(
            "--val-fraction",
            min=0.0,
            max=0.5,
            metavar="F",
            help="Without --val/--val-split (and no val split in a tiled dataset): hold out "
            "this stratified random fraction of DATA for validation.",
            rich_help_panel=PANEL_INPUT,
        ),
    ] = 0.1,
    weights: Annotated[
        Path | None,
        _path_option(
            "--weights",
            "FILE",
            "Start from these weights (.safetensors or .pth, e.g. downloaded ImageNet weights); "
            "the first layer is adapted to the band count and the head to the classes.",
            PANEL_MODEL,
        ),
    ] = None,
    pretrained: Annotated[
        bool,
        typer.Option(
            "--pretrained",
            help="Start from timm's published pretrained weights (downloads them once).",
            rich_help_panel=PANEL_MODEL,
        ),
    ] = False,
    epochs: Annotated[
        int | None,
        typer.Option(
            "--epochs",
            min=1,
            metavar="N",
            help="Epochs to train (default 20). With --resume: a new total, to extend a run.",
            rich_help_panel=PANEL_TRAINING,
            show_default=False,
        ),
    ] = None,
    batch_size: BatchSizeOpt = 64,
    lr: Annotated[
        float,
        typer.Option(
            "--lr",
            min=0.0,
            metavar="LR",
            help="Peak learning rate (AdamW).",
            rich_help_panel=PANEL_TRAINING,
        ),
    ] = 1e-3,
    weight_decay: Annotated[
        float,
        typer.Option(
            "--weight-decay",
            min=0.0,
            metavar="WD",
            help="AdamW weight decay.",
            rich_help_panel=PANEL_TRAINING,
        ),
    ] = 0.05,
    label_smoothing: Annotated[
        float,
        typer.Option(
            "--label-smoothing",
            min=0.0,
            max=0.5,
            metavar="EPS",
            help="Label smoothing of the cross-entropy loss.",
            rich_help_panel=PANEL_TRAINING,
        ),
    ] = 0.1,
    crop: Annotated[
        int | None,
        typer.Option(
            "--crop",
            min=16,
            metavar="PX",
            help="Segmenters: train on a random PX x PX crop of each chip (and its mask), a new "
            "place every time: tile chips larger than PX (e.g. --size 384, --crop 256) and the "
            "model sees other windows of the images each epoch. Validation uses whole chips.",
            rich_help_panel=PANEL_TRAINING,
            show_default=False,
        ),
    ] = None,
    crop_scale: Annotated[
        str | None,
        typer.Option(
            "--crop-scale",
            metavar="MIN,MAX",
            help="Segmenters: random zoom. Each training crop covers PX x s chip pixels, s drawn "
            "log-uniformly from MIN..MAX (capped by the chip), resized to PX: e.g. --size 512 "
            "--crop 256 --crop-scale 0.5,2 shows objects at half to twice their size.",
            rich_help_panel=PANEL_TRAINING,
            show_default=False,
        ),
    ] = None,
    dice: Annotated[
        float,
        typer.Option(
            "--dice",
            min=0.0,
            max=10.0,
            metavar="W",
            help="Segmenters: add W x (1 - soft Dice) to the cross-entropy, so small classes count "
            "as much as large ones. Default 0 (cross-entropy only).",
            rich_help_panel=PANEL_TRAINING,
        ),
    ] = 0.0,
    class_weights: Annotated[
        Literal["auto", "none"],
        typer.Option(
            "--class-weights",
            help="auto: weight the loss by inverse class frequency (segmenters: the square root "
            "of it, over labelled pixels); none: unweighted.",
            rich_help_panel=PANEL_TRAINING,
        ),
    ] = "auto",
    patience: Annotated[
        int | None,
        typer.Option(
            "--patience",
            min=1,
            metavar="N",
            help="Stop early after N epochs without validation improvement. Default: never.",
            rich_help_panel=PANEL_TRAINING,
            show_default=False,
        ),
    ] = None,
    augment: Annotated[
        bool,
        typer.Option(
            "--augment/--no-augment",
            help="Flips, 90-degree rotations and mild radiometric jitter on training chips.",
            rich_help_panel=PANEL_TRAINING,
        ),
    ] = True,
    cutmix: Annotated[
        bool,
        typer.Option(
            "--cutmix", help="Also mix chips with CutMix (for segmenters the masks get the same box).",
            rich_help_panel=PANEL_TRAINING
        ),
    ] = False,
    ema: Annotated[
        float,
        typer.Option(
            "--ema",
            min=0.0,
            max=0.99999,
            metavar="DECAY",
            help="Validate and save an exponential moving average of the weights (e.g. 0.999); 0 is off.",
            rich_help_panel=PANEL_TRAINING,
        ),
    ] = 0.0,
    checkpoint_minutes: Annotated[
        float | None,
        typer.Option(
            "--checkpoint-minutes",
            min=0.0,
            metavar="MIN",
            help="Also checkpoint within long epochs every MIN minutes (default 5; 0: at epoch "
            "ends only), so Ctrl-C loses minutes, not the epoch. With --resume: a new interval.",
            rich_help_panel=PANEL_TRAINING,
            show_default=False,
        ),
    ] = None,
    cache: Annotated[
        bool,
        typer.Option(
            "--cache/--no-cache",
            help="Keep decoded chips in a memory-mapped file in RUN_DIR/cache after their first read "
            "(deleted when training ends); chip files are then opened once, not once per epoch.",
            rich_help_panel=PANEL_RUNTIME,
        ),
    ] = True,
    amp: AmpOpt = "auto",
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    list_models: Annotated[
        bool,
        typer.Option(
            "--list-models",
            help="List the models --model takes, with their task and size, and exit.",
        ),
    ] = False,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            metavar="RUN_DIR",
            help="Continue an interrupted run from its last checkpoint, with its settings.",
            rich_help_panel=PANEL_RUNTIME,
            show_default=False,
        ),
    ] = None,
    overwrite: OverwriteOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Train a land-cover model on chips, or per pixel on a scene and its labels.

    On chips: saves a checkpoint every epoch, and every few minutes within long epochs; --resume
    RUN_DIR continues from the last one. With --labels: samples the labelled pixels of the scene,
    validates on whole spatial blocks (or --val-labels / --val-bounds) and trains a per-pixel
    model in seconds. Either way the model is RUN_DIR/model.safetensors.
    """
    from geoclass.cli.render import cli_state, make_progress_callback, print_json

    if list_models:
        from geoclass.models.registry import describe_models

        rows = describe_models()
        if json_output:
            print_json(rows)
        else:
            for row in rows:
                typer.echo(f"{row['name']:<16} {row['task']:<9} {row['parameters'] / 1e6:7.2f} M  "
                           f"{row['description']}")
        return
    from geoclass.engine import train as engine
    from geoclass.engine.train.distributed import launched_ranks

    rank = launched_ranks().rank  # under torchrun, only rank 0 talks
    callback, live = make_progress_callback(cli_state(ctx).quiet or rank > 0)
    if labels is not None:
        if launched_ranks().distributed:
            raise typer.BadParameter("per-pixel training runs in one process: start it without "
                                     "torchrun", param_hint="'--labels'")
        if resume is not None:
            raise typer.BadParameter("per-pixel runs are short: start them again instead",
                                     param_hint="'--resume'")
        if not data or output is None:
            flag = "'SCENE'" if not data else "'--output'"
            raise typer.BadParameter("missing (required with --labels)", param_hint=flag)
        if model not in (None, "pixel-mlp", "pixel-gbt", "pixel-rf"):
            raise typer.BadParameter(f"{model!r}: training from --labels builds a pixel-mlp (the "
                                     "default), pixel-gbt or pixel-rf; chip models train on "
                                     "'geoclass tile' output", param_hint="'--model'")
        from geoclass.engine.train.pixels import PixelTrainConfig, read_scene_list, train_pixels

        pixel_config = PixelTrainConfig(
            scenes=[str(p) for p in data], labels=str(labels), out_dir=str(output),
            model=model or "pixel-mlp",
            label_field=label_field, classes=_str(classes), bands=bands, nodata=nodata,
            band_names=_names(band_names), texture=texture, max_per_class=max_per_class,
            point_buffer=buffer, split=val_by, block_size=block_size, val_fraction=max(val_fraction, 0.05),
            val_labels=_str(val_labels), val_bounds=_bounds(val_bounds),
            epochs=epochs or PixelTrainConfig.epochs, lr=lr if lr != 1e-3 else PixelTrainConfig.lr,
            seed=seed, overwrite=overwrite,
            more=read_scene_list(more_scenes) if more_scenes is not None else [],
        )
        with live:
            pixel_result = train_pixels(pixel_config, progress=callback)
        m = pixel_result.metrics
        if json_output:
            print_json({"run_dir": str(pixel_result.run_dir), "model": str(pixel_result.model_path),
                        "train_pixels": pixel_result.train_pixels, "val_pixels": pixel_result.val_pixels,
                        "seconds": pixel_result.seconds, "metrics": m})
        else:
            typer.echo(f"model: {pixel_result.model_path} ({pixel_result.train_pixels:,} training "
                       f"pixels; validation on {m['validation']}: overall accuracy "
                       f"{m['accuracy']:.3f}, balanced accuracy {m['balanced_accuracy']:.3f})")
        return
    if data is not None and len(data) > 1:
        raise typer.BadParameter("several inputs are scenes: give --labels to train on them per "
                                 "pixel, or one chip dataset", param_hint="'DATA'")
    chips = data[0] if data else None
    if resume is not None:
        with live:
            result = engine.resume(resume, progress=callback, epochs=epochs, data=_str(chips),
                                   checkpoint_minutes=checkpoint_minutes)
    else:
        for flag, value in (("DATA", chips), ("--model", model), ("--output", output)):
            if value is None:
                raise typer.BadParameter(
                    "missing (required unless --resume RUN_DIR)", param_hint=f"'{flag}'"
                )
        assert chips is not None and model is not None and output is not None
        config = engine.TrainConfig(
            data=str(chips), model=model, out_dir=str(output), val=_str(val), split_csv=_str(split),
            val_split_csv=_str(val_split), val_fraction=val_fraction, epochs=epochs or 20,
            batch_size=batch_size, lr=lr, weight_decay=weight_decay, amp=amp,
            weights=_str(weights), pretrained=pretrained, label_smoothing=label_smoothing,
            class_weights=class_weights, dice=dice, crop=crop,
            crop_scale=_scale_range(crop_scale), patience=patience or 0, augment=augment,
            cutmix=0.5 if cutmix else 0.0, ema=ema, cache=cache,
            workers=default_workers() if workers is None else workers,
            seed=seed, device=device, groups=parse_groups(groups),
            radiometry=load_radiometry(radiometry), overwrite=overwrite,
            checkpoint_minutes=engine.TrainConfig.checkpoint_minutes if checkpoint_minutes is None
            else checkpoint_minutes,
        )
        with live:
            result = engine.train(config, progress=callback)
    if rank > 0:
        return
    summary = {
        "run_dir": str(result.run_dir), "model": str(result.model_path), "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run, "stopped_early": result.stopped_early, "best_metrics": result.best_metrics,
    }
    if json_output:
        print_json(summary)
    else:
        accuracy = result.best_metrics.get("val_accuracy", float("nan"))
        typer.echo(f"model: {result.model_path} (best epoch {result.best_epoch}, val accuracy {accuracy:.4f})")


def _numbers(text: str, count: int, expected: str, option: str) -> list[float]:
    """``count`` comma-separated numbers, or a BadParameter naming ``option``."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count:
        raise typer.BadParameter(f"expected {expected}, got {text!r}", param_hint=f"'{option}'")
    return values


def _scale_range(text: str | None) -> list[float] | None:
    """``MIN,MAX`` as two floats (the range itself is checked by TrainConfig)."""
    return None if text is None else _numbers(text, 2, "MIN,MAX such as 0.5,2", "--crop-scale")


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [n.strip() for n in text.split(",")]


def _bounds(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None:
        return None
    left, bottom, right, top = _numbers(text, 4, "left,bottom,right,top numbers", "--val-bounds")
    return left, bottom, right, top


def load_radiometry(path: Path | None) -> dict[str, dict[str, object]]:
    """Read a --radiometry JSON file ({dtype: {scale, offset, clip_min, clip_max}})."""
    if path is None:
        return {}
    import json

    from geoclass.errors import ConfigError, InputNotFoundError

    if not path.is_file():
        raise InputNotFoundError(f"{path}: radiometry file not found")
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not all(
        isinstance(v, dict) and {"scale", "offset"} <= set(v) for v in data.values()
    ):
        raise ConfigError(f"{path}: expected {{dtype: {{scale: [...], offset: [...]}}}}, found {str(data)[:80]}")
    return data
