"""Cutting a labelled scene into training chips (``geoclass tile``).

The scene is walked window by window (``Scene.windows``); each window's labels are looked at first
(cheap), then its pixels are read, checked for nodata and written as a georeferenced GeoTIFF chip.

Output layout (``OUT``)::

    chips/<class>/<scene>_<row>_<col>.tif     classify (chips/<scene>_<row>_<col>.tif unlabelled)
    images/<scene>_<row>_<col>.tif            segment: the image chips
    masks/<scene>_<row>_<col>.tif             segment: uint8 class ids, 255 = unlabelled
    chips.csv                                 path,label,split[,mask],scene,row,col
    index.gpkg                                chip footprints with class, split and scene
    dataset.json                              classes, bands, CRS, statistics, counts, config

The rooms, in the order a chip goes through them:

    config.py       TileConfig (the options), TileResult, option checks
    resume.py       the output folder: refuse, overwrite or resume (state file, fingerprint)
    worker.py       one window -> labels, pixels, nodata checks, chip file(s); the thread pool
    chip_writer.py  writing a chip atomically (GDAL, or fast_tiff.py for small chips)
    plan.py         train/val split by spatial blocks, counts and statistics per split
    describe.py     index.gpkg and dataset.json
    run.py          ``tile``: ties them together and reports progress
"""

from geoclass.data.tiling.config import (
    DATASET_FORMAT,
    SKIP_REASONS,
    TileConfig,
    TileResult,
)
from geoclass.data.tiling.plan import block_split
from geoclass.data.tiling.run import tile

__all__ = [
    "DATASET_FORMAT",
    "SKIP_REASONS",
    "TileConfig",
    "TileResult",
    "block_split",
    "tile",
]
