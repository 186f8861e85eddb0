"""What a mosaic is asked for (``MosaicConfig``), what its bands hold, and what it wrote."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from affine import Affine

from geoclass.engine.mosaic.inputs import MosaicInput, PathLike

__all__ = [
    "METHODS",
    "TILE",
    "Kind",
    "Method",
    "MosaicConfig",
    "MosaicResult",
    "OutputBands",
    "PathLike",
]

Method = Literal["first", "last", "max-confidence"]
Kind = Literal["auto", "classes", "scene"]
METHODS = ("first", "last", "max-confidence")
TILE = 256
"""Side of the GeoTIFF's internal tiles; output blocks are multiples of it."""


@dataclass
class MosaicConfig:
    """What to mosaic and how.

    Attributes:
        inputs: Files (or stacks / ``MosaicInput``s), in precedence order for ``first``/``last``.
        output: A ``.tif`` GeoTIFF, or a ``.vrt`` (implies ``vrt``).
        method: Where inputs overlap: the ``first`` valid input wins, the ``last`` one, or the
            class with the highest confidence (``max-confidence``, class maps with confidence).
        crs: Target CRS (``EPSG:32632``, WKT, PROJ); default the first input's.
        res: Pixel size in target CRS units (one number, or ``(x, y)``); default the finest input's.
        vrt: Write a GDAL VRT that references the inputs instead of a GeoTIFF. Only for inputs
            already on one grid (same CRS, resolution and pixel alignment).
        overwrite: Replace an existing output.
        nodata: Treat this value as nodata in every input (for inputs that have fill but declare
            no nodata); also the output's nodata for raw scenes.
        resampling: How reprojected inputs are resampled; default ``nearest`` for class maps
            (``mode`` is the only other choice for them), ``bilinear`` for scenes.
        kind: ``classes`` or ``scene`` to override detection: a class map has ``GEOCLASS_CLASSES``
            tags, a colour table, or is a single 8-bit integer band.
        block_size: Side of the output blocks processed at once (a multiple of 256).
        force: Write a GeoTIFF canvas even when it is huge and mostly empty (more than 250
            megapixels and more than 4x the pixels the inputs cover: inputs far apart).
    """

    inputs: Sequence[MosaicInput | PathLike | Sequence[PathLike]]
    output: PathLike
    method: Method = "first"
    crs: str | None = None
    res: float | tuple[float, float] | None = None
    vrt: bool = False
    overwrite: bool = False
    nodata: float | None = None
    resampling: str | None = None
    kind: Kind = "auto"
    block_size: int = 1024
    force: bool = False


@dataclass(frozen=True)
class MosaicResult:
    """What ``mosaic`` wrote.

    Attributes:
        output: The mosaic file.
        format: ``GTiff`` or ``VRT``.
        kind: ``classes`` (class maps) or ``scene`` (raw scenes).
        method: Precedence method used.
        width: Width in pixels.
        height: Height in pixels.
        count: Number of bands.
        dtype: Pixel dtype.
        nodata: Nodata value of the output.
        crs: Output CRS as a string (empty when the inputs have no CRS).
        transform: Output affine transform.
        bounds: ``(left, bottom, right, top)`` in the output CRS.
        inputs: Input labels, in the order given.
        reprojected: Inputs that were not on the output grid and were resampled.
        classes: Class names (class maps with names), else None.
        valid_fraction: Share of output pixels with data (None for a VRT).
        seconds: Wall time.
    """

    output: Path
    format: Literal["GTiff", "VRT"]
    kind: Literal["classes", "scene"]
    method: Method
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    crs: str
    transform: Affine
    bounds: tuple[float, float, float, float]
    inputs: list[str]
    reprojected: list[str] = field(default_factory=list)
    classes: list[str] | None = None
    valid_fraction: float | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class OutputBands:
    """What the mosaic's bands hold, as both writers (GeoTIFF, VRT) need it.

    Attributes:
        kind: ``classes`` or ``scene``.
        count: Number of bands.
        dtype: Pixel dtype.
        nodata: Nodata value.
        names: Class names (class maps with names), else None.
        colors: Class colours, with ``names``.
        colormap: A class map's colour table when it has no names, else None.
        descriptions: Band descriptions of a raw scene (the first input's), else None.
    """

    kind: Literal["classes", "scene"]
    count: int
    dtype: np.dtype
    nodata: float
    names: list[str] | None = None
    colors: list[tuple[int, int, int]] | None = None
    colormap: dict[int, tuple[int, ...]] | None = None
    descriptions: list[str] | None = None
