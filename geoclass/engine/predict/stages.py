"""The read -> infer -> blend -> write loop, its stages overlapping in threads.

Reading runs in a thread pool, inference in the calling thread (``score_rows``; on a Dask
cluster, in the workers), blending and writing in one thread each (``run_pipeline``), linked by
bounded queues. Window rows are visited in order; each is followed by a
row mark (the next window row's offset) that tells the blender which rows are finished.
"""

from __future__ import annotations

import math
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from geoclass.engine.predict.blend import Blender
from geoclass.engine.predict.plan import Plan, Win
from geoclass.progress import Reporter

__all__ = ["TASK", "Scored", "Stage", "StageFailed", "row_segments", "run_pipeline", "score_rows"]

TASK = "predict"  # the progress task: one step per window
_STOP = object()


class Stage(threading.Thread):
    """A worker thread fed through a bounded queue; it keeps its first error for the caller.

    After an error, or after ``abort``, it keeps draining its queue so producers never block.
    """

    def __init__(self, name: str, handle: Callable[[Any], None], maxsize: int) -> None:
        super().__init__(name=name, daemon=True)
        self._handle = handle
        self.queue: queue.Queue[Any] = queue.Queue(maxsize)
        self.error: BaseException | None = None
        self.aborted = threading.Event()

    def run(self) -> None:
        while True:
            item = self.queue.get()
            if item is _STOP:
                return
            if self.error is not None or self.aborted.is_set():
                continue
            try:
                self._handle(item)
            except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
                self.error = exc

    def put(
        self, item: Any, upstream_error: Callable[[], BaseException | None] | None = None
    ) -> None:
        """Queue ``item``; raises a stage's error instead of blocking forever behind it."""
        while True:
            err = self.error or (upstream_error() if upstream_error else None)
            if err is not None:
                raise StageFailed(err)
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def finish(self, abort: bool = False) -> None:
        if abort:
            self.aborted.set()
        while self.is_alive():
            try:
                self.queue.put(_STOP, timeout=0.1)
                break
            except queue.Full:
                continue
        self.join()


class StageFailed(Exception):
    """Wraps an error raised in a pipeline thread."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


Scored = tuple[list[tuple[Any, ...]], int, int]
"""One step of a scoring run: blender events (row marks and scored windows, in plan order),
the windows it covers, and how many of those were skipped as empty."""


def row_segments(plan: Plan) -> list[tuple[int, int]]:
    """The window rows still to run, cut where no batch may span (``Plan.batch_breaks``).

    Scoring the segments one by one, in any process, batches the windows exactly as one run
    over all rows does, so the scores are the same bits.
    """
    start, stop = plan.start, len(plan.rows)
    cuts = sorted(b for b in plan.batch_breaks() if start < b < stop)
    edges = [start, *cuts, stop]
    return [(a, b) for a, b in zip(edges, edges[1:], strict=False) if a < b]


def score_rows(
    plan: Plan,
    first: int,
    stop: int,
    groups: list[list[int]],
    load: Callable[[int, list[int]], list[Win | None]],
    infer: Callable[[list[np.ndarray]], np.ndarray],
    *,
    workers: int,
    batch_size: int,
) -> Iterator[Scored]:
    """Read and score window rows ``first`` to ``stop`` (exclusive) in batches, in order.

    Args:
        plan: The window grid.
        first: First window row; a batch break or the plan's start.
        stop: Window row after the last; a batch break or the end of the plan.
        groups: Column offsets of the windows read together.
        load: Reads one group of a window row (``plan.load_chunk``).
        infer: Scores a batch of windows (the strategy).
        workers: Reader threads (0 reads in the calling thread).
        batch_size: Windows per ``infer`` call.

    Yields:
        ``(events, windows, skipped)``: what the blender takes, after each batch.
    """
    rows = plan.rows
    breaks = plan.batch_breaks()
    pool = ThreadPoolExecutor(workers, "geoclass-read") if workers > 0 else None
    prefetch = max(2, math.ceil(2 * batch_size / len(groups[0])), 2 * workers)

    def events() -> Iterator[tuple[Any, ...]]:
        pending: deque[tuple[Any, ...]] = deque()
        in_flight = 0

        def resolve(ev: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
            if ev[0] != "chunk":
                yield ev
                return
            job = ev[1]
            for win in job.result() if isinstance(job, Future) else load(*job):
                yield ("win", win)

        try:
            for r in range(first, stop):
                pending.append(("row", r))
                for g in groups:
                    job: Any = pool.submit(load, rows[r], g) if pool else (rows[r], g)
                    pending.append(("chunk", job))
                    in_flight += 1
                    while in_flight > prefetch:
                        ev = pending.popleft()
                        in_flight -= ev[0] == "chunk"
                        yield from resolve(ev)
                pending.append(("mark", plan.next_offset(r)))
            while pending:
                yield from resolve(pending.popleft())
        finally:
            for ev in pending:
                if ev[0] == "chunk" and isinstance(ev[1], Future):
                    ev[1].cancel()

    batch: list[tuple[Any, ...]] = []
    xs: list[np.ndarray] = []
    consumed = skipped = 0

    def flush() -> Scored:
        nonlocal batch, xs, consumed, skipped
        out: list[tuple[Any, ...]] = []
        if xs:
            scores = infer(xs)
            i = 0
            for ev in batch:
                if ev[0] == "win":
                    out.append(("win", ev[1], scores[i]))
                    i += 1
                else:
                    out.append(ev)
        step = (out, consumed, skipped)
        batch, xs, consumed, skipped = [], [], 0, 0
        return step

    try:
        for ev in events():
            kind = ev[0]
            if kind == "row":
                if ev[1] in breaks:
                    yield flush()
            elif kind == "win":
                consumed += 1
                if ev[1] is None:
                    skipped += 1
                else:
                    batch.append(ev)
                    xs.append(ev[1].x)
                    if len(xs) >= batch_size:
                        yield flush()
            elif xs:
                batch.append(ev)  # a row mark must follow the windows before it
            else:
                yield flush()  # the windows counted so far (all skipped)
                yield ([ev], 0, 0)
        yield flush()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def run_pipeline(
    scored: Iterator[Scored],
    make_blender: Callable[[Callable[[int, np.ndarray], None]], Blender],
    write: Callable[[tuple[int, np.ndarray]], None],
    reporter: Reporter,
    *,
    windows: int,
) -> int:
    """Blend and write scored windows as they come; returns the windows skipped.

    Args:
        scored: The scoring run (``score_rows`` here, or the bands of a cluster run), in plan
            order.
        make_blender: The blender, given the function that takes its finished rows.
        write: Writes finished rows (in the writer thread).
        reporter: Gets ``start``, ``advance`` (one step per window) and ``end`` of ``TASK``.
        windows: Windows the run visits (the progress total).

    Raises:
        The first error of any stage, unwrapped. After Ctrl-C (KeyboardInterrupt) the rows
        already scored are still blended and written before it is raised.
    """
    writer = Stage("geoclass-predict-writer", write, maxsize=8)
    blender = make_blender(lambda row0, chunk: writer.put((row0, chunk)))
    sink = Stage("geoclass-predict-blend", blender.handle, maxsize=2)
    reporter.start(TASK, total=windows)
    writer.start()
    sink.start()

    def upstream() -> BaseException | None:
        return writer.error

    skipped = 0
    error: BaseException | None = None
    try:
        for events, done, empty in scored:
            if events:
                sink.put(events, upstream)
            skipped += empty
            if done:
                reporter.advance(TASK, done)
    except BaseException as exc:  # noqa: BLE001 - sorted out below, after the threads stop
        error = exc
    finally:
        close = getattr(scored, "close", None)
        if close is not None:
            close()  # stops the readers of an unfinished scoring run
    # After Ctrl-C, still blend and write what was already scored, so the partial files
    # hold every strip that could be completed; after an error, just stop.
    drain = error is None or isinstance(error, KeyboardInterrupt)
    try:
        sink.finish(abort=not drain)
        writer.finish(abort=not drain)
    except KeyboardInterrupt as exc:  # a second Ctrl-C: stop now
        sink.finish(abort=True)
        writer.finish(abort=True)
        error = error or exc
    error = error or sink.error or writer.error
    while isinstance(error, StageFailed):
        error = error.error
    if error is not None:
        raise error
    reporter.end(TASK)
    return skipped
