"""``mosaic()``: check the options, open the inputs once, lay out the grid, write the output.

The stages, in order: the output path is checked and locked (``geoclass.io.outputs``); each input
is opened and described (``inputs``); the output grid and each input's place on it are worked out
(``grid``); the bands' dtype, nodata and class metadata are settled (here); the mosaic is written
as a GeoTIFF block by block (``geotiff``, ``composite``) or as a VRT (``vrt``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.enums import Resampling

import geoclass.engine.mosaic as package  # the sparse-canvas limits live there (tests lower them)
from geoclass.engine.mosaic.config import (
    METHODS,
    TILE,
    MosaicConfig,
    MosaicResult,
    OutputBands,
)
from geoclass.engine.mosaic.geotiff import write_geotiff
from geoclass.engine.mosaic.grid import (
    Grid,
    Placement,
    check_canvas,
    georeferenced_grid,
    pixel_grid,
)
from geoclass.engine.mosaic.inputs import (
    MosaicInput,
    Source,
    check_classes,
    class_dtype,
    confidence_sibling,
    open_source,
)
from geoclass.engine.mosaic.vrt import vrt_refusal, write_vrt
from geoclass.errors import BandError, ConfigError, GeoreferenceError
from geoclass.io.class_map import CLASS_MAP_NODATA
from geoclass.io.outputs import OutputLock, check_output_path, input_files
from geoclass.progress import ProgressCallback, Reporter

__all__ = ["mosaic"]


def mosaic(config: MosaicConfig, progress: ProgressCallback | None = None) -> MosaicResult:
    """Merge class maps (or raw scenes) into one raster on a common grid.

    Args:
        config: Inputs, output and options (see ``MosaicConfig``).
        progress: Optional progress callback.

    Returns:
        A ``MosaicResult`` describing the output.

    Raises:
        ConfigError: Bad options (method, CRS, resolution, extension, max-confidence without
            confidence, class maps mixed with scenes).
        LabelError: Class maps whose class lists disagree (both are named).
        BandError: Raw scenes with different band counts.
        ConfigError: Also: the output is an input (even through a VRT or a link); a huge, mostly
            empty GeoTIFF canvas (inputs far apart) without ``force``.
        GeoreferenceError: Inputs with a CRS mixed with inputs without one; inputs without a CRS
            not on one pixel grid; inputs that cannot be reprojected; ``vrt`` with inputs not on
            one grid.
        OutputExistsError: The output exists and ``overwrite`` is False.
        OutputBusyError: Another run is writing the same output.
        DiskFullError: The disk filled up while writing (the message names the space needed).
        OutputError: The output folder is not writable, or the output cannot be written.
        InputNotFoundError, RasterOpenError: An input cannot be read.
    """
    started = time.perf_counter()
    reporter = Reporter(progress)
    _check_options(config)
    specs = [MosaicInput.of(s) for s in config.inputs]
    out, vrt = _check_output(config, specs)
    if vrt and config.method == "max-confidence":
        raise ConfigError(
            "--vrt cannot pick by confidence (a VRT only layers inputs); use first or last, "
            "or write a GeoTIFF"
        )

    sources: list[Source] = []
    lock = OutputLock(out).acquire()
    try:
        for spec in specs:
            sources.append(
                open_source(
                    spec,
                    kind_hint=config.kind,
                    method=config.method,
                    resampling=config.resampling,
                    nodata=config.nodata,
                )
            )
        return _run(config, sources, out, vrt, reporter, started)
    finally:
        for s in sources:
            s.scene.close()
        lock.release()


def _check_options(config: MosaicConfig) -> None:
    if config.method not in METHODS:
        raise ConfigError(
            f"unknown method {config.method!r}; expected one of {', '.join(METHODS)}"
        )
    if config.kind not in ("auto", "classes", "scene"):
        raise ConfigError(f"unknown kind {config.kind!r}; expected auto, classes or scene")
    if config.resampling is not None and config.resampling not in Resampling.__members__:
        raise ConfigError(
            f"unknown resampling {config.resampling!r}; expected one of "
            + ", ".join(sorted(Resampling.__members__))
        )
    if config.block_size < TILE or config.block_size % TILE:
        raise ConfigError(f"block_size must be a multiple of {TILE}, got {config.block_size}")
    if not config.inputs:
        raise ConfigError("mosaic: no inputs given")


def _check_output(config: MosaicConfig, specs: Sequence[MosaicInput]) -> tuple[Path, bool]:
    """The output path and whether it is a VRT.

    Raises:
        ConfigError: Wrong extension, or the output is an input (by name, symlink, hard link or
            as a source of an input VRT).
        OutputExistsError: It exists and ``overwrite`` is False.
        OutputError: It is a folder, or its folder cannot be created or written to.
    """
    out = Path(config.output)
    suffix = out.suffix.lower()
    vrt = config.vrt or suffix == ".vrt"
    if vrt and suffix != ".vrt":
        raise ConfigError(f"{out}: a VRT mosaic needs a .vrt file name")
    if not vrt and suffix not in (".tif", ".tiff"):
        raise ConfigError(
            f"{out}: the mosaic is written as GeoTIFF (.tif, .tiff) or, with --vrt, as .vrt; "
            f"got {out.suffix or 'no extension'!r}"
        )
    given = [p for spec in specs for p in spec.paths]
    if config.method == "max-confidence":  # confidence files beside the maps are read too
        given += [confidence_sibling(spec.paths[0]) for spec in specs if len(spec.paths) == 1]
    inputs = input_files(given, "raster")
    check_output_path(out, overwrite=config.overwrite, inputs=inputs, kind="mosaic")
    return out, vrt


def _layout(
    config: MosaicConfig, sources: list[Source], reporter: Reporter
) -> tuple[Grid, list[Placement]]:
    """The output grid and the inputs' places on it (a pixel grid for inputs without a CRS).

    Raises:
        GeoreferenceError: Inputs with a CRS mixed with inputs without one.
    """
    with_crs = [s for s in sources if s.scene.crs is not None]
    without = [s for s in sources if s.scene.crs is None]
    if with_crs and without:
        georef = with_crs[0].scene.crs
        assert georef is not None
        raise GeoreferenceError(
            f"{without[0].label}: has no CRS, but {with_crs[0].label} is in {georef.to_string()}; "
            "a mosaic cannot place inputs without a CRS among georeferenced ones (assign their "
            "CRS with gdal_edit.py -a_srs, or mosaic them separately)"
        )
    if without:
        layout = pixel_grid(config.crs, config.res, sources)
        reporter.warn(
            "the inputs have no CRS: they are joined on their shared pixel grid and the mosaic "
            "has no CRS either"
        )
        return layout
    return georeferenced_grid(config.crs, config.res, sources)


def _output_nodata(
    kind: str, dtype: np.dtype, config: MosaicConfig, sources: list[Source], reporter: Reporter
) -> float:
    if kind == "classes":
        if dtype == np.uint8:
            return float(CLASS_MAP_NODATA)
        declared = next((s.scene.nodata for s in sources if s.scene.nodata is not None), None)
        return float(declared) if declared is not None else float(np.iinfo(dtype).max)
    if config.nodata is not None:
        return float(config.nodata)
    declared = next((s.scene.nodata for s in sources if s.scene.nodata is not None), None)
    if declared is not None:
        return float(declared)
    value = math.nan if dtype.kind == "f" else 0.0
    reporter.warn(
        f"no input declares a nodata value; pixels outside every input are written as {value:g} "
        "and marked nodata, so input pixels of that value will read as nodata too "
        "(pass nodata to say which value is fill)"
    )
    return value


def _kind_and_dtype(
    sources: list[Source], reporter: Reporter
) -> tuple[str, int, np.dtype, tuple[list[str] | None, list[tuple[int, int, int]] | None]]:
    """The inputs' common kind, band count, dtype and (class maps) class names and colours.

    Raises:
        ConfigError: Class maps mixed with raw scenes.
        LabelError: Class maps disagree on their classes.
        BandError: Raw scenes with different band counts; class ids that are not integers.
    """
    kinds = {s.kind for s in sources}
    if len(kinds) > 1:
        cm = next(s for s in sources if s.kind == "classes")
        sc = next(s for s in sources if s.kind == "scene")
        raise ConfigError(
            f"{cm.label} is a class map but {sc.label} is a raw scene "
            f"({sc.scene.count} bands, {sc.scene.dtype}); mosaic class maps with class maps and "
            "scenes with scenes (or set kind to say which they are)"
        )
    kind = sources[0].kind
    if kind == "classes":
        classes = check_classes(sources, reporter)
        return kind, 1, class_dtype(sources), classes
    counts = {s.label: s.scene.count for s in sources}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{k} has {v}" for k, v in counts.items())
        raise BandError(f"raw scenes to mosaic must have the same number of bands: {listed}")
    dtype = np.result_type(*[np.dtype(s.scene.dtype) for s in sources])
    return kind, sources[0].scene.count, dtype, (None, None)


def _run(
    config: MosaicConfig,
    sources: list[Source],
    out: Path,
    vrt: bool,
    reporter: Reporter,
    started: float,
) -> MosaicResult:
    kind, count, dtype, (names, colors) = _kind_and_dtype(sources, reporter)
    grid, placements = _layout(config, sources, reporter)
    check_canvas(
        grid,
        placements,
        refuse=not (vrt or config.force),
        reporter=reporter,
        warn_pixels=package._WARN_PIXELS,
        refuse_pixels=package._REFUSE_PIXELS,
    )
    moved = [s for s, p in zip(sources, placements) if p.reprojected]
    if vrt and moved:
        raise GeoreferenceError(
            vrt_refusal(moved[0].label, moved[0].scene.crs, moved[0].scene.transform, grid)
        )
    for s in moved:
        assert grid.crs is not None and s.scene.crs is not None
        reporter.info(
            f"{s.label}: not on the mosaic grid ({s.scene.crs.to_string()} -> "
            f"{grid.crs.to_string()}); "
            f"resampled with {s.scene.resampling}"
        )
    bands = OutputBands(
        kind=kind,  # type: ignore[arg-type]
        count=count,
        dtype=dtype,
        nodata=_output_nodata(kind, dtype, config, sources, reporter),
        names=names,
        colors=colors,
        colormap=sources[0].colormap if kind == "classes" and names is None else None,
        descriptions=sources[0].descriptions if kind == "scene" else None,
    )
    result_kw: dict[str, Any] = {
        "kind": kind,
        "method": config.method,
        "width": grid.width,
        "height": grid.height,
        "count": count,
        "dtype": dtype.name,
        "nodata": bands.nodata,
        "crs": grid.crs.to_string() if grid.crs is not None else "",
        "transform": grid.transform,
        "bounds": grid.bounds,
        "inputs": [s.label for s in sources],
        "reprojected": [s.label for s in moved],
        "classes": names,
    }
    if vrt:
        write_vrt(out, grid, sources, bands, method=config.method, nodata=config.nodata)
        return MosaicResult(
            output=out, format="VRT", seconds=time.perf_counter() - started, **result_kw
        )
    layers = list(zip(sources, placements))
    valid = write_geotiff(
        out,
        grid,
        layers[::-1] if config.method == "last" else layers,
        bands,
        by_confidence=config.method == "max-confidence",
        block_size=config.block_size,
        reporter=reporter,
    )
    return MosaicResult(
        output=out,
        format="GTiff",
        valid_fraction=valid / (grid.width * grid.height),
        seconds=time.perf_counter() - started,
        **result_kw,
    )
