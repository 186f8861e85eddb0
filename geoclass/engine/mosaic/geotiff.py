"""The GeoTIFF mosaic, written block by block to a temporary file beside the target.

Each output block is composited from the inputs that touch it (``composite.fill_block``) and
written at once, so memory stays flat whatever the mosaic's size; the file is renamed onto the
target at the end (``geoclass.io.outputs.atomic_output``).

Why not ``rasterio.merge.merge``: it needs every input in one CRS (ours are reprojected block by
block), takes datasets rather than our stacks of files (one input may be several band files), a
pixel is valid per band and "empty" wherever the output holds its nodata value (ours: valid in
every band, tracked apart from the values), it places inputs by rounding windows (ours snaps the
grid to the first input so it is copied exactly), and it counts no valid pixels and reports no
progress. ``max-confidence`` would fit its ``method`` callable, but the rest would not. Where
both apply (two single files on one grid, ``first``) they give identical pixels in the same time
(1.13 s each on the Landsat pair of ``bench/mosaic_bench.py``), so merge would buy no speed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rasterio
from rasterio.errors import NotGeoreferencedWarning

from geoclass.engine.mosaic.composite import Layer, blocks, fill_block
from geoclass.engine.mosaic.config import TILE, OutputBands
from geoclass.engine.mosaic.grid import Grid
from geoclass.io.class_map import CLASS_BAND_DESCRIPTION, write_class_metadata
from geoclass.io.outputs import atomic_output
from geoclass.progress import Reporter

__all__ = ["write_geotiff"]


def _profile(grid: Grid, bands: OutputBands) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": bands.count,
        "dtype": bands.dtype.name,
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": bands.nodata,
        "tiled": True,
        "blockxsize": TILE,
        "blockysize": TILE,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }
    if bands.kind == "scene" and bands.dtype.kind in "iu":
        profile["predictor"] = 2
    elif bands.kind == "scene" and bands.dtype.kind == "f":
        profile["predictor"] = 3
    return profile


def _block_size(requested: int, layers: Sequence[Layer], grid: Grid) -> int:
    """Shrink blocks when a reprojected input is much finer than the output, so reads stay small."""
    out_px = abs(grid.transform.a * grid.transform.e)
    worst = max(
        (out_px / (p.res[0] * p.res[1]) for _, p in layers if p.reprojected), default=1.0
    )
    scale = max(1, math.ceil(math.sqrt(worst)))
    return max(TILE, (requested // scale) // TILE * TILE)


def _write_band_metadata(dst: Any, bands: OutputBands) -> None:
    if bands.kind == "classes":
        if bands.names is not None and bands.colors is not None:
            write_class_metadata(dst, bands.names, bands.colors)
        else:
            dst.set_band_description(1, CLASS_BAND_DESCRIPTION)
            if bands.colormap and bands.dtype.name in ("uint8", "uint16"):
                dst.write_colormap(1, bands.colormap)
    else:
        for i, d in enumerate(bands.descriptions or []):
            if d:
                dst.set_band_description(i + 1, d)


def write_geotiff(
    out: Path,
    grid: Grid,
    layers: Sequence[Layer],
    bands: OutputBands,
    *,
    by_confidence: bool,
    block_size: int,
    reporter: Reporter,
) -> int:
    """Write the mosaic as a tiled, deflate-compressed GeoTIFF; return its valid pixel count.

    Args:
        out: The target (replaced atomically at the end).
        grid: The output grid.
        layers: The inputs and their placements, in precedence order.
        bands: What the bands hold.
        by_confidence: Composite by highest confidence instead of precedence.
        block_size: Requested side of the blocks composited at once (a multiple of ``TILE``).
        reporter: Progress (one step per block).

    Raises:
        DiskFullError, OutputError: From ``atomic_output``.
        GeoreferenceError: An input cannot be reprojected onto a block.
    """
    windows = blocks(grid.width, grid.height, _block_size(block_size, layers, grid))
    n_valid = 0
    # Upper bound of the output's size: uncompressed pixels (deflate only makes it smaller).
    needed = grid.width * grid.height * bands.count * bands.dtype.itemsize
    reporter.start("mosaic", len(windows))
    with atomic_output(out, needed_bytes=needed) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # inputs without a CRS
            dst = rasterio.open(tmp, "w", **_profile(grid, bands))
        with dst:
            _write_band_metadata(dst, bands)
            for win in windows:
                block, filled = fill_block(
                    layers,
                    grid,
                    win,
                    by_confidence=by_confidence,
                    count=bands.count,
                    dtype=bands.dtype,
                    nodata=bands.nodata,
                )
                dst.write(block, window=win)
                n_valid += int(filled.sum())
                reporter.advance("mosaic")
    reporter.end("mosaic")
    return n_valid
