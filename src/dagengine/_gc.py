"""The cyclic garbage collector's pace while runs are under way.

A run at thousands of calls a second allocates a hundred or so container objects per call
(coroutines, futures, request and answer dicts), each briefly alive while 200 calls are in
flight. With the interpreter's default thresholds (700, 10, 10) that is a young collection
every few calls, and the full collections it triggers walk everything the process holds:
the imported libraries, the application's own data and the run's results, again and again.
Measured on W5 (benchmarks/run.py) that was a third of a call's CPU, none of it finding
garbage: the engine's objects are freed by reference counting, not by the collector.

So while at least one run is under way the objects that existed before the first of them
are frozen (`gc.freeze()`: left out of every collection) and young collections come every
`RUN_THRESHOLD` allocations; both are undone when the last run ends. A process that tunes
its collector itself (thresholds other than the default, objects already frozen, or the
collector disabled) is left as it is.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

__all__ = ["RUN_THRESHOLD", "collector_paced"]

RUN_THRESHOLD = 10_000  # young collections per this many net allocations during a run
_DEFAULT_THRESHOLDS = (700, 10, 10)  # CPython's, which an untuned process has

_lock = threading.Lock()
_runs = 0  # runs under way in this process (any thread)
_saved: tuple[int, int, int] | None = None  # the thresholds to restore; None: left alone


@contextlib.contextmanager
def collector_paced() -> Iterator[None]:
    """Within it, the collector runs at a run's pace (see the module's docstring)."""
    _enter()
    try:
        yield
    finally:
        _exit()


def _enter() -> None:
    global _runs, _saved
    with _lock:
        _runs += 1
        if _runs > 1:
            return
        thresholds = gc.get_threshold()
        if thresholds != _DEFAULT_THRESHOLDS or not gc.isenabled() or gc.get_freeze_count():
            _saved = None  # the application tuned its collector: its choice stands
            return
        _saved = thresholds
        gc.freeze()
        gc.set_threshold(RUN_THRESHOLD, thresholds[1], thresholds[2])


def _exit() -> None:
    global _runs, _saved
    with _lock:
        _runs -= 1
        if _runs or _saved is None:
            return
        if gc.get_threshold()[0] == RUN_THRESHOLD:  # not one the application set since
            gc.set_threshold(*_saved)
        gc.unfreeze()  # what was frozen is collectable again, in the oldest generation
        _saved = None
