"""What a prediction run is asked to do (``PredictConfig``) and what it gave (``PredictResult``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PredictConfig", "PredictResult"]


@dataclass
class PredictConfig:
    """Everything that defines a prediction run.

    Attributes:
        scenes: One raster, or single-band rasters stacked in order.
        output: The class map to write (``.tif``).
        model: Model file (or a training run folder); None uses the shipped default model.
        bands: 1-based bands of the (stacked) scene in model order; None takes all bands when
            their number matches the model.
        nodata: Treat this value as nodata in every band (overrides what the files declare).
        stride: Step between windows in pixels (exclusive with ``overlap``).
        overlap: Fraction of a window shared with its neighbour, in [0, 1); default 0.5 for
            classifiers, 0.25 for segmenters.
        window: Window side for segmenters (default: the model's chip size). Classifiers always
            use their chip size.
        batch_size: Windows per model call.
        workers: Reader threads (0 reads in the calling thread); default from the CPU count.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        amp: Mixed precision: ``auto``, ``on`` or ``off`` (see ``select_precision``).
        tta: Average the predictions for the window, its two flips and its 90 degree rotation.
        strategy: How the model is run over the scene: ``auto`` (``dense`` where the model
            supports it, else ``windows``), ``windows`` (one forward pass per window; any
            model), ``dense`` (a chip classifier run fully convolutionally) or ``pixel``
            (per-pixel models; none can be trained yet).
        output_stride: Pixels between output cells of the ``dense`` strategy (only with dense).
        probabilities: Also write per-class probabilities here (uint8, ``value / 250``).
        confidence: Also write the winning probability in percent to ``MAP.confidence.tif``.
        vector: Also write polygons here (``.gpkg``, ``.geojson`` or ``.shp``).
        min_area: Drop polygons smaller than this (CRS units squared; only with ``vector``).
        simplify: Polygon simplification tolerance in CRS units (only with ``vector``).
        preview: Also write a PNG quick-look with a legend here.
        cog: Write the rasters as Cloud-Optimized GeoTIFFs with overviews.
        resume: Continue an interrupted run from its partial files; the scene, model and
            options (batch size, device and precision included) must be the same.
        overwrite: Replace existing outputs.
        dask: Address of a running Dask scheduler (``tcp://host:8786``): the windows are scored
            by its workers in bands of rows and written here, with the same bytes as a local run.
            The workers must see the scene and model files at the same paths (or URLs).
    """

    scenes: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
    output: str | os.PathLike[str]
    model: str | os.PathLike[str] | None = None
    bands: Sequence[int] | None = None
    nodata: float | None = None
    stride: int | None = None
    overlap: float | None = None
    window: int | None = None
    batch_size: int = 64
    workers: int | None = None
    device: str = "auto"
    amp: str = "auto"
    tta: bool = False
    strategy: str = "auto"
    output_stride: int | None = None
    probabilities: str | os.PathLike[str] | None = None
    confidence: bool = False
    vector: str | os.PathLike[str] | None = None
    min_area: float | None = None
    simplify: float | None = None
    preview: str | os.PathLike[str] | None = None
    cog: bool = False
    resume: bool = False
    overwrite: bool = False
    dask: str | None = None


@dataclass
class PredictResult:
    """What a prediction run produced.

    Attributes:
        output: The class map.
        probabilities: The probabilities raster, if written.
        confidence: The confidence raster, if written.
        vector: The polygon file, if written.
        preview: The PNG preview, if written.
        width: Map width in pixels (the scene's).
        height: Map height in pixels.
        crs: The map's CRS as a string, or None.
        model: The model file used.
        task: ``classify`` or ``segment``.
        classes: Class names; index = class id in the map.
        class_pixels: Pixels per class.
        valid_pixels: Pixels with a class.
        nodata_pixels: Pixels set to nodata (255).
        window: Window side in pixels.
        stride: Step between windows.
        strategy: How the model was run: ``windows`` or ``dense``.
        windows: Windows in the grid (of the part processed by this run).
        windows_skipped: Windows skipped because they held no valid pixel.
        device: Device the model ran on.
        precision: ``fp32``, ``bfloat16`` or ``float16``.
        resumed_from_row: First row computed by this run (0 unless resumed).
        seconds: Wall time.
        megapixels_per_second: Scene pixels processed per second by this run.
        vector_result: What the polygonizer returned, if ``vector`` was asked for.
    """

    output: Path
    probabilities: Path | None
    confidence: Path | None
    vector: Path | None
    preview: Path | None
    width: int
    height: int
    crs: str | None
    model: Path
    task: str
    classes: list[str]
    class_pixels: dict[str, int]
    valid_pixels: int
    nodata_pixels: int
    window: int
    stride: int
    strategy: str
    windows: int
    windows_skipped: int
    device: str
    precision: str
    resumed_from_row: int
    seconds: float
    megapixels_per_second: float
    vector_result: Any | None = None
