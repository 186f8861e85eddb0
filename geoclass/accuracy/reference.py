"""Reference data read against a classified map: which map class, which reference class, how often.

Three kinds of reference are understood, in any CRS (brought onto the map's CRS):

* points (any OGR format): each point is one sample, the map pixel under it. A set of points can
  be a probability sample (e.g. from ``geoclass sample``), so area estimates apply;
* polygons: every map pixel whose centre is inside a polygon is a sample, read one polygon window
  at a time (tiles of at most ``TILE`` pixels). Such pixels are not a probability sample;
* a reference raster on any grid, read onto the map's grid with nearest neighbour; every pixel
  where both hold a class is a sample (not a probability sample either).

Lines are an error. Reference labels are matched to the map's classes by name (class names of the
map), by value (numbers, or numeric text), or through a class map ``{reference label: map class}``
whose ``null`` entries drop a label. The result is a table of counts per (map value, reference
value); memory holds the vector features (as labels do) but never more than a tile of the map.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fiona
import numpy as np
import rasterio
import shapely
from fiona.errors import FionaError
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.features import rasterize
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from geoclass.errors import ConfigError, GeoreferenceError, InputNotFoundError, LabelError
from geoclass.io.extent import boxes_overlap, crs_name, format_bounds, one_line, ordered_bounds
from geoclass.io.labels import (
    CLIP_VERTICES,
    UNLABELLED,
    RasterLabels,
    VectorLabels,
    is_number,
    is_usable_label,
    is_vector_path,
    pick_vector_layer,
    reproject_geometries,
    value_name,
)
from geoclass.io.reader import Scene, open_scene
from geoclass.io.windows import iter_window_grid, window_bounds, window_transform
from geoclass.progress import ProgressCallback, Reporter

__all__ = ["TILE", "MapClasses", "ReferenceSample", "match_labels", "read_class_map_file", "read_reference"]

TILE = 1024
"""Side of the largest map tile read at once (polygons and reference rasters)."""

SAMPLE_LABEL_FIELD = "reference"
"""The label field of a sample written by ``geoclass sample``: the default ``--label-field``."""
SAMPLE_MAP_FIELD = "map_class"
"""The map value each point of such a sample was drawn from (checked against the map)."""

_POINT_TYPES = {"Point", "MultiPoint"}
_POLYGON_TYPES = {"Polygon", "MultiPolygon"}


@dataclass(frozen=True)
class MapClasses:
    """The classes of the map that reference labels are matched to.

    Attributes:
        values: Class values present in the map (nodata excluded), sorted.
        names: Value -> class name, from the map's metadata; may be empty.
    """

    values: Sequence[int]
    names: Mapping[int, str] = field(default_factory=dict)

    @property
    def legend(self) -> list[int]:
        """Every class value the map knows: present ones and named ones."""
        return sorted(set(self.values) | set(self.names))

    def describe(self, limit: int = 12) -> str:
        """``Forest (1), Water (2), ...`` for messages."""
        shown = [f"{self.names[v]} ({v})" if v in self.names else str(v) for v in self.legend]
        return ", ".join(shown[:limit]) + (f", ... ({len(shown)} in all)" if len(shown) > limit else "")


@dataclass
class ReferenceSample:
    """Reference data read against a map.

    Attributes:
        path: The reference file.
        kind: ``points``, ``polygons``, ``points+polygons`` or ``raster``.
        field: The label field of vector reference (None for a raster).
        counts: ``(map value, reference class as map value) -> number of samples``.
        probability_sample: True for points only; pixels of polygons or rasters are not one.
        features: Points and polygons read (vector reference).
        dropped_outside: Points outside the map.
        dropped_nodata: Samples (points or pixels) on the map's nodata.
        dropped_ignored: Samples whose label the class map sets to null.
        matches: Reference label -> map value (None: ignored), for the labels that occur.
        notes: Plain sentences about what was dropped or assumed.
    """

    path: str
    kind: str
    field: str | None
    counts: dict[tuple[int, int], int]
    probability_sample: bool
    features: int = 0
    dropped_outside: int = 0
    dropped_nodata: int = 0
    dropped_ignored: int = 0
    matches: dict[str, int | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Number of samples used."""
        return int(sum(self.counts.values()))


# --- class matching ---------------------------------------------------------------------------


def read_class_map_file(path: str | os.PathLike[str]) -> dict[str, str | int | None]:
    """Read a ``--class-map`` JSON file: ``{reference label: map class name or value, or null}``.

    Raises:
        InputNotFoundError: The file does not exist.
        ConfigError: Not a JSON object of that form.
    """
    p = Path(path)
    if not p.is_file():
        raise InputNotFoundError(f"{p}: class map file not found")
    try:
        data = json.loads(p.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{p}: not a readable JSON class map ({one_line(exc)})") from exc
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{p}: expected a JSON object {{reference label: map class}}, e.g. "
                          '{"1": "Forest", "2": "Pasture"}')
    for key, value in data.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int, float))):
            raise ConfigError(f"{p}: the map class for {key!r} must be a class name, a class value "
                              f"or null, got {value!r}")
    return {str(k).strip(): v for k, v in data.items()}


def _numeric_value(value: Any) -> int | None:
    """An integral number, or numeric text of one, as an int; else None."""
    if isinstance(value, bool):
        return None
    if is_number(value):
        f = float(value)
        return int(f) if math.isfinite(f) and f.is_integer() else None
    text = str(value).strip()
    try:
        f = float(text)
    except ValueError:
        return None
    return int(f) if math.isfinite(f) and f.is_integer() else None


def _resolve(target: Any, classes: MapClasses) -> int | None:
    """The map value a label or class-map target names (by name, then by value), or None."""
    if isinstance(target, str) or not is_number(target):
        text = str(target).strip()
        by_name = [v for v, n in classes.names.items() if n == text]
        if not by_name:
            by_name = [v for v, n in classes.names.items() if n.lower() == text.lower()]
        if len(by_name) == 1:
            return by_name[0]
    number = _numeric_value(target)
    if number is not None and number in classes.legend:
        return number
    return None


def match_labels(
    labels: Mapping[Any, int],
    classes: MapClasses,
    class_map: Mapping[str, Any] | None = None,
    *,
    source: str = "reference",
    class_map_name: str = "--class-map",
    unit: str = "samples",
) -> dict[Any, int | None]:
    """Map each reference label to a map class value.

    Without a class map a label matches a map class name (exactly, else ignoring case) or, when
    it is a number or numeric text, the class with that value. With a class map every label must
    be one of its keys; the target is a map class name or value, or null to drop the label.

    Args:
        labels: Reference label -> how many samples carry it (for the error message).
        classes: The map's classes.
        class_map: ``{reference label: map class}``.
        source: The reference file, for messages.
        class_map_name: The class map file, for messages.
        unit: What the counts count (``points``, ``pixels``).

    Returns:
        Label -> map value, or None for labels the class map drops.

    Raises:
        LabelError: Some labels match no map class (listed with their counts).
        ConfigError: A class-map target is not a class of the map.
    """
    out: dict[Any, int | None] = {}
    unmatched: list[Any] = []
    if class_map is not None:
        folded = {k.lower(): k for k in class_map}
        for label in labels:
            key = value_name(label)
            if key not in class_map and key.lower() in folded:
                key = folded[key.lower()]
            if key not in class_map:
                unmatched.append(label)
                continue
            target = class_map[key]
            if target is None:
                out[label] = None
                continue
            value = _resolve(target, classes)
            if value is None:
                raise ConfigError(f"{class_map_name}: {target!r} (for reference label {key!r}) is not a "
                                  f"class of the map; the map's classes are: {classes.describe()}")
            out[label] = value
    else:
        for label in labels:
            value = _resolve(label, classes)
            if value is None:
                unmatched.append(label)
            else:
                out[label] = value
    if unmatched:
        unmatched.sort(key=lambda v: -labels[v])
        shown = ", ".join(f"{value_name(v)!r} ({labels[v]} {unit})" for v in unmatched[:10])
        more = f", ... ({len(unmatched)} labels in all)" if len(unmatched) > 10 else ""
        where = (f"are not keys of {class_map_name}" if class_map is not None
                 else "match no class of the map by name or value")
        raise LabelError(f"{source}: reference labels {shown}{more} {where}; the map's classes are: "
                         f"{classes.describe()}; give --class-map FILE with "
                         '{"reference label": "map class"}')
    return out


def _describe_matches(matches: Mapping[Any, int | None], classes: MapClasses) -> str:
    parts = []
    for label, value in sorted(matches.items(), key=lambda kv: value_name(kv[0])):
        target = "ignored" if value is None else (
            f"{classes.names[value]} ({value})" if value in classes.names else str(value))
        parts.append(f"{value_name(label)} -> {target}")
    shown = ", ".join(parts[:12]) + (", ..." if len(parts) > 12 else "")
    return f"reference labels matched to map classes: {shown}"


def _warn_by_value(
    matches: Mapping[Any, int | None], classes: MapClasses, class_map: Mapping[str, Any] | None, path: str,
    report: Reporter, warned: list[str],
) -> None:
    """Warn when numeric labels were matched by value to a map whose classes have names."""
    if class_map is not None or not classes.names:
        return
    by_value = [(label, v) for label, v in matches.items()
                if v is not None and value_name(label) != classes.names.get(v, value_name(label))
                and value_name(label).lower() != classes.names.get(v, "").lower()]
    if not by_value:
        return
    shown = ", ".join(f"{value_name(label)} -> {classes.names.get(v, v)}" for label, v in by_value[:8])
    message = (f"{path}: reference labels were matched to the map's classes by value ({shown}); if the "
               "reference uses codes of its own, give --class-map FILE")
    report.warn(message)
    warned.append(message)


# --- entry point ------------------------------------------------------------------------------


def read_reference(
    reference: str | os.PathLike[str],
    map_path: str | os.PathLike[str],
    classes: MapClasses,
    *,
    field: str | None = None,
    class_map: Mapping[str, Any] | None = None,
    class_map_name: str = "--class-map",
    layer: str | None = None,
    progress: ProgressCallback | None = None,
) -> ReferenceSample:
    """Read reference points, polygons or a reference raster against a classified map.

    Args:
        reference: Vector file (points or polygons, any OGR format and CRS) or class raster.
        map_path: The classified map (single band of class values).
        classes: The map's classes (present values and names).
        field: The label attribute of vector reference; optional when there is one field.
        class_map: ``{reference label: map class name or value, or null}``.
        class_map_name: Where the class map came from, for messages.
        layer: Layer of a multi-layer vector file; default the first.
        progress: Receives notes and progress.

    Returns:
        The sample counts and what was dropped.

    Raises:
        InputNotFoundError: The reference file does not exist.
        LabelError: Unreadable reference, missing field, lines, unknown labels, no overlap.
        GeoreferenceError: Reference and map cannot be placed together (one has no CRS).
    """
    path = os.fspath(reference)
    remote = path.startswith("/vsi") or "://" in path
    if not remote and not Path(path).exists():
        raise InputNotFoundError(f"{path}: reference file not found")
    scene = open_scene(map_path)
    try:
        if is_vector_path(path, layer):
            return _read_vector(path, scene, classes, field, class_map, class_map_name, layer, progress)
        if field is not None:
            Reporter(progress).warn(f"{path}: is a raster; --label-field {field} is ignored")
        return _read_raster(path, scene, classes, class_map, class_map_name, progress)
    finally:
        scene.close()


# --- vectors ----------------------------------------------------------------------------------


def _read_vector(
    path: str,
    scene: Scene,
    classes: MapClasses,
    field: str | None,
    class_map: Mapping[str, Any] | None,
    class_map_name: str,
    layer: str | None,
    progress: ProgressCallback | None,
) -> ReferenceSample:
    report = Reporter(progress)
    layer = pick_vector_layer(path, layer, report)
    geoms: list[Any] = []
    labels: list[Any] = []
    drawn: list[Any] = []
    no_label = no_geometry = 0
    notes: list[str] = []
    try:
        with fiona.open(path, layer=layer) as src:
            fields = list(src.schema.get("properties", {}))
            sample_field = [f for f in fields if f.lower() == SAMPLE_LABEL_FIELD]
            if field is None and len(fields) > 1 and len(sample_field) == 1:
                field = sample_field[0]
                notes.append(f"{path}: labels read from field {field!r} (as in a 'geoclass sample' file)")
            map_field = next((f for f in fields if f.lower() == SAMPLE_MAP_FIELD), None)
            try:
                field = VectorLabels._pick_field(field, fields)
            except LabelError as exc:
                raise LabelError(f"{path}: {str(exc).replace('the label layer', 'the reference layer')}") from exc
            crs = CRS.from_wkt(src.crs_wkt) if src.crs_wkt else None
            for number, feat in enumerate(src, start=1):
                if feat.geometry is None:
                    no_geometry += 1
                    continue
                kind = feat.geometry.type
                if kind not in _POINT_TYPES | _POLYGON_TYPES:
                    raise LabelError(f"{path}: feature {number} is a {kind}; reference data must be "
                                     "points (a sample) or polygons")
                value = feat.properties.get(field)
                if not is_usable_label(value):
                    no_label += 1
                    continue
                geoms.append(shapely.geometry.shape(feat.geometry))
                labels.append(value)
                drawn.append(None if map_field is None or map_field == field else feat.properties.get(map_field))
    except (FionaError, OSError) as exc:
        raise LabelError(f"{path}: cannot read features ({one_line(exc)})") from exc
    if not geoms:
        raise LabelError(f"{path}: no feature has both a geometry and a value in field {field!r}")
    if no_label:
        notes.append(f"{no_label} feature(s) of {path} have no value in {field!r} and are ignored")
    if no_geometry:
        notes.append(f"{no_geometry} feature(s) of {path} have no geometry and are ignored")
    geom_arr = _to_map_crs(np.array(geoms, dtype=object), crs, scene, path, notes)
    label_arr = np.array(labels, dtype=object)
    drawn_arr = np.array(drawn, dtype=object)
    map_bounds = ordered_bounds(window_bounds(scene.transform, Window(0, 0, scene.width, scene.height)))
    points = np.isin(shapely.get_type_id(geom_arr), [0, 4])

    # Points: one sample each (multipoints: each part).
    parts, index = shapely.get_parts(geom_arr[points], return_index=True)
    xy = shapely.get_coordinates(parts) if len(parts) else np.zeros((0, 2))
    point_labels = label_arr[points][index] if len(parts) else np.zeros(0, dtype=object)
    point_drawn = drawn_arr[points][index] if len(parts) else np.zeros(0, dtype=object)
    inv = ~scene.transform
    cols = np.floor(inv.a * xy[:, 0] + inv.b * xy[:, 1] + inv.c) if len(xy) else np.zeros(0)
    rows = np.floor(inv.d * xy[:, 0] + inv.e * xy[:, 1] + inv.f) if len(xy) else np.zeros(0)
    finite = np.isfinite(cols) & np.isfinite(rows)
    inside = finite & (cols >= 0) & (cols < scene.width) & (rows >= 0) & (rows < scene.height)

    # Polygons: those that reach the map.
    polys = geom_arr[~points]
    poly_labels = label_arr[~points]
    nonempty = ~shapely.is_empty(polys) if len(polys) else np.zeros(0, bool)
    polys, poly_labels = polys[nonempty], poly_labels[nonempty]
    n_polys = int(len(polys))
    if len(polys):
        invalid = ~shapely.is_valid(polys)
        if invalid.any():
            polys[invalid] = shapely.make_valid(polys[invalid])
            notes.append(f"{int(invalid.sum())} invalid polygon(s) of {path} were repaired")
        reach = shapely.intersects(polys, shapely.box(*map_bounds))
        polys, poly_labels = polys[reach], poly_labels[reach]

    n_points = int(len(xy))
    if not inside.any() and not len(polys):
        ref_bounds = shapely.total_bounds(geom_arr) if len(geom_arr) else (math.nan,) * 4
        raise LabelError(f"{path}: the reference (bounds {format_bounds(ref_bounds)}) does not overlap the map "
                         f"{scene.name} (bounds {format_bounds(map_bounds)}), both in {crs_name(scene.crs)}")
    outside = int((~inside).sum())
    if outside:
        notes.append(f"{outside} of {n_points} reference points lie outside the map and are dropped")
    if n_polys and len(polys) < n_polys:
        notes.append(f"{n_polys - len(polys)} of {n_polys} reference polygons lie outside the map and are ignored")

    # Match the labels of what reaches the map.
    tally: Counter[Any] = Counter()
    tally.update(point_labels[inside].tolist())
    tally.update(poly_labels.tolist())
    unit = "points" if not len(polys) else ("polygons" if not inside.any() else "features")
    matches = match_labels(tally, classes, class_map, source=path, class_map_name=class_map_name, unit=unit)
    notes.append(_describe_matches(matches, classes))
    warned: list[str] = []
    _warn_by_value(matches, classes, class_map, path, report, warned)

    counts: Counter[tuple[int, int]] = Counter()
    lookup = _ValueLookup(classes.values)
    nodata = ignored = 0
    if inside.any():
        got = _sample_points(scene, rows[inside].astype(np.int64), cols[inside].astype(np.int64), lookup, report)
        for label, value in zip(point_labels[inside].tolist(), got.tolist(), strict=True):
            ref_value = matches[label]
            if value < 0:
                nodata += 1
            elif ref_value is None:
                ignored += 1
            else:
                counts[(int(lookup.values[value]), ref_value)] += 1
        if nodata:
            notes.append(f"{nodata} reference point(s) fall on the map's nodata and are dropped")
        differ = _drawn_elsewhere(point_drawn[inside], got, lookup)
        if differ:
            message = (f"{differ} of {int(inside.sum())} reference points have a {SAMPLE_MAP_FIELD!r} that is not "
                       f"the map's class under them: was the sample drawn from another map than {scene.name}?")
            report.warn(message)
            warned.append(message)
    if len(polys):
        ref_values = [matches[label] for label in poly_labels.tolist()]
        poly_nodata, poly_ignored, empty = _sample_polygons(scene, polys, ref_values, lookup, counts, report)
        nodata += poly_nodata
        ignored += poly_ignored
        if poly_nodata:
            notes.append(f"{poly_nodata} pixel(s) inside reference polygons are the map's nodata and are dropped")
        if empty:
            notes.append(f"{empty} reference polygon(s) hold no map pixel centre and give no sample")
        overlapping = _overlapping_pairs(polys)
        if overlapping:
            notes.append(f"{overlapping} pair(s) of reference polygons overlap: pixels in both count once "
                         "per polygon")
    if ignored:
        notes.append(f"{ignored} sample(s) carry labels that {class_map_name} sets to null and are dropped")
    if not counts:
        raise LabelError(f"{path}: no reference sample falls on a mapped (non-nodata) pixel of {scene.name}")
    kind = "points" if not len(polys) else ("polygons" if not inside.any() else "points+polygons")
    for note in notes:
        report.info(note)
    return ReferenceSample(
        path=path, kind=kind, field=field, counts=dict(counts), probability_sample=not len(polys),
        features=len(geoms), dropped_outside=outside, dropped_nodata=nodata, dropped_ignored=ignored,
        matches={value_name(k): v for k, v in matches.items()}, notes=notes + warned,
    )


def _to_map_crs(geoms: np.ndarray, crs: CRS | None, scene: Scene, path: str, notes: list[str]) -> np.ndarray:
    """Reference geometries in the map's CRS."""
    if crs is None and scene.crs is not None:
        notes.append(f"{path}: has no CRS; assuming the map's ({crs_name(scene.crs)})")
        return geoms
    if crs is not None and scene.crs is None:
        raise GeoreferenceError(f"{path}: the reference is in {crs_name(crs)} but the map {scene.name} has "
                                "no CRS, so it cannot be placed on it")
    if crs is None or crs == scene.crs:
        return geoms
    try:
        out = reproject_geometries(geoms, crs, scene.crs)
    except LabelError as exc:
        raise LabelError(f"{path}: {exc}") from exc
    notes.append(f"reference reprojected from {crs_name(crs)} to the map's {crs_name(scene.crs)}")
    return out


def _drawn_elsewhere(drawn: np.ndarray, got: np.ndarray, lookup: _ValueLookup) -> int:
    """How many points record a map class (``map_class``) other than the map's value under them."""
    differ = 0
    for recorded, index in zip(drawn.tolist(), got.tolist(), strict=True):
        value = None if recorded is None else _numeric_value(recorded)
        if value is not None and index >= 0 and value != int(lookup.values[index]):
            differ += 1
    return differ


class _ValueLookup:
    """Index of map values among the classes present (-1: nodata or not a class of the map)."""

    def __init__(self, values: Iterable[int]) -> None:
        self.values = np.array(sorted(int(v) for v in values), dtype=np.int64)

    def index(self, data: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        data = np.asarray(data)
        if data.dtype.kind == "f":  # a float class map: NaN and fractions are no class
            whole = np.isfinite(data) & (data == np.round(data))
            valid = whole if valid is None else valid & whole
            data = np.where(whole, data, 0)
        flat = data.astype(np.int64, copy=False)
        if not len(self.values):
            return np.full(flat.shape, -1, np.int64)
        pos = np.clip(np.searchsorted(self.values, flat), 0, len(self.values) - 1)
        out = np.where(self.values[pos] == flat, pos, -1)
        if valid is not None:
            out = np.where(valid, out, -1)
        return out


def _sample_points(
    scene: Scene, rows: np.ndarray, cols: np.ndarray, lookup: _ValueLookup, report: Reporter
) -> np.ndarray:
    """Index (in ``lookup.values``) of the map pixel under each point; -1 on nodata.

    Points are grouped by ``TILE`` blocks so each block is read once, for the rows and columns
    its points span.
    """
    out = np.full(len(rows), -1, np.int64)
    block = rows // TILE * (scene.width // TILE + 1) + cols // TILE
    order = np.argsort(block, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(block[order]) != 0])
    bounds = np.r_[starts, len(order)]
    report.start("read map under points", total=len(starts))
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        sel = order[a:b]
        r0, r1 = int(rows[sel].min()), int(rows[sel].max()) + 1
        c0, c1 = int(cols[sel].min()), int(cols[sel].max()) + 1
        data, valid = scene.read_masked(Window(c0, r0, c1 - c0, r1 - r0))
        r, c = rows[sel] - r0, cols[sel] - c0
        out[sel] = lookup.index(data[0][r, c], valid[r, c])
        report.advance("read map under points")
    report.end("read map under points")
    return out


def _polygon_window(scene: Scene, geom: Any) -> Window | None:
    """The map pixels a polygon's bounds cover (clipped to the map), or None."""
    left, bottom, right, top = shapely.bounds(geom)
    inv = ~scene.transform
    corners = [inv * (x, y) for x in (left, right) for y in (bottom, top)]
    c0 = max(0, math.floor(min(c for c, _ in corners)))
    c1 = min(scene.width, math.ceil(max(c for c, _ in corners)))
    r0 = max(0, math.floor(min(r for _, r in corners)))
    r1 = min(scene.height, math.ceil(max(r for _, r in corners)))
    if c0 >= c1 or r0 >= r1:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)


def _sample_polygons(
    scene: Scene,
    polys: np.ndarray,
    ref_values: Sequence[int | None],
    lookup: _ValueLookup,
    counts: Counter[tuple[int, int]],
    report: Reporter,
) -> tuple[int, int, int]:
    """Count (map value, reference value) over the pixel centres inside each polygon.

    Returns:
        ``(pixels on nodata, pixels with an ignored label, polygons without a pixel centre)``.
    """
    nodata = ignored = empty = 0
    nverts = shapely.get_num_coordinates(polys)
    k = len(lookup.values)
    report.start("read map under polygons", total=len(polys))
    for geom, ref_value, nv in zip(polys, ref_values, nverts, strict=True):
        window = _polygon_window(scene, geom)
        inside_any = 0
        if window is not None:
            c0, r0 = int(window.col_off), int(window.row_off)
            for gw in iter_window_grid(int(window.width), int(window.height), TILE):
                tile = Window(gw.core.col_off + c0, gw.core.row_off + r0, gw.core.width, gw.core.height)
                h, w = int(tile.height), int(tile.width)
                shape = geom
                if nv > CLIP_VERTICES:
                    wt = window_transform(scene.transform, tile)
                    left, bottom, right, top = ordered_bounds(window_bounds(scene.transform, tile))
                    px, py = abs(wt.a) + abs(wt.b), abs(wt.d) + abs(wt.e)
                    shape = shapely.clip_by_rect(geom, left - px, bottom - py, right + px, top + py)
                    if shape.is_empty:
                        continue
                burned = rasterize([(shape, 1)], out_shape=(h, w), transform=window_transform(scene.transform, tile),
                                   fill=0, dtype="uint8", all_touched=False).astype(bool)
                n_in = int(burned.sum())
                if not n_in:
                    continue
                inside_any += n_in
                data, valid = scene.read_masked(tile)
                idx = lookup.index(data[0][burned], valid[burned])
                bad = int((idx < 0).sum())
                nodata += bad
                good = idx[idx >= 0]
                if ref_value is None:
                    ignored += int(good.size)
                    continue
                for i, c in enumerate(np.bincount(good, minlength=k).tolist()):
                    if c:
                        counts[(int(lookup.values[i]), ref_value)] += c
        if not inside_any:
            empty += 1
        report.advance("read map under polygons")
    report.end("read map under polygons")
    return nodata, ignored, empty


def _overlapping_pairs(polys: np.ndarray) -> int:
    """Number of pairs of polygons whose interiors overlap."""
    if len(polys) < 2:
        return 0
    tree = shapely.STRtree(polys)
    pairs = tree.query(polys, predicate="overlaps")
    contains = tree.query(polys, predicate="contains")
    both = {(int(a), int(b)) for a, b in zip(*pairs, strict=True) if a < b}
    both |= {(min(int(a), int(b)), max(int(a), int(b))) for a, b in zip(*contains, strict=True) if a != b}
    return len(both)


# --- rasters ----------------------------------------------------------------------------------


def _check_raster_overlap(path: str, scene: Scene) -> None:
    """One clear line when a reference raster and the map share no area."""
    try:
        with rasterio.open(path) as ds:
            crs, bounds = ds.crs, ordered_bounds(tuple(ds.bounds))
    except RasterioError as exc:
        raise LabelError(f"{path}: not a raster or vector file GDAL can read ({one_line(exc)})") from exc
    if crs is None or scene.crs is None:
        return  # RasterLabels decides (same grid assumed, or an error)
    map_bounds = ordered_bounds(window_bounds(scene.transform, Window(0, 0, scene.width, scene.height)))
    if crs != scene.crs:
        try:
            bounds = transform_bounds(crs, scene.crs, *bounds, densify_pts=21)
        except RasterioError:
            return
    if not boxes_overlap(bounds, map_bounds):
        raise LabelError(f"{path}: the reference raster (bounds {format_bounds(bounds)}) does not overlap the map "
                         f"{scene.name} (bounds {format_bounds(map_bounds)}), both in {crs_name(scene.crs)}")


def _read_raster(
    path: str,
    scene: Scene,
    classes: MapClasses,
    class_map: Mapping[str, Any] | None,
    class_map_name: str,
    progress: ProgressCallback | None,
) -> ReferenceSample:
    report = Reporter(progress)
    _check_raster_overlap(path, scene)
    ref = RasterLabels(path, scene, None, progress=progress)
    lookup = _ValueLookup(classes.values)
    k = len(lookup.values)
    n_ref = len(ref.classes)
    table = np.zeros((k, n_ref), np.int64)  # map class index x reference id
    nodata = 0
    grid = list(iter_window_grid(scene.width, scene.height, TILE))
    report.start("read reference raster", total=len(grid))
    try:
        for gw in grid:
            ids = ref.read(gw.core)
            if ids is not None:
                labelled = ids != UNLABELLED
                data, valid = scene.read_masked(gw.core)
                idx = lookup.index(data[0][labelled], valid[labelled])
                ok = idx >= 0
                nodata += int((~ok).sum())
                table += np.bincount(idx[ok] * n_ref + ids[labelled][ok].astype(np.int64),
                                     minlength=k * n_ref).reshape(k, n_ref)
            report.advance("read reference raster")
    finally:
        report.end("read reference raster")
        ref.close()
    per_label = table.sum(axis=0)
    raw = [ref.values[name] for name in ref.classes]
    tally = {raw[j]: int(per_label[j]) for j in range(n_ref) if per_label[j]}
    if not tally:
        raise LabelError(f"{path}: no reference pixel falls on a mapped (non-nodata) pixel of {scene.name}")
    matches = match_labels(tally, classes, class_map, source=path, class_map_name=class_map_name, unit="pixels")
    notes = [_describe_matches(matches, classes)]
    warned: list[str] = []
    _warn_by_value(matches, classes, class_map, path, report, warned)
    counts: Counter[tuple[int, int]] = Counter()
    ignored = 0
    for j in range(n_ref):
        if not per_label[j]:
            continue
        target = matches[raw[j]]
        if target is None:
            ignored += int(per_label[j])
            continue
        for i in np.flatnonzero(table[:, j]).tolist():
            counts[(int(lookup.values[i]), target)] += int(table[i, j])
    if nodata:
        notes.append(f"{nodata} reference pixel(s) fall on the map's nodata and are dropped")
    if ignored:
        notes.append(f"{ignored} reference pixel(s) carry labels that {class_map_name} sets to null and are dropped")
    if not counts:
        raise LabelError(f"{path}: every reference pixel on the map carries a label the class map drops")
    for note in notes:
        report.info(note)
    return ReferenceSample(
        path=path, kind="raster", field=None, counts=dict(counts), probability_sample=False,
        dropped_nodata=nodata, dropped_ignored=ignored,
        matches={value_name(k): v for k, v in matches.items()}, notes=notes + warned,
    )
