"""How many pixels, and how much area, each class of a class map covers, counted by streaming.

The map is read window by window (bands of whole blocks, about a million pixels each), so
memory stays flat at any map size. Nodata pixels (the declared nodata value, NaN, masks) are not
counted. Areas are those of the map's grid:

- projected CRS: every pixel has the area ``|det(transform)|`` in the CRS's linear unit squared,
  converted to m² (a US-foot grid is converted too); this is the area on the map plane, exact
  for an equal-area projection;
- geographic CRS (north-up grids only): a pixel's area depends only on its row; it is the exact
  area of the ellipsoidal quadrangle between the row's two parallels on the CRS's ellipsoid,
  ``A = (b² Δλ / 2) [F(φ)]_{φ1}^{φ2}`` with ``F(φ) = sin φ / (1 - e² sin² φ) + atanh(e sin φ) / e``
  (the sphere's ``b² Δλ (sin φ2 - sin φ1)`` when ``e = 0``).

Class names come from the geoclass tag ``GEOCLASS_CLASSES`` or, for maps from other tools, from
GDAL's category names or raster attribute table in the ``.aux.xml`` sidecar (rasterio has no API
for them; GDAL keeps them there for GeoTIFFs).
"""

from __future__ import annotations

import math
import os
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import CRSError, NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from geoclass.errors import GeoreferenceError, RasterOpenError
from geoclass.io.class_map import read_class_metadata
from geoclass.io.reader import Scene, open_scene
from geoclass.progress import ProgressCallback, Reporter

__all__ = [
    "MAX_CLASSES",
    "MappedArea",
    "class_names",
    "class_windows",
    "mapped_area",
    "num_class_windows",
    "open_class_map",
    "read_classes",
    "tally",
]

MAX_CLASSES = 1000
"""More distinct values than this and the raster is not a class map."""

_WINDOW_PIXELS = 1 << 20  # about a million pixels per window read
_BINCOUNT_SPAN = 1 << 16  # value ranges up to this are counted with bincount, wider with unique
_EXACT_FLOAT = 2.0**53  # integer values a float64 holds exactly


@dataclass
class MappedArea:
    """Pixel count and area of each class of a class map.

    Attributes:
        values: Class values present in the map, sorted; nodata excluded.
        pixels: Pixel count per value.
        area_m2: Area per value in m² (NaN for a map without a CRS read with ``require_crs=False``).
        names: Value -> class name from the map's metadata (every named class, present or not);
            empty when the map names none.
        crs: The map's CRS (``EPSG:32633``, or WKT when it has no code), or None.
        nodata: The map's nodata value, or None.
    """

    values: list[int]
    pixels: list[int]
    area_m2: list[float]
    names: dict[int, str]
    crs: str | None
    nodata: float | None


# --- reading a class map window by window -------------------------------------------------------


@contextmanager
def _open_raw(path: str) -> Iterator[rasterio.io.DatasetReader]:
    """rasterio's dataset, for what the scene reader does not expose (blocks, tags, sidecars)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a map without a CRS is reported by us
        ds = rasterio.open(path)
    with ds:
        yield ds


def open_class_map(
    map_path: str | os.PathLike[str], *, nodata: float | None = None
) -> tuple[Scene, tuple[int, int]]:
    """Open a single-band class map for streaming.

    Args:
        map_path: The map.
        nodata: Treat this value as nodata, overriding what the file declares.

    Returns:
        ``(scene, (block_height, block_width))``.

    Raises:
        InputNotFoundError, RasterOpenError: The file is missing or not a readable raster.
        RasterOpenError: It has more than one band, or a dtype that cannot hold class values.
    """
    path = os.fspath(map_path)
    scene = open_scene(path, nodata=nodata)
    try:
        with _open_raw(path) as ds:
            block = ds.block_shapes[0]
            count = ds.count
    except RasterioError as exc:  # pragma: no cover - open_scene just opened it
        scene.close()
        raise RasterOpenError(f"{path}: cannot be read ({exc})") from exc
    if count != 1:
        scene.close()
        raise RasterOpenError(
            f"{path}: has {count} bands; expected a class map (one band of class values)"
        )
    if np.dtype(scene.dtype).kind not in "uif":
        scene.close()
        raise RasterOpenError(
            f"{path}: has {scene.dtype} pixels; expected a class map (one band of integer class values)"
        )
    return scene, (int(block[0]), int(block[1]))


def class_windows(width: int, height: int, block: tuple[int, int]) -> Iterator[Window]:
    """Windows covering the map once, in row-major order, each made of whole blocks.

    Full-width bands of whole block rows when a band of one block row holds at most about four
    million pixels; narrower windows of whole blocks otherwise. The order is the "raster order"
    in which pixels are ranked.
    """
    bh, bw = max(1, min(block[0], height)), max(1, min(block[1], width))
    rows = bh * max(1, _WINDOW_PIXELS // (width * bh))
    cols = width if width * rows <= _WINDOW_PIXELS else bw * max(1, _WINDOW_PIXELS // (rows * bw))
    for r0 in range(0, height, rows):
        for c0 in range(0, width, cols):
            yield Window(c0, r0, min(cols, width - c0), min(rows, height - r0))


def num_class_windows(width: int, height: int, block: tuple[int, int]) -> int:
    """How many windows ``class_windows`` yields."""
    return sum(1 for _ in class_windows(width, height, block))


def read_classes(scene: Scene, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """The class values of a window's valid pixels.

    Returns:
        ``(values, index)``: int64 values of the valid pixels in row-major order, and each one's
        flat index in the window.

    Raises:
        RasterOpenError: A float map holds a value that is not a whole number.
    """
    data, valid = scene.read_masked(window)
    band = data[0]
    index = np.flatnonzero(valid)
    values = band.ravel()[index]
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values) | (values != np.round(values)) | (np.abs(values) > _EXACT_FLOAT)
        if bad.any():
            example = values[np.flatnonzero(bad)[0]]
            raise RasterOpenError(
                f"{scene.name}: holds the value {float(example):g} in a {scene.dtype} band; "
                "expected a class map (whole-number class values)"
            )
    elif values.dtype == np.uint64 and values.size and values.max() > np.iinfo(np.int64).max:
        raise RasterOpenError(
            f"{scene.name}: holds the value {int(values.max())}; expected a class map (class values)"
        )
    return values.astype(np.int64, copy=False), index


def tally(
    values: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Distinct values, their counts and (with ``weights``) their summed weights.

    Args:
        values: int64 class values.
        weights: Optional float weight per value (e.g. pixel areas).

    Returns:
        ``(distinct, counts, sums)``; ``sums`` is None without weights.
    """
    if values.size == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, (None if weights is None else np.zeros(0))
    lo, hi = int(values.min()), int(values.max())
    if hi - lo < _BINCOUNT_SPAN:
        shifted = values - lo
        counts = np.bincount(shifted)
        distinct = np.flatnonzero(counts)
        sums = None if weights is None else np.bincount(shifted, weights=weights)[distinct]
        return distinct + lo, counts[distinct], sums
    distinct, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = None if weights is None else np.bincount(inverse, weights=weights)
    return distinct, counts, sums


# --- pixel areas --------------------------------------------------------------------------------

_ELLIPSOID = re.compile(
    r'ELLIPSOID\["[^"]*",\s*([-+0-9.eE]+),\s*([-+0-9.eE]+)'
    r'(?:,\s*LENGTHUNIT\["[^"]*",\s*([-+0-9.eE]+))?'
)


def _ellipsoid(crs: CRS, path: str) -> tuple[float, float]:
    """Semi-major axis in metres and squared eccentricity of a geographic CRS's ellipsoid."""
    match = _ELLIPSOID.search(crs.to_wkt(version="WKT2_2019"))
    if match is None:
        raise GeoreferenceError(
            f"{path}: the ellipsoid of its CRS {crs.to_string()} cannot be read, so pixel areas "
            "are unknown; expected a geographic CRS with an ellipsoid"
        )
    a = float(match.group(1)) * float(match.group(3) or 1.0)
    inv_f = float(match.group(2))
    f = 0.0 if inv_f == 0 else 1.0 / inv_f
    return a, f * (2.0 - f)


def _zone(phi: np.ndarray, e2: float) -> np.ndarray:
    """``F(φ)``: twice the area from the equator to ``φ`` per radian of longitude, over ``b²``."""
    s = np.sin(phi)
    if e2 == 0:
        return 2.0 * s
    e = math.sqrt(e2)
    return s / (1.0 - e2 * s * s) + np.arctanh(e * s) / e


class _PixelArea:
    """The area in m² of the pixels of given rows; None where areas are unknown."""

    def __init__(self, scene: Scene, path: str) -> None:
        crs, t = scene.crs, scene.transform
        self.geographic = False
        self.constant: float | None = None
        if crs is None:
            return
        if crs.is_geographic:
            if t.b != 0 or t.d != 0:
                raise GeoreferenceError(
                    f"{path}: has a rotated or sheared grid in the geographic CRS "
                    f"{crs.to_string()}; expected a north-up grid to compute pixel areas "
                    "(reproject the map, e.g. with gdalwarp)"
                )
            unit = float(crs.units_factor[1])  # radians per CRS angular unit
            a, e2 = _ellipsoid(crs, path)
            self.geographic = True
            self._b2_half_dlon = a * a * (1.0 - e2) * abs(t.a) * unit / 2.0
            self._e2 = e2
            self._top, self._dy, self._unit = t.f, t.e, unit
            return
        try:
            factor = float(crs.linear_units_factor[1])
        except (CRSError, ValueError) as exc:
            raise GeoreferenceError(
                f"{path}: the linear unit of its CRS {crs.to_string()} is unknown, so pixel "
                "areas are unknown; expected a projected or geographic CRS"
            ) from exc
        self.constant = abs(t.a * t.e - t.b * t.d) * factor * factor

    @property
    def known(self) -> bool:
        return self.geographic or self.constant is not None

    def rows(self, row0: int, nrows: int) -> np.ndarray:
        """Area of one pixel of each row ``row0 .. row0 + nrows - 1`` (geographic maps)."""
        edges = self._top + self._dy * np.arange(row0, row0 + nrows + 1, dtype=np.float64)
        phi = np.clip(edges * self._unit, -math.pi / 2, math.pi / 2)
        return np.abs(np.diff(_zone(phi, self._e2))) * self._b2_half_dlon


# --- class names --------------------------------------------------------------------------------


def _aux_names(files: list[str]) -> dict[int, str]:
    """Category names (or a raster attribute table's names) of band 1 from GDAL's .aux.xml."""
    aux = next((f for f in files if f.lower().endswith(".aux.xml")), None)
    if aux is None:
        return {}
    try:
        root = ET.parse(aux).getroot()
    except (ET.ParseError, OSError):
        return {}
    bands = [b for b in root.iter("PAMRasterBand") if b.get("band", "1") == "1"]
    for band in bands:
        categories = band.find("CategoryNames")
        if categories is not None:
            names = {i: (c.text or "").strip() for i, c in enumerate(categories.findall("Category"))}
            names = {v: n for v, n in names.items() if n}
            if names:
                return names
    for band in bands:
        rat = band.find("GDALRasterAttributeTable")
        if rat is not None:
            names = _rat_names(rat)
            if names:
                return names
    return {}


def _rat_names(rat: ET.Element) -> dict[int, str]:
    """Value -> name from a raster attribute table (GDAL usages: 2 name, 5 min-max, 3 min)."""
    fields = [
        ((f.findtext("Name") or "").strip().lower(), (f.findtext("Usage") or "0").strip())
        for f in rat.findall("FieldDefn")
    ]
    usages = [u for _, u in fields]
    names_lower = [n for n, _ in fields]

    def column(usage: str, fallbacks: tuple[str, ...]) -> int | None:
        if usage in usages:
            return usages.index(usage)
        return next((names_lower.index(n) for n in fallbacks if n in names_lower), None)

    name_col = column("2", ("class_name", "classname", "class", "name", "label"))
    value_col = column("5", ("value",))
    if value_col is None:
        value_col = column("3", ())
    if name_col is None:
        return {}
    row0 = float(rat.get("Row0Min", "0"))
    size = float(rat.get("BinSize", "1"))
    names: dict[int, str] = {}
    for i, row in enumerate(rat.findall("Row")):
        cells = [(c.text or "").strip() for c in row.findall("F")]
        if name_col >= len(cells) or not cells[name_col]:
            continue
        try:
            value = float(cells[value_col]) if value_col is not None else row0 + i * size
        except (ValueError, IndexError):
            continue
        if value.is_integer():
            names[int(value)] = cells[name_col]
    return names


def class_names(map_path: str | os.PathLike[str]) -> dict[int, str]:
    """Value -> class name of a class map: geoclass's tag, else GDAL's category names or RAT.

    Raises:
        RasterOpenError: The geoclass tag is present but not a JSON list of names.
    """
    path = os.fspath(map_path)
    with _open_raw(path) as ds:
        meta = read_class_metadata(ds)
        files = list(ds.files)
    if meta is not None:
        return dict(enumerate(meta[0]))
    return _aux_names(files)


# --- the count ----------------------------------------------------------------------------------


def mapped_area(
    map_path: str | os.PathLike[str],
    progress: ProgressCallback | None = None,
    *,
    require_crs: bool = True,
    nodata: float | None = None,
) -> MappedArea:
    """Count the pixels and area of every class of a class map, streaming over its blocks.

    Args:
        map_path: A single-band class map (from geoclass or any other tool).
        progress: Optional progress callback; task ``count classes``, one step per window.
        require_crs: Refuse a map without a CRS (its areas are unknown). With False, such a map
            gets pixel counts and NaN areas.
        nodata: Treat this value as nodata, overriding what the file declares.

    Returns:
        A ``MappedArea``.

    Raises:
        InputNotFoundError: The map does not exist.
        RasterOpenError: It is not a class map: not a raster, more than one band, non-integer
            values, or more than ``MAX_CLASSES`` distinct values.
        GeoreferenceError: No CRS (with ``require_crs``), a rotated geographic grid, or a CRS
            whose units or ellipsoid cannot be read.
    """
    path = os.fspath(map_path)
    scene, block = open_class_map(path, nodata=nodata)
    with scene:
        if scene.crs is None and require_crs:
            raise GeoreferenceError(
                f"{path}: has no CRS, so its pixel areas are unknown; expected a georeferenced "
                "class map (assign its CRS, e.g. with gdal_edit.py -a_srs)"
            )
        area = _PixelArea(scene, path)
        names = class_names(path)
        counts: dict[int, int] = {}
        sums: dict[int, float] = {}
        reporter = Reporter(progress)
        task = "count classes"
        reporter.start(task, num_class_windows(scene.width, scene.height, block))
        for window in class_windows(scene.width, scene.height, block):
            values, index = read_classes(scene, window)
            weights = None
            if area.geographic and values.size:
                row_area = area.rows(int(window.row_off), int(window.height))
                weights = row_area[index // int(window.width)]
            distinct, n, s = tally(values, weights)
            for i, value in enumerate(distinct.tolist()):
                counts[value] = counts.get(value, 0) + int(n[i])
                if s is not None:
                    sums[value] = sums.get(value, 0.0) + float(s[i])
            if len(counts) > MAX_CLASSES:
                raise RasterOpenError(
                    f"{path}: has more than {MAX_CLASSES} distinct values (found {len(counts)} "
                    f"by row {int(window.row_off + window.height)}); expected a class map, not a "
                    "continuous raster"
                )
            reporter.advance(task)
        reporter.end(task)
    values_sorted = sorted(counts)
    if area.geographic:
        areas = [sums.get(v, 0.0) for v in values_sorted]
    elif area.constant is not None:
        areas = [counts[v] * area.constant for v in values_sorted]
    else:
        areas = [math.nan] * len(values_sorted)
    return MappedArea(
        values=values_sorted,
        pixels=[counts[v] for v in values_sorted],
        area_m2=areas,
        names=names,
        crs=None if scene.crs is None else scene.crs.to_string(),
        nodata=scene.nodata,
    )
