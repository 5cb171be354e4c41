"""The callbacks passed to process(): calling them, and feeding on_progress and the live
progress display as items finish."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from .display import ProgressDisplay
from .plugin import resolve, with_arity
from .progress import ProgressTracker
from .types import ProgressUpdate

log = logging.getLogger("dagengine")

Callback = Callable[..., Any]


class Callbacks:
    """The process() callbacks: sync or async, and one that raises never breaks the run."""

    def __init__(self, callbacks: Mapping[str, Callback | None]) -> None:
        self._fns = {
            name: with_arity(fn, 2) if name in ("on_dimension_complete", "on_section_start",
                                               "on_section_complete", "on_error") else fn
            for name, fn in callbacks.items() if fn is not None
        }

    def get(self, name: str) -> Callback | None:
        return self._fns.get(name)

    async def emit(self, name: str, *args: Any) -> None:
        fn = self._fns.get(name)
        if fn is None:
            return
        try:
            await resolve(fn(*args))
        except Exception as exc:
            if name == "on_error":
                log.warning("on_error callback raised %s: %s", type(exc).__name__, exc)
            else:
                await self.emit("on_error", exc, {"callback": name})

    async def hook_failed(self, hook: str, error: BaseException) -> None:
        await self.emit("on_error", error, {"hook": hook})


def progress_emitter(
    callbacks: Callbacks, progress: ProgressTracker, every: int,
    display: ProgressDisplay | None, snapshot: Callable[[], ProgressUpdate],
) -> Callable[[], Any] | None:
    """What the scheduler calls after each finished item; None when nothing shows progress."""
    on_progress = callbacks.get("on_progress")
    if on_progress is None and display is None:
        return None

    async def emit() -> None:
        done = progress.completed
        if display is not None and display.due():
            display.update(snapshot())
        if on_progress is not None and (done % every == 0 or done >= _total(progress)):
            await callbacks.emit("on_progress", snapshot())

    return emit


def _total(progress: ProgressTracker) -> int:
    return sum(c.total for c in progress.dims.values())
