"""Metadata conventions of geoclass class maps.

A class map is a single-band integer GeoTIFF (uint8 in practice): the pixel value is the class id,
255 is nodata, band 1 carries a colour table and the description ``"class"``, and the dataset tag
``GEOCLASS_CLASSES`` holds the class names as a JSON list (index = class id).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import rasterio
from rasterio.errors import RasterioError

from geoclass.errors import ConfigError, RasterOpenError
from geoclass.palette import colors_for_classes

__all__ = [
    "CLASSES_TAG",
    "CLASS_BAND_DESCRIPTION",
    "CLASS_MAP_NODATA",
    "read_class_metadata",
    "write_class_metadata",
]

CLASSES_TAG = "GEOCLASS_CLASSES"
CLASS_BAND_DESCRIPTION = "class"
CLASS_MAP_NODATA = 255

Color = tuple[int, int, int]


def write_class_metadata(dataset: Any, classes: Sequence[str], colors: Sequence[Color]) -> None:
    """Set class names, colour table and band description on an open, writable class map.

    Args:
        dataset: A rasterio dataset opened for writing (``"w"`` or ``"r+"``); band 1 is the classes.
        classes: Class names; index = class id.
        colors: One ``(r, g, b)`` per class.

    Raises:
        ConfigError: Names and colours differ in number, or there are more classes than the
            band's dtype can hold besides its nodata value.
    """
    names = [str(c) for c in classes]
    if len(colors) != len(names):
        raise ConfigError(f"{len(names)} class names but {len(colors)} colours were given")
    dtype = dataset.dtypes[0]
    if dtype == "uint8" and len(names) > CLASS_MAP_NODATA:
        raise ConfigError(
            f"{len(names)} classes do not fit a uint8 class map (ids 0-254, 255 is nodata)"
        )
    dataset.update_tags(**{CLASSES_TAG: json.dumps(names)})
    dataset.set_band_description(1, CLASS_BAND_DESCRIPTION)
    if dtype in ("uint8", "uint16"):  # GeoTIFF colour tables exist for these two only
        cmap: dict[int, tuple[int, int, int, int]] = {
            i: (int(c[0]), int(c[1]), int(c[2]), 255) for i, c in enumerate(colors)
        }
        nodata = dataset.nodata
        if nodata is not None and float(nodata).is_integer() and int(nodata) not in cmap:
            cmap[int(nodata)] = (0, 0, 0, 0)
        dataset.write_colormap(1, cmap)


def _colormap(ds: Any) -> dict[int, tuple[int, ...]] | None:
    try:
        return ds.colormap(1)
    except ValueError:  # "NULL color table"
        return None


def read_class_metadata(
    path_or_dataset: str | os.PathLike[str] | Any,
) -> tuple[list[str], list[Color]] | None:
    """Class names and colours of a class map, or None when it carries no class names.

    Colours come from band 1's colour table; without one, ``geoclass.palette.colors_for_classes`` picks them.

    Args:
        path_or_dataset: A raster path, or an open rasterio dataset.

    Raises:
        RasterOpenError: The file cannot be opened, or its class tag is not a JSON list of names.
    """
    if isinstance(path_or_dataset, (str, os.PathLike)):
        path = os.fspath(path_or_dataset)
        try:
            with rasterio.open(path) as ds:
                return read_class_metadata(ds)
        except RasterioError as exc:
            raise RasterOpenError(f"{path}: cannot be opened to read class names ({exc})") from exc
    ds = path_or_dataset
    text = ds.tags().get(CLASSES_TAG)
    if text is None:
        return None
    try:
        names = json.loads(text)
    except json.JSONDecodeError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise RasterOpenError(
            f"{ds.name}: tag {CLASSES_TAG} is not a JSON list of class names: {text[:80]!r}"
        )
    cmap = _colormap(ds)
    fallback = colors_for_classes(names)
    colors: list[Color] = []
    for i in range(len(names)):
        entry = cmap.get(i) if cmap else None
        colors.append((int(entry[0]), int(entry[1]), int(entry[2])) if entry else fallback[i])
    return names, colors
