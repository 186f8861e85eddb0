"""A colour-coded mask (RGB, or one band with a colour table) read as class ids on its image's grid."""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from geoclass.errors import InputNotFoundError, LabelError
from geoclass.io.color_map import IGNORE, ColorMap, hex_color
from geoclass.io.reader import Scene
from geoclass.io.windows import iter_window_grid

__all__ = ["ColorMaskLabels"]

_SCAN_PX = 1024


class ColorMaskLabels:
    """A colour mask of one image, decoded to class ids through a ``ColorMap``.

    The mask must be on the image's pixel grid (same size; same CRS and transform when both have
    one). Opening it scans it once for colours the map does not know, so a wrong map fails before
    any chip is cut. Ignored colours read as ``IGNORE`` (255, unlabelled).

    Attributes:
        kind: ``"raster"``.
        path: The mask file.
        classes: Class names in id order (the colour map's).
        values: Class name -> its colour (``#RRGGBB``).
        pixel_counts: Pixels of each class in the mask, and of ``ignored``.
    """

    kind: Literal["vector", "raster"] = "raster"

    def __init__(self, path: str | os.PathLike[str], scene: Scene, colors: ColorMap) -> None:
        """Open the mask, check its grid against the image and its colours against the map.

        Raises:
            InputNotFoundError: No such file.
            LabelError: Not readable, another size or grid than the image, colours not in the map.
        """
        self.path = os.fspath(path)
        if not Path(self.path).is_file():
            raise InputNotFoundError(f"{self.path}: mask not found")
        self.colors = colors
        self.classes = list(colors.classes)
        self.values = {name: hex_color(c) for name, c in zip(colors.classes, colors.colors, strict=True)}
        self._local = threading.local()
        self._lock = threading.Lock()
        self._handles: list[Any] = []
        self._shape = (scene.width, scene.height)
        ds = self._open()
        try:
            if (ds.width, ds.height) != self._shape:
                raise LabelError(f"{self.path}: mask is {ds.width}x{ds.height} px, its image "
                                 f"{scene.name} is {scene.width}x{scene.height} px; a mask must be "
                                 "its image's size")
            if ds.crs is not None and scene.crs is not None and (
                    ds.crs != scene.crs or not ds.transform.almost_equals(scene.transform)):
                raise LabelError(f"{self.path}: mask is not on the grid of {scene.name} (CRS or "
                                 "transform differ); a colour mask must be on its image's grid")
            self._palette = self._palette_of(ds)
            self.pixel_counts = self._scan(ds)
        finally:
            ds.close()

    def _open(self) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                return rasterio.open(self.path)
        except RasterioError as exc:
            raise LabelError(f"{self.path}: not an image GDAL can read ({exc})") from None

    def _palette_of(self, ds: Any) -> np.ndarray | None:
        """A one-band mask's colour table as a (256, 3) array; None for an RGB mask."""
        if ds.count >= 3 and all(dt == "uint8" for dt in ds.dtypes[:3]):
            return None
        if ds.count == 1 and ds.dtypes[0] == "uint8":
            try:
                table = ds.colormap(1)
            except ValueError:
                table = None
            if table:
                pal = np.zeros((256, 3), np.uint8)
                for k, rgba in table.items():
                    pal[k] = rgba[:3]
                return pal
        raise LabelError(f"{self.path}: a colour mask must be 8-bit RGB (or one 8-bit band with a "
                         f"colour table); found {ds.count} band(s) of {ds.dtypes[0]}")

    def _rgb(self, ds: Any, window: Window) -> np.ndarray:
        if self._palette is None:
            return ds.read([1, 2, 3], window=window)
        return np.moveaxis(self._palette[ds.read(1, window=window)], -1, 0)

    def _scan(self, ds: Any) -> dict[str, int]:
        """Pixels per class (and ``ignored``); raises for colours not in the map."""
        counts = np.zeros(256, np.int64)
        unknown: dict[int, int] = {}
        for gw in iter_window_grid(ds.width, ds.height, _SCAN_PX):
            rgb = self._rgb(ds, gw.core)
            missing = self.colors.unknown_colors(rgb)
            if missing:
                for k, n in missing.items():
                    unknown[k] = unknown.get(k, 0) + n
                continue
            if not unknown:
                counts += np.bincount(self.colors.decode(rgb, self.path).ravel(), minlength=256)
        if unknown:
            raise self.colors.unknown_error(unknown, self.path)
        out = {name: int(counts[i]) for i, name in enumerate(self.classes)}
        out["ignored"] = int(counts[IGNORE])
        return out

    def read(self, window: Window) -> np.ndarray | None:
        """Class ids of ``window`` (``IGNORE`` outside the mask and for ignored colours)."""
        h, w = int(window.height), int(window.width)
        c0, r0 = max(0, int(window.col_off)), max(0, int(window.row_off))
        c1, r1 = min(self._shape[0], int(window.col_off) + w), min(self._shape[1], int(window.row_off) + h)
        if c0 >= c1 or r0 >= r1:
            return None
        ids = self.colors.decode(self._rgb(self._dataset(), Window(c0, r0, c1 - c0, r1 - r0)), self.path)
        if (c1 - c0, r1 - r0) != (w, h):
            full = np.full((h, w), IGNORE, np.uint8)
            full[r0 - int(window.row_off): r1 - int(window.row_off),
                 c0 - int(window.col_off): c1 - int(window.col_off)] = ids
            ids = full
        return None if (ids == IGNORE).all() else ids

    def _dataset(self) -> Any:
        ds = getattr(self._local, "ds", None)
        if ds is None:
            ds = self._open()
            with self._lock:
                self._handles.append(ds)
            self._local.ds = ds
        return ds

    def close(self) -> None:
        """Close every thread's handle."""
        with self._lock:
            handles, self._handles = self._handles, []
        for ds in handles:
            ds.close()
        self._local = threading.local()
