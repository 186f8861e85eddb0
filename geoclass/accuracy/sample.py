"""A stratified random sample of a class map's pixels, for labelling reference data.

The strata are the map's classes (Olofsson et al. 2014, "Good practices for estimating area and
assessing accuracy of land change", Remote Sensing of Environment 148: 42-57). The map is read
twice, streaming: the first pass counts each class's pixels (``mapped_area``); the sample size of
each class is then allocated, and for each class a seeded generator picks which of its pixels,
by rank among that class's pixels in raster order, are drawn; the second pass collects those
pixels window by window and writes their centres as points. Memory holds the sample's ranks and
one window of pixels, whatever the map's size.

Allocation of ``n`` points over the classes, ``n_h = clamp(λ w_h, m_h, N_h)`` with ``λ`` such
that they add up to ``n`` (then rounded by largest remainder):

- ``proportional``: ``w_h = W_h`` (the class's share of the mapped area);
- ``equal``: ``w_h = 1``;
- ``neyman``: ``w_h = W_h sqrt(U_h (1 - U_h))`` with ``U_h`` the expected user's accuracy of the
  class (with one ``U`` for every class this is the proportional allocation);

where ``N_h`` is the class's pixel count (a class is never sampled more than it has pixels) and
``m_h = min(min_per_class, N_h)`` keeps rare classes a usable share, as Olofsson et al.
recommend. When ``n`` cannot give every class ``min_per_class`` points, the minimum is lowered
to what ``n`` can give each class (with a warning).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import fiona
import numpy as np

from geoclass.accuracy.mapped_area import (
    MappedArea,
    class_windows,
    mapped_area,
    num_class_windows,
    open_class_map,
    read_classes,
    tally,
)
from geoclass.errors import ConfigError, GeoclassError, RasterOpenError
from geoclass.io.outputs import input_files, is_io_error, temp_path, write_error
from geoclass.io.vector_files import check_vector_output, commit_vector, discard_vector, vector_driver
from geoclass.progress import ProgressCallback, Reporter

__all__ = ["ALLOCATIONS", "SampleConfig", "SampleResult", "Stratum", "allocate", "draw_sample"]

Allocation = Literal["proportional", "equal", "neyman"]
ALLOCATIONS: tuple[str, ...] = ("proportional", "equal", "neyman")
_FEW_CLASSES = 4  # up to this many classes hit in a window are located by comparison, else by sort
_WRITE_BATCH = 2000


@dataclass
class SampleConfig:
    """What ``draw_sample`` draws and where it writes it.

    Attributes:
        map_path: The class map to sample (single band of class values).
        output: The points: ``.gpkg``, ``.geojson``/``.json`` or ``.shp``, in the map's CRS.
        n: Total number of points.
        allocation: ``proportional``, ``equal`` or ``neyman``.
        min_per_class: Points every class gets at least (all its pixels when it has fewer).
        expected_accuracy: Expected user's accuracy of every class, for ``neyman``.
        expected_accuracy_by_class: Class name (or value, as text) -> expected user's accuracy,
            overriding ``expected_accuracy`` for those classes (``neyman`` only).
        seed: Seed of the random generator; the same seed and map give the same sample.
        nodata: Treat this map value as nodata, overriding what the file declares.
        overwrite: Replace an existing output.
    """

    map_path: str | os.PathLike[str]
    output: str | os.PathLike[str]
    n: int
    allocation: Allocation = "proportional"
    min_per_class: int = 50
    expected_accuracy: float = 0.85
    expected_accuracy_by_class: Mapping[str, float] = field(default_factory=dict)
    seed: int | None = 0
    nodata: float | None = None
    overwrite: bool = False


@dataclass
class Stratum:
    """One class of the map and its share of the sample.

    Attributes:
        value: The class value in the map.
        name: Its name from the map's metadata, or None.
        pixels: Pixels of the class in the map (the stratum's size).
        area_m2: Its mapped area in m² (NaN for a map without a CRS).
        weight: Its share of the mapped area (of the pixels, without a CRS).
        n: Points drawn from it.
        expected_accuracy: The user's accuracy assumed for ``neyman``, else None.
    """

    value: int
    name: str | None
    pixels: int
    area_m2: float
    weight: float
    n: int
    expected_accuracy: float | None = None


@dataclass
class SampleResult:
    """What ``draw_sample`` wrote.

    Attributes:
        path: The vector file of points.
        driver: OGR driver used.
        crs: The map's CRS, or None.
        fields: Attribute names written, in order.
        allocation: The allocation used.
        min_per_class: The per-class minimum applied (lower than asked when ``n`` is too small).
        seed: The seed.
        n: Points written.
        strata: Per-class allocation, by class value.
        seconds: Wall time of the run.
    """

    path: Path
    driver: str
    crs: str | None
    fields: list[str]
    allocation: str
    min_per_class: int
    seed: int | None
    n: int
    strata: list[Stratum]
    seconds: float


# --- allocation ---------------------------------------------------------------------------------


def allocate(
    weights: Sequence[float], pixels: Sequence[int], n: int, min_per_class: int
) -> tuple[list[int], int]:
    """Split ``n`` points over strata in proportion to ``weights``, within per-stratum bounds.

    Each stratum gets ``clamp(λ w_h, m_h, N_h)`` points, rounded by largest remainder so that
    they add up to ``min(n, sum N_h)``, with ``m_h = min(m, N_h)``; ``m`` is ``min_per_class``,
    or the largest minimum ``n`` can give every stratum when it cannot give them all that.

    Args:
        weights: Positive weight per stratum.
        pixels: Stratum sizes ``N_h`` (at least 1 each).
        n: Total points wanted.
        min_per_class: Minimum points per stratum wanted.

    Returns:
        ``(sizes, minimum)``: points per stratum, and the minimum ``m`` applied.
    """
    caps = np.asarray(pixels, dtype=np.int64)
    w = np.asarray(weights, dtype=np.float64)
    if caps.size == 0:
        return [], 0
    total = int(min(n, int(caps.sum())))
    m = int(min_per_class)
    if int(np.minimum(m, caps).sum()) > total:
        lo, hi = 0, m  # the largest m with sum(min(m, N_h)) <= total
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if int(np.minimum(mid, caps).sum()) <= total else (lo, mid - 1)
        m = lo
    mins = np.minimum(m, caps).astype(np.float64)
    capf = caps.astype(np.float64)
    w = w / w.max() if w.max() > 0 else np.ones_like(w)
    w = np.maximum(w, 1e-12)  # a share that underflows still gets its minimum
    x = _water_fill(w, mins, capf, float(total))
    sizes = np.clip(np.floor(x), mins, capf).astype(np.int64)
    order = sorted(range(caps.size), key=lambda i: (-(x[i] - sizes[i]), i))
    left = total - int(sizes.sum())
    while left > 0:
        for i in order:
            if left > 0 and sizes[i] < caps[i]:
                sizes[i] += 1
                left -= 1
    while left < 0:
        for i in reversed(order):
            if left < 0 and sizes[i] > mins[i]:
                sizes[i] -= 1
                left += 1
    return [int(s) for s in sizes], m


def _water_fill(w: np.ndarray, lo: np.ndarray, hi: np.ndarray, total: float) -> np.ndarray:
    """``clamp(λ w, lo, hi)`` with the ``λ`` that makes it sum to ``total`` (``sum lo <= total <= sum hi``).

    The sum is piecewise linear in ``λ`` with breakpoints at ``lo / w`` and ``hi / w``: find the
    segment where it reaches ``total`` and solve on it.
    """
    if total <= lo.sum():
        return lo.copy()
    points = np.unique(np.concatenate([lo / w, hi / w]))
    sums = np.clip(np.outer(points, w), lo, hi).sum(axis=1)
    k = int(np.searchsorted(sums, total, side="left"))
    if k >= points.size:
        return hi.copy()
    if k == 0:
        lam = points[0]
    else:
        lam = points[k - 1] + (total - sums[k - 1]) / (sums[k] - sums[k - 1]) * (points[k] - points[k - 1])
    return np.clip(lam * w, lo, hi)


def _expected_accuracies(config: SampleConfig, area: MappedArea) -> list[float]:
    """The expected user's accuracy of each class, checked."""
    for label, u in [("", config.expected_accuracy), *config.expected_accuracy_by_class.items()]:
        if not 0 < u < 1:
            where = f" of class {label!r}" if label else ""
            raise ConfigError(f"expected accuracy{where} must be between 0 and 1 (exclusive), got {u}")
    lookup: dict[str, int] = {}
    for value in area.values:
        lookup[str(value)] = value
    for value, name in area.names.items():
        if value in area.values:
            lookup.setdefault(name, value)
    by_value: dict[int, float] = {}
    for label, u in config.expected_accuracy_by_class.items():
        value = lookup.get(str(label).strip())
        if value is None:
            known = ", ".join(area.names.get(v, str(v)) for v in area.values)
            raise ConfigError(
                f"expected accuracy given for class {label!r}, but {config.map_path} has no such "
                f"class; its classes: {known}"
            )
        by_value[value] = float(u)
    return [by_value.get(v, float(config.expected_accuracy)) for v in area.values]


def _check(config: SampleConfig) -> str:
    """Validate the options; return the output's OGR driver."""
    if config.allocation not in ALLOCATIONS:
        raise ConfigError(
            f"unknown allocation {config.allocation!r}; expected one of {', '.join(ALLOCATIONS)}"
        )
    if isinstance(config.n, bool) or not isinstance(config.n, (int, np.integer)) or config.n < 1:
        raise ConfigError(f"the sample size must be a whole number >= 1, got {config.n!r}")
    if config.min_per_class < 0:
        raise ConfigError(f"min_per_class must be >= 0, got {config.min_per_class}")
    if config.expected_accuracy_by_class and config.allocation != "neyman":
        raise ConfigError("expected accuracies per class only apply to the neyman allocation")
    return vector_driver(Path(config.output))


# --- drawing ------------------------------------------------------------------------------------


def _draw_ranks(sizes: Sequence[int], pixels: Sequence[int], seed: int | None) -> list[np.ndarray]:
    """For each stratum, the sorted ranks (in raster order) of the pixels drawn."""
    rng = np.random.default_rng(seed)
    ranks = []
    for n_h, count in zip(sizes, pixels, strict=True):
        if n_h >= count:
            ranks.append(np.arange(count, dtype=np.int64))
        else:
            ranks.append(np.sort(rng.choice(count, size=n_h, replace=False).astype(np.int64)))
    return ranks


def _locate(values: np.ndarray, hits: list[tuple[int, np.ndarray]]) -> np.ndarray:
    """Positions in ``values`` of the ``local`` ranks of each ``(value, local)`` in ``hits``."""
    found: list[np.ndarray] = []
    if len(hits) <= _FEW_CLASSES:
        for value, local in hits:
            found.append(np.flatnonzero(values == value)[local])
    else:
        lo = int(values.min())
        keys = values - lo
        if int(keys.max()) < 1 << 16:
            keys = keys.astype(np.uint16)  # numpy's stable sort of 16-bit keys is a radix sort
        order = np.argsort(keys, kind="stable")
        ordered = values[order]
        for value, local in hits:
            found.append(order[np.searchsorted(ordered, value, side="left") + local])
    return np.sort(np.concatenate(found))


def draw_sample(config: SampleConfig, progress: ProgressCallback | None = None) -> SampleResult:
    """Draw a stratified random sample of a class map's pixel centres and write it as points.

    Each point has the attributes ``id`` (1..n, in raster order), ``map_class`` (the map's value),
    ``map_class_name`` (``class_name`` in a shapefile, whose field names have at most 10
    characters; only when the map names its classes) and ``reference`` (empty, for the label).

    Args:
        config: The map, the output and how to draw.
        progress: Optional progress callback: tasks ``count classes`` and ``draw sample``, one
            step per window; notes and warnings about the allocation.

    Returns:
        A ``SampleResult`` with the allocation per class.

    Raises:
        ConfigError: Bad options, an unknown output extension, or the output is the map.
        OutputExistsError: The output exists and ``overwrite`` is False.
        OutputError: The output cannot be written.
        InputNotFoundError, RasterOpenError: The map is missing, unreadable, not a class map,
            or has no class pixels.
        GeoreferenceError: The map's areas cannot be computed (e.g. a rotated geographic grid).
    """
    started = time.monotonic()
    driver = _check(config)
    out = Path(config.output)
    map_path = os.fspath(config.map_path)
    check_vector_output(out, driver, overwrite=config.overwrite, inputs=input_files([map_path], "map"), kind="sample")
    reporter = Reporter(progress)

    area = mapped_area(map_path, progress, require_crs=False, nodata=config.nodata)
    if not area.values:
        raise RasterOpenError(f"{map_path}: has no class pixels (all are nodata); nothing to sample")
    if area.crs is None:
        reporter.warn(f"{map_path}: has no CRS; the points are written in its pixel grid's coordinates")
    known = all(math.isfinite(a) for a in area.area_m2)
    sizes_w = np.asarray(area.area_m2 if known else area.pixels, dtype=np.float64)
    shares = sizes_w / sizes_w.sum()
    accuracies: list[float] | None = None
    if config.allocation == "proportional":
        weights = shares
    elif config.allocation == "equal":
        weights = np.ones_like(shares)
    else:
        accuracies = _expected_accuracies(config, area)
        weights = shares * np.sqrt([u * (1 - u) for u in accuracies])
    total_pixels = sum(area.pixels)
    if config.n > total_pixels:
        reporter.warn(f"{map_path}: has only {total_pixels} class pixels, fewer than the "
                      f"{config.n} points asked for; every pixel is in the sample")
    sizes, minimum = allocate(weights, area.pixels, config.n, config.min_per_class)
    if minimum < config.min_per_class and config.n <= total_pixels:
        reporter.warn(
            f"{config.n} points cannot give each of the {len(area.values)} classes "
            f"{config.min_per_class}; each class gets at least {minimum}"
        )
    whole = [area.names.get(v, str(v))
             for v, p, s in zip(area.values, area.pixels, sizes, strict=True) if s == p]
    if whole and config.n < total_pixels:
        reporter.info(f"every pixel of these classes is in the sample: {', '.join(whole)}")

    ranks = _draw_ranks(sizes, area.pixels, config.seed)
    strata = [
        Stratum(
            value=v,
            name=area.names.get(v),
            pixels=p,
            area_m2=a,
            weight=float(w),
            n=s,
            expected_accuracy=None if accuracies is None else accuracies[i],
        )
        for i, (v, p, a, w, s) in enumerate(
            zip(area.values, area.pixels, area.area_m2, shares, sizes, strict=True)
        )
    ]
    fields = _write_points(config, driver, out, area, ranks, reporter)
    return SampleResult(
        path=out,
        driver=driver,
        crs=area.crs,
        fields=fields,
        allocation=config.allocation,
        min_per_class=minimum,
        seed=config.seed,
        n=sum(sizes),
        strata=strata,
        seconds=time.monotonic() - started,
    )


def _write_points(
    config: SampleConfig,
    driver: str,
    out: Path,
    area: MappedArea,
    ranks: list[np.ndarray],
    reporter: Reporter,
) -> list[str]:
    """Second pass: collect the drawn pixels window by window and write their centres."""
    map_path = os.fspath(config.map_path)
    scene, block = open_class_map(map_path, nodata=config.nodata)
    name_field = "class_name" if driver == "ESRI Shapefile" else "map_class_name"
    properties: dict[str, str] = {"id": "int", "map_class": "int"}
    if area.names:
        properties[name_field] = "str"
    properties["reference"] = "str"
    open_kwargs: dict[str, Any] = {
        "driver": driver,
        "schema": {"geometry": "Point", "properties": properties},
    }
    if scene.crs is not None:
        open_kwargs["crs_wkt"] = scene.crs.to_wkt()
    if driver != "ESRI Shapefile":
        open_kwargs["layer"] = out.stem

    position = {v: i for i, v in enumerate(area.values)}
    seen = [0] * len(area.values)
    next_rank = [0] * len(area.values)
    t = scene.transform
    written = 0
    batch: list[dict[str, Any]] = []
    task = "draw sample"
    tmp = temp_path(out)
    reporter.start(task, num_class_windows(scene.width, scene.height, block))
    try:
        with scene, fiona.open(tmp, "w", **open_kwargs) as sink:
            for window in class_windows(scene.width, scene.height, block):
                values, index = read_classes(scene, window)
                distinct, counts, _ = tally(values)
                hits: list[tuple[int, np.ndarray]] = []
                for value, count in zip(distinct.tolist(), counts.tolist(), strict=True):
                    k = position.get(value)
                    if k is None:
                        raise RasterOpenError(f"{map_path}: changed while it was being sampled")
                    start, end = seen[k], seen[k] + count
                    p0 = next_rank[k]
                    p1 = p0 + int(np.searchsorted(ranks[k][p0:], end, side="left"))
                    if p1 > p0:
                        hits.append((value, ranks[k][p0:p1] - start))
                    seen[k], next_rank[k] = end, p1
                if hits:
                    where = _locate(values, hits)
                    flat = index[where]
                    cols = window.col_off + flat % int(window.width) + 0.5
                    rows = window.row_off + flat // int(window.width) + 0.5
                    xs = t.a * cols + t.b * rows + t.c
                    ys = t.d * cols + t.e * rows + t.f
                    for x, y, value in zip(xs.tolist(), ys.tolist(), values[where].tolist(), strict=True):
                        written += 1
                        props: dict[str, Any] = {"id": written, "map_class": value}
                        if area.names:
                            props[name_field] = area.names.get(value, "")
                        props["reference"] = ""
                        batch.append({"geometry": {"type": "Point", "coordinates": (x, y)},
                                      "properties": props})
                    if len(batch) >= _WRITE_BATCH:
                        sink.writerecords(batch)
                        batch.clear()
                reporter.advance(task)
            if batch:
                sink.writerecords(batch)
        if seen != area.pixels:
            raise RasterOpenError(f"{map_path}: changed while it was being sampled")
        commit_vector(tmp, out, driver)
    except BaseException as exc:
        discard_vector(tmp, driver)
        if is_io_error(exc) and not isinstance(exc, GeoclassError):
            raise write_error(exc, out) from exc
        raise
    reporter.end(task)
    return list(properties)

