"""Scoring a plan on a Dask cluster: row segments run as tasks, the client blends and writes.

The plan's window rows are cut where no batch may span (``stages.row_segments``: the windows
of one 256-row output strip); each such band is one Dask task. A worker opens the scene and loads the model once (the
first task of a run on that worker) and keeps them for the run's other tasks; it reads its
band's windows, scores them in the same batches a one-process run makes, and returns the scores.
The client takes the bands in plan order and hands them to the same blender and writers as a
local run, so the map is the same bytes. Only a few bands are in flight at a time, so the
client's memory stays flat.

Dask (``pip install 'geoclass[dask]'``) is imported only when a cluster is used.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geoclass.engine.device import select_device, select_precision
from geoclass.engine.predict.inputs import load_model
from geoclass.engine.predict.plan import Plan, Win, load_chunk
from geoclass.engine.predict.stages import Scored, row_segments, score_rows
from geoclass.engine.predict.strategies import Strategy, StrategyOptions, select_strategy
from geoclass.errors import ConfigError, GeoclassError, ModelError
from geoclass.io.outputs import file_digest
from geoclass.io.reader import Scene, open_scene

__all__ = [
    "ClusterError",
    "ClusterJob",
    "connect",
    "score_band",
    "score_on_cluster",
    "worker_loads",
]

CONNECT_TIMEOUT_S = 10.0  # Dask retries a refused connection until then
WORKERS_TIMEOUT_S = 30.0


class ClusterError(GeoclassError, ConnectionError):
    """The Dask cluster cannot be reached, has no workers, or lost a task for good."""


@dataclass(frozen=True)
class ClusterJob:
    """What a worker needs to rebuild a run's scene, model and strategy (sent with each task).

    Paths are absolute (or GDAL URLs): the workers must see the same files.
    """

    scene_paths: tuple[str, ...]
    bands: tuple[int, ...] | None
    nodata: float | None
    model_file: str
    model_sha256: str
    device: str
    amp: str
    tta: bool
    output_stride: int | None
    strategy: str
    window: int | None
    stride: int | None
    overlap: float | None
    size: int
    step: int
    width: int
    height: int
    batch_size: int
    run_id: str


@dataclass
class _Loaded:
    """A run's scene, model and strategy on a worker."""

    scene: Scene
    strategy: Strategy
    plan: Plan
    groups: list[list[int]]
    batch_size: int
    meta: Any
    infer_lock: threading.Lock


_loaded: OrderedDict[ClusterJob, _Loaded] = OrderedDict()
_loaded_lock = threading.Lock()
_loads = 0  # runs set up in this process (tests: once per worker, not per task)
_KEEP = 2  # runs kept loaded per worker process


def worker_loads() -> int:
    """How many times this process opened a run's scene and model (for tests and logs)."""
    return _loads


def _load(job: ClusterJob) -> _Loaded:
    """The run's scene, model and strategy, loaded on the first task of the run here."""
    global _loads
    with _loaded_lock:
        hit = _loaded.get(job)
        if hit is not None:
            _loaded.move_to_end(job)
            return hit
        if file_digest(Path(job.model_file)) != job.model_sha256:
            raise ModelError(
                f"{job.model_file}: on this worker the model file is not the one the client "
                "reads; give the workers the same file (a shared file system or URL)"
            )
        scene = open_scene(list(job.scene_paths), bands=list(job.bands) if job.bands else None,
                           nodata=job.nodata)
        if (scene.width, scene.height) != (job.width, job.height):
            scene.close()
            raise ConfigError(
                f"{job.scene_paths[0]}: on this worker the scene is {scene.width}x{scene.height} "
                f"px, the client read {job.width}x{job.height}; give the workers the same files"
            )
        device = select_device(job.device)
        precision = select_precision(device, job.amp)
        model, meta = load_model(Path(job.model_file), device)
        options = StrategyOptions(device, precision, job.tta, job.output_stride)
        strategy = select_strategy(job.strategy, model, meta, options, job.model_file,
                                   overlap_given=job.overlap is not None)
        size, step = strategy.grid(window=job.window, stride=job.stride, overlap=job.overlap,
                                   width=job.width, height=job.height)
        if (size, step) != (job.size, job.step):
            raise ConfigError(f"{job.model_file}: the worker's window grid ({size}/{step} px) is "
                              f"not the client's ({job.size}/{job.step} px); install the same "
                              "geoclass version on the client and the workers")
        strategy.prepare(size, job.width, job.height)
        plan = Plan.build(job.width, job.height, size, step, 0, strategy.offsets)
        groups = plan.column_groups(scene.count, job.batch_size)
        _set_threads()
        loaded = _Loaded(scene, strategy, plan, groups, job.batch_size, meta, threading.Lock())
        _loaded[job] = loaded
        _loads += 1
        while len(_loaded) > _KEEP:
            _, old = _loaded.popitem(last=False)
            old.scene.close()
        return loaded


def _set_threads() -> None:
    """One torch thread per thread of the Dask worker: a 1-thread worker uses one core."""
    try:
        from distributed import get_worker

        torch.set_num_threads(max(1, get_worker().state.nthreads))
    except (ImportError, ValueError):  # not inside a worker (tests call score_band directly)
        pass


def score_band(job: ClusterJob, segments: list[tuple[int, int]]) -> list[Scored]:
    """Score the window rows of ``segments`` (a Dask task); the windows come back without pixels.

    Raises:
        GeoclassError: An unreadable window (the message names it) or a worker that sees other
            files than the client.
    """
    run = _load(job)

    def infer(xs: list[np.ndarray]) -> np.ndarray:
        with run.infer_lock:  # threads of one worker share the model; torch uses the cores
            return run.strategy(xs)

    def load(row_off: int, cols: list[int]) -> list[Win | None]:
        return load_chunk(run.scene, run.meta, row_off, cols, job.size)

    out: list[Scored] = []
    error: GeoclassError | None = None
    try:
        for first, stop in segments:
            for events, done, empty in score_rows(run.plan, first, stop, run.groups, load, infer,
                                                  workers=0, batch_size=run.batch_size):
                out.append(([_without_pixels(ev) for ev in events], done, empty))
    except GeoclassError as exc:
        # Raised again without its chain: a GDAL error in it would not reach the client intact.
        error = type(exc)(str(exc))
    if error is not None:
        raise error
    return out


def _without_pixels(ev: tuple[Any, ...]) -> tuple[Any, ...]:
    """A scored window without its input pixels, which the blender does not need."""
    if ev[0] != "win":
        return ev
    win = ev[1]
    return ("win", replace(win, x=np.empty(0, np.float32)), ev[2])


def connect(address: str) -> Any:
    """A Dask client of the scheduler at ``address`` with at least one worker.

    Raises:
        ConfigError: Dask is not installed.
        ClusterError: The scheduler cannot be reached or has no workers.
    """
    try:
        from distributed import Client
    except ImportError:
        raise ConfigError(
            "--dask needs Dask: pip install 'geoclass[dask]' (on the client and the workers)"
        ) from None
    try:
        client = Client(address, timeout=f"{CONNECT_TIMEOUT_S}s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {address} ({_first_line(exc)}); "
                           "start one with: dask scheduler") from None
    try:
        client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
    except (OSError, TimeoutError):
        client.close()
        raise ClusterError(f"the Dask scheduler at {address} has no workers after "
                           f"{WORKERS_TIMEOUT_S:.0f} s; start some with: dask worker {address}"
                           ) from None
    return client


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def score_on_cluster(client: Any, job: ClusterJob, plan: Plan) -> Iterator[Scored]:
    """Score ``plan`` on the cluster, yielding the bands in plan order (``stages.Scored``).

    Progress is yielded as each task finishes, in any order; the events wait for their turn.
    At most two tasks per worker thread are in flight (results included), and the client holds
    one strip's scores at a time.

    Raises:
        GeoclassError: The error of a task (an unreadable window: its message names it).
        ClusterError: A task whose workers kept dying (Dask gave up on it).
    """
    from distributed import as_completed
    from distributed.client import FutureCancelledError

    bands = [[seg] for seg in row_segments(plan)]  # one task per 256-row strip of windows
    # Finished strips wait on their workers until their turn: the client fetches one at a time.
    in_flight = max(2, 2 * sum(client.nthreads().values()))
    queue: deque[Any] = deque()  # futures in plan order
    windows: dict[str, int] = {}  # windows of each task in flight
    finished: set[str] = set()
    pending = as_completed(loop=client.loop)
    next_band = 0

    def submit_more() -> None:
        nonlocal next_band
        while next_band < len(bands) and len(queue) < in_flight:
            segments = bands[next_band]
            key = f"geoclass-predict-{job.run_id}-{next_band}"
            fut = client.submit(score_band, job, segments, key=key, pure=False)
            queue.append(fut)
            windows[key] = sum((b - a) * len(plan.cols) for a, b in segments)
            pending.add(fut)
            next_band += 1

    try:
        submit_more()
        while queue:
            fut = next(pending)
            if fut.status == "error":
                raise _task_error(fut.exception()) from None
            if fut.status == "cancelled":
                raise ClusterError("the cluster cancelled a predict task (scheduler restarted?)")
            finished.add(fut.key)
            yield ([], windows.pop(fut.key), 0)
            while queue and queue[0].key in finished:
                head = queue.popleft()
                finished.discard(head.key)
                try:
                    parts = head.result()
                except FutureCancelledError:
                    raise ClusterError("the cluster cancelled a predict task") from None
                head.release()  # the worker may drop the band's scores now
                submit_more()
                for events, _, empty in parts:
                    yield (events, 0, empty)
    finally:
        for fut in queue:
            fut.cancel()


def _task_error(exc: BaseException | None) -> BaseException:
    """The error to raise for a failed task: the task's own, or a one-line ClusterError."""
    if isinstance(exc, GeoclassError):
        return exc
    name = type(exc).__name__ if exc is not None else "unknown error"
    if name == "KilledWorker":
        return ClusterError("a predict task kept killing the Dask workers that ran it (out of "
                            "memory?); see the worker logs")
    return ClusterError(f"a predict task failed on the cluster: {name}: "
                        f"{_first_line(exc) if exc is not None else ''}")


def absolute(path: str) -> str:
    """A path the workers can open: local paths made absolute, GDAL URLs as given."""
    if path.startswith("/vsi") or "://" in path or not os.path.exists(path):
        return path
    return str(Path(path).resolve())


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]
