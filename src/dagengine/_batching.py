"""Batch mode: the calls of batch dimensions go to the providers' batch APIs, at their discount.

A batch dimension's call goes through the same layers as an online one (prompt, provider
selection, hooks, skip logic, the response cache, parsing, `output_schema` validation,
retries and fallbacks: call.py). Only where an online attempt would send its request to the
provider does it hand the request to the run's `Batcher` and wait for the answer:

- Gathering. Requests wait in one lane per (provider, model) (a provider's batch runs one
  model). A lane is submitted as one batch `max_wait` seconds after its first request
  arrived, or at once when it holds `max_size` requests or the provider's `BatchLimits`
  (requests, bytes) would be passed by the next one. Meanwhile later requests go into the
  next batch of the lane. Because a call waits for its own dependencies only, a dependent
  dimension's calls join later batches while the first dimension's batches still run: the
  DAG pipelines through batches as it does online.
- Waiting. A call waiting in a batch holds no concurrency slot (it takes one back for the
  answer's validation and hooks) and no rate-limit permit: `concurrency` bounds the online
  requests in flight, not how many calls wait in batches. The dimension's time limit
  (`timeout`) does not apply in batch mode, a batch taking minutes to a day; a
  `dimension_timeouts` entry still does.
- Polling. Each batch is polled first `poll_interval` seconds after its submission, then at
  intervals growing by half up to `POLL_CAP` seconds (never less than poll_interval), so a
  day-long batch costs a few hundred cheap requests. When it is done its outcomes are read
  and each waiting call resumes with its answer or its error.
- Errors. An item that errored, expired, was cancelled or is missing from the results fails
  that attempt with the provider's error. The call layer then does what it does online:
  a retryable error is retried per `max_retries` (after its backoff), an answer that fails
  validation is re-asked with the validation error, and after the retries the fallbacks are
  tried. Every retry and re-ask of a batch call goes into the next batch of its lane
  (never online), and a fallback provider's attempts into that provider's batches. A batch
  the provider refused or failed as a whole fails each of its calls' attempts the same way.
- Never hedged, never streamed: a batch answer arrives whole (a `stream` option is dropped).
- Durable. With a store, each batch id and what each of its custom_ids stands for
  (dimension, section, attempt) are committed before the engine waits on it
  (store/_batches.py); a submission under way when the run is cancelled (Ctrl-C) is still
  answered and recorded before the run ends. A resumed run (same process_id) re-attaches
  to the recorded batches whose calls have no stored result yet: those calls take their
  answers from the batch (polled and read again) instead of sending their request again.

custom_ids are `d<dimension position>-s<section index>-a<attempt>` ("g" for a global
dimension's section), which fits Anthropic's rule ^[a-zA-Z0-9_-]{1,64}$, the strictest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TextIO

from .errors import ConfigurationError, DagEngineError, ProviderError
from .providers._batch import BatchAPI, BatchOutcome, BatchRequest, BatchStatus
from .providers.base import BaseProvider
from .types import Dimension, ProviderRequest, ProviderResponse

if TYPE_CHECKING:
    from ._run import Run
    from .plugin import Observers
    from .store._batches import BatchLedger, RecordedBatch

log = logging.getLogger("dagengine")

POLL_BACKOFF = 1.5  # each poll waits this much longer than the one before...
POLL_CAP = 60.0  # ...up to this many seconds
MAX_POLL_FAILURES = 8  # failed polls (or result reads) in a row before the calls fail
SUBMIT_GRACE = 30.0  # seconds a stopping run waits for its submissions' answers
CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")


def batch_dimensions(dimensions: Iterable[Dimension], default_mode: str) -> frozenset[str]:
    """The names of the dimensions that run in batch mode."""
    return frozenset(d.name for d in dimensions if (d.mode or default_mode) == "batch")


def custom_id(position: int, section_index: int | None, attempt: int) -> str:
    section = "g" if section_index is None else str(section_index)
    return f"d{position}-s{section}-a{attempt}"


def no_batch_api(dimension: str, provider: str) -> ConfigurationError:
    return ConfigurationError(
        f"dimension {dimension!r} runs in batch mode but provider {provider!r} has no batch "
        f"API (a custom provider without batch_api(), or one behind a gateway); run the "
        f"dimension online (Dimension({dimension!r}, mode='online')) or select a provider "
        f"with a batch API (anthropic, openai, gemini, called directly)")


@dataclass(slots=True)
class BatchInfo:
    """One batch of this run as the progress shows it: its provider's latest status."""

    batch_id: str
    provider: str
    model: str | None
    items: int
    submitted_at: float  # monotonic
    status: BatchStatus
    resumed: bool = False  # submitted by an earlier process of the run, re-attached here


@dataclass(slots=True, eq=False)
class _Waiting:
    """A request waiting in a lane, and the call waiting for its answer."""

    custom_id: str
    request: ProviderRequest
    dimension: str
    section_index: int | None
    attempt: int
    size: int
    answer: asyncio.Future[ProviderResponse]


@dataclass(slots=True, eq=False)
class _Lane:
    """The requests gathered for the next batch of one (provider, model)."""

    provider: BaseProvider
    api: BatchAPI
    model: str | None
    max_requests: int
    items: list[_Waiting] = field(default_factory=list)
    size: int = 0
    timer: asyncio.TimerHandle | None = None


class Batcher:
    """Gathers a run's batch-mode requests into provider batches, submits, polls and reads
    them, and answers each waiting call. Enter it around the run's calls."""

    def __init__(self, run: Run, observers: Observers) -> None:
        self.run = run
        self.observers = observers
        self.dimensions = batch_dimensions(run.plan.dimensions.values(), run.config.mode)
        settings = run.config.batch
        self.max_size = int(settings["max_size"])
        self.max_wait = float(settings["max_wait"])
        self.poll_interval = float(settings["poll_interval"])
        self.ledger: BatchLedger | None = run.batch_ledger
        self._positions = {name: i for i, name in enumerate(run.plan.order)}
        self._lanes: dict[tuple[str, str | None], _Lane] = {}
        # Answers of batches an earlier process of this run submitted, by (dimension,
        # section): the call that asks for one next takes it instead of sending again.
        self._adopted: dict[tuple[str, int | None], asyncio.Future[ProviderResponse]] = {}
        self.batches: dict[str, BatchInfo] = {}  # every batch of this run so far, by id
        self._group: asyncio.TaskGroup | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._submitting: set[asyncio.Task[str]] = set()

    def covers(self, dimension: Dimension) -> bool:
        return dimension.name in self.dimensions

    # -- lifetime ----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        if self.ledger is not None and self.dimensions:
            for recorded in self.ledger.unanswered():
                self._adopt(recorded)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        tb: TracebackType | None) -> None:
        # What is still running serves no call any more (the run is over, or failed): a
        # batch left at the provider is recorded, and a resumed run finds it.
        for lane in self._lanes.values():
            if lane.timer is not None:
                lane.timer.cancel()
            for waiting in lane.items:
                waiting.answer.cancel()
        for answer in self._adopted.values():
            answer.cancel()
        assert self._group is not None
        if self._submitting:
            await asyncio.wait(self._submitting, timeout=SUBMIT_GRACE)
        for task in list(self._running):
            task.cancel()
        left = batches_left(self.batches.values())
        if left:
            log.warning("%d provider batch(es) of run %s are left running (%s); %s",
                        len(left), self.run.process_id, ", ".join(b.batch_id for b in left),
                        "resume with the same process_id and resume=True to pick up their "
                        "results" if self.ledger is not None else
                        "the run has no store: a later run cannot pick them up")
        await self._group.__aexit__(kind, error, tb)

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        assert self._group is not None, "the Batcher is used outside `async with`"
        task = self._group.create_task(work)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    # -- one call's request ------------------------------------------------------------------

    async def send(self, provider: BaseProvider, request: ProviderRequest, dimension: str,
                   section_index: int | None, attempt: int) -> ProviderResponse:
        """The answer to `request` from a batch of `provider` (raises its ProviderError)."""
        adopted = self._adopted.pop((dimension, section_index), None)
        if adopted is not None:
            return await adopted
        api = provider.batch_api()
        if api is None:
            raise no_batch_api(dimension, provider.name)
        if "stream" in request.options:
            request = request.model_copy(update={"options": {
                k: v for k, v in request.options.items() if k != "stream"}})
        model = request.options.get("model")
        lane = self._lane(provider, api, model if isinstance(model, str) else None)
        cid = custom_id(self._positions[dimension], section_index, attempt)
        answer: asyncio.Future[ProviderResponse] = asyncio.get_running_loop().create_future()
        answer.add_done_callback(_retrieved)
        waiting = _Waiting(cid, request, dimension, section_index, attempt,
                           api.request_bytes(BatchRequest(cid, request)), answer)
        self._add(lane, waiting)
        return await answer

    def _lane(self, provider: BaseProvider, api: BatchAPI, model: str | None) -> _Lane:
        key = (provider.name, model)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(provider, api, model,
                                            min(self.max_size, api.limits.max_requests))
        return lane

    def _add(self, lane: _Lane, waiting: _Waiting) -> None:
        if lane.items and lane.size + waiting.size > lane.api.limits.max_bytes:
            self._submit(lane)
        lane.items.append(waiting)
        lane.size += waiting.size
        if len(lane.items) >= lane.max_requests:
            self._submit(lane)
        elif lane.timer is None:
            lane.timer = asyncio.get_running_loop().call_later(
                self.max_wait, self._submit, lane)

    def _submit(self, lane: _Lane) -> None:
        """Send the lane's requests as one batch; the lane gathers the next one."""
        if lane.timer is not None:
            lane.timer.cancel()
            lane.timer = None
        items, lane.items, lane.size = lane.items, [], 0
        items = [w for w in items if not w.answer.done()]  # a call cancelled meanwhile
        if items:
            self._start(self._run_batch(lane, items))

    # -- one batch ---------------------------------------------------------------------------

    async def _run_batch(self, lane: _Lane, items: list[_Waiting]) -> None:
        api, provider = lane.api, lane.provider.name
        # A submission the run's cancellation (Ctrl-C) meets halfway still gets its answer
        # and is recorded (__aexit__ waits for it): the provider may have the batch already.
        submission = asyncio.create_task(self._submit_and_record(api, provider, lane.model,
                                                                 items))
        self._submitting.add(submission)
        submission.add_done_callback(self._submitting.discard)
        try:
            batch_id = await asyncio.shield(submission)
        except Exception as exc:  # every call of the batch fails this attempt alike
            _fail((w.answer for w in items), _batch_error(provider, exc))
            return
        info = BatchInfo(batch_id, provider, lane.model, len(items), time.monotonic(),
                         BatchStatus(batch_id, "in_progress", processing=len(items)))
        await self._follow(api, info, {w.custom_id: w.answer for w in items},
                           [w.custom_id for w in items])

    async def _submit_and_record(self, api: BatchAPI, provider: str, model: str | None,
                                 items: list[_Waiting]) -> str:
        batch_id = await api.submit([BatchRequest(w.custom_id, w.request) for w in items])
        self._record(batch_id, provider, model, items)
        return batch_id

    def _record(self, batch_id: str, provider: str, model: str | None,
                items: list[_Waiting]) -> None:
        """Commit the batch before waiting on it: a resumed run re-attaches to it."""
        if self.ledger is None:
            return
        from .store._batches import BatchItem

        try:
            self.ledger.record(batch_id, provider, model, [
                BatchItem(w.custom_id, w.dimension, w.section_index, w.attempt)
                for w in items])
        except DagEngineError as exc:  # the answers are paid for: wait for them all the same
            log.error("batch %s of %s could not be recorded in the store (%s): a run "
                      "resumed after this process stops would submit its requests again",
                      batch_id, provider, exc)

    def _adopt(self, recorded: RecordedBatch) -> None:
        """Re-attach to a batch an earlier process of this run submitted."""
        try:
            provider = self.run.registry.get(recorded.provider)
        except DagEngineError:
            log.warning("batch %s was submitted through provider %r, which this run does not "
                        "configure: its calls are sent again", recorded.batch_id,
                        recorded.provider)
            return
        api = provider.batch_api()
        if api is None:
            return
        loop = asyncio.get_running_loop()
        waiting: dict[str, asyncio.Future[ProviderResponse]] = {}
        for item in recorded.items:
            answer: asyncio.Future[ProviderResponse] = loop.create_future()
            answer.add_done_callback(_retrieved)
            self._adopted[(item.dimension, item.section_index)] = waiting[item.custom_id] = answer
        info = BatchInfo(recorded.batch_id, recorded.provider, recorded.model,
                         len(recorded.items), time.monotonic(),
                         BatchStatus(recorded.batch_id, "in_progress",
                                     processing=len(recorded.items)), resumed=True)
        log.info("re-attached to batch %s of %s (%d requests) submitted by an earlier "
                 "process of run %s", recorded.batch_id, recorded.provider,
                 len(recorded.items), self.run.process_id)
        self._start(self._follow(api, info, waiting, recorded.custom_ids, first_poll=0.0))

    async def _follow(self, api: BatchAPI, info: BatchInfo,
                      waiting: Mapping[str, asyncio.Future[ProviderResponse]],
                      custom_ids: list[str], first_poll: float | None = None) -> None:
        """Poll the batch until it is done, then answer every waiting call."""
        self.batches[info.batch_id] = info
        await self.observers.call("batch_updated", info)
        status = await self._until_done(api, info, waiting, first_poll)
        if status is None:
            return
        if status.state == "failed":
            _fail(waiting.values(), ProviderError(
                f"{info.provider}: batch {info.batch_id} failed as a whole: "
                f"{status.error or 'the provider refused it'}", provider=info.provider))
        else:
            await self._read(api, info, dict(waiting), custom_ids)
        if self.ledger is not None:
            self.ledger.ended(info.batch_id, status.state)

    async def _until_done(self, api: BatchAPI, info: BatchInfo,
                          waiting: Mapping[str, asyncio.Future[ProviderResponse]],
                          first_poll: float | None) -> BatchStatus | None:
        """The batch's status once done; None if polling failed (the calls then have the
        error)."""
        delay = self.poll_interval if first_poll is None else first_poll
        failures = 0
        while True:
            await asyncio.sleep(delay)
            delay = min(max(self.poll_interval, POLL_CAP),
                        max(delay, self.poll_interval) * POLL_BACKOFF)
            try:
                status = await api.status(info.batch_id)
            except Exception as exc:
                error = _batch_error(info.provider, exc)
                failures += 1
                if not error.retryable or failures >= MAX_POLL_FAILURES:
                    _fail(waiting.values(), error)
                    return None
                log.info("polling batch %s failed (%s); polling again", info.batch_id, error)
                continue
            failures = 0
            info.status = status
            await self.observers.call("batch_updated", info)
            if status.done:
                return status

    async def _read(self, api: BatchAPI, info: BatchInfo,
                    waiting: dict[str, asyncio.Future[ProviderResponse]],
                    custom_ids: list[str]) -> None:
        """Answer each waiting call from the batch's outcomes (read again, for those still
        waiting, when reading fails midway). All the batch's `custom_ids` are asked for, in
        the order submitted, as some providers answer by position."""
        failures = 0
        while waiting:
            try:
                async for outcome in api.results(info.batch_id, custom_ids):
                    answer = waiting.pop(outcome.custom_id, None)
                    if answer is not None and not answer.done():
                        _resolve(answer, outcome, info)
                return
            except Exception as exc:
                error = _batch_error(info.provider, exc)
                failures += 1
                if not error.retryable or failures >= MAX_POLL_FAILURES:
                    _fail(waiting.values(), error)
                    return
                await asyncio.sleep(self.poll_interval * failures)


def _resolve(answer: asyncio.Future[ProviderResponse], outcome: BatchOutcome,
             info: BatchInfo) -> None:
    if outcome.response is not None:
        response = outcome.response
        response.metadata["mode"] = "batch"
        response.metadata["batch_id"] = info.batch_id
        answer.set_result(response)
    else:
        answer.set_exception(outcome.error or ProviderError(
            f"{info.provider}: batch {info.batch_id} gave no answer for this request",
            provider=info.provider))


def _fail(answers: Iterable[asyncio.Future[ProviderResponse]], error: BaseException) -> None:
    for answer in answers:
        if not answer.done():
            answer.set_exception(error)


def _batch_error(provider: str, exc: BaseException) -> ProviderError:
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return ProviderError(f"{provider}: batch API: {type(exc).__name__}: {exc}",
                             provider=provider)
    return ProviderError(f"{provider}: batch API raised {type(exc).__name__}: {exc}",
                         provider=provider, retryable=False)


def _retrieved(answer: asyncio.Future[Any]) -> None:
    # One error fails every call of a batch; a call that stopped waiting (cancelled, timed
    # out) must not leave "exception was never retrieved" behind.
    if not answer.cancelled():
        with contextlib.suppress(BaseException):
            answer.exception()


# -- Ctrl-C --------------------------------------------------------------------------------------


def batches_left(batches: Iterable[BatchInfo]) -> list[BatchInfo]:
    """Those of `batches` still running at their provider."""
    return [b for b in batches if not b.status.done]


def after_interrupt(engine_registry: Any, batches: list[BatchInfo], process_id: str, *,
                    durable: bool, stream: TextIO | None = None,
                    ask: Callable[[str], str] | None = None) -> bool:
    """Ctrl-C stopped a batch-mode run with `batches` still running: say so and how to
    resume, and on a terminal ask whether to cancel them at the provider (the default, and
    the answer off a terminal: leave them, for a resumed run to pick up). True if they
    were cancelled."""
    out = stream or sys.stderr
    if not batches:
        return False
    ids = ", ".join(b.batch_id for b in batches[:5]) + (" ..." if len(batches) > 5 else "")
    items = sum(b.items for b in batches)
    out.write(f"\n{len(batches)} provider batch(es) of this run are still running "
              f"({items} requests: {ids}).\n")
    if durable:
        out.write(f"They are recorded in the store. To pick up their results without paying "
                  f"again, resume the run:\n    engine.run(sections, process_id="
                  f"{process_id!r}, resume=True)\n")
    else:
        out.write("This run has no store, so a later run cannot pick up their results.\n")
    interactive = ask is not None or (sys.stdin.isatty() and out.isatty())
    if not interactive:
        out.flush()
        return False
    prompt = ask or input
    try:
        answer = prompt("Cancel them at the provider? [y/N] ").strip().lower()
    except (EOFError, KeyboardInterrupt):
        answer = ""
    if answer not in ("y", "yes"):
        out.write("Left running.\n")
        out.flush()
        return False
    from ._sync import run_sync  # on a thread of its own inside a running loop (a notebook)

    cancelled = run_sync(lambda: _cancel(engine_registry, batches))
    out.write(f"Cancelled {len(cancelled)} of {len(batches)} batch(es); what they answered "
              f"before the cancellation is billed, and a resumed run sends the rest "
              f"again.\n")
    out.flush()
    return True


async def _cancel(registry: Any, batches: list[BatchInfo]) -> list[str]:
    cancelled: list[str] = []
    providers: dict[str, BaseProvider] = {}
    try:
        for batch in batches:
            try:
                provider = providers.get(batch.provider) or registry.get(batch.provider)
                providers[batch.provider] = provider
                api = provider.batch_api()
                if api is not None:
                    await api.cancel(batch.batch_id)
                    cancelled.append(batch.batch_id)
            except Exception as exc:
                log.warning("cancelling batch %s of %s failed: %s", batch.batch_id,
                            batch.provider, exc)
    finally:
        for provider in providers.values():
            with contextlib.suppress(Exception):
                await provider.aclose()
    return cancelled
