"""``predict``: a scene in, a class map (and optional extras) out, on the scene's own grid.

Ties the rooms of the package together: the inputs are checked, a strategy is chosen for the
model, the plan of windows is made (continuing an interrupted run where it stopped), and the
stages read, infer, blend and write; then the outputs are published.
"""

from __future__ import annotations

import os
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from geoclass.engine.device import Precision, select_device, select_precision
from geoclass.engine.predict import outputs as out
from geoclass.engine.predict.blend import make_blender
from geoclass.engine.predict.config import PredictConfig, PredictResult
from geoclass.engine.predict.inputs import (
    check_bands,
    load_model,
    model_path,
    scene_paths,
    warn_about_scene,
)
from geoclass.engine.predict.plan import Plan, load_chunk
from geoclass.engine.predict.resume import fingerprint, resume_state
from geoclass.engine.predict.stages import run_pipeline, score_rows
from geoclass.engine.predict.strategies import Strategy, StrategyOptions, select_strategy
from geoclass.errors import ConfigError, Interrupted, RasterOpenError
from geoclass.io.outputs import OutputLock
from geoclass.io.raster_writer import NODATA
from geoclass.io.reader import Scene, open_scene
from geoclass.models.model_file import ModelMeta
from geoclass.progress import ProgressCallback, Reporter

__all__ = ["PredictConfig", "PredictResult", "predict"]


def predict(config: PredictConfig, progress: ProgressCallback | None = None) -> PredictResult:
    """Classify a scene into a class map on the scene's own grid.

    Args:
        config: What to predict and where to write it.
        progress: Optional progress callback (task ``predict``: one step per window).

    Returns:
        A ``PredictResult``.

    Raises:
        InputNotFoundError, RasterOpenError: A scene or the model cannot be read; or every pixel
            of the scene is nodata.
        BandError: The scene's bands do not match what the model expects.
        ModelError: The model file is unusable.
        ConfigError: Contradictory or out-of-range options, a strategy the model cannot run, or
            ``resume`` with a partial run made with different settings.
        OutputExistsError: An output exists and neither ``overwrite`` nor ``resume`` was given.
        OutputError: An output folder is not writable.
        Interrupted: Ctrl-C after some rows were finished; rerun with ``resume`` to continue.
    """
    t_start = time.perf_counter()
    _check_options(config)
    output = Path(config.output)
    if output.suffix.lower() not in (".tif", ".tiff"):
        raise ConfigError(f"{output}: the class map is a GeoTIFF; give it a .tif name")
    paths = scene_paths(config.scenes)
    bands = list(config.bands) if config.bands is not None else None
    scene = open_scene(paths, bands=bands, nodata=config.nodata, keep_gcps=True)
    client = None
    try:
        if config.dask:
            from geoclass.engine.predict.cluster import connect

            client = connect(config.dask)
        model_file = model_path(config.model)
        device = select_device(config.device)
        precision = select_precision(device, config.amp)
        model, meta = load_model(model_file, device)
        options = StrategyOptions(device, precision, config.tta, config.output_stride)
        strategy = select_strategy(
            config.strategy,
            model,
            meta,
            options,
            str(model_file),
            overlap_given=config.overlap is not None,
        )
        size, stride = strategy.grid(
            window=config.window,
            stride=config.stride,
            overlap=config.overlap,
            width=scene.width,
            height=scene.height,
        )
        check_bands(scene, paths, config.bands, meta)
        outputs = out.OutputPaths.build(
            output,
            probabilities=config.probabilities,
            confidence=config.confidence,
            vector=config.vector,
            preview=config.preview,
        )
        out.check_outputs(
            outputs, scene, paths, model_file, overwrite=config.overwrite, resume=config.resume
        )
        job = _Job(
            config=config,
            reporter=Reporter(progress),
            progress=progress,
            scene_paths=paths,
            model_file=model_file,
            scene=scene,
            meta=meta,
            strategy=strategy,
            size=size,
            stride=stride,
            precision=precision,
            t_start=t_start,
            outputs=outputs,
            client=client,
        )
        # One run per raster output: partial files have fixed names, so a second run writing the
        # same map (or probabilities, confidence) would splice its rows into this one's.
        with ExitStack() as locks:
            for path in job.outputs.rasters:
                locks.enter_context(OutputLock(path))
            return _run(job)
    finally:
        scene.close()
        if client is not None:
            client.close()


def _check_options(config: PredictConfig) -> None:
    """Raise ConfigError for options that contradict each other or are out of range."""
    if config.resume and config.overwrite:
        raise ConfigError("give either resume or overwrite, not both")
    if config.batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {config.batch_size}")
    if config.workers is not None and config.workers < 0:
        raise ConfigError(f"workers must be >= 0, got {config.workers}")
    if config.output_stride is not None and config.output_stride < 1:
        raise ConfigError(f"output stride must be >= 1, got {config.output_stride}")
    if config.vector is None and (config.min_area is not None or config.simplify is not None):
        raise ConfigError("min_area and simplify only apply with vector")


@dataclass
class _Job:
    """A checked run: its inputs, model, strategy, window grid and outputs."""

    config: PredictConfig
    reporter: Reporter
    progress: ProgressCallback | None
    scene_paths: list[str]
    model_file: Path
    scene: Scene
    meta: ModelMeta
    strategy: Strategy
    size: int
    stride: int
    precision: Precision
    t_start: float
    outputs: out.OutputPaths
    client: Any = None  # a Dask client: the windows are scored on its cluster

    @property
    def device(self) -> torch.device:
        return self.precision.device


def _run(job: _Job) -> PredictResult:
    """Resume state, plan, pipeline, then publish the outputs; the outputs are locked."""
    c, scene, meta, paths = job.config, job.scene, job.meta, job.outputs
    if job.strategy.blending == "cell":  # dense: each cell is scored from the chip around it
        warn_about_scene(scene, meta, meta.chip_size, job.reporter, unit="chip")
    else:
        warn_about_scene(scene, meta, job.size, job.reporter)
    writers = out.make_writers(paths, scene, meta, resume=c.resume)
    run_fingerprint = _fingerprint(job)
    rows_done, histogram = resume_state(
        paths.map,
        paths.sidecar,
        run_fingerprint,
        [w for w, _ in writers],
        resume=c.resume,
        reporter=job.reporter,
    )
    if rows_done == 0:
        # A stale sidecar must never describe the partial files this run is about to write.
        paths.sidecar.unlink(missing_ok=True)

    plan = Plan.build(
        scene.width, scene.height, job.size, job.stride, rows_done, job.strategy.offsets
    )
    job.reporter.info(
        f"{scene.name}: {scene.width}x{scene.height} px, {scene.count} bands {scene.dtype}; "
        f"{meta.task} model, {meta.num_classes} classes, "
        f"{job.size} px windows every {job.stride} px; "
        f"{job.device.type} {job.precision.label}"
    )
    if rows_done:
        job.reporter.info(f"{paths.map}: resuming at row {rows_done} of {scene.height}")

    rasters = out.OutputRasters(
        writers, scene.width, scene.height, rows_done, paths.sidecar, run_fingerprint, histogram
    )
    t0 = time.perf_counter()
    skipped = _pipeline(job, plan, rasters)
    seconds_predict = time.perf_counter() - t0

    hist = rasters.histogram
    valid = int(hist[:NODATA].sum())
    if valid == 0:
        out.discard(writers, paths)
        raise RasterOpenError(
            f"{scene.name}: every pixel is nodata (or masked); there is nothing to classify"
        )
    out.publish(writers, paths, cog=c.cog, reporter=job.reporter)
    overwrite = c.overwrite or c.resume
    vector_result = out.write_vector(
        paths, min_area=c.min_area, simplify=c.simplify, overwrite=overwrite, progress=job.progress
    )
    preview = out.write_preview(paths, overwrite=overwrite)
    seconds = time.perf_counter() - job.t_start
    done_px = (scene.height - rows_done) * scene.width
    return PredictResult(
        output=paths.map,
        probabilities=paths.probabilities,
        confidence=paths.confidence,
        vector=paths.vector,
        preview=preview,
        width=scene.width,
        height=scene.height,
        crs=scene.crs.to_string() if scene.crs else None,
        model=job.model_file,
        task=meta.task,
        classes=list(meta.classes),
        class_pixels={name: int(hist[i]) for i, name in enumerate(meta.classes)},
        valid_pixels=valid,
        nodata_pixels=int(hist[NODATA]),
        window=job.size,
        stride=job.stride,
        strategy=job.strategy.name,
        windows=plan.windows,
        windows_skipped=skipped,
        device=str(job.device),
        precision=job.precision.label,
        resumed_from_row=rows_done,
        seconds=seconds,
        megapixels_per_second=done_px / 1e6 / max(seconds_predict, 1e-9),
        vector_result=vector_result,
    )


def _fingerprint(job: _Job) -> dict[str, Any]:
    """Everything a resumed run must share with the interrupted one to write the same bytes."""
    c, paths = job.config, job.outputs
    return fingerprint(
        job.model_file,
        job.scene_paths,
        bands=list(job.scene.bands),
        nodata=c.nodata,
        width=job.scene.width,
        height=job.scene.height,
        window=job.size,
        stride=job.stride,
        tta=bool(c.tta),
        batch_size=c.batch_size,
        device=job.device.type,
        precision=job.precision.label,
        probabilities=str(paths.probabilities.resolve()) if paths.probabilities else None,
        confidence=bool(paths.confidence),
        strategy=job.strategy.name,
        blending=job.strategy.blending,  # dense blended pixels before its cell lattice
        output_stride=c.output_stride,
    )


def _pipeline(job: _Job, plan: Plan, rasters: out.OutputRasters) -> int:
    """Run the stages; on failure, keep or remove the partial files as resume needs."""
    c, scene, meta, strategy = job.config, job.scene, job.meta, job.strategy
    workers = c.workers if c.workers is not None else max(1, min(4, (os.cpu_count() or 2) // 2))
    strategy.prepare(job.size, scene.width, scene.height)
    # Large dense windows: batch only as many as one forward call takes (memory stays flat).
    batch_size = min(c.batch_size, getattr(strategy, "max_batch", c.batch_size))
    threads = torch.get_num_threads()
    if getattr(strategy, "reader_bound", False) and job.device.type == "cpu" and workers > 0:
        # The model costs less than reading: leave the readers their cores (per-pixel model,
        # 13-band JP2 stack, 2 cores: 0.75 -> 0.93 MP/s with one torch thread beside one reader).
        torch.set_num_threads(max(1, threads - workers))
    try:
        if job.client is not None:
            scored = _cluster_scoring(job, plan, batch_size)
        else:
            groups = plan.column_groups(scene.count, batch_size)
            scored = score_rows(
                plan,
                plan.start,
                len(plan.rows),
                groups,
                lambda row_off, cols: load_chunk(scene, meta, row_off, cols, job.size),
                strategy,
                workers=workers,
                batch_size=batch_size,
            )
        return run_pipeline(
            scored,
            lambda emit: make_blender(
                strategy.blending,
                stride=job.stride,
                margin=strategy.margin,
                lattice=getattr(strategy, "lattice", None),
                classes=meta.num_classes,
                size=job.size,
                width=scene.width,
                height=scene.height,
                base=plan.base,
                start_row=plan.rows_done,
                want_probs=job.outputs.probabilities is not None,
                want_conf=job.outputs.confidence is not None,
                emit=emit,
            ),
            rasters.handle,
            job.reporter,
            windows=plan.windows,
        )
    except KeyboardInterrupt:
        if rasters.rows_done > 0:
            raise Interrupted(
                f"{job.outputs.map}: stopped at row {rasters.rows_done} of {scene.height}; run "
                "the same command with --resume to continue"
            ) from None
        out.discard(rasters.writers, job.outputs)
        raise
    except BaseException:
        if not c.resume:
            out.discard(rasters.writers, job.outputs)
        raise
    finally:
        torch.set_num_threads(threads)


def _cluster_scoring(job: _Job, plan: Plan, batch_size: int) -> Any:
    """The plan scored by the Dask workers, band by band (see ``cluster``)."""
    from geoclass.engine.predict.cluster import (
        ClusterJob,
        absolute,
        new_run_id,
        score_on_cluster,
    )
    from geoclass.io.outputs import file_digest

    c = job.config
    cluster_job = ClusterJob(
        scene_paths=tuple(absolute(p) for p in job.scene_paths),
        bands=tuple(c.bands) if c.bands is not None else None,
        nodata=c.nodata,
        model_file=str(job.model_file.resolve()),
        model_sha256=file_digest(job.model_file),
        device=c.device,
        amp=c.amp,
        tta=c.tta,
        output_stride=c.output_stride,
        strategy=c.strategy,
        window=c.window,
        stride=c.stride,
        overlap=c.overlap,
        size=job.size,
        step=job.stride,
        width=job.scene.width,
        height=job.scene.height,
        batch_size=batch_size,
        run_id=new_run_id(),
    )
    job.reporter.info(f"scoring on the Dask cluster at {c.dask}")
    return score_on_cluster(job.client, cluster_job, plan)
