"""Progress displays for DagEngine(progress_display=...)."""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol, TextIO

from .graph import Plan
from .types import ProgressUpdate


class ProgressDisplay(Protocol):
    def start(self, plan: Plan) -> None: ...
    def due(self) -> bool: ...
    def update(self, progress: ProgressUpdate) -> None: ...
    def stop(self, progress: ProgressUpdate) -> None: ...


class LineDisplay:
    """One plain line per update, at most every `interval` seconds; no escape codes."""

    def __init__(self, stream: TextIO | None = None, interval: float = 1.0) -> None:
        self.stream = stream or sys.stderr
        self.interval = interval
        self._last = 0.0

    def start(self, plan: Plan) -> None:
        self._last = 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            return True
        return False

    def update(self, progress: ProgressUpdate) -> None:
        self.stream.write(format_line(progress) + "\n")
        self.stream.flush()

    def stop(self, progress: ProgressUpdate) -> None:
        self.update(progress)


def format_line(p: ProgressUpdate) -> str:
    return (f"Progress: {p.completed}/{p.total} ({p.percent:.0f}%) | "
            f"{p.requests_per_second:.1f} req/s | ${p.cost:.4f} | ETA: {p.eta_seconds:.0f}s")


def make_display(option: Any) -> ProgressDisplay | None:
    if option is None or option is False or option == "none":
        return None
    return LineDisplay()
