"""Progress reporting from the library to whoever renders it.

The library never prints. Long loops call a ``ProgressCallback`` with a ``ProgressEvent``;
the CLI renders these with rich, a notebook can pass its own function, and ``None`` means silence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

EventKind = Literal["start", "advance", "end", "message", "metrics"]


@dataclass(frozen=True)
class ProgressEvent:
    """One thing that happened in a long-running task.

    Attributes:
        kind: ``start`` (a task with ``total`` steps begins), ``advance`` (``step`` more done),
            ``end`` (the task finished), ``message`` (a note or warning for the user),
            ``metrics`` (a row of numbers, e.g. one training epoch).
        task: Short name of the task, e.g. ``"tile"`` or ``"epoch 3"``.
        total: Number of steps for ``start``; ``None`` when unknown.
        step: Steps done for ``advance``.
        message: Text for ``message`` events.
        level: ``info`` or ``warning`` for messages.
        data: Free-form numbers for ``metrics`` events.
    """

    kind: EventKind
    task: str = ""
    total: float | None = None
    step: float = 1
    message: str = ""
    level: Literal["info", "warning"] = "info"
    data: dict[str, Any] = field(default_factory=dict)


ProgressCallback = Callable[[ProgressEvent], None]


class Reporter:
    """Thin helper so library code can report with one short call; silent when callback is None."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self._callback = callback

    def emit(self, event: ProgressEvent) -> None:
        if self._callback is not None:
            self._callback(event)

    def start(self, task: str, total: float | None) -> None:
        self.emit(ProgressEvent("start", task=task, total=total))

    def advance(self, task: str, step: float = 1) -> None:
        self.emit(ProgressEvent("advance", task=task, step=step))

    def end(self, task: str) -> None:
        self.emit(ProgressEvent("end", task=task))

    def info(self, message: str) -> None:
        self.emit(ProgressEvent("message", message=message, level="info"))

    def warn(self, message: str) -> None:
        self.emit(ProgressEvent("message", message=message, level="warning"))

    def metrics(self, task: str, data: dict[str, Any]) -> None:
        self.emit(ProgressEvent("metrics", task=task, data=data))
