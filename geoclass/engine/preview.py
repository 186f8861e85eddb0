"""A PNG quick-look of a class map: the classes in their colours, with a legend.

The map is read decimated (GDAL ``out_shape``, nearest neighbour, using overviews when the file
has them) with a small GDAL block cache, so memory stays small and flat whatever the map's size.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from geoclass.errors import ConfigError, InputNotFoundError, RasterOpenError
from geoclass.io.class_map import CLASS_MAP_NODATA, read_class_metadata
from geoclass.io.outputs import atomic_output, check_output_path, input_files
from geoclass.palette import colors_for_classes

__all__ = ["legend_entries", "render_preview"]

_CACHE_MB = 64


def _decimated(
    path: Path, max_size: int
) -> tuple[np.ndarray, int | None, list[str], list[tuple[int, int, int]]]:
    """Class ids read at most ``max_size`` pixels on the long side, nodata, names and colours."""
    try:
        # A decimated read still decompresses every block of a map without overviews; a small
        # block cache keeps them from piling up (GDAL's default cache is 5% of the RAM).
        with warnings.catch_warnings(), rasterio.Env(GDAL_CACHEMAX=_CACHE_MB):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                if ds.dtypes[0] not in ("uint8", "uint16", "int16", "int32", "uint32", "int8"):
                    raise RasterOpenError(f"{path}: holds {ds.dtypes[0]} values, not class ids")
                scale = max(1.0, max(ds.width, ds.height) / max_size)
                shape = (max(1, math.ceil(ds.height / scale)), max(1, math.ceil(ds.width / scale)))
                ids = ds.read(1, out_shape=shape, resampling=Resampling.nearest)
                nodata = None if ds.nodata is None else int(ds.nodata)
                meta = read_class_metadata(ds)
    except RasterioError as exc:
        raise RasterOpenError(f"{path}: cannot be read ({exc})") from exc
    if meta is not None:
        names, colors = meta
    else:
        top = int(ids[ids != nodata].max()) + 1 if (ids != nodata).any() else 0
        names = [f"class {i}" for i in range(top)]
        colors = colors_for_classes(names)
    return ids, nodata, names, colors


def legend_entries(ids: np.ndarray, nodata: int | None, n_classes: int) -> list[tuple[int, float]]:
    """``(class id, share of valid pixels)`` of the classes present, most frequent first."""
    valid = ids != (CLASS_MAP_NODATA if nodata is None else nodata)
    ids = ids[valid & (ids < n_classes)].ravel().astype(np.int64)
    counts = np.bincount(ids, minlength=n_classes)
    total = max(int(valid.sum()), 1)
    order = np.argsort(-counts, kind="stable")
    return [(int(i), counts[i] / total) for i in order if counts[i] > 0]


def _percent(share: float) -> str:
    return "<0.1%" if 0 < share < 0.001 else f"{100 * share:.1f}%"


def render_preview(
    map_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    max_size: int = 1024,
    title: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a PNG of a class map with a legend of the classes it shows and their shares.

    Args:
        map_path: A class map (e.g. written by ``predict``): class ids, colour table and names.
        out_path: The PNG to write (atomically).
        max_size: Long side of the map image in pixels; larger maps are decimated.
        title: Title above the map; default the map's file name.
        overwrite: Replace an existing PNG.

    Returns:
        ``out_path``.

    Raises:
        InputNotFoundError: The map does not exist.
        RasterOpenError: It cannot be read or holds no class ids.
        OutputExistsError, OutputError: The PNG cannot be written.
        ConfigError: ``max_size`` < 16.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    map_path, out = Path(map_path), Path(out_path)
    if max_size < 16:
        raise ConfigError(f"preview size must be >= 16 pixels, got {max_size}")
    if not map_path.exists():
        raise InputNotFoundError(f"{map_path}: file not found (expected a class map)")
    check_output_path(out, overwrite=overwrite, inputs=input_files([map_path], "map"), kind="preview")
    ids, nodata, names, colors = _decimated(map_path, max_size)

    lut = np.zeros((int(ids.max()) + 1 if ids.size else 1, 4), np.uint8)
    for i, (r, g, b) in enumerate(colors[: len(lut)]):
        lut[i] = (r, g, b, 255)
    if nodata is not None and 0 <= nodata < len(lut):
        lut[nodata] = 0
    rgba = lut[np.clip(ids, 0, len(lut) - 1)]

    handles = [
        Patch(
            facecolor=(colors[i][0] / 255, colors[i][1] / 255, colors[i][2] / 255),
            edgecolor="0.3",
            label=f"{names[i]} ({_percent(share)})",
        )
        for i, share in legend_entries(ids, nodata, len(names))
    ]

    h, w = ids.shape
    map_w = 6.0
    map_h = max(1.5, min(9.0, map_w * h / w))
    fig = Figure(
        figsize=(map_w + 3.2, map_h + 0.6), dpi=max(100, int(max(h, w) / max(map_w, map_h)))
    )
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.02, 0.02, map_w / (map_w + 3.2) - 0.02, 1 - 0.6 / (map_h + 0.6) - 0.02))
    ax.imshow(rgba, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title if title is not None else map_path.name, fontsize=10)
    if handles:
        ax.legend(
            handles=handles,
            loc="center left",
            bbox_to_anchor=(1.02, 0.5),
            frameon=False,
            fontsize=8,
            title="class (share)",
            title_fontsize=8,
        )
    else:
        ax.text(1.02, 0.5, "no valid pixels", transform=ax.transAxes, va="center", fontsize=9)

    with atomic_output(out) as tmp:
        fig.savefig(tmp, format="png", facecolor="white", bbox_inches="tight", pad_inches=0.1)
    return out
