"""Test doubles for code built on dagengine: a provider made of functions, and virtual time.

`FunctionProvider` answers in process, with no network: what it answers, how long it takes
and when it fails each come from a function of the request. It records every call::

    provider = FunctionProvider(lambda request: {"label": "ok"}, latency=0.05)
    result = DagEngine(plugin, providers=[provider]).run(["a", "b"])
    assert len(provider.calls) == 2 and provider.max_in_flight == 2

`in_virtual_time` runs an async test on a `VirtualTimeLoop`, whose clock jumps to the next
timer whenever no task is ready: sleeps, timeouts, retry delays and rate-limit pauses take
no wall time, and the times they produce are exact and the same on every run. A run store
writes on a thread, which virtual time cannot wait for: give engines there `store=False`::

    @in_virtual_time
    async def test_the_second_call_waits_a_second() -> None:
        ...
"""

from __future__ import annotations

import asyncio
import inspect
import selectors
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from .providers.base import BaseProvider
from .types import ProviderRequest, ProviderResponse, TokenUsage

__all__ = ["FunctionProvider", "RecordedCall", "VirtualTimeLoop", "in_virtual_time"]


def _ok(request: ProviderRequest) -> Any:
    return {"ok": True, "dimension": request.dimension}


def _never(request: ProviderRequest, attempt: int) -> BaseException | None:
    return None


@dataclass(slots=True)
class RecordedCall:
    """One call a FunctionProvider received; times are the event loop's clock."""

    dimension: str
    input: Any
    options: dict[str, Any]
    section_index: int | None
    start: float
    end: float = 0.0  # set when the call returns or raises


@dataclass(eq=False)
class FunctionProvider(BaseProvider):
    """An in-process provider whose answer, latency and failures come from functions.

    - `answer(request)` gives the answer's data, or a whole ProviderResponse to set its
      metadata too; it may be a coroutine function. By default: {"ok": True, "dimension": ...}.
    - `latency` is seconds to wait before answering: a number, or a function of the request.
    - `fail(request, attempt)` returns an exception to raise instead of answering, or None;
      `attempt` counts this provider's calls for the same dimension and section, this one
      included (1 on the first call).
    - Answers report `model` (unless the request's options name one) and `tokens` as
      (input, output) token counts.

    It keeps `calls` (one RecordedCall each, unless `record=False`, for runs of very many
    calls), `in_flight` and `max_in_flight` (calls inside execute() now, and at most), and
    `closed` (how many times the engine called aclose()).
    """

    answer: Callable[[ProviderRequest], Any] = _ok
    latency: float | Callable[[ProviderRequest], float] = 0.0
    fail: Callable[[ProviderRequest, int], BaseException | None] = _never
    name: str = "fake"
    model: str = "fake-model"
    tokens: tuple[int, int] = (10, 5)
    handles_retries: bool = False
    record: bool = True
    calls: list[RecordedCall] = field(default_factory=list, init=False)
    in_flight: int = field(default=0, init=False)
    max_in_flight: int = field(default=0, init=False)
    closed: int = field(default=0, init=False)
    _attempts: Counter[tuple[str, int | None]] = field(
        default_factory=Counter, init=False, repr=False)

    async def execute(self, request: ProviderRequest) -> ProviderResponse:
        loop = asyncio.get_running_loop()
        call = None
        if self.record:
            call = RecordedCall(request.dimension, request.input, dict(request.options),
                                request.metadata.get("section_index"), loop.time())
            self.calls.append(call)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            delay = self.latency(request) if callable(self.latency) else self.latency
            if delay:
                await asyncio.sleep(delay)
            if self.fail is not _never:
                key = (request.dimension, request.metadata.get("section_index"))
                self._attempts[key] += 1
                error = self.fail(request, self._attempts[key])
                if error is not None:
                    raise error
            data = self.answer(request)
            if inspect.isawaitable(data):
                data = await data
            if isinstance(data, ProviderResponse):
                return data
            return ProviderResponse(
                data=data,
                metadata={"model": request.options.get("model", self.model),
                          "tokens": TokenUsage.of(*self.tokens), "status_code": 200},
            )
        finally:
            self.in_flight -= 1
            if call is not None:
                call.end = loop.time()

    def calls_for(self, request: ProviderRequest) -> list[RecordedCall]:
        """The recorded calls for the same dimension and section as `request`."""
        index = request.metadata.get("section_index")
        return [c for c in self.calls if c.dimension == request.dimension
                and c.section_index == index]

    async def aclose(self) -> None:
        self.closed += 1

    def __repr__(self) -> str:
        return f"<FunctionProvider name={self.name!r} calls={len(self.calls)}>"


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock starts at 0 and jumps to the next timer instead of sleeping.

    Meant for in-process code: sockets are still polled, but never waited for, so a task
    waiting on the network while a timer is set sees the clock jump past it. With no task
    ready and no timer set, the loop raises RuntimeError ("deadlock") instead of hanging.
    """

    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(_TimeJumpingSelector(self))

    def time(self) -> float:
        return self.now


class _TimeJumpingSelector(selectors.DefaultSelector):
    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self.loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = super().select(0)
        if not events and timeout is None:
            raise RuntimeError("deadlock: no task is ready and no timer is set")
        if not events and timeout:
            self.loop.now += timeout
        return events


def in_virtual_time(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run the async function `test` to completion on a fresh VirtualTimeLoop.

    The result is a plain function with the same name and parameters (so pytest still
    passes fixtures), which runs the test on its own loop rather than pytest-asyncio's.
    """

    def run(*args: Any, **kwargs: Any) -> None:
        with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
            runner.run(test(*args, **kwargs))

    run.__name__ = test.__name__
    run.__qualname__ = test.__qualname__
    run.__doc__ = test.__doc__
    run.__signature__ = inspect.signature(test)  # type: ignore[attr-defined]
    return run
