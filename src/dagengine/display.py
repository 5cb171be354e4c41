"""Live progress for DagEngine(progress_display=...): a rich bar, one bar per dimension, or a
plain line.

The engine drives a display through four calls: `start(plan)` once, `due()` after each
finished call and `update(snapshot)` only when it said yes, then `stop(final)`. `due()` is
a clock check, so a run of 100k items redraws a few times a second, not 100k times.

On a terminal the bars redraw in place. In a notebook (an IPython kernel: Jupyter, VS Code,
Colab) they are one output cell updated in place, rendered by rich as HTML. Anywhere else (a
pipe, a file, CI logs) every display prints plain periodic lines with no escape codes at
all: rich is not involved then.
"""

from __future__ import annotations

import importlib
import io
import math
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TextIO, runtime_checkable

from rich.console import Console, RenderableType
from rich.jupyter import JupyterMixin
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn
from rich.text import Text

from .errors import ConfigurationError
from .graph import Plan
from .types import ProgressUpdate

__all__ = [
    "DISPLAYS",
    "BarDisplay",
    "DisplayOptions",
    "LineDisplay",
    "NotebookDisplay",
    "ProgressDisplay",
    "format_batches",
    "format_line",
    "in_notebook",
    "make_display",
]

DisplayKind = Literal["bar", "multi", "simple"]
DISPLAYS: tuple[DisplayKind, ...] = ("bar", "multi", "simple")
TERMINAL_INTERVAL = 0.1  # seconds between redraws in place
NOTEBOOK_INTERVAL = 0.25  # each redraw is a message to the notebook's frontend
LOG_INTERVAL = 1.0  # seconds between plain lines when the stream is not a terminal
_OPTION_KEYS = ("display", "interval", "stream", "terminal")


@runtime_checkable
class ProgressDisplay(Protocol):
    def start(self, plan: Plan) -> None: ...
    def due(self) -> bool: ...
    def update(self, progress: ProgressUpdate) -> None: ...
    def stop(self, progress: ProgressUpdate) -> None: ...


@dataclass(frozen=True, slots=True)
class DisplayOptions:
    """What `progress_display` asked for. `terminal=None` asks the stream (`isatty()`)."""

    display: DisplayKind = "bar"
    interval: float | None = None  # None: TERMINAL_INTERVAL on a terminal, else LOG_INTERVAL
    stream: TextIO | None = None  # None: sys.stderr, looked up when the display is made
    terminal: bool | None = None


def format_line(p: ProgressUpdate) -> str:
    """`Progress: 63/100 (63%) | 27.2 req/s | $0.0147 | ETA: 2s`, plus what went wrong."""
    line = (f"Progress: {p.completed}/{p.total} ({p.percent:.0f}%) | "
            f"{p.requests_per_second:.1f} req/s | ${p.cost:.4f} | "
            f"ETA: {math.ceil(p.eta_seconds)}s")
    extra = _troubles(p)
    return f"{line} | {extra}" if extra else line


def _troubles(p: ProgressUpdate) -> str:
    """The counters worth a glance, only when they are not zero."""
    parts = []
    if p.failed:
        parts.append(f"{p.failed} failed")
    if p.rate_limited:
        parts.append(f"429s absorbed: {p.rate_limited}")
    if p.waiting_for_capacity:
        parts.append(f"waiting for capacity: {p.waiting_for_capacity}")
    if p.workers:  # a run over Ray: each worker's results per second
        alive = [w for w in p.workers if w.alive]
        rates = ", ".join(f"{w.calls_per_second:.0f}/s" for w in alive)
        parts.append(f"workers: {len(alive)} ({rates})")
    if p.batches is not None:
        parts.append(format_batches(p))
    return " | ".join(parts)


def format_batches(p: ProgressUpdate) -> str:
    """`batches: 2 running, 3 ended, 1200/2001 items, batch ETA 40s` (batch mode)."""
    b = p.batches
    if b is None:
        return ""
    text = (f"batches: {b.in_progress} running, {b.ended} ended, "
            f"{b.items_done}/{b.items} items")
    if b.in_progress and b.eta_seconds is not None:
        text += f", batch ETA {math.ceil(b.eta_seconds)}s"
    return text


class _Throttled:
    """The shared clock: `due()` once `interval` has passed since the last drawing."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._drawn = -math.inf

    def due(self) -> bool:
        return time.monotonic() - self._drawn >= self.interval

    def _mark_drawn(self) -> None:
        self._drawn = time.monotonic()


class LineDisplay(_Throttled):
    """One plain line: rewritten in place with `\\r` on a terminal, else one line per update.

    `per_dimension=True` appends each dimension's count (the plain form of "multi").
    """

    def __init__(self, stream: TextIO, *, interval: float, terminal: bool,
                 per_dimension: bool = False) -> None:
        super().__init__(interval)
        self.stream = stream
        self.terminal = terminal
        self.per_dimension = per_dimension
        self._width = 0

    def start(self, plan: Plan) -> None:
        self._drawn = -math.inf
        self._width = 0

    def update(self, progress: ProgressUpdate) -> None:
        self._write(self._line(progress), final=False)
        self._mark_drawn()

    def stop(self, progress: ProgressUpdate) -> None:
        self._write(self._line(progress), final=True)

    def _line(self, progress: ProgressUpdate) -> str:
        line = format_line(progress)
        if self.per_dimension and progress.dimensions:
            dims = ", ".join(f"{name} {d.completed}/{d.total}"
                             for name, d in progress.dimensions.items())
            line = f"{line} | {dims}"
        return line

    def _write(self, line: str, *, final: bool) -> None:
        if self.terminal:
            # Pad with spaces over a longer previous line: no escape codes needed.
            padding = " " * max(0, self._width - len(line))
            self._width = len(line)
            self.stream.write("\r" + line + padding + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


class BarDisplay(_Throttled):
    """rich progress bars redrawn in place: one for the run, or one per dimension and a total.

    Only for terminals; `make_display` picks LineDisplay for anything else. Refreshed by
    `update()` alone (no background thread), so `due()` is the only redraw clock.
    """

    def __init__(self, stream: TextIO, *, interval: float, per_dimension: bool = False,
                 force_terminal: bool = False) -> None:
        super().__init__(interval)
        self.per_dimension = per_dimension
        self.console = Console(file=stream, force_terminal=force_terminal or None,
                               highlight=False)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            TextColumn("{task.fields[counts]}"),
            TaskProgressColumn(),
            TextColumn("{task.fields[stats]}"),
            console=self.console,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._total: TaskID | None = None
        self._tasks: dict[str, TaskID] = {}

    def start(self, plan: Plan) -> None:
        self._add_tasks(plan)
        self.progress.start()

    def _add_tasks(self, plan: Plan) -> None:
        self._drawn = -math.inf
        if self.per_dimension:
            width = max((len(name) for name in plan.order), default=0)
            width = max(width, len("total"))
            for name in plan.order:
                self._tasks[name] = self.progress.add_task(
                    name.ljust(width), total=None, counts="", stats="")
            label = "total".ljust(width)
        else:
            label = "Progress"
        self._total = self.progress.add_task(label, total=None, counts="", stats="")

    def update(self, progress: ProgressUpdate) -> None:
        self._show(progress)
        self.progress.refresh()
        self._mark_drawn()

    def stop(self, progress: ProgressUpdate) -> None:
        self._show(progress)
        self.progress.stop()  # draws the final state once more and ends the line

    def _show(self, p: ProgressUpdate) -> None:
        for name, task in self._tasks.items():
            dim = p.dimensions.get(name)
            if dim is None:
                continue
            stats = f"${dim.cost:.4f}"
            if dim.failed:
                stats += f" | {dim.failed} failed"
            self._set(task, dim.completed, dim.total, stats)
        if self._total is not None:
            stats = (f"${p.cost:.4f} | ETA {math.ceil(p.eta_seconds)}s | "
                     f"{p.requests_per_second:.1f} req/s")
            if troubles := _troubles(p):
                stats += f" | {troubles}"
            self._set(self._total, p.completed, p.total, stats)

    def _set(self, task: TaskID, completed: int, total: int, stats: str) -> None:
        # A total of 0 would read as "unknown" to rich; the run may still be arming work.
        self.progress.update(task, completed=completed, total=total or None,
                             counts=f"{completed}/{total}", stats=stats)


class NotebookDisplay(BarDisplay):
    """The bars (or, `plain`, the one line) as one notebook output, updated in place.

    rich's Live would need ipywidgets in a notebook; instead each drawing hands rich's
    renderable to IPython's display, which asks rich for its HTML and text (rich's own
    Jupyter rendering), under one display id so that the output is replaced, not added.
    """

    def __init__(self, *, interval: float, per_dimension: bool = False,
                 plain: bool = False) -> None:
        super().__init__(io.StringIO(), interval=interval, per_dimension=per_dimension)
        self.plain = plain
        self._handle: Any = None  # IPython's DisplayHandle, once the first drawing is out

    def start(self, plan: Plan) -> None:
        if not self.plain:
            self._add_tasks(plan)
        self._handle = None
        self._drawn = -math.inf

    def update(self, progress: ProgressUpdate) -> None:
        self._publish(progress)
        self._mark_drawn()

    def stop(self, progress: ProgressUpdate) -> None:
        self._publish(progress)

    def _publish(self, progress: ProgressUpdate) -> None:
        if self.plain:
            renderable = _ForJupyter(Text(format_line(progress)))
        else:
            self._show(progress)
            renderable = _ForJupyter(self.progress.get_renderable())
        if self._handle is None:
            # Looked up, not imported, so that type checks need no IPython installed.
            self._handle = importlib.import_module("IPython.display").DisplayHandle()
            self._handle.display(renderable)
        else:
            self._handle.update(renderable)


class _ForJupyter(JupyterMixin):
    """Any rich renderable with rich's `_repr_mimebundle_`: HTML and text for IPython."""

    def __init__(self, renderable: RenderableType) -> None:
        self.renderable = renderable

    def __rich__(self) -> RenderableType:
        return self.renderable


def in_notebook() -> bool:
    """True inside an IPython kernel (Jupyter, VS Code, Colab), not a terminal IPython."""
    ipython = sys.modules.get("IPython")  # a kernel has imported it long before any run
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    # Colab's and the in-process kernel's shells derive from ipykernel's too.
    return any(cls.__name__ == "ZMQInteractiveShell" and cls.__module__.startswith("ipykernel")
               for cls in type(shell).__mro__)


def make_display(option: Any) -> ProgressDisplay | None:
    """The display `progress_display` names.

    True or "bar": one bar; "multi": a bar per dimension and a total; "simple": one plain
    line (in a notebook, each is one output updated in place); None, False or "none":
    nothing; a dict `{"display", "interval", "stream", "terminal"}`; or any object with the
    ProgressDisplay methods, used as it is.
    """
    if option is None or option is False or option == "none":
        return None
    if isinstance(option, ProgressDisplay):
        return option
    options = display_options(option)
    if options.stream is None and options.terminal is None and in_notebook():
        return NotebookDisplay(
            interval=NOTEBOOK_INTERVAL if options.interval is None else options.interval,
            per_dimension=options.display == "multi", plain=options.display == "simple")
    stream = options.stream if options.stream is not None else sys.stderr
    terminal = options.terminal if options.terminal is not None else _is_terminal(stream)
    interval = options.interval
    if interval is None:
        interval = TERMINAL_INTERVAL if terminal else LOG_INTERVAL
    if terminal and options.display != "simple":
        return BarDisplay(stream, interval=interval, per_dimension=options.display == "multi",
                          force_terminal=options.terminal is True)
    return LineDisplay(stream, interval=interval, terminal=terminal,
                       per_dimension=options.display == "multi")


def display_options(option: Any) -> DisplayOptions:
    """Validate `progress_display` (anything but None/False/"none"/a display object)."""
    if option is True:
        return DisplayOptions()
    if isinstance(option, str):
        return DisplayOptions(display=_kind(option, "progress_display"))
    if isinstance(option, Mapping):
        unknown = sorted(set(option) - set(_OPTION_KEYS))
        if unknown:
            raise ConfigurationError(
                f"progress_display has unknown key(s) {', '.join(map(repr, unknown))}; "
                f"allowed keys are {', '.join(_OPTION_KEYS)}"
            )
        return DisplayOptions(
            display=_kind(option.get("display", "bar"), "progress_display['display']"),
            interval=_interval(option.get("interval")),
            stream=_stream(option.get("stream")),
            terminal=_terminal(option.get("terminal")),
        )
    raise ConfigurationError(
        f"progress_display must be True, False, None, one of {', '.join(DISPLAYS)} or "
        f"'none', a dict like {{'display': 'bar', 'interval': 0.5}}, or an object with "
        f"start/due/update/stop methods; got {option!r}"
    )


def _kind(value: Any, where: str) -> DisplayKind:
    for kind in DISPLAYS:
        if value == kind:
            return kind
    raise ConfigurationError(
        f"{where} must be one of {', '.join(DISPLAYS)} or 'none', got {value!r}"
    )


def _interval(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigurationError(
            f"progress_display['interval'] must be a number of seconds >= 0, got {value!r}"
        )
    return float(value)


def _stream(value: Any) -> TextIO | None:
    if value is None:
        return None
    if value == "stdout":
        return sys.stdout
    if value == "stderr":
        return sys.stderr
    if callable(getattr(value, "write", None)):
        stream: TextIO = value
        return stream
    raise ConfigurationError(
        f"progress_display['stream'] must be a text stream, 'stdout' or 'stderr', "
        f"got {value!r}"
    )


def _terminal(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ConfigurationError(
        f"progress_display['terminal'] must be True, False or None (ask the stream), "
        f"got {value!r}"
    )


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
