"""``predict_batch``: many scenes, one class map each, then a VRT over the maps.

A batch list is a text file with one scene per line::

    # 2023 summer scenes
    T33UUU_20230612.tif
    /data/T33UVU/B04.tif /data/T33UVU/B03.tif /data/T33UVU/B02.tif   # a stack of bands
    "scenes/with space.tif"
    /vsicurl/https://example.com/T32UQD.tif

Each scene is predicted by ``predict`` into ``OUT_DIR/<stem of its first file>.tif``. Everything
that can be checked without predicting is checked for every scene before the first map is begun
(files, map names, existing outputs, bands against the model), so a batch does not stop at
scene 7 an hour in for a reason it could have given at once. When the maps share one grid,
``OUT_DIR/mosaic.vrt`` references them all.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from geoclass.engine.predict.config import PredictConfig, PredictResult
from geoclass.engine.predict.inputs import check_bands, model_path
from geoclass.engine.predict.run import predict
from geoclass.errors import (
    ConfigError,
    GeoclassError,
    InputNotFoundError,
    Interrupted,
    OutputError,
    OutputExistsError,
)
from geoclass.io.outputs import InputFile, input_files
from geoclass.io.raster_writer import confidence_path, partial_path
from geoclass.progress import ProgressCallback, Reporter

__all__ = ["VRT_NAME", "BatchResult", "SkippedMap", "predict_batch", "read_batch_list"]

VRT_NAME = "mosaic.vrt"
"""The VRT written in the output folder over all the maps of a batch."""

PathLike = str | os.PathLike[str]
SceneSpec = PathLike | Sequence[PathLike]


@dataclass
class SkippedMap:
    """A map that a resumed batch found finished and left as it was.

    Attributes:
        output: The class map.
        scenes: The scene's files.
        preview: Its PNG preview, if previews were asked for (written now if it was missing).
        reason: Why it was skipped.
    """

    output: Path
    scenes: list[str]
    preview: Path | None
    reason: str


@dataclass
class BatchResult:
    """What a batch produced.

    Attributes:
        results: One entry per scene, in list order: a ``PredictResult``, or a ``SkippedMap``
            for a map that ``resume`` found finished.
        vrt: The VRT over all the maps, or None when it was not written.
        vrt_reason: Why there is no VRT (None when there is one).
        seconds: Wall time of the whole batch.
    """

    results: list[PredictResult | SkippedMap]
    vrt: Path | None
    vrt_reason: str | None
    seconds: float

    @property
    def maps(self) -> list[Path]:
        """Every map of the batch, predicted now or earlier, in list order."""
        return [r.output for r in self.results]


@dataclass(frozen=True)
class _Scene:
    """One scene of a batch and where it was given (for messages)."""

    files: list[str]
    number: int  # line of the list file, or position in a Python list (from 1)
    source: Path | None  # the list file, if any

    @property
    def where(self) -> str:
        return f"{self.source}: line {self.number}" if self.source else f"scene {self.number}"

    @property
    def label(self) -> str:
        more = len(self.files) - 1
        return self.files[0] + (f" (+{more} files stacked)" if more else "")


@dataclass(frozen=True)
class _Job:
    """A scene and the outputs it will write."""

    scene: _Scene
    map: Path
    confidence: Path | None
    preview: Path | None

    @property
    def outputs(self) -> list[Path]:
        return [p for p in (self.map, self.confidence, self.preview) if p is not None]


# --- the list ---------------------------------------------------------------------------------


def read_batch_list(path: PathLike) -> list[list[str]]:
    """Read a batch list: one scene per line, as its files.

    A line may hold several single-band files to stack, separated by whitespace (quote paths
    with spaces, as in a shell). Blank lines and lines starting with ``#`` are skipped. Relative
    paths are relative to the list file's folder; GDAL paths (``/vsi...``, ``...://...``) are
    kept as they are.

    Args:
        path: The list file.

    Returns:
        The scenes, each as its list of files.

    Raises:
        InputNotFoundError: The list file, or a scene file it names, does not exist.
        ConfigError: The list is empty or not text, a line cannot be split, or two scenes would
            write maps of the same name.
    """
    scenes = _read_list(Path(path))
    _check_names([_name_job(s, Path(".")) for s in scenes])
    return [s.files for s in scenes]


def _read_list(path: Path) -> list[_Scene]:
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; expected a text file listing one scene per line")
    if not path.is_file():
        raise InputNotFoundError(f"{path}: batch list not found (expected a text file, one scene per line)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; expected one scene per line") from None
    except OSError as exc:
        raise InputNotFoundError(f"{path}: cannot read the batch list ({exc.strerror or exc})") from exc
    folder = path.parent
    scenes: list[_Scene] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise ConfigError(
                f"{path}: line {number}: {exc} (quote paths with spaces as in a shell: \"my scene.tif\")"
            ) from None
        files = [_resolve(word, folder) for word in words]
        scene = _Scene(files, number, path)
        _check_exists(scene)
        scenes.append(scene)
    if not scenes:
        raise ConfigError(
            f"{path}: lists no scene (expected one scene per line; blank lines and lines "
            "starting with # are skipped)"
        )
    return scenes


def _is_gdal_path(name: str) -> bool:
    """A GDAL virtual path or URL: not a local file name to resolve or check."""
    return name.startswith("/vsi") or "://" in name


def _resolve(word: str, folder: Path) -> str:
    if _is_gdal_path(word):
        return word
    return str(folder / os.path.expanduser(word))


def _check_exists(scene: _Scene) -> None:
    for f in scene.files:
        if not _is_gdal_path(f) and not os.path.exists(f):
            raise InputNotFoundError(f"{scene.where}: {f} not found")


def _scenes(spec: PathLike | Sequence[SceneSpec]) -> list[_Scene]:
    """The scenes of a list file, or of a Python list of scenes (a path or a stack each)."""
    if isinstance(spec, (str, os.PathLike)):
        return _read_list(Path(spec))
    scenes = []
    for number, item in enumerate(spec, start=1):
        files = [os.fspath(item)] if isinstance(item, (str, os.PathLike)) else [os.fspath(f) for f in item]
        if not files:
            raise ConfigError(f"scene {number}: a stack with no files")
        scene = _Scene(files, number, None)
        _check_exists(scene)
        scenes.append(scene)
    if not scenes:
        raise ConfigError("predict batch: no scene given")
    return scenes


# --- names and existing outputs ---------------------------------------------------------------


def _stem(name: str) -> str:
    """The map name of a scene file: its stem (a URL's query is left out)."""
    if "://" in name:
        name = name.split("?", 1)[0]
    return PurePosixPath(name.rstrip("/")).stem


def _name_job(scene: _Scene, out_dir: Path, *, confidence: bool = False, preview: Path | None = None) -> _Job:
    stem = _stem(scene.files[0])
    if not stem or stem in (".", ".."):
        raise ConfigError(f"{scene.where}: cannot name a map after {scene.files[0]!r}")
    out = out_dir / f"{stem}.tif"
    return _Job(
        scene,
        out,
        confidence_path(out) if confidence else None,
        preview / f"{stem}.png" if preview is not None else None,
    )


def _check_names(jobs: list[_Job]) -> None:
    """Raise ConfigError when two scenes would write the same file (ignoring case, for the file
    systems that do)."""
    seen: dict[str, _Job] = {}
    for job in jobs:
        for p in job.outputs:
            key = str(p).casefold()
            other = seen.setdefault(key, job)
            if other is job:
                continue
            a, b = other.scene, job.scene
            if a.source is not None and a.source == b.source:
                who = f"{a.source}: lines {a.number} and {b.number}"
            else:
                who = f"{a.where} and {b.where}"
            raise ConfigError(
                f"{who} would both write {p.name} ({a.files[0]} and {b.files[0]}); a map is named "
                "after its scene's first file: rename one, or predict them in separate batches"
            )


def _folder(path: PathLike) -> Path:
    """An output folder, which need not exist yet (it is made once every check has passed).

    Raises:
        ConfigError: It does not exist and looks like a file name (``.tif``, ``.png``...).
        OutputError: It is a file.
    """
    out = Path(path)
    if out.is_dir():
        return out
    if out.exists():
        raise OutputError(f"{out}: is a file; a batch writes its maps into a folder")
    if out.suffix.lower() in (".tif", ".tiff", ".vrt", ".png"):
        raise ConfigError(
            f"{out}: a batch writes one map per scene into a folder; give a folder name, not a file"
        )
    return out


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot create the output folder ({exc.strerror or exc})") from exc


def _preview_folder(preview: PathLike | bool | None, out_dir: Path) -> Path | None:
    """The folder of the previews: ``preview`` names it (True: the output folder)."""
    if preview is None or preview is False:
        return None
    if preview is True:
        return out_dir
    folder = Path(preview)
    if folder.suffix.lower() == ".png":
        raise ConfigError(
            f"{folder}: in a batch, preview names a folder for one PNG per map "
            f"(give {out_dir} to put them beside the maps)"
        )
    return _folder(folder)


def _finished(job: _Job) -> bool:
    """The map was published (renamed into place) and no later run has begun rewriting it."""
    return job.map.is_file() and not partial_path(job.map, ".partial.json").exists()


def _check_outputs(jobs: list[_Job], config: PredictConfig, vrt: Path) -> None:
    """Before any work: existing outputs against resume/overwrite; no output is an input.

    Raises:
        OutputExistsError: An output exists and neither resume nor overwrite allows it, or a
            finished map lacks the confidence raster asked for now.
        ConfigError: An output would replace a file that a scene reads.
    """
    for job in jobs:
        if config.overwrite:
            continue
        if config.resume:
            if _finished(job) and job.confidence is not None and not job.confidence.exists():
                raise OutputExistsError(
                    f"{job.map}: is finished but has no {job.confidence.name}; pass --overwrite "
                    "to predict it again with --confidence"
                )
            continue
        for p in job.outputs:
            if p.exists():
                raise OutputExistsError(
                    f"{p}: already exists (pass --overwrite to replace it, or --resume to keep "
                    "the finished maps and do the rest)"
                )
    inputs = input_files([f for job in jobs for f in job.scene.files], "scene")
    by_path = {f.path: f for f in inputs}
    by_id: dict[tuple[int, int], InputFile] = {}
    for f in inputs:
        with suppress(OSError):
            st = f.path.stat()
            by_id[(st.st_dev, st.st_ino)] = f  # hard links
    for p in [vrt, *(p for job in jobs for p in job.outputs)]:
        hit = by_path.get(Path(os.path.realpath(p)))
        if hit is None and p.exists():
            st = p.stat()
            hit = by_id.get((st.st_dev, st.st_ino))
        if hit is not None:
            raise ConfigError(f"{p}: the output would replace {hit.describe()}; write the batch to another folder")


def _check_scenes(jobs: list[_Job], config: PredictConfig) -> None:
    """Open every scene (headers only) and check its bands against the model.

    Raises:
        The error ``predict`` would raise for that scene, its line named first.
    """
    from geoclass.io.reader import open_scene
    from geoclass.models.model_file import read_model_meta

    meta = read_model_meta(model_path(config.model))
    bands = list(config.bands) if config.bands is not None else None
    for job in jobs:
        try:
            with open_scene(job.scene.files, bands=bands, nodata=config.nodata, keep_gcps=True) as scene:
                check_bands(scene, job.scene.files, config.bands, meta)
        except GeoclassError as err:
            raise _located(err, job.scene) from err


def _located(err: GeoclassError, scene: _Scene) -> GeoclassError:
    """``err`` with the scene's line in front (the same type, so callers catch it the same)."""
    try:
        return type(err)(f"{scene.where}: {err}")
    except TypeError:  # an error type with another constructor: keep it as it was
        return err


# --- the batch --------------------------------------------------------------------------------


def predict_batch(
    list_file_or_scenes: PathLike | Sequence[SceneSpec],
    out_dir: PathLike,
    config: PredictConfig | None = None,
    progress: ProgressCallback | None = None,
) -> BatchResult:
    """Predict many scenes, one class map each, then write a VRT over the maps.

    Each scene is predicted by ``predict`` with ``config``, its ``scenes`` and ``output``
    replaced: the map is ``out_dir/<stem of the scene's first file>.tif``. Per-scene options
    carry over: ``confidence`` (``<stem>.confidence.tif`` beside each map), ``cog``, ``resume``,
    ``overwrite``, ``dask`` (each scene is scored on the cluster in turn) and the rest.
    ``preview`` names a folder (True: ``out_dir``) that gets ``<stem>.png`` for each map.
    ``probabilities`` and ``vector`` name single files and are refused.

    With ``resume`` a finished map is skipped (its preview is written if it is missing) and an
    interrupted one is continued by ``predict``. Without ``resume`` or ``overwrite`` any existing
    output stops the batch before the first map is begun.

    When the maps share one grid (CRS, pixel size, whole-pixel offsets), ``out_dir/mosaic.vrt``
    references them all (replaced if it exists); otherwise it is not written and
    ``BatchResult.vrt_reason`` says why (``geoclass mosaic``, which reprojects, can join them).

    Args:
        list_file_or_scenes: A batch list file (see ``read_batch_list``), or the scenes
            themselves: each a path, or a sequence of single-band files to stack.
        out_dir: The output folder (created when missing).
        config: Options for every scene; its ``scenes`` and ``output`` are ignored.
            Default: ``PredictConfig`` defaults.
        progress: Optional progress callback: a note per scene, then that scene's progress.

    Returns:
        A ``BatchResult``.

    Raises:
        InputNotFoundError: The list, or a scene file, does not exist.
        ConfigError: Empty list, two maps of the same name, ``probabilities`` or ``vector``
            given, an output folder named like a file, or an output that would replace an input.
        OutputExistsError: An output exists and neither ``resume`` nor ``overwrite`` was given.
        OutputError: The output folder is a file or cannot be created.
        RasterOpenError, GeoreferenceError, BandError, ModelError: A scene cannot be read or
            does not fit the model (found before any map is begun; the message names its line).
        Interrupted: Ctrl-C after a map was finished (rerun with ``resume`` to continue).
        Any error of ``predict``: raised for the scene that hit it; maps finished before it stay,
            and the same call with ``resume`` continues the batch.
    """
    started = time.perf_counter()
    reporter = Reporter(progress)
    if config is None:
        config = PredictConfig(scenes=[], output=os.fspath(out_dir))
    _check_config(config)
    scenes = _scenes(list_file_or_scenes)
    out = _folder(out_dir)
    previews = _preview_folder(config.preview, out)
    jobs = [_name_job(s, out, confidence=config.confidence, preview=previews) for s in scenes]
    _check_names(jobs)
    vrt = out / VRT_NAME
    _check_outputs(jobs, config, vrt)
    _check_scenes(jobs, config)
    for folder in {out, previews or out}:
        _make_folder(folder)

    results: list[PredictResult | SkippedMap] = []
    n = len(jobs)
    for i, job in enumerate(jobs, start=1):
        if config.resume and _finished(job):
            reporter.info(f"scene {i}/{n}: {job.map} is already finished; skipped")
            results.append(_skip(job))
            continue
        reporter.info(f"scene {i}/{n}: {job.scene.label} -> {job.map}")
        scene_config = replace(config, scenes=job.scene.files, output=job.map, preview=job.preview)
        try:
            results.append(predict(scene_config, progress))
        except KeyboardInterrupt:
            if not results:
                raise
            # predict says how to resume once it has rows; before that, the batch must say it.
            raise Interrupted(
                f"{job.map}: stopped with {len(results)} of {n} maps finished; run the same "
                "command with --resume to continue"
            ) from None

    maps = [r.output for r in results]
    made, reason = _write_vrt(maps, vrt, confidence=config.confidence, reporter=reporter, progress=progress)
    return BatchResult(results, made, reason, time.perf_counter() - started)


def _check_config(config: PredictConfig) -> None:
    if config.resume and config.overwrite:
        raise ConfigError("give either resume or overwrite, not both")
    for name, flag in (("probabilities", "--probabilities"), ("vector", "--vector")):
        if getattr(config, name) is not None:
            raise ConfigError(
                f"{flag} names one file, so it does not apply to a batch of scenes; predict "
                "the scenes that need it one by one"
            )


def _skip(job: _Job) -> SkippedMap:
    """A finished map, with its preview rendered if it is asked for and missing."""
    preview = job.preview
    if preview is not None and not preview.exists():
        from geoclass.engine.preview import render_preview

        render_preview(job.map, preview)
    return SkippedMap(job.map, job.scene.files, preview, "already finished")


# --- the VRT ----------------------------------------------------------------------------------


def _grid_problem(maps: list[Path]) -> str | None:
    """Why the maps are not on one grid (CRS, pixel size, whole-pixel offsets), or None."""
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    from geoclass.engine.mosaic.grid import on_grid, whole

    first, crs0, t0 = None, None, None
    for m in maps:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(m) as ds:
                crs, t = ds.crs, ds.transform
        if crs is None:
            return f"{m} has no CRS"
        if first is None:
            first, crs0, t0 = m, crs, t
            continue
        assert t0 is not None
        if crs != crs0:
            return f"{m} is in {crs.to_string()}, {first} in {crs0.to_string()}"  # type: ignore[union-attr]
        if not on_grid(t, crs, crs0, t0.a, -t0.e):
            return (
                f"{m} has {abs(t.a):g} x {abs(t.e):g} pixels, {first} {abs(t0.a):g} x {abs(t0.e):g}"
            )
        dx, dy = (t.c - t0.c) / t0.a, (t0.f - t.f) / -t0.e
        if whole(dx) is None or whole(dy) is None:
            return f"{m} is {dx % 1:.3g}, {dy % 1:.3g} pixels off the pixel grid of {first}"
    return None


def _mosaic_hint(out_dir: Path, confidence: bool) -> str:
    """The command that joins the maps of ``out_dir`` into a GeoTIFF (reprojecting them)."""
    folder = shlex.quote(str(out_dir))
    if confidence:  # the .confidence.tif files beside the maps are not maps to join
        return (
            f"find {folder} -maxdepth 1 -name '*.tif' ! -name '*.confidence.tif' -print0 | "
            "xargs -0 geoclass mosaic --method max-confidence -o mosaic.tif"
        )
    return f"geoclass mosaic {folder}/*.tif -o mosaic.tif"


def _write_vrt(
    maps: list[Path],
    vrt: Path,
    *,
    confidence: bool,
    reporter: Reporter,
    progress: ProgressCallback | None,
) -> tuple[Path | None, str | None]:
    """Write the VRT over the maps; (None, why) when they are not on one grid or it fails."""
    from geoclass.engine.mosaic import MosaicConfig, mosaic

    earlier = f" ({vrt.name} there is from an earlier run)" if vrt.exists() else ""
    problem = _grid_problem(maps)
    if problem is not None:
        reason = (
            f"the maps are not on one grid ({problem}) and a VRT cannot reproject; join them "
            f"with: {_mosaic_hint(vrt.parent, confidence)} (it reprojects){earlier}"
        )
        reporter.info(f"{vrt}: not written: {reason}")
        return None, reason
    try:
        result = mosaic(MosaicConfig(inputs=maps, output=vrt, vrt=True, overwrite=True), progress)
    except GeoclassError as err:  # the maps are all written: report, do not fail the batch
        reason = f"{err}{earlier}"
        reporter.warn(f"{vrt}: not written: {reason}")
        return None, reason
    reporter.info(f"{result.output}: VRT over the {len(maps)} maps, {result.width}x{result.height} px")
    return result.output, None
