"""What the built-in batch APIs (`_batch_anthropic`, `_batch_openai`, `_batch_gemini`) share:
the SDK client, each request as the online path builds it, each answer read as the online
path reads it, and the outcome of every item that came back without one.

A batch request's body is the one the provider's online path would post for the same
ProviderRequest (its wire-format builder, not a copy of it), and a succeeded item's answer
goes through the same reading (`SDKProvider._response`), so the engine parses and prices a
batch answer as an online one.
"""

from __future__ import annotations

import abc
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from ..errors import ProviderError
from ._batch import BatchAPI, BatchLimits, BatchOutcome, BatchRequest
from ._http import redact
from ._sdk import Backend, Call, Completion, SDKProvider
from ._transport import _jsonable

__all__ = ["CUSTOM_ID", "Reading", "SDKBatchAPI"]

# The custom_ids every built-in accepts: Anthropic's rule, the strictest of the three (OpenAI
# takes any non-empty string, Gemini any metadata key). The engine's ids fit it.
CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")


@dataclass(frozen=True, slots=True)
class Reading:
    """How an item's answer is read, as the online path reads it: the model asked for (the
    answer's model when it names none), whether it is JSON, and the tool carrying it."""

    model: str = ""
    want_json: bool = True
    tool: str | None = None

    def call(self) -> Call:
        """The call as far as reading its answer looks at it."""
        return Call(model=self.model, messages=[], system=None, max_tokens=None, params={},
                    want_json=self.want_json)


_DEFAULT_READING = Reading()


class SDKBatchAPI(BatchAPI, abc.ABC):
    """A built-in provider's batch API through its official SDK.

    The client is the one the provider's "sdk" transport makes (key, base_url, timeout, no
    SDK retries), opened on first use in the running loop and closed by `aclose()`, which the
    provider's own `aclose()` calls.

    How each submitted item is read is kept per batch until its results have been read. A
    batch this object did not submit (a resumed run's) is read with the defaults: JSON
    answers, the answer tool found by the tool call when the answer has no text; only a
    request with `json=False` then reads differently than online.
    """

    custom_ids: ClassVar[re.Pattern[str] | None] = None  # what the provider accepts as ids

    def __init__(self, provider: SDKProvider, backend: Backend, limits: BatchLimits) -> None:
        self.provider = provider
        self.backend = backend
        self.limits = limits
        self._readings: dict[str, dict[str, Reading]] = {}

    @property
    def name(self) -> str:
        return self.provider.name

    def client(self) -> Any:
        return self.backend.client()

    async def aclose(self) -> None:
        await self.backend.aclose()

    # --- submitting -----------------------------------------------------------------------

    def calls(self, requests: Sequence[BatchRequest]) -> list[Call]:
        """Each request as the call the online path would make; refuses what no batch of
        this provider can take (no requests, too many, a custom_id twice)."""
        if not requests:
            raise self.refused("a batch needs at least one request")
        if len(requests) > self.limits.max_requests:
            raise self.refused(
                f"a batch holds at most {self.limits.max_requests:,} requests, got "
                f"{len(requests):,}: split them into several batches")
        seen: set[str] = set()
        for item in requests:
            self.check_id(item.custom_id)
            if item.custom_id in seen:
                raise self.refused(f"custom_id {item.custom_id!r} is used twice in one batch")
            seen.add(item.custom_id)
        return [self.provider._call(item.request) for item in requests]

    @abc.abstractmethod
    def item(self, custom_id: str, call: Call) -> tuple[Any, int, str | None]:
        """The call as an item of this provider's batches, the bytes it takes of the batch
        (`limits.max_bytes`), and the name of the tool carrying its answer, if any."""

    def check_id(self, custom_id: str) -> None:
        if self.custom_ids is not None and not self.custom_ids.fullmatch(custom_id):
            raise self.refused(f"custom_id {custom_id!r} does not fit this provider's rule "
                               f"{self.custom_ids.pattern}")

    def request_bytes(self, request: BatchRequest) -> int:
        """The item's size; raises the ProviderError that submitting it would (no model,
        options that are not JSON, a custom_id the provider refuses), so that a caller
        measuring each request while gathering a batch can fail that request alone."""
        self.check_id(request.custom_id)
        return self.item(request.custom_id, self.provider._call(request.request))[1]

    def items(self, requests: Sequence[BatchRequest]
              ) -> tuple[list[Call], list[Any], list[str | None]]:
        """The requests' calls, their items and answer tools, within `limits`."""
        calls = self.calls(requests)
        built = [self.item(r.custom_id, call) for r, call in zip(requests, calls, strict=True)]
        self.check_size(sum(size for _, size, _ in built))
        return calls, [item for item, _, _ in built], [tool for _, _, tool in built]

    def encode(self, value: Any) -> bytes:
        """JSON, as the online path encodes its bodies (SDK option objects included)."""
        try:
            return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=_jsonable)
        except TypeError as exc:
            raise self.refused(f"a request is not JSON: {exc} (check the options passed in "
                               f"select_provider)") from None

    def one_model(self, calls: Sequence[Call]) -> str:
        """The model every call asks for: a batch of this provider runs one."""
        models = sorted({call.model for call in calls})
        if len(models) > 1:
            raise self.refused(f"a batch runs one model, got {', '.join(models)}: submit "
                               f"one batch per model")
        return models[0]

    def check_size(self, size: int) -> None:
        # The sum of the items' sizes, which is what request_bytes tells the engine; the
        # envelope around them fits in the slack of the limits' decimal megabytes.
        if size > self.limits.max_bytes:
            raise self.refused(
                f"the batch is {size:,} bytes, over the {self.limits.max_bytes:,} bytes one "
                f"batch may hold: split it into several batches")

    def refused(self, detail: str) -> ProviderError:
        return ProviderError(f"{self.name}: {detail}", provider=self.name, retryable=False)

    def unexpected(self, exc: BaseException) -> ProviderError:
        """An SDK failure the online path has no mapping for (the SDK refusing an answer)."""
        detail = redact(str(exc) or type(exc).__name__, self.provider.settings)
        return ProviderError(f"{self.name}: {detail}", provider=self.name)

    def remember(self, batch_id: str, requests: Sequence[BatchRequest], calls: Sequence[Call],
                 tools: Sequence[str | None]) -> None:
        shared: dict[Reading, Reading] = {}  # most items of a batch read alike: one each
        readings: dict[str, Reading] = {}
        for item, call, tool in zip(requests, calls, tools, strict=True):
            reading = Reading(call.model, call.want_json, tool)
            readings[item.custom_id] = shared.setdefault(reading, reading)
        self._readings[batch_id] = readings

    # --- cancelling -----------------------------------------------------------------------

    async def cancel(self, batch_id: str) -> None:
        """Cancel the batch; a batch that has ended meanwhile is left as it is (OpenAI and
        Gemini refuse to cancel one), so cancelling all in-flight batches never fails on
        one that just ended."""
        try:
            await self.cancel_batch(batch_id)
        except ProviderError as exc:
            if exc.status_code not in (400, 409) or not (await self.status(batch_id)).done:
                raise

    @abc.abstractmethod
    async def cancel_batch(self, batch_id: str) -> None:
        """Ask the provider to cancel the batch."""

    # --- reading results ------------------------------------------------------------------

    def reading(self, batch_id: str, custom_id: str) -> Reading:
        return self._readings.get(batch_id, {}).get(custom_id, _DEFAULT_READING)

    def answered(self, batch_id: str, custom_id: str,
                 read: Callable[[Reading], Completion]) -> BatchOutcome:
        """The item's answer as the online path gives it; an answer that is not what the
        online path accepts (not JSON when JSON was asked for) is the item's error."""
        reading = self.reading(batch_id, custom_id)
        try:
            response = self.provider._response(read(reading), reading.want_json)
        except ProviderError as exc:
            return BatchOutcome(custom_id, error=exc)
        response.metadata["batch_id"] = batch_id
        return BatchOutcome(custom_id, response=response)

    def failed(self, custom_id: str, message: str, status: int | None,
               retryable: bool | None = None) -> BatchOutcome:
        text = redact(f"{self.name}: {message}", self.provider.settings)
        return BatchOutcome(custom_id, error=ProviderError(
            text, status, provider=self.name, retryable=retryable))

    def expired(self, custom_id: str, batch_id: str) -> BatchOutcome:
        return self.failed(custom_id, f"batch {batch_id} expired before this request ran "
                                      f"(expired)", None, retryable=True)

    def cancelled(self, custom_id: str, batch_id: str) -> BatchOutcome:
        return self.failed(custom_id, f"batch {batch_id} was cancelled before this request "
                                      f"ran (cancelled)", None, retryable=True)

    def missing(self, custom_id: str, batch_id: str) -> BatchOutcome:
        return self.failed(custom_id, f"batch {batch_id} has no result for this request "
                                      f"(missing from its results)", None, retryable=True)

    async def every(self, batch_id: str, custom_ids: Sequence[str],
                    found: AsyncIterator[BatchOutcome],
                    unanswered: Callable[[str, str], BatchOutcome] | None = None,
                    ) -> AsyncIterator[BatchOutcome]:
        """Each of `custom_ids` once: as `found` answers it, then the ones it left out, as
        `unanswered` says (by default: missing). Items the provider returns that were not
        asked about are passed over."""
        pending = dict.fromkeys(custom_ids)
        async for outcome in found:
            if outcome.custom_id in pending:
                del pending[outcome.custom_id]
                yield outcome
        for custom_id in pending:
            yield (unanswered or self.missing)(custom_id, batch_id)
        self._readings.pop(batch_id, None)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} provider={self.name!r}>"
