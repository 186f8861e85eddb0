"""Accuracy and class areas of a classified map from reference data: ``geoclass eval MAP --reference``.

``assess_map`` ties the pieces together: the mapped area of each class (streamed over the map),
the reference sample read against the map (``reference.read_reference``), the stratified
estimators of Olofsson et al. (2014) with the map classes as strata (``estimators``), and the
report (JSON, plots). Reference points are taken as a probability sample (a stratified random
sample by map class, e.g. from ``geoclass sample``, or a simple random one); the pixels of
reference polygons or of a reference raster are not one, so for them the report gives the plain
sample confusion matrix and no area estimates unless ``polygon_areas`` asks for them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoclass.accuracy.estimators import Estimate, StratifiedEstimates, stratified_estimates
from geoclass.accuracy.mapped_area import mapped_area
from geoclass.accuracy.reference import MapClasses, ReferenceSample, read_class_map_file, read_reference
from geoclass.errors import ConfigError, OutputError
from geoclass.io.labels import is_vector_path
from geoclass.io.outputs import InputFile, atomic_output, check_output_path, input_files
from geoclass.progress import ProgressCallback, Reporter

__all__ = ["ERROR_MATRIX_PNG", "AREAS_PNG", "MapAccuracyConfig", "assess_map", "write_plots"]

ERROR_MATRIX_PNG = "error_matrix.png"
AREAS_PNG = "class_areas.png"
M2_PER_HA = 10_000.0
_PIXELS_OF = {"polygons": "the pixels inside the reference polygons",
              "points+polygons": "the pixels inside the reference polygons",
              "raster": "the pixels of the reference raster"}


@dataclass
class MapAccuracyConfig:
    """What to assess and where to put the results.

    Attributes:
        map: The classified map (one band of class values, any tool's).
        reference: Reference points, polygons (any OGR format and CRS) or a reference raster.
        label_field: The reference label attribute (vector reference); optional with one field.
        class_map: ``{reference label: map class name or value, or null}``, or a JSON file of it.
        layer: Layer of a multi-layer vector file.
        report: Write the JSON report here (replacing an earlier report, never an input).
        plots: Write the error-matrix and class-area PNGs into this folder.
        polygon_areas: Estimate areas (with intervals) also from polygon or raster reference,
            whose pixels are not a probability sample.
    """

    map: str
    reference: str
    label_field: str | None = None
    class_map: str | Mapping[str, Any] | None = None
    layer: str | None = None
    report: str | None = None
    plots: str | None = None
    polygon_areas: bool = False


def assess_map(config: MapAccuracyConfig, progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Assess a classified map against reference data and estimate the area of each class.

    Returns:
        The report: ``overall_accuracy`` and, per class under ``classes`` (keyed by class name,
        or value where the map names none), ``mapped_area_m2``, ``users_accuracy``,
        ``producers_accuracy``, ``area_m2`` and ``area_ha``, each estimate as
        ``{estimate, se, ci95}`` (``ci95`` the half-width of the 95% interval, null where
        undefined); the error matrix in sample counts and in area proportions, ``sample_size``,
        ``probability_sample`` and ``notes``.

    Raises:
        InputNotFoundError: The map, the reference or the class map file does not exist.
        RasterOpenError: The map is not a class map (several bands, fractional values...).
        GeoreferenceError: The map has no CRS (areas unknown), or the reference cannot be placed.
        LabelError: Missing field, lines, unknown labels, no overlap.
        ConfigError: A bad class map, or an output that would replace an input.
    """
    report = Reporter(progress)
    class_map, class_map_name = _class_map(config.class_map)
    _check_outputs(config)
    mapped = mapped_area(config.map, progress=progress)
    if not mapped.values:
        raise ConfigError(f"{config.map}: holds nothing but nodata; there is no map to assess")
    classes = MapClasses(mapped.values, mapped.names)
    sample = read_reference(config.reference, config.map, classes, field=config.label_field,
                            class_map=class_map, class_map_name=class_map_name, layer=config.layer,
                            progress=progress)
    values = sorted(set(mapped.values) | {v for pair in sample.counts for v in pair})
    names = _class_keys(values, mapped.names)
    index = {v: i for i, v in enumerate(values)}
    counts = np.zeros((len(values), len(values)), np.int64)
    for (m, r), c in sample.counts.items():
        counts[index[m], index[r]] += c
    area_of = dict(zip(mapped.values, mapped.area_m2, strict=True))
    pixels_of = dict(zip(mapped.values, mapped.pixels, strict=True))
    areas = np.array([area_of.get(v, 0.0) for v in values], dtype=np.float64)
    notes = list(sample.notes)

    estimate_areas = sample.probability_sample or config.polygon_areas
    est: StratifiedEstimates | None = None
    if estimate_areas:
        est = stratified_estimates(counts, areas, names)
        for note in est.warnings:
            report.warn(note)
        for note in est.notes:
            report.info(note)
        notes.extend(est.warnings + est.notes)
        if not sample.probability_sample:
            note = (f"{_PIXELS_OF[sample.kind]} ({sample.path}) are treated as a stratified random sample "
                    "(--polygon-areas); they are clustered, not a probability sample, so the intervals are "
                    "too narrow")
            report.warn(note)
            notes.append(note)
        else:
            note = ("reference points are taken as a stratified random sample with the map classes as "
                    "strata (or a simple random sample); estimators of Olofsson et al. (2014)")
            report.info(note)
            notes.append(note)
    else:
        note = (f"{_PIXELS_OF[sample.kind]} ({sample.path}) are not a probability sample, so the report "
                "gives the sample confusion matrix (accuracies as plain proportions, no intervals) and no "
                "area estimates; pass --polygon-areas to estimate areas anyway")
        report.warn(note)
        notes.append(note)

    result = _report(config, mapped, sample, values, names, counts, areas, pixels_of, est, notes)
    if config.plots:
        result["plots"] = write_plots(Path(config.plots), result)
        report.info(f"plots written to {config.plots}")
    if config.report:
        result["report"] = str(config.report)
        with atomic_output(config.report) as tmp:
            tmp.write_text(json.dumps(_plain(result), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        report.info(f"report written to {config.report}")
    return result


# --- inputs and outputs -----------------------------------------------------------------------


def _class_map(given: str | Mapping[str, Any] | None) -> tuple[dict[str, Any] | None, str]:
    if given is None:
        return None, "--class-map"
    if isinstance(given, (str, os.PathLike)):
        return read_class_map_file(given), os.fspath(given)
    return {str(k).strip(): v for k, v in given.items()}, "the class map"


def _inputs(config: MapAccuracyConfig) -> list[InputFile]:
    inputs = input_files([config.map], "map")
    reference_is_raster = os.path.exists(config.reference) and not is_vector_path(config.reference, config.layer)
    inputs += input_files([config.reference], "reference", raster=reference_is_raster)
    if isinstance(config.class_map, (str, os.PathLike)):
        inputs += input_files([config.class_map], "class map", raster=False)
    return inputs


def _check_outputs(config: MapAccuracyConfig) -> None:
    """The report and plots may replace earlier ones, never the map, the reference or the class map."""
    if not config.report and not config.plots:
        return
    inputs = _inputs(config)
    if config.report:
        check_output_path(config.report, overwrite=True, inputs=inputs, kind="report")
    if config.plots:
        folder = Path(config.plots)
        if folder.exists() and not folder.is_dir():
            raise OutputError(f"{folder}: is a file; --plots expects a folder")
        for name in (ERROR_MATRIX_PNG, AREAS_PNG):
            check_output_path(folder / name, overwrite=True, inputs=inputs, kind="plot")


# --- the report -------------------------------------------------------------------------------


def _class_keys(values: Sequence[int], names: Mapping[int, str]) -> list[str]:
    """Class names (or values) as unique report keys."""
    keys = [names.get(v, str(v)) for v in values]
    return [k if keys.count(k) == 1 else f"{k} ({v})" for k, v in zip(keys, values, strict=True)]


def _plain_estimates(counts: np.ndarray) -> tuple[Estimate, list[Estimate], list[Estimate]]:
    """Overall, user's and producer's accuracy as sample proportions (no intervals)."""
    total = counts.sum()
    diag = np.diag(counts).astype(np.float64)
    rows, cols = counts.sum(axis=1), counts.sum(axis=0)
    overall = Estimate(float(diag.sum() / total)) if total else Estimate(None)
    users = [Estimate(float(diag[i] / rows[i])) if rows[i] else Estimate(None) for i in range(len(diag))]
    producers = [Estimate(float(diag[j] / cols[j])) if cols[j] else Estimate(None) for j in range(len(diag))]
    return overall, users, producers


def _report(
    config: MapAccuracyConfig,
    mapped: Any,
    sample: ReferenceSample,
    values: list[int],
    names: list[str],
    counts: np.ndarray,
    areas: np.ndarray,
    pixels_of: Mapping[int, int],
    est: StratifiedEstimates | None,
    notes: list[str],
) -> dict[str, Any]:
    none = Estimate(None)
    if est is not None:
        overall, users, producers = est.overall_accuracy, est.users_accuracy, est.producers_accuracy
        area_prop, area = est.area_proportion, est.area
    else:
        overall, users, producers = _plain_estimates(counts)
        area_prop = area = [none] * len(values)
    total_area = float(areas.sum())
    rows, cols = counts.sum(axis=1), counts.sum(axis=0)
    unsampled = [names[i] for i in range(len(values)) if areas[i] > 0 and rows[i] == 0]
    per_class: dict[str, Any] = {}
    for i, (value, name) in enumerate(zip(values, names, strict=True)):
        per_class[name] = {
            "value": int(value),
            "mapped_pixels": int(pixels_of.get(value, 0)),
            "mapped_area_m2": float(areas[i]),
            "mapped_area_ha": float(areas[i]) / M2_PER_HA,
            "mapped_share": float(areas[i] / total_area) if total_area else None,
            "sample_count": int(rows[i]),
            "reference_count": int(cols[i]),
            "users_accuracy": users[i].to_dict(),
            "producers_accuracy": producers[i].to_dict(),
            "area_proportion": area_prop[i].to_dict(),
            "area_m2": area[i].to_dict(),
            "area_ha": area[i].scaled(1 / M2_PER_HA).to_dict(),
        }
    return {
        "map": str(config.map),
        "reference": str(config.reference),
        "reference_kind": sample.kind,
        "label_field": sample.field,
        "crs": mapped.crs,
        "probability_sample": sample.probability_sample,
        "area_estimates": est is not None,
        "estimator": ("stratified, map classes as strata (Olofsson et al. 2014)" if est is not None
                      else "sample proportions (not a probability sample)"),
        "sample_size": int(counts.sum()),
        "dropped": {"outside_map": sample.dropped_outside, "on_nodata": sample.dropped_nodata,
                    "ignored_labels": sample.dropped_ignored},
        "mapped_area_m2": total_area,
        "mapped_area_ha": total_area / M2_PER_HA,
        "estimation_area_m2": None if est is None else est.domain_area,
        "classes_without_samples": unsampled,
        "overall_accuracy": overall.to_dict(),
        "classes": per_class,
        "error_matrix": {
            "classes": names,
            "values": [int(v) for v in values],
            "rows": "map class (stratum)",
            "columns": "reference class",
            "counts": counts.tolist(),
            "area_proportions": None if est is None else est.proportions.tolist(),
        },
        "class_matches": sample.matches,
        "notes": notes,
    }


def _plain(obj: Any) -> Any:
    """The report as JSON values (NaN and infinity as null)."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return _plain(obj.item())
    return obj


# --- plots ------------------------------------------------------------------------------------


def write_plots(folder: Path, result: Mapping[str, Any]) -> list[str]:
    """The error matrix (area proportions, else sample counts) and, with area estimates, the
    mapped vs estimated area of each class with 95% intervals, as PNGs in ``folder``.

    Returns:
        The files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    matrix_info = result["error_matrix"]
    names = list(matrix_info["classes"])
    proportions = matrix_info["area_proportions"]
    matrix = np.array(proportions if proportions is not None else matrix_info["counts"], dtype=np.float64)
    ticks = list(range(len(names)))
    size = max(5.0, 0.6 * len(names) + 2.5)
    fig, ax = plt.subplots(figsize=(size, size))
    shown = matrix / matrix.max() if matrix.max() > 0 else matrix
    ax.imshow(shown, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(ticks, names, rotation=45, ha="right")
    ax.set_yticks(ticks, names)
    what = "estimated area proportions" if proportions is not None else "sample counts"
    ax.set(xlabel="reference class", ylabel="map class", title=f"error matrix ({what})")
    for i in ticks:
        for j in ticks:
            if matrix[i, j]:
                text = f"{matrix[i, j]:.4f}" if proportions is not None else f"{int(matrix[i, j])}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="white" if shown[i, j] > 0.5 else "black")
    fig.tight_layout()
    written = [folder / ERROR_MATRIX_PNG]
    _save(fig, written[0])
    plt.close(fig)

    if result["area_estimates"]:
        classes = result["classes"]
        mapped = [classes[n]["mapped_area_ha"] for n in names]
        estimated = [classes[n]["area_ha"]["estimate"] for n in names]
        ci = [classes[n]["area_ha"]["ci95"] for n in names]
        x = np.arange(len(names))
        fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(names) + 2), 5))
        ax.bar(x - 0.2, mapped, width=0.4, label="mapped (pixel count)", color="#9ecae1")
        est_values = [np.nan if e is None else e for e in estimated]
        errors = [0.0 if (c is None or e is None) else c for c, e in zip(ci, estimated, strict=True)]
        ax.bar(x + 0.2, est_values, width=0.4, yerr=errors, capsize=4, label="estimated (95% CI)",
               color="#3182bd")
        ax.set_xticks(x, names, rotation=45, ha="right")
        ax.set(ylabel="area (ha)", title="mapped vs estimated area per class")
        ax.legend()
        fig.tight_layout()
        written.append(folder / AREAS_PNG)
        _save(fig, written[1])
        plt.close(fig)
    return [str(p) for p in written]


def _save(fig: Any, target: Path) -> None:
    with atomic_output(target) as tmp:
        fig.savefig(tmp, dpi=110)
