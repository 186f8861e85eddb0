"""The outputs of a prediction: the rasters written strip by strip, then vectors and a preview.

Rasters (the class map, probabilities, confidence) are written to hidden partial files and
renamed into place when complete, the class map last; the resume sidecar is rewritten after each
strip. Vectors and the preview are made from the finished map.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoclass.engine.predict import resume
from geoclass.errors import ConfigError
from geoclass.io.outputs import check_output_path, input_files, write_error
from geoclass.io.raster_writer import (
    StripAssembler,
    StripWriter,
    confidence_path,
    confidence_setup,
    partial_path,
    probability_setup,
)
from geoclass.io.reader import Scene
from geoclass.io.vector_files import check_vector_output, vector_driver
from geoclass.models.model_file import ModelMeta
from geoclass.progress import ProgressCallback, Reporter

__all__ = [
    "OutputPaths",
    "OutputRasters",
    "check_outputs",
    "discard",
    "make_writers",
    "publish",
    "write_preview",
    "write_vector",
]

Writers = list[tuple[StripWriter, slice]]  # each raster with the bands of a row chunk it takes
_VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp")


@dataclass(frozen=True)
class OutputPaths:
    """Where a run writes.

    Attributes:
        map: The class map.
        probabilities: Per-class probabilities, if asked for.
        confidence: The confidence raster beside the map, if asked for.
        vector: Polygons, if asked for.
        preview: The PNG preview, if asked for.
        sidecar: The resume sidecar of the map's partial file.
    """

    map: Path
    probabilities: Path | None
    confidence: Path | None
    vector: Path | None
    preview: Path | None
    sidecar: Path

    @classmethod
    def build(
        cls,
        output: Path,
        *,
        probabilities: str | os.PathLike[str] | None,
        confidence: bool,
        vector: str | os.PathLike[str] | None,
        preview: str | os.PathLike[str] | None,
    ) -> OutputPaths:
        """The paths of a run writing the class map ``output``."""
        return cls(
            map=output,
            probabilities=Path(probabilities) if probabilities is not None else None,
            confidence=confidence_path(output) if confidence else None,
            vector=Path(vector) if vector is not None else None,
            preview=Path(preview) if preview is not None else None,
            sidecar=partial_path(output, ".partial.json"),
        )

    @property
    def rasters(self) -> list[Path]:
        """The raster outputs, written strip by strip (the class map first)."""
        return [p for p in (self.map, self.probabilities, self.confidence) if p is not None]


def check_outputs(
    paths: OutputPaths,
    scene: Scene,
    scene_paths: list[str],
    model_path: Path,
    *,
    overwrite: bool,
    resume: bool,
) -> None:
    """Check every output before any work is done.

    Raises:
        ConfigError: Two outputs share a path, an unknown vector format, or vectors for a
            scene located by ground control points; an output is one of the inputs.
        OutputExistsError: An output exists and neither ``overwrite`` nor ``resume`` was given.
        OutputError: An output folder is not writable.
    """
    named = [
        ("map", paths.map),
        ("probabilities", paths.probabilities),
        ("confidence", paths.confidence),
        ("vector", paths.vector),
        ("preview", paths.preview),
    ]
    given = [(k, p) for k, p in named if p is not None]
    seen: dict[Path, str] = {}
    for kind, p in given:
        key = p.resolve()
        if key in seen:
            raise ConfigError(f"{p}: given as both the {seen[key]} and the {kind} output")
        seen[key] = kind
    if paths.vector is not None and paths.vector.suffix.lower() not in _VECTOR_SUFFIXES:
        raise ConfigError(f"{paths.vector}: unknown vector format; use .gpkg, .geojson or .shp")
    if paths.vector is not None and scene.gcps is not None:
        raise ConfigError(
            f"{scene.name}: is located by ground control points, not a geotransform, so "
            "polygons cannot be placed; warp the scene first (gdalwarp) or leave out --vector"
        )
    # Every file the run reads, through VRTs and symlinks, so no output can replace one.
    inputs = input_files(scene_paths, "scene") + input_files([model_path], "model", raster=False)
    for kind, p in given:
        if kind == "vector":  # all of a shapefile's files, before any work is done
            check_vector_output(
                p, vector_driver(p), overwrite=overwrite or resume, inputs=inputs, kind=kind
            )
        else:
            check_output_path(
                p, overwrite=overwrite, allow_existing=resume, inputs=inputs, kind=kind
            )


def make_writers(paths: OutputPaths, scene: Scene, meta: ModelMeta, *, resume: bool) -> Writers:
    """The output rasters, each with the bands of a blended row chunk it takes."""
    from geoclass.io.class_map import write_class_metadata

    colors = [(int(c[0]), int(c[1]), int(c[2])) for c in meta.colors]
    # Partial files are kept for --resume only when the run was started with it.
    resume_hint = "then run the same command again with --resume" if resume else ""

    def writer(
        path: Path, count: int, predictor: bool, setup: Callable[[Any], None]
    ) -> StripWriter:
        return StripWriter(
            path,
            width=scene.width,
            height=scene.height,
            count=count,
            crs=scene.crs,
            transform=scene.transform,
            predictor=predictor,
            setup=setup,
            gcps=scene.gcps,
            hint=resume_hint,
        )

    out = [
        (
            writer(paths.map, 1, False, lambda ds: write_class_metadata(ds, meta.classes, colors)),
            slice(0, 1),
        )
    ]
    band = 1
    if paths.probabilities is not None:
        n = meta.num_classes
        setup = probability_setup(list(meta.classes))
        out.append((writer(paths.probabilities, n, True, setup), slice(band, band + n)))
        band += n
    if paths.confidence is not None:
        out.append((writer(paths.confidence, 1, True, confidence_setup), slice(band, band + 1)))
    return out


class OutputRasters:
    """The output rasters and the resume sidecar, fed finished rows; runs in the writer thread.

    Attributes:
        writers: The rasters.
        histogram: Pixels per class value (256 bins) of the rows written, resumed ones included.
        rows_done: Rows written to every raster, in whole strips.
    """

    def __init__(
        self,
        writers: Writers,
        width: int,
        height: int,
        start_row: int,
        sidecar: Path,
        fingerprint: dict[str, Any],
        histogram: np.ndarray,
    ) -> None:
        self.writers = writers
        self.height = height
        count = sum(bands.stop - bands.start for _, bands in writers)
        self.assembler = StripAssembler(width, height, count, start_row)
        self.sidecar, self.fingerprint = sidecar, fingerprint
        self.histogram = histogram
        self.rows_done = start_row

    def handle(self, item: tuple[int, np.ndarray]) -> None:
        """Take ``(first row, chunk)`` of blended rows; write the strips it completes."""
        row0, chunk = item
        for s0, strip in self.assembler.push(row0, chunk):
            for writer, bands in self.writers:
                writer.write(s0, strip[bands])
            self.histogram += np.bincount(strip[0].ravel(), minlength=256)
            self.rows_done = s0 + strip.shape[1]
            try:
                resume.write_sidecar(self.sidecar, self.fingerprint, self.rows_done, self.histogram)
            except OSError as exc:
                first = self.writers[0][0]
                needed = sum(w.size_bytes for w, _ in self.writers)
                raise write_error(exc, first.target, needed, first.hint) from exc


def publish(writers: Writers, paths: OutputPaths, *, cog: bool, reporter: Reporter) -> None:
    """Rename the finished rasters into place (as COGs with overviews if ``cog``)."""
    if cog:
        reporter.info("writing Cloud-Optimized GeoTIFFs with overviews")
    # The class map last: once it exists under its name, everything else does too.
    for writer, _ in reversed(writers):
        writer.publish(
            cog=cog,
            overview_resampling="nearest" if writer.target == paths.map else "average",
        )
    paths.sidecar.unlink(missing_ok=True)


def discard(writers: Writers, paths: OutputPaths) -> None:
    """Remove the partial rasters and the resume sidecar."""
    for writer, _ in writers:
        writer.discard()
    paths.sidecar.unlink(missing_ok=True)
    paths.sidecar.with_name(paths.sidecar.name + ".tmp").unlink(missing_ok=True)


def write_vector(
    paths: OutputPaths,
    *,
    min_area: float | None,
    simplify: float | None,
    overwrite: bool,
    progress: ProgressCallback | None,
) -> Any | None:
    """Polygonize the finished class map, if vectors were asked for."""
    if paths.vector is None:
        return None
    from geoclass.io.vector_writer import polygonize_class_map

    return polygonize_class_map(
        paths.map,
        paths.vector,
        min_area=min_area or 0.0,
        simplify=simplify or 0.0,
        overwrite=overwrite,
        progress=progress,
    )


def write_preview(paths: OutputPaths, *, overwrite: bool) -> Path | None:
    """Render the PNG preview of the finished class map, if one was asked for."""
    if paths.preview is None:
        return None
    from geoclass.engine.preview import render_preview

    return render_preview(paths.map, paths.preview, overwrite=overwrite)
