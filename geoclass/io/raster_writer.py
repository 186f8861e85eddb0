"""Streaming, atomic GeoTIFF writers for predicted maps.

Maps are written in full-width strips of 256 rows (one row of 256x256 tiles) into a hidden
partial file next to the target (``.MAP.tif.partial``), which is renamed onto the target only
when complete, so a crash or Ctrl-C never leaves half a map under the final name. Each strip is
written with its own open/close of the partial file: the bytes on disk after strip ``k`` are
then the same whether or not the run was interrupted and resumed before it, which makes resumed
maps byte-identical to uninterrupted ones.

Encodings (all uint8, nodata 255, DEFLATE, 256x256 tiles):

- class map: class id per pixel, colour table and class names (``geoclass.io.class_map``).
- probabilities: one band per class, ``round(p * 250)``; GDAL scale ``1/250`` so
  ``value * scale`` is the probability (GDAL < 3.11 has no float16, and float32 would make the
  file 4x larger for precision no classifier has).
- confidence: the winning class's probability in percent, ``round(p * 100)``, scale ``0.01``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from geoclass.errors import ConfigError
from geoclass.io.outputs import write_error

__all__ = [
    "BLOCK_SIZE",
    "CONFIDENCE_MAX",
    "NODATA",
    "PROBABILITY_MAX",
    "StripAssembler",
    "StripWriter",
    "confidence_path",
    "confidence_setup",
    "encode_confidence",
    "encode_probabilities",
    "partial_path",
    "probability_setup",
]

NODATA = 255
BLOCK_SIZE = 256
PROBABILITY_MAX = 250
CONFIDENCE_MAX = 100
PROBABILITY_TAG = "GEOCLASS_PROBABILITY_MAX"


def partial_path(target: str | os.PathLike[str], suffix: str = ".partial") -> Path:
    """The hidden work file next to ``target``: ``dir/.NAME.partial``."""
    target = Path(target)
    return target.with_name(f".{target.name}{suffix}")


def confidence_path(map_path: str | os.PathLike[str]) -> Path:
    """Where the confidence raster of a class map lives: ``X.tif`` -> ``X.confidence.tif``."""
    p = Path(map_path)
    return p.with_name(f"{p.stem}.confidence{p.suffix or '.tif'}")


def encode_probabilities(probs: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] -> uint8 ``round(p * 250)``."""
    return np.rint(np.clip(probs, 0.0, 1.0) * PROBABILITY_MAX).astype(np.uint8)


def encode_confidence(confidence: np.ndarray) -> np.ndarray:
    """Confidence in [0, 1] -> uint8 percent."""
    return np.rint(np.clip(confidence, 0.0, 1.0) * CONFIDENCE_MAX).astype(np.uint8)


class StripAssembler:
    """Collects row chunks of any height into full strips of ``block`` rows.

    Args:
        width: Row length in pixels.
        height: Total rows of the raster.
        count: Bands per row.
        start_row: First row expected (a multiple of ``block``, e.g. when resuming).
        block: Strip height.
    """

    def __init__(
        self,
        width: int,
        height: int,
        count: int,
        start_row: int = 0,
        block: int = BLOCK_SIZE,
        dtype: str = "uint8",
    ) -> None:
        if start_row % block and start_row != height:
            raise ConfigError(f"strip start row {start_row} is not a multiple of {block}")
        self.width, self.height, self.block = width, height, block
        self._buf = np.empty((count, min(block, max(height - start_row, 1)), width), dtype)
        self._row0 = start_row  # first row of the strip being filled
        self._filled = 0

    @property
    def next_row(self) -> int:
        """The row the next chunk must start at."""
        return self._row0 + self._filled

    def push(self, row0: int, chunk: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """Add rows ``row0 .. row0 + len`` (``chunk`` is ``(count, rows, width)``).

        Yields:
            ``(first_row, strip)`` for every strip the chunk completes. A strip is a view of an
            internal buffer, valid until the next ``push``.
        """
        if row0 != self.next_row:
            raise ValueError(f"rows must arrive in order: expected row {self.next_row}, got {row0}")
        done = 0
        rows = chunk.shape[1]
        while done < rows:
            strip_rows = min(self.block, self.height - self._row0)
            take = min(rows - done, strip_rows - self._filled)
            self._buf[:, self._filled : self._filled + take] = chunk[:, done : done + take]
            self._filled += take
            done += take
            if self._filled == strip_rows:
                yield self._row0, self._buf[:, :strip_rows]
                self._row0 += strip_rows
                self._filled = 0


class StripWriter:
    """One uint8 GeoTIFF written strip by strip into a partial file, then published atomically.

    Args:
        target: The final file name.
        width: Raster width.
        height: Raster height.
        count: Number of bands.
        crs: CRS, or None for a raster without georeferencing.
        transform: Affine transform of the grid.
        predictor: Use horizontal differencing (good for smooth values such as probabilities;
            useless for class ids).
        setup: Called with the open dataset when the partial file is created, to set tags,
            colour tables, descriptions and scales.
        gcps: ``(ground control points, CRS)`` to write instead of ``crs`` and ``transform``, for
            a scene located by GCPs.
        hint: What to tell the user after a failed write (e.g. how to resume).
    """

    def __init__(
        self,
        target: str | os.PathLike[str],
        *,
        width: int,
        height: int,
        count: int,
        crs: CRS | None,
        transform: Affine,
        predictor: bool = False,
        setup: Callable[[Any], None] | None = None,
        gcps: tuple[Any, CRS | None] | None = None,
        hint: str = "",
    ) -> None:
        self.target = Path(target)
        self.gcps, self.hint = gcps, hint
        self.partial = partial_path(self.target)
        self.width, self.height, self.count = width, height, count
        self.predictor = predictor
        self._setup = setup
        self._profile: dict[str, Any] = {
            "driver": "GTiff",
            "width": width,
            "height": height,
            "count": count,
            "dtype": "uint8",
            "nodata": NODATA,
            "crs": crs,
            "transform": transform,
            "tiled": True,
            "blockxsize": BLOCK_SIZE,
            "blockysize": BLOCK_SIZE,
            "compress": "deflate",
            "predictor": 2 if predictor else 1,
            "BIGTIFF": "IF_SAFER",
            "SPARSE_OK": True,
        }
        if gcps is not None:  # GDAL keeps either a geotransform or GCPs
            del self._profile["crs"], self._profile["transform"]

    @property
    def size_bytes(self) -> int:
        """The uncompressed size of the raster: an upper bound of what it needs on disk."""
        return self.width * self.height * self.count
    def write(self, row0: int, data: np.ndarray) -> None:
        """Write rows ``row0 .. row0 + data.shape[1]`` (``data`` is ``(count, rows, width)``).

        The first strip (``row0 == 0``) creates the partial file; later ones reopen it.

        Raises:
            OutputError: The partial file cannot be created or written.
        """
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                if row0 == 0:
                    with rasterio.open(self.partial, "w", **self._profile) as ds:
                        if self.gcps is not None:
                            ds.gcps = self.gcps
                        if self._setup is not None:
                            self._setup(ds)
                        ds.write(data, window=Window(0, row0, self.width, data.shape[1]))
                else:
                    with rasterio.open(self.partial, "r+") as ds:
                        ds.write(data, window=Window(0, row0, self.width, data.shape[1]))
        except (RasterioError, OSError) as exc:
            raise write_error(exc, self.target, self.size_bytes, self.hint) from exc

    def publish(self, *, cog: bool = False, overview_resampling: str = "nearest") -> Path:
        """Move the finished partial file onto the target (as a COG with overviews if asked).

        Raises:
            OutputError: The copy or rename failed; the target is left as it was.
        """
        if not cog:
            try:
                os.replace(self.partial, self.target)
            except OSError as exc:
                raise write_error(exc, self.target, self.size_bytes, self.hint) from exc
            return self.target
        tmp = partial_path(self.target, ".cog.partial")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                rasterio.shutil.copy(
                    self.partial,
                    tmp,
                    driver="COG",
                    COMPRESS="DEFLATE",
                    BLOCKSIZE=str(BLOCK_SIZE),
                    PREDICTOR="YES" if self.predictor else "NO",
                    BIGTIFF="IF_SAFER",
                    OVERVIEW_RESAMPLING=overview_resampling.upper(),
                    NUM_THREADS="ALL_CPUS",
                )
            os.replace(tmp, self.target)
        except (RasterioError, OSError) as exc:
            tmp.unlink(missing_ok=True)
            raise write_error(exc, self.target, self.size_bytes, self.hint) from exc
        self.partial.unlink(missing_ok=True)
        return self.target

    def discard(self) -> None:
        """Remove the partial file (and a half-made COG), if any."""
        self.partial.unlink(missing_ok=True)
        partial_path(self.target, ".cog.partial").unlink(missing_ok=True)


def probability_setup(classes: list[str]) -> Callable[[Any], None]:
    """Dataset setup for a probabilities raster: band names, scale and the class list."""

    def setup(ds: Any) -> None:
        ds.update_tags(
            GEOCLASS_CLASSES=json.dumps(classes), **{PROBABILITY_TAG: str(PROBABILITY_MAX)}
        )
        ds.scales = [1.0 / PROBABILITY_MAX] * len(classes)
        ds.offsets = [0.0] * len(classes)
        for i, name in enumerate(classes, start=1):
            ds.set_band_description(i, name)

    return setup


def confidence_setup(ds: Any) -> None:
    """Dataset setup for a confidence raster: percent, scale 0.01."""
    ds.set_band_description(1, "confidence")
    ds.update_tags(GEOCLASS_CONFIDENCE_MAX=str(CONFIDENCE_MAX))
    ds.scales = [1.0 / CONFIDENCE_MAX]
    ds.offsets = [0.0]
