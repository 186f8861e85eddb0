"""Everything the CLI shows: consoles, progress bars, notes, metrics, JSON and error lines.

The library reports through ``geoclass.progress`` callbacks and raises ``GeoclassError``s; this
module is the only place that turns those into terminal output. A command uses it like this::

    callback, live = make_progress_callback(quiet=cli_state(ctx).quiet)
    with live:
        result = library_function(config, progress=callback)
    if json_output:
        print_json(result)

Errors need no handling in a command: ``geoclass.cli.app`` reports every ``GeoclassError``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import sys
import threading
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import PurePath
from types import TracebackType
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text
from rich.traceback import Traceback

from geoclass.errors import GeoclassError, Interrupted
from geoclass.progress import ProgressCallback, ProgressEvent

__all__ = [
    "CliError",
    "CliState",
    "JSON_REQUESTED",
    "ProgressRenderer",
    "cli_state",
    "describe_io_error",
    "make_console",
    "make_progress_callback",
    "not_implemented",
    "print_json",
    "print_json_error",
    "print_note",
    "print_warning",
    "report_error",
    "report_interrupt",
]


# --- state and consoles -----------------------------------------------------------------------


@dataclass(frozen=True)
class CliState:
    """Global options given before the command name (``geoclass -q predict ...``)."""

    quiet: bool = False
    verbose: bool = False


def cli_state(ctx: typer.Context | None) -> CliState:
    """Return the global options of the running invocation (defaults outside one)."""
    while ctx is not None:
        if isinstance(ctx.obj, CliState):
            return ctx.obj
        ctx = ctx.parent
    return CliState()


def _no_color() -> bool:
    return os.environ.get("NO_COLOR", "") != ""


def make_console(stderr: bool = True) -> Console:
    """Create a rich Console for stderr (default) or stdout.

    Consoles are made per use, so environment changes (``NO_COLOR``, ``COLUMNS``) and swapped
    ``sys.stdout``/``sys.stderr`` (tests) are always honoured. With ``NO_COLOR`` set no ANSI
    styling is written at all, not even bold.
    """
    no_color = _no_color()
    return Console(
        stderr=stderr,
        no_color=no_color,
        color_system=None if no_color else "auto",
        highlight=False,
        emoji=False,
    )


# --- one-line messages ------------------------------------------------------------------------


def _line(console: Console, label: str, style: str, message: str) -> None:
    text = Text(f"{label}: ", style=style)
    text.append(message)
    console.print(text, soft_wrap=True)


def print_warning(message: str, console: Console | None = None) -> None:
    """Print ``warning: <message>`` on stderr (shown even under ``--quiet``)."""
    _line(console or make_console(), "warning", "bold yellow", message)


def print_note(message: str, console: Console | None = None) -> None:
    """Print ``note: <message>`` on stderr."""
    _line(console or make_console(), "note", "cyan", message)


def report_error(err: BaseException, verbose: bool = False) -> int:
    """Print one red ``error: <message>`` line on stderr and return the exit code to use.

    Args:
        err: The error; a ``GeoclassError`` carries its own ``exit_code``, others give 1.
        verbose: Also print the traceback (before the error line, so the line stays last).

    Returns:
        The process exit code for this error.
    """
    console = make_console()
    if verbose and err.__traceback__ is not None:
        console.print(
            Traceback.from_exception(type(err), err, err.__traceback__, show_locals=False)
        )
    message = str(err).strip() or type(err).__name__
    if isinstance(err, Interrupted):
        _line(console, "interrupted", "bold yellow", message)
    else:
        _line(console, "error", "bold red", message)
    return int(getattr(err, "exit_code", 1))


JSON_REQUESTED = "geoclass.json"
"""Key in ``click.Context.meta`` (shared by the whole command tree): ``--json`` was given."""


def print_json_error(message: str, exit_code: int, kind: str) -> None:
    """The JSON form of a failure on stdout, for ``--json`` pipelines: ``{"error": ..., "exit_code": ...}``."""
    print_json({"error": message, "exit_code": exit_code, "type": kind})


def describe_io_error(err: BaseException) -> GeoclassError:
    """One-line error for an OSError / GDAL I/O error that reached the CLI: the file and the reason."""
    from geoclass.io.outputs import is_disk_full, write_error

    filename = getattr(err, "filename", None)
    if is_disk_full(err):
        return write_error(err, filename or ".")
    text = str(err).strip()
    reason = getattr(err, "strerror", None) or (text.splitlines()[0] if text else type(err).__name__)
    return CliError(f"{filename}: {reason}" if filename else reason)


def report_interrupt() -> int:
    """Report a Ctrl-C that the library did not turn into ``Interrupted``; return 130."""
    _line(make_console(), "interrupted", "bold yellow", "stopped by the user (Ctrl-C)")
    return 130


class CliError(GeoclassError):
    """An error raised by the CLI layer itself, with an explicit exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def not_implemented(command: str) -> NoReturn:
    """Stop with ``error: geoclass <command> is not implemented yet`` and exit code 2."""
    raise CliError(f"geoclass {command} is not implemented yet", 2)


# --- JSON -------------------------------------------------------------------------------------


def _jsonable(obj: Any) -> Any:
    """Convert results (dataclasses, paths, numpy values, NaN) into plain JSON values."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, enum.Enum):
        return _jsonable(obj.value)
    if isinstance(obj, PurePath):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in obj]
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return _jsonable(to_dict())
    tolist = getattr(obj, "tolist", None)  # numpy arrays and scalars, torch tensors
    if callable(tolist):
        return _jsonable(tolist())
    return str(obj)


def print_json(obj: Any) -> None:
    """Write ``obj`` as indented JSON on stdout: plain text, no colour, one trailing newline."""
    sys.stdout.write(json.dumps(_jsonable(obj), indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


# --- progress ---------------------------------------------------------------------------------


class _RateColumn(ProgressColumn):
    """Items per second, e.g. ``312 it/s``."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text("", style="progress.data.speed")
        return Text(f"{_format_number(speed, 3)} it/s", style="progress.data.speed")


def _format_number(value: float, digits: int = 4) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.{max(digits - 1, 1)}e}"
    if abs(value) >= 100:
        return f"{value:.0f}" if digits <= 3 else f"{value:.1f}"
    return f"{value:.{digits}g}"


def _format_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if not math.isfinite(value) else _format_number(value)
    return str(value)


def _format_duration(seconds: float) -> str:
    """``42s``, ``5m07s`` or ``2h05m``: short enough for a log line, exact enough for an ETA."""
    seconds = max(int(round(seconds)), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _format_count(value: float) -> str:
    return _format_value(int(value) if float(value).is_integer() else value)


# Without a terminal (a log file, nohup, CI) there is no bar to watch, so a task prints a plain
# line when it passes each 10% of its total, and at least every LOG_EVERY_S when the total is
# unknown or progress is slow; never two within LOG_MIN_GAP_S, so short tasks print only their
# summary line.
LOG_STEPS = 10
LOG_EVERY_S = 30.0
LOG_MIN_GAP_S = 5.0


@dataclass
class _Timing:
    started: float
    total: float | None
    completed: float = 0.0
    last_line: float = 0.0  # when the last progress line was printed (or the task started)
    last_step: int = 0  # the last LOG_STEPS fraction of the total that was passed


class ProgressRenderer(AbstractContextManager["ProgressRenderer"]):
    """Renders ``ProgressEvent``s on stderr; a ``ProgressCallback`` and a context manager.

    - ``start``/``advance``/``end``: one bar per task name (description, bar, M/N, it/s, ETA).
      A ``start`` for a name already shown resets that bar, so a loop repeated per epoch should
      reuse one name (``"train"``, ``"val"``) rather than ``"epoch 3"``.
    - ``message``: ``note: ...`` (hidden under quiet) or ``warning: ...`` (always shown).
    - ``metrics``: an aligned row per event, with a header row whenever the columns change.

    Bars are drawn only when stderr is a terminal and ``quiet`` is off. Without a terminal
    (logs, nohup, CI), a task prints a plain line at each 10% of its total and at least every
    30 s (``train: 125/1250 (10%), 3.21 it/s, elapsed 39s, eta 5m51s``), but not two within
    5 s, and one summary line when it ends; under ``quiet`` nothing but warnings is printed.
    """

    def __init__(self, quiet: bool = False, console: Console | None = None) -> None:
        self.quiet = quiet
        self.console = console if console is not None else make_console(stderr=True)
        self.animated = not quiet and self.console.is_terminal
        self._lock = threading.RLock()
        self._tasks: dict[str, TaskID] = {}
        self._timings: dict[str, _Timing] = {}
        self._metric_columns: dict[str, tuple[list[str], list[int]]] = {}
        self._progress: Progress | None = None
        if self.animated:
            self._progress = Progress(
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                _RateColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
                redirect_stdout=False,
                redirect_stderr=False,
            )

    # context manager

    def __enter__(self) -> ProgressRenderer:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    # callback

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            handler = getattr(self, f"_on_{event.kind}", None)
            if handler is not None:
                handler(event)

    def _on_start(self, event: ProgressEvent) -> None:
        now = time.monotonic()
        self._timings[event.task] = _Timing(now, event.total, last_line=now)
        if self._progress is None:
            return
        task_id = self._tasks.get(event.task)
        if task_id is None:
            self._tasks[event.task] = self._progress.add_task(event.task, total=event.total)
        else:
            self._progress.reset(task_id, start=True)
            self._progress.update(task_id, total=event.total)

    def _on_advance(self, event: ProgressEvent) -> None:
        timing = self._timings.get(event.task)
        if timing is None:  # advance without start: show it anyway, total unknown
            self._on_start(ProgressEvent("start", task=event.task, total=None))
            timing = self._timings[event.task]
        timing.completed += event.step
        if self._progress is not None:
            self._progress.advance(self._tasks[event.task], event.step)
        elif not self.quiet:
            self._log_progress(event.task, timing)

    def _log_progress(self, task: str, timing: _Timing) -> None:
        """Print a progress line for a log when a 10% step was passed or LOG_EVERY_S went by."""
        now = time.monotonic()
        since = now - timing.last_line
        due = since >= LOG_EVERY_S
        total = timing.total
        if total:
            if timing.completed >= total:
                return  # the summary line follows at the end
            step = int(timing.completed * LOG_STEPS // total)
            if step > timing.last_step:
                # a step passed within LOG_MIN_GAP_S of the last line is skipped, not postponed,
                # so lines stay at round percentages
                timing.last_step = step
                due = due or since >= LOG_MIN_GAP_S
        if not due:
            return
        timing.last_line = now
        elapsed = now - timing.started
        done = timing.completed
        head = f"{task}: {_format_count(done)}"
        if total:
            head += f"/{_format_count(total)} ({int(100 * done // total)}%)"
        rate = done / elapsed if elapsed > 0 and done > 0 else None
        parts = [head, f"{_format_number(rate, 3)} it/s" if rate else "- it/s",
                 f"elapsed {_format_duration(elapsed)}"]
        if total and rate:
            parts.append(f"eta {_format_duration((total - done) / rate)}")
        self.console.print(Text(", ".join(parts), style="dim"), soft_wrap=True)

    def _on_end(self, event: ProgressEvent) -> None:
        timing = self._timings.pop(event.task, None)
        if self._progress is not None:
            task_id = self._tasks.get(event.task)
            if task_id is not None:
                task = self._progress.tasks[task_id]
                # unknown or overestimated totals end as a full bar
                self._progress.update(task_id, total=task.completed, completed=task.completed)
                self._progress.stop_task(task_id)
            return
        if self.quiet or timing is None:
            return
        elapsed = time.monotonic() - timing.started
        done = _format_value(
            int(timing.completed) if timing.completed.is_integer() else timing.completed
        )
        parts = [f"{event.task}: {done}"]
        if timing.total is not None and timing.total != timing.completed:
            parts[0] += f"/{_format_value(timing.total)}"
        parts.append(f"in {elapsed:.1f}s")
        if elapsed > 0 and timing.completed > 0:
            parts.append(f"({_format_number(timing.completed / elapsed, 3)} it/s)")
        self.console.print(Text(" ".join(parts), style="dim"), soft_wrap=True)

    def _on_message(self, event: ProgressEvent) -> None:
        if event.level == "warning":
            print_warning(event.message, self.console)
        elif not self.quiet:
            print_note(event.message, self.console)

    def _on_metrics(self, event: ProgressEvent) -> None:
        if self.quiet or not event.data:
            return
        keys = list(event.data)
        values = [_format_value(event.data[k]) for k in keys]
        label = event.task or ""
        known = self._metric_columns.get(label)
        if known is None or known[0] != keys:
            widths = [max(len(k), len(v), 8) for k, v in zip(keys, values, strict=True)]
            self._metric_columns[label] = (keys, widths)
            header = Text(" " * (len(label) + 2) if label else "", style="bold")
            header.append(
                "  ".join(k.rjust(w) for k, w in zip(keys, widths, strict=True)), style="bold"
            )
            self.console.print(header, soft_wrap=True)
        _, widths = self._metric_columns[label]
        row = Text(f"{label}  " if label else "", style="bold")
        row.append("  ".join(v.rjust(w) for v, w in zip(values, widths, strict=True)))
        self.console.print(row, soft_wrap=True)


def make_progress_callback(
    quiet: bool = False, console: Console | None = None
) -> tuple[ProgressCallback, ProgressRenderer]:
    """Create the progress callback to pass to a library call, and the context to run it in.

    Args:
        quiet: Show no bars, notes or metrics; warnings are still printed.
        console: Console to draw on; default a fresh stderr console.

    Returns:
        ``(callback, live)``: pass ``callback`` as the library's ``progress=`` argument and make
        the call inside ``with live:`` (which starts and cleanly stops the live display, also on
        errors and Ctrl-C). Both are the same ``ProgressRenderer``.
    """
    renderer = ProgressRenderer(quiet=quiet, console=console)
    return renderer, renderer
