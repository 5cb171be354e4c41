"""Running a coroutine to its end from synchronous code, with or without a running loop.

`DagEngine.run()` and the graph exports are synchronous. Outside an event loop they use
`asyncio.run` as usual. Inside one (every Jupyter cell, an `async def` test) that loop
cannot be re-entered, so the coroutine runs on a worker thread with a loop of its own,
while the calling thread waits. Either way Ctrl-C comes out as KeyboardInterrupt, after
the coroutine was cancelled and allowed to wind down (so a run commits what finished and
closes its provider clients on the loop that opened them).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import signal
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, Generic, TypeVar

T = TypeVar("T")

__all__ = ["exit_130_on", "in_running_loop", "run_sync"]


def in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def run_sync(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """`await main()` to its end from synchronous code; Ctrl-C raises KeyboardInterrupt."""
    if not in_running_loop():
        return asyncio.run(main())
    return _Worker(main).run()


class _Worker(Generic[T]):
    """`main()` on a thread of its own with its own event loop, cancelled on Ctrl-C here."""

    def __init__(self, main: Callable[[], Coroutine[Any, Any, T]]) -> None:
        self._main = main
        self._done = threading.Event()
        self._lock = threading.Lock()  # guards _loop, _task and _cancelled between threads
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self._cancelled = False
        self._value: list[T] = []  # main()'s value, once it returned
        self._error: BaseException | None = None
        # The caller's context variables (tracing spans, settings) carry over to the run.
        self._context = contextvars.copy_context()

    def run(self) -> T:
        thread = threading.Thread(target=self._context.run, args=(self._thread,),
                                  name="dagengine-run", daemon=True)
        thread.start()
        try:
            with _ctrl_c_raises_here():
                self._done.wait()  # a lock wait, which Ctrl-C interrupts in the main thread
        except KeyboardInterrupt:
            self._cancel()
            # Let the run wind down (commit, close its clients); a second Ctrl-C stops the
            # waiting, and the winding down goes on meanwhile.
            with contextlib.suppress(KeyboardInterrupt):
                self._done.wait()
            raise KeyboardInterrupt from None
        if self._error is not None:
            raise self._error
        return self._value[0]

    def _thread(self) -> None:
        try:
            # Not in the main thread, asyncio.run installs no signal handler: Ctrl-C stays
            # with the waiting caller, which cancels the task.
            self._value.append(asyncio.run(self._guarded()))
        except BaseException as exc:  # handed to the caller, raised there
            self._error = exc
        finally:
            self._done.set()

    async def _guarded(self) -> T:
        with self._lock:
            if self._cancelled:
                raise asyncio.CancelledError
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()
        return await self._main()

    def _cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            loop, task = self._loop, self._task
        if loop is not None and task is not None:
            # RuntimeError: the loop has just closed, nothing is left to cancel.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)


@contextlib.contextmanager
def _ctrl_c_raises_here() -> Iterator[None]:
    """Under asyncio.run, Ctrl-C raises KeyboardInterrupt in the wait, not at the run's end.

    asyncio.run's SIGINT handler only cancels its main task, and that task is the one
    blocked here: it would not see the cancellation before the run ended by itself. A
    notebook kernel keeps the default handler, which raises here already.
    """
    handler = signal.getsignal(signal.SIGINT)
    owner = getattr(getattr(handler, "func", handler), "__self__", None)  # a partial method
    if not isinstance(owner, asyncio.Runner) or threading.current_thread() is not \
            threading.main_thread():
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)


# -- an uncaught ProcessInterrupted exits like Ctrl-C ----------------------------------------

_hook_installed = False


def exit_130_on(kind: type[BaseException]) -> None:
    """Make an uncaught `kind` (a KeyboardInterrupt subclass) end the script with status 130.

    CPython exits a script by SIGINT (status 130 in the shell) only when the uncaught
    exception is exactly KeyboardInterrupt: it compares the type, so a subclass ends it with
    status 1. After printing the traceback as usual, this hook raises SystemExit(130), which
    the interpreter honours from an excepthook. Other exceptions go to the previous hook,
    and an interactive session (`python -i`, the REPL, IPython, a notebook kernel) goes on
    as it would.
    """
    global _hook_installed
    if _hook_installed:
        return
    _hook_installed = True
    previous = sys.excepthook

    def excepthook(kind_: type[BaseException], value: BaseException,
                   traceback: TracebackType | None) -> None:
        previous(kind_, value, traceback)
        if isinstance(value, kind) and not _interactive():
            raise SystemExit(130)

    sys.excepthook = excepthook


def _interactive() -> bool:
    if sys.flags.interactive or hasattr(sys, "ps1"):
        return True
    ipython = sys.modules.get("IPython")
    return ipython is not None and ipython.get_ipython() is not None
