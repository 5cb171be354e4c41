"""Provider batches, whichever wire format: their requests, what each ends as, and when.

A batch is decided when it is created: each request's reply (the one the online endpoint
gives the same request), whether it will succeed, error or expire, and when its processing
ends. What a client sees later is derived from that and the clock on each request, so no
task runs in the background; only a cancellation changes a batch afterwards. The wire
formats (`_batch_wire`) only translate.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ._answers import prompt_key
from ._config import SimulatorConfig
from ._wire import Prompt, Reply

Fate = Literal["succeeded", "errored", "expired"]
Result = Literal["processing", "succeeded", "errored", "canceled", "expired"]
Phase = Literal["failed", "in_progress", "canceling", "ended"]
RESULTS: tuple[Result, ...] = ("processing", "succeeded", "errored", "canceled", "expired")


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """One request of a batch, as its wire format read it."""

    custom_id: str
    prompt: Prompt | None  # None: the request is invalid, see `invalid`
    invalid: str | None = None  # why the API refuses it (it ends errored with a 400)
    extra: Mapping[str, Any] = field(default_factory=dict)  # what the format echoes back


@dataclass(frozen=True, slots=True)
class Item:
    request: BatchRequest
    fate: Fate  # what processing ends in, if nothing stops it first
    done_at: float  # monotonic time its processing ends
    reply: Reply | None
    serial: int


@dataclass(slots=True)
class Batch:
    id: str
    api: str
    items: list[Item]
    created: float  # monotonic
    created_wall: float  # time.time() at `created`, to write timestamps
    window_end: float  # the completion window: what is not done by then expires
    last_done: float  # when its last request's processing ends (items end in order)
    cancel_seconds: float
    info: dict[str, Any]  # what the wire format keeps: endpoint, model, file ids, ...
    failure: list[dict[str, Any]] | None = None  # refused as a whole before processing
    cancel_at: float | None = None

    @property
    def ends_at(self) -> float:
        if self.failure is not None:
            return self.created
        end = min(self.last_done, self.window_end)
        if self.cancel_at is not None:
            end = min(end, self.cancel_at + self.cancel_seconds)
        return end

    def ended(self, now: float) -> bool:
        return self.failure is not None or now >= self.ends_at

    def phase(self, now: float) -> Phase:
        if self.failure is not None:
            return "failed"
        if self.ended(now):
            return "ended"
        return "in_progress" if self.cancel_at is None else "canceling"

    def result(self, item: Item, now: float) -> Result:
        """What `item` is at `now`: its fate once done, or how its batch stopped it."""
        stop = min(now, self.window_end)
        if self.cancel_at is not None:
            stop = min(stop, self.cancel_at)
        if item.done_at <= stop:
            return item.fate
        if not self.ended(now):
            return "processing"
        stopped_by_cancel = self.cancel_at is not None and self.cancel_at < self.window_end
        return "canceled" if stopped_by_cancel else "expired"

    def counts(self, now: float) -> Counter[Result]:
        return Counter(self.result(item, now) for item in self.items)

    def wall(self, monotonic: float) -> float:
        return self.created_wall + (monotonic - self.created)


class Batches:
    """Every batch and uploaded file since the simulator started or was last reset."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.by_id: dict[str, Batch] = {}
        self.files: dict[str, Any] = {}  # owned by the wire format that stores files
        self.requests: Counter[str] = Counter()  # HTTP requests to batch endpoints, by API
        self.polls = 0  # requests that retrieved one batch
        self._submissions: Counter[str] = Counter()  # prompt key -> times sent in a batch

    def create(
        self,
        api: str,
        batch_id: str,
        requests: Sequence[BatchRequest],
        config: SimulatorConfig,
        *,
        reply: Callable[[Prompt], Reply],
        serial: Callable[[], int],
        info: dict[str, Any] | None = None,
        failure: list[dict[str, Any]] | None = None,
    ) -> Batch:
        now = time.monotonic()
        start = now + config.batch_delay
        items = [
            self._item(request, start + (i + 1) * config.batch_item_seconds, config, reply, serial)
            for i, request in enumerate(requests if failure is None else ())
        ]
        batch = Batch(
            id=batch_id,
            api=api,
            items=items,
            created=now,
            created_wall=time.time(),
            window_end=now + config.batch_expire_after,
            last_done=items[-1].done_at if items else now,
            cancel_seconds=config.batch_cancel_seconds,
            info=info or {},
            failure=failure,
        )
        self.by_id[batch_id] = batch
        return batch

    def get(self, api: str, batch_id: str) -> Batch | None:
        batch = self.by_id.get(batch_id)
        return batch if batch is not None and batch.api == api else None

    def newest_first(self, api: str) -> list[Batch]:
        return [b for b in reversed(self.by_id.values()) if b.api == api]

    def cancel(self, batch: Batch, now: float) -> None:
        if batch.cancel_at is None and not batch.ended(now):
            batch.cancel_at = now

    def stats(self, now: float, status: Callable[[Batch, float], str]) -> dict[str, Any]:
        """The batch part of /stats; `status` names a batch's state in its own API's words."""
        by_status: dict[str, Counter[str]] = {
            api: Counter() for api in ("anthropic", "openai", "gemini")
        }
        results: Counter[Result] = Counter()
        billed: Counter[str] = Counter()
        models: dict[str, list[int]] = {}  # model -> [items billed, input, output tokens]
        for batch in self.by_id.values():
            by_status[batch.api][status(batch, now)] += 1
            ended = batch.ended(now)
            for item in batch.items:
                result = batch.result(item, now)
                results[result] += 1
                if ended and result == "succeeded" and item.reply is not None:
                    _bill(billed, models, item)
        return {
            "batches_created": len(self.by_id),
            "batches_by_status": {api: dict(c) for api, c in by_status.items()},
            "batch_items_submitted": sum(len(b.items) for b in self.by_id.values()),
            "batch_items_by_result": {r: results[r] for r in RESULTS},
            "batch_items_billed": sum(billed.values()),
            "batch_billed_by_custom_id": dict(billed),
            "batch_models": {
                model: {"items_billed": c[0], "input_tokens": c[1], "output_tokens": c[2]}
                for model, c in models.items()
            },
            "batch_input_tokens": sum(c[1] for c in models.values()),
            "batch_output_tokens": sum(c[2] for c in models.values()),
            "batch_requests": {api: self.requests[api] for api in by_status},
            "batch_polls": self.polls,
        }

    def _item(
        self,
        request: BatchRequest,
        done_at: float,
        config: SimulatorConfig,
        reply: Callable[[Prompt], Reply],
        serial: Callable[[], int],
    ) -> Item:
        prompt = request.prompt
        if prompt is None:
            return Item(request, "errored", done_at, None, serial())
        return Item(request, self._fate(prompt, config), done_at, reply(prompt), serial())

    def _fate(self, prompt: Prompt, config: SimulatorConfig) -> Fate:
        # Tied to the prompt and how often it was batched, as latencies are online, so a
        # resubmitted request gets a fresh draw and every client meets the same sequence.
        key = prompt_key(prompt.text)
        seen = self._submissions[key]
        self._submissions[key] += 1
        if not config.batch_error_rate and not config.batch_expire_rate:
            return "succeeded"
        draw = random.Random(f"batch:{config.seed}:{key}:{seen}").random()
        if draw < config.batch_error_rate:
            return "errored"
        if draw < config.batch_error_rate + config.batch_expire_rate:
            return "expired"
        return "succeeded"


def shuffled(items: Iterable[Item], seed: int, batch_id: str) -> list[Item]:
    """Results in an order of their own: the providers do not promise request order."""
    ordered = list(items)
    random.Random(f"order:{seed}:{batch_id}").shuffle(ordered)
    return ordered


def _bill(billed: Counter[str], models: dict[str, list[int]], item: Item) -> None:
    assert item.reply is not None and item.request.prompt is not None
    billed[item.request.custom_id] += 1
    counts = models.setdefault(item.request.prompt.model, [0, 0, 0])
    counts[0] += 1
    counts[1] += item.reply.input_tokens
    counts[2] += item.reply.output_tokens
