"""Labels on a scene's grid, one window at a time.

Two kinds of label source are understood:

* vector features (anything fiona reads: Shapefile, GeoPackage, GeoJSON, ...) with a class field,
  reprojected to the scene's CRS once, kept in memory with a shapely STRtree, and rasterised per
  window (only the features that touch the window);
* a class raster on the same or another grid, read per window onto the scene's grid
  (``geoclass.io.regrid``, nearest neighbour).

Either way ``read(window)`` returns a ``uint8`` array of class ids, ``UNLABELLED`` (255) where no
label applies. Class ids are positions in ``classes``; the label values they come from are kept in
``values``.
"""

from __future__ import annotations

import json
import math
import os
import threading
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import fiona
import numpy as np
import rasterio
import shapely
from fiona.errors import FionaError
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.features import rasterize
from rasterio.warp import transform as warp_transform
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from geoclass.errors import ConfigError, InputNotFoundError, LabelError
from geoclass.io.extent import boxes_overlap, crs_name, format_bounds, one_line, ordered_bounds
from geoclass.io.reader import Scene
from geoclass.io.regrid import GridSpec, OnGrid, open_on_grid
from geoclass.io.windows import iter_window_grid, window_bounds, window_transform
from geoclass.progress import ProgressCallback, Reporter

__all__ = [
    "UNLABELLED",
    "ClassSpec",
    "LabelSource",
    "RasterLabels",
    "VectorLabels",
    "open_labels",
    "is_number",
    "is_usable_label",
    "is_vector_path",
    "pick_vector_layer",
    "read_class_file",
    "reproject_geometries",
    "resolve_classes",
    "value_name",
]

UNLABELLED = 255
"""Mask value of pixels without a label (the ignore index of segmentation training)."""

MAX_CLASSES = 255

ClassSpec = Sequence[str] | Mapping[str, Any]  # names, {name: value} or {name: [values]}
"""Classes given by the user: names in class-id order, or ``{name: label value}``."""

_RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".img", ".jp2", ".png", ".asc", ".nc", ".hdf", ".bil"}
_VECTOR_SUFFIXES = {
    ".shp", ".gpkg", ".geojson", ".json", ".fgb", ".kml", ".gml", ".sqlite", ".gdb", ".tab",
    ".mif", ".geojsonl", ".geojsons", ".parquet", ".zip",
}
# Geometries with more vertices than this are clipped to the window before rasterising, so a huge
# polygon costs a window only the vertices near it.
CLIP_VERTICES = 2000


class LabelSource(Protocol):
    """What the tiler needs from labels: class names and a class-id window reader."""

    kind: Literal["vector", "raster"]
    path: str
    classes: list[str]
    values: dict[str, Any]

    def read(self, window: Window) -> np.ndarray | None:
        """``uint8`` class ids of the window (``UNLABELLED`` where none); None if nothing there."""
        ...

    def close(self) -> None:
        """Release file handles."""
        ...


# --- classes --------------------------------------------------------------------------------


def read_class_file(path: str | os.PathLike[str]) -> list[str] | dict[str, Any]:
    """Read a ``--classes`` file.

    Accepted forms: one class name per line (blank lines and ``#`` comments ignored), a JSON list
    of names, a JSON object ``{name: label value}``, or ``{name: [label values]}`` to group
    several label values into one class (e.g. OSM ``fclass`` values into land-cover classes).

    Raises:
        InputNotFoundError: The file does not exist.
        ConfigError: The file is empty, malformed or names a class twice.
    """
    p = Path(path)
    if not p.is_file():
        raise InputNotFoundError(f"{p}: classes file not found")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read the classes file ({exc})") from exc
    stripped = text.strip()
    data: Any
    if stripped.startswith(("[", "{")):
        try:
            data = json.loads(stripped)
        except ValueError as exc:
            raise ConfigError(f"{p}: invalid JSON in the classes file ({exc})") from exc
    else:
        data = [
            line.strip()
            for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")
        ]
    if isinstance(data, dict):
        def _value(v: Any) -> bool:
            return isinstance(v, (int, float, str)) and not isinstance(v, bool)

        if not data or not all(_value(v) or (isinstance(v, list) and v and all(map(_value, v)))
                               for v in data.values()):
            raise ConfigError(f"{p}: expected a JSON object of class name -> label value (or a "
                              "list of label values, to group them into one class)")
        out: list[str] | dict[str, Any] = {str(k): v for k, v in data.items()}
    elif isinstance(data, list):
        if not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in data):
            raise ConfigError(f"{p}: expected a list of class names")
        out = [str(v).strip() for v in data]
    else:
        raise ConfigError(f"{p}: expected class names, one per line, a JSON list or object")
    names = list(out)
    if not names:
        raise ConfigError(f"{p}: the classes file names no class")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{p}: class {dupes[0]!r} is named twice")
    if any(not n for n in names):
        raise ConfigError(f"{p}: empty class name")
    return out


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def value_name(value: Any) -> str:
    """A label value as a class name: integral numbers without a trailing ``.0``."""
    if is_number(value):
        f = float(value)
        if math.isfinite(f) and f.is_integer():
            return str(int(f))
        return repr(f)
    return str(value).strip()


def is_usable_label(value: Any) -> bool:
    if value is None:
        return False
    if is_number(value):
        return math.isfinite(float(value))
    return bool(str(value).strip())


@dataclass(frozen=True)
class _Resolved:
    classes: list[str]
    values: dict[str, Any]  # class name -> label value it came from (or the code given)
    lookup: dict[Any, int]  # label value -> class id
    unknown: list[Any]  # label values that are not classes


def resolve_classes(values: Iterable[Any], given: ClassSpec | None = None) -> _Resolved:
    """Map label values (field values or raster values) to class ids.

    Without ``given`` the classes are the distinct values as strings, sorted (numerically for
    numbers). A list names the classes in id order: values match by name, or, for numeric values
    that are not all names, by id (value ``k`` is ``given[k]``). A mapping ``{name: code}`` orders
    the classes by code and matches values by code (numbers) or by name.

    Raises:
        LabelError: No value is usable, or more than 255 classes.
    """
    distinct = sorted({v for v in values if is_usable_label(v)}, key=_sort_key)
    if not distinct:
        raise LabelError("no usable label values")
    numeric = all(is_number(v) for v in distinct)
    lookup: dict[Any, int] = {}
    if given is None:
        names: list[str] = []
        for v in distinct:
            name = value_name(v)
            if name not in names:
                names.append(name)
            lookup[v] = names.index(name)
        vals = {n: v for v, n in ((v, value_name(v)) for v in distinct)}
        classes = names
    elif isinstance(given, Mapping) and any(isinstance(v, list) for v in given.values()):
        # Groups: {class: [label values]}; classes in the order given.
        classes = [str(n) for n in given]
        vals = dict(given.items())
        member = {}
        for i, (_, group) in enumerate(given.items()):
            for v in group if isinstance(group, list) else [group]:
                member[value_name(v)] = i
        for v in distinct:
            if value_name(v) in member:
                lookup[v] = member[value_name(v)]
    elif isinstance(given, Mapping):
        codes = sorted(given.items(), key=lambda kv: _sort_key(kv[1]))
        classes = [n for n, _ in codes]
        vals = {n: c for n, c in codes}
        by_code = {value_name(c): i for i, (_, c) in enumerate(codes)}
        by_name = {n: i for i, n in enumerate(classes)}
        for v in distinct:
            key = value_name(v)
            if numeric and key in by_code:
                lookup[v] = by_code[key]
            elif key in by_name:
                lookup[v] = by_name[key]
            elif key in by_code:
                lookup[v] = by_code[key]
    else:
        classes = [str(n) for n in given]
        by_name = {n: i for i, n in enumerate(classes)}
        names_match = all(value_name(v) in by_name for v in distinct)
        vals = {}
        for v in distinct:
            key = value_name(v)
            if not numeric or names_match:
                if key in by_name:
                    lookup[v] = by_name[key]
            elif float(v).is_integer() and 0 <= int(v) < len(classes):
                lookup[v] = int(v)
        for v, i in lookup.items():
            vals.setdefault(classes[i], v)
    if len(classes) > MAX_CLASSES:
        raise LabelError(
            f"{len(classes)} classes; at most {MAX_CLASSES} are supported "
            "(masks are uint8 with 255 for unlabelled)"
        )
    unknown = [v for v in distinct if v not in lookup]
    return _Resolved(classes, vals, lookup, unknown)


def _sort_key(value: Any) -> tuple[int, Any]:
    if is_number(value):
        return (0, float(value))
    return (1, str(value))


def _list_values(values: Sequence[Any], limit: int = 6) -> str:
    shown = ", ".join(repr(value_name(v)) if not is_number(v) else value_name(v)
                      for v in values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def _no_match_error(path: str, what: str, unknown: Sequence[Any], classes: Sequence[str]) -> LabelError:
    return LabelError(
        f"{path}: none of the {what} ({_list_values(unknown)}) is one of the classes given "
        f"({', '.join(classes[:8])}{', ...' if len(classes) > 8 else ''})"
    )


# --- helpers ----------------------------------------------------------------------------------


def _scene_bounds(scene: Scene) -> tuple[float, float, float, float]:
    """The scene's extent, ordered (bottom <= top even for a pixel-grid raster)."""
    return ordered_bounds(window_bounds(scene.transform, Window(0, 0, scene.width, scene.height)))


def pick_vector_layer(path: str, layer: str | None, report: Reporter) -> str:
    """The layer of a vector file to read: ``layer``, or the first (with a note when there are more).

    Raises:
        LabelError: Not a vector file, no layer, or no layer of that name.
    """
    try:
        layers = fiona.listlayers(path)
    except (FionaError, OSError, ValueError) as exc:
        raise LabelError(f"{path}: not a vector file fiona can read ({one_line(exc)})") from exc
    if not layers:
        raise LabelError(f"{path}: has no vector layer")
    if layer is None:
        layer = layers[0]
        if len(layers) > 1:
            report.info(f"{path}: has {len(layers)} layers ({', '.join(layers)}); using {layer!r}")
    elif layer not in layers:
        raise LabelError(f"{path}: no layer {layer!r}; the layers are: {', '.join(layers)}")
    return layer


def is_vector_path(path: str, layer: str | None) -> bool:
    suffix = Path(path).suffix.lower()
    if suffix in _RASTER_SUFFIXES and layer is None:
        return False
    if suffix in _VECTOR_SUFFIXES and suffix != ".gpkg":
        return True
    try:
        return bool(fiona.listlayers(path))
    except (FionaError, OSError, ValueError):
        return False


# --- vector labels ----------------------------------------------------------------------------


class VectorLabels:
    """Vector features rasterised per window onto a scene's grid.

    Attributes:
        kind: ``"vector"``.
        path: The vector file.
        field: The class field.
        classes: Class names in id order.
        values: Class name -> the field value it came from.
        crs: CRS of the file (None when it has none).
        count: Number of features used (with a class and a geometry, touching the scene).
    """

    kind: Literal["vector", "raster"] = "vector"

    def __init__(
        self,
        path: str | os.PathLike[str],
        scene: Scene,
        field: str | None = None,
        classes: ClassSpec | None = None,
        *,
        layer: str | None = None,
        progress: ProgressCallback | None = None,
        point_buffer: int = 0,
    ) -> None:
        """Read the features, reproject them and index them.

        Args:
            path: Any vector file fiona reads.
            scene: The scene whose grid labels are rasterised on.
            field: The class attribute; optional when the features have a single field.
            classes: Class names in id order or ``{name: code}``; default the field's values.
            layer: Layer of a multi-layer file; default the first.
            progress: Receives notes (reprojection, ignored features).
            point_buffer: Pixels around each point and line that take its class (squares of
                ``2 * point_buffer + 1`` pixels around a point); 0 burns the pixel under it.

        Raises:
            InputNotFoundError: The file does not exist.
            LabelError: Unreadable file, missing field, no usable values, no overlap.
        """
        report = Reporter(progress)
        self.path = os.fspath(path)
        self._scene_transform = scene.transform
        layer = pick_vector_layer(self.path, layer, report)
        geoms: list[Any] = []
        raw_values: list[Any] = []
        try:
            with fiona.open(self.path, layer=layer) as src:
                fields = list(src.schema.get("properties", {}))
                field = self._pick_field(field, fields)
                crs = CRS.from_wkt(src.crs_wkt) if src.crs_wkt else None
                n_features = 0
                for feat in src:
                    n_features += 1
                    if feat.geometry is None:
                        continue
                    geoms.append(shapely.geometry.shape(feat.geometry))
                    raw_values.append(feat.properties.get(field))
        except (FionaError, OSError) as exc:
            raise LabelError(f"{self.path}: cannot read features ({one_line(exc)})") from exc
        self.field = field
        if n_features == 0:
            raise LabelError(f"{self.path}: has no features")
        if not any(is_usable_label(v) for v in raw_values):
            raise LabelError(
                f"{self.path}: field {field!r} has no usable values (all {n_features} features "
                "are empty or null)"
            )
        try:
            resolved = resolve_classes(raw_values, classes)
        except LabelError as exc:
            raise LabelError(f"{self.path}: field {field!r}: {exc}") from exc
        if not resolved.lookup:
            raise _no_match_error(self.path, f"values of field {field!r}", resolved.unknown,
                                  resolved.classes)
        if resolved.unknown:
            report.warn(
                f"{self.path}: features with {field!r} = {_list_values(resolved.unknown)} are not "
                "one of the classes given and are ignored"
            )
        self.classes = resolved.classes
        self.values = resolved.values

        keep = [i for i, v in enumerate(raw_values) if is_usable_label(v) and v in resolved.lookup
                and not geoms[i].is_empty]
        geom_arr = np.array([geoms[i] for i in keep], dtype=object)
        ids = np.array([resolved.lookup[raw_values[i]] for i in keep], dtype=np.uint8)

        self.crs = crs
        if scene.crs is not None and crs is None:
            report.warn(f"{self.path}: has no CRS; assuming the scene's ({crs_name(scene.crs)})")
        elif scene.crs is None and crs is not None:
            raise LabelError(
                f"{self.path}: labels are in {crs_name(crs)} but the scene has no CRS, so they "
                "cannot be placed on it"
            )
        elif scene.crs is not None and crs is not None and crs != scene.crs:
            geom_arr = reproject_geometries(geom_arr, crs, scene.crs)
            report.info(
                f"labels reprojected from {crs_name(crs)} to the scene's {crs_name(scene.crs)}"
            )
        nonempty = ~shapely.is_empty(geom_arr) if len(geom_arr) else np.zeros(0, bool)
        geom_arr, ids = geom_arr[nonempty], ids[nonempty]
        invalid = ~shapely.is_valid(geom_arr)
        if invalid.any():
            geom_arr[invalid] = shapely.make_valid(geom_arr[invalid])
            report.info(f"{self.path}: {int(invalid.sum())} invalid geometries repaired")

        if point_buffer > 0 and len(geom_arr):
            # Whole pixels around each point: a square of (2b + 1) pixels, burnt by centre.
            lineal = ~np.isin(shapely.get_type_id(geom_arr), [3, 6])
            size = max(abs(scene.transform.a), abs(scene.transform.e)) * (point_buffer + 0.5)
            geom_arr[lineal] = shapely.buffer(geom_arr[lineal], size, cap_style="square",
                                              join_style="mitre")
        sb = _scene_bounds(scene)
        tree = shapely.STRtree(geom_arr)
        inside = tree.query(shapely.box(*sb), predicate="intersects")
        if len(inside) == 0:
            lb = tuple(shapely.total_bounds(geom_arr)) if len(geom_arr) else (math.nan,) * 4
            raise LabelError(
                f"{self.path}: labels (bounds {format_bounds(lb)}) do not overlap the scene "
                f"(bounds {format_bounds(sb)}), both in {crs_name(scene.crs)}"
            )
        if len(inside) < len(geom_arr):
            report.info(f"{self.path}: {len(geom_arr) - len(inside)} of {len(geom_arr)} labelled "
                        "features lie outside the scene and are ignored")
            inside.sort()
            geom_arr, ids = geom_arr[inside], ids[inside]
            tree = shapely.STRtree(geom_arr)
        self._geoms = geom_arr
        self._ids = ids
        self._tree = tree
        self._nverts = shapely.get_num_coordinates(geom_arr)
        # Polygons burn the pixels whose centre they hold; points and lines need all_touched to
        # burn at all, so they are rasterised separately (and on top).
        self._polygonal = np.isin(shapely.get_type_id(geom_arr), [3, 6])
        self.count = len(geom_arr)
        self._lock = threading.Lock()

    @staticmethod
    def _pick_field(field: str | None, fields: list[str]) -> str:
        if field is not None:
            if field in fields:
                return field
            folded = [f for f in fields if f.lower() == field.lower()]
            if len(folded) == 1:
                return folded[0]
            raise LabelError(
                f"no field {field!r} in the label layer; the fields are: "
                + (", ".join(fields) if fields else "(none)")
            )
        if len(fields) == 1:
            return fields[0]
        if not fields:
            raise LabelError("the label layer has no attribute fields to take classes from")
        raise LabelError(
            f"the label layer has {len(fields)} fields ({', '.join(fields)}); choose the class field "
            f"with --label-field, e.g. --label-field {fields[0]}"
        )

    @property
    def geometries(self) -> np.ndarray:
        """The labelled features touching the scene, in the scene's CRS (shapely objects)."""
        return self._geoms

    def read(self, window: Window) -> np.ndarray | None:
        """Class ids of the features in ``window`` (``UNLABELLED`` elsewhere); None if none touch it."""
        return self._burn(window, self._ids, "uint8", UNLABELLED)

    def read_feature_ids(self, window: Window) -> np.ndarray | None:
        """Which feature labels each pixel of ``window`` (its index; -1 elsewhere), burnt exactly
        as :meth:`read` burns the classes; None if no feature touches the window."""
        return self._burn(window, np.arange(len(self._geoms)), "int32", -1)

    def _burn(self, window: Window, values: np.ndarray, dtype: str, fill: int) -> np.ndarray | None:
        h, w = int(window.height), int(window.width)
        wt = window_transform(self._scene_transform, window)
        left, bottom, right, top = ordered_bounds(window_bounds(self._scene_transform, window))
        with self._lock:  # STRtree queries from several threads are not documented as safe
            idx = self._tree.query(shapely.box(left, bottom, right, top), predicate="intersects")
        if len(idx) == 0:
            return None
        idx.sort()  # feature order decides overlaps: later features win, as in the file
        geoms = self._geoms[idx]
        big = self._nverts[idx] > CLIP_VERTICES
        if big.any():
            # One pixel of margin so clipping never moves an edge that decides a pixel.
            px, py = abs(wt.a) + abs(wt.b), abs(wt.d) + abs(wt.e)
            geoms = geoms.copy()
            geoms[big] = shapely.clip_by_rect(
                geoms[big], left - px, bottom - py, right + px, top + py
            )
        out: np.ndarray | None = None
        polygonal = self._polygonal[idx]
        for touched, sel in ((False, polygonal), (True, ~polygonal)):
            shapes = [(g, int(v)) for g, v in zip(geoms[sel], values[idx][sel]) if not g.is_empty]
            if not shapes:
                continue
            layer = rasterize(shapes, out_shape=(h, w), transform=wt, fill=fill,
                              dtype=dtype, all_touched=touched)
            if out is None:
                out = layer
            else:
                np.copyto(out, layer, where=layer != fill)
        return out

    def close(self) -> None:
        """Nothing to release (features live in memory)."""


def reproject_geometries(geoms: np.ndarray, src: CRS, dst: CRS) -> np.ndarray:
    """Reproject shapely geometries vertex by vertex (GDAL/PROJ through rasterio)."""

    def fn(coords: np.ndarray) -> np.ndarray:
        if len(coords) == 0:
            return coords
        xs, ys = warp_transform(src, dst, coords[:, 0], coords[:, 1])
        return np.column_stack([xs, ys])

    try:
        out = shapely.transform(geoms, fn)
    except Exception as exc:  # PROJ errors come as rasterio's private CPLE types
        raise LabelError(
            f"labels cannot be reprojected from {crs_name(src)} to {crs_name(dst)} "
            f"({one_line(exc)}); are the coordinates in the CRS the file declares?"
        ) from exc
    # Vertices PROJ cannot place come back as inf; such geometries are dropped.
    finite = np.isfinite(shapely.bounds(out)).all(axis=1) | shapely.is_empty(out)
    out[~finite] = shapely.geometry.Polygon()
    return out


# --- raster labels ----------------------------------------------------------------------------


class RasterLabels:
    """A class raster read window by window on a scene's grid (nearest-neighbour).

    Attributes:
        kind: ``"raster"``.
        path: The raster file.
        classes: Class names in id order.
        values: Class name -> the raster value it came from.
        same_grid: True when the raster is on the scene's grid (read directly, no warping).
    """

    kind: Literal["vector", "raster"] = "raster"

    def __init__(
        self,
        path: str | os.PathLike[str],
        scene: Scene,
        classes: ClassSpec | None = None,
        *,
        band: int = 1,
        progress: ProgressCallback | None = None,
    ) -> None:
        """Open the raster, check it overlaps the scene and find its classes.

        Without ``classes`` the raster's distinct values are found with one streamed pass over it.

        Raises:
            InputNotFoundError: The file does not exist.
            LabelError: Unreadable, no overlap, non-integer values, too many classes.
        """
        report = Reporter(progress)
        self.path = os.fspath(path)
        self._band = band
        self._local = threading.local()
        self._lock = threading.Lock()
        self._handles: list[Any] = []
        self._scene_shape = (scene.width, scene.height)
        self._scene_crs = scene.crs
        self._scene_transform = scene.transform
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                ds = rasterio.open(self.path)
        except RasterioError as exc:
            raise LabelError(f"{self.path}: not a raster or vector file GDAL can read "
                             f"({one_line(exc)})") from exc
        with ds:
            if not 1 <= band <= ds.count:
                raise LabelError(f"{self.path}: band {band} requested but the raster has {ds.count}")
            if ds.count > 1 and band == 1:
                report.info(f"{self.path}: has {ds.count} bands; class ids are read from band 1")
            self._dtype = np.dtype(ds.dtypes[band - 1])
            self._nodata = ds.nodatavals[band - 1]
            crs, transform, width, height = ds.crs, ds.transform, ds.width, ds.height
            if self._dtype.kind == "c":
                raise LabelError(f"{self.path}: complex values cannot be class ids")
            if crs is None and scene.crs is not None:
                if (width, height) == self._scene_shape:
                    report.warn(f"{self.path}: has no CRS; assuming it is on the scene's grid")
                    crs, transform = scene.crs, scene.transform
                else:
                    raise LabelError(f"{self.path}: label raster has no CRS and is not the "
                                     "scene's size, so it cannot be placed on the scene")
            elif crs is not None and scene.crs is None:
                raise LabelError(f"{self.path}: labels are in {crs_name(crs)} but the scene has "
                                 "no CRS, so they cannot be placed on it")
            self.same_grid = (
                (crs == scene.crs or crs is None)
                and transform.almost_equals(scene.transform, precision=1e-9)
                and (width, height) == self._scene_shape
            )
            self._src_crs, self._src_transform = crs, transform
            sb = _scene_bounds(scene)
            lb = ordered_bounds(window_bounds(transform, Window(0, 0, width, height)))
            if crs is not None and scene.crs is not None and crs != scene.crs:
                try:
                    lb = transform_bounds(crs, scene.crs, *lb, densify_pts=21)
                    report.info(f"label raster warped from {crs_name(crs)} to the scene's "
                                f"{crs_name(scene.crs)} (nearest neighbour)")
                except RasterioError as exc:
                    raise LabelError(f"{self.path}: bounds cannot be transformed to the scene's "
                                     f"CRS ({one_line(exc)})") from exc
            if not boxes_overlap(lb, sb):
                raise LabelError(
                    f"{self.path}: labels (bounds {format_bounds(lb)}) do not overlap the scene "
                    f"(bounds {format_bounds(sb)}), both in {crs_name(scene.crs)}"
                )
            # A list of non-numeric names is read as ids (value k is class k): no scan needed.
            by_id = classes is not None and not isinstance(classes, Mapping) and not all(
                _is_int_text(n) for n in classes)
            found = None if by_id else self._scan_values(ds, report, self._footprint(ds, scene))
        if found is not None and not found:
            raise LabelError(f"{self.path}: the label raster holds no value other than nodata")
        if found is None:
            given = list(classes or [])
            resolved = resolve_classes(range(len(given)), given)
        else:
            try:
                resolved = resolve_classes(found, classes)
            except LabelError as exc:
                raise LabelError(f"{self.path}: {exc}") from exc
            if not resolved.lookup:
                raise _no_match_error(self.path, "raster values", resolved.unknown, resolved.classes)
            if resolved.unknown:
                report.warn(f"{self.path}: raster values {_list_values(resolved.unknown)} are not "
                            "one of the classes given and are read as unlabelled")
        self.classes = resolved.classes
        self.values = resolved.values
        pairs = sorted((float(v), i) for v, i in resolved.lookup.items())
        keys = np.array([k for k, _ in pairs], dtype=np.float64)
        self._keys = keys
        self._ids = np.array([i for _, i in pairs], dtype=np.uint8)
        self._lut: np.ndarray | None = None
        if self._dtype.kind in "ui" and self._dtype.itemsize <= 2:
            info = np.iinfo(self._dtype)
            lut = np.full(int(info.max) - int(info.min) + 1, UNLABELLED, np.uint8)
            lut[keys.astype(np.int64) - int(info.min)] = self._ids
            self._lut, self._lut_offset = lut, int(info.min)

    def _footprint(self, ds: Any, scene: Scene) -> Window:
        """The part of the label raster under the scene (whole raster if it cannot be told)."""
        whole = Window(0, 0, ds.width, ds.height)
        try:
            sb = _scene_bounds(scene)
            if self._src_crs is not None and scene.crs is not None and self._src_crs != scene.crs:
                sb = transform_bounds(scene.crs, self._src_crs, *sb, densify_pts=21)
            left, bottom, right, top = ordered_bounds(sb)
            if self._src_transform.e > 0:  # pixel grid (y down): rasterio wants "top" above
                bottom, top = top, bottom
            win = rasterio.windows.from_bounds(left, bottom, right, top,
                                               transform=self._src_transform)
            win = win.round_offsets(op="floor").round_lengths(op="ceil")
            inter = win.intersection(whole)
            return Window(int(inter.col_off), int(inter.row_off), int(inter.width) + 1,
                          int(inter.height) + 1).intersection(whole)
        except (RasterioError, ValueError, rasterio.errors.WindowError):
            return whole

    def _scan_values(self, ds: Any, report: Reporter, area: Window) -> list[Any]:
        """Distinct valid values of the raster over ``area``, streamed in 1024-pixel windows."""
        found: set[Any] = set()
        c0, r0 = int(area.col_off), int(area.row_off)
        grid = list(iter_window_grid(int(area.width), int(area.height), 1024))
        report.start("scan labels", total=len(grid))
        for gw in grid:
            core = Window(gw.core.col_off + c0, gw.core.row_off + r0, gw.core.width, gw.core.height)
            arr = ds.read(self._band, window=core, masked=True)
            data = arr.compressed() if np.ma.is_masked(arr) else np.asarray(arr).ravel()
            if self._dtype.kind == "f":
                data = data[np.isfinite(data)]
            if data.size:
                if self._dtype == np.uint8:
                    vals = np.flatnonzero(np.bincount(data, minlength=256)).tolist()
                else:
                    vals = np.unique(data).tolist()
                found.update(vals)
            if len(found) > MAX_CLASSES:
                raise LabelError(f"{self.path}: more than {MAX_CLASSES} distinct values; a label "
                                 "raster must hold class ids (give --classes to name them)")
            report.advance("scan labels")
        report.end("scan labels")
        bad = [v for v in found if isinstance(v, float) and not v.is_integer()]
        if bad:
            raise LabelError(f"{self.path}: holds non-integer values (e.g. {bad[0]}); a label "
                             "raster must hold class ids")
        return sorted(int(v) for v in found)

    def _dataset(self) -> OnGrid:
        on = getattr(self._local, "on", None)
        if on is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                src = rasterio.open(self.path)
            with self._lock:
                self._handles.append(src)
            on = open_on_grid(
                src,
                GridSpec(self._scene_crs, self._scene_transform, *self._scene_shape),
                resampling=Resampling.nearest,
                src_crs=self._src_crs,
                src_transform=self._src_transform,
                add_alpha=self._nodata is None,
                warp=not self.same_grid,
            )
            with self._lock:
                self._handles.append(on)
            self._local.on = on
        return on

    def read(self, window: Window) -> np.ndarray | None:
        """Class ids of ``window`` on the scene grid (``UNLABELLED`` where none); None if no label."""
        h, w = int(window.height), int(window.width)
        c0, r0 = max(0, int(window.col_off)), max(0, int(window.row_off))
        c1 = min(self._scene_shape[0], int(window.col_off) + w)
        r1 = min(self._scene_shape[1], int(window.row_off) + h)
        if c0 >= c1 or r0 >= r1:
            return None
        inner = self._read_inside(Window(c0, r0, c1 - c0, r1 - r0))
        if inner is None or (c1 - c0, r1 - r0) == (w, h):
            return inner
        out = np.full((h, w), UNLABELLED, np.uint8)
        out[r0 - int(window.row_off): r1 - int(window.row_off),
            c0 - int(window.col_off): c1 - int(window.col_off)] = inner
        return out

    def _read_inside(self, window: Window) -> np.ndarray | None:
        both, valid = self._dataset().read([self._band], window)
        data = both[0]
        if self._nodata is not None:
            nd = self._nodata
            valid = ~np.isnan(data) if isinstance(nd, float) and math.isnan(nd) else data != nd
        if self._lut is not None:
            ids = self._lut[data.astype(np.int64) - self._lut_offset]
        else:
            ids = _lookup(data, self._keys, self._ids)
        if valid is not None:
            ids[~valid] = UNLABELLED
        if (ids == UNLABELLED).all():
            return None
        return ids

    def close(self) -> None:
        """Close every thread's handles."""
        with self._lock:
            handles, self._handles = self._handles, []
        for ds in reversed(handles):
            try:
                ds.close()
            except Exception:  # noqa: BLE001, S110 - closing is best effort
                pass
        self._local = threading.local()


def _is_int_text(name: str) -> bool:
    return name.strip().lstrip("+-").isdigit()


def _lookup(data: np.ndarray, keys: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Class ids of arbitrary-dtype values (``UNLABELLED`` for values that are no class)."""
    flat = data.astype(np.float64, copy=False).ravel()
    pos = np.clip(np.searchsorted(keys, flat), 0, len(keys) - 1)
    out = np.where(keys[pos] == flat, ids[pos], UNLABELLED).astype(np.uint8)
    return out.reshape(data.shape)


# --- entry point ------------------------------------------------------------------------------


def open_labels(
    path: str | os.PathLike[str],
    scene: Scene,
    *,
    field: str | None = None,
    classes: ClassSpec | str | os.PathLike[str] | None = None,
    layer: str | None = None,
    progress: ProgressCallback | None = None,
    point_buffer: int = 0,
) -> VectorLabels | RasterLabels:
    """Open vector or raster labels for a scene.

    Args:
        path: Vector file (Shapefile, GeoPackage, GeoJSON, ...) or class raster.
        scene: The scene the labels are read onto.
        field: Class attribute of vector labels.
        classes: Class names in id order, ``{name: code}``, or a classes file (see
            ``read_class_file``); default the label values, sorted.
        layer: Layer of a multi-layer vector file.
        progress: Receives notes and warnings.
        point_buffer: Pixels around point and line labels that take their class (vector only).

    Raises:
        InputNotFoundError: The file does not exist.
        LabelError: Unusable labels (see ``VectorLabels`` and ``RasterLabels``).
    """
    p = os.fspath(path)
    remote = p.startswith("/vsi") or "://" in p
    if not remote and not Path(p).exists():
        raise InputNotFoundError(f"{p}: labels file not found")
    spec: ClassSpec | None
    if isinstance(classes, (str, os.PathLike)):
        spec = read_class_file(classes)
    else:
        spec = classes
    if is_vector_path(p, layer):
        try:
            return VectorLabels(p, scene, field, spec, layer=layer, progress=progress,
                                point_buffer=point_buffer)
        except LabelError as exc:
            msg = str(exc)
            raise LabelError(msg if msg.startswith(p) else f"{p}: {msg}") from exc
    if field is not None:
        Reporter(progress).warn(f"{p}: is a raster; --label-field {field} is ignored")
    return RasterLabels(p, scene, spec, progress=progress)


