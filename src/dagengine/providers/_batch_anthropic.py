"""Anthropic Message Batches through the official SDK: `client.messages.batches` create,
retrieve, results, cancel.

Each request's `params` is the body the online path posts to /v1/messages. custom_ids must
match ^[a-zA-Z0-9_-]{1,64}$ (the API refuses the whole batch otherwise): the engine's ids
are made to fit.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ._batch import BatchLimits, BatchOutcome, BatchRequest, BatchState, BatchStatus
from ._batch_common import CUSTOM_ID, SDKBatchAPI
from ._http import stainless_error
from ._sdk import Call
from .anthropic import AnthropicBackend, _completion, message_body

if TYPE_CHECKING:
    import anthropic

    from .anthropic import AnthropicProvider

__all__ = ["LIMITS", "AnthropicBatchAPI"]

# "A Message Batch is limited to either 100,000 Message requests or 256 MB in size, whichever
# is reached first" (Anthropic's batch processing guide); MB read as 10^6 bytes, the stricter.
LIMITS = BatchLimits(max_requests=100_000, max_bytes=256_000_000)

# Per-item error types (Anthropic's error docs) and the HTTP status each stands for online.
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class AnthropicBatchAPI(SDKBatchAPI):
    custom_ids = CUSTOM_ID

    def __init__(self, provider: AnthropicProvider) -> None:
        super().__init__(provider, AnthropicBackend(provider.name, provider.settings), LIMITS)

    def item(self, custom_id: str, call: Call) -> tuple[Any, int, str | None]:
        body, _, tool = message_body(call)  # request options shape no batch item
        item = {"custom_id": custom_id, "params": body}
        return item, len(self.encode(item)) + 1, tool

    async def submit(self, requests: Sequence[BatchRequest]) -> str:
        calls, items, tools = self.items(requests)
        client: anthropic.AsyncAnthropic = self.client()
        with self._errors():
            batch = await client.messages.batches.create(requests=items)
        self.remember(batch.id, requests, calls, tools)
        return batch.id

    async def status(self, batch_id: str) -> BatchStatus:
        client: anthropic.AsyncAnthropic = self.client()
        with self._errors():
            batch = await client.messages.batches.retrieve(batch_id)
        counts = batch.request_counts
        state: BatchState = "in_progress"
        if batch.processing_status == "ended":
            if counts.canceled and batch.cancel_initiated_at is not None:
                state = "cancelled"
            elif counts.expired:
                state = "expired"
            else:
                state = "ended"
        return BatchStatus(batch_id, state, processing=counts.processing,
                           succeeded=counts.succeeded, errored=counts.errored,
                           expired=counts.expired, cancelled=counts.canceled)

    def results(self, batch_id: str, custom_ids: Sequence[str]) -> AsyncIterator[BatchOutcome]:
        return self.every(batch_id, custom_ids, self._outcomes(batch_id))

    async def _outcomes(self, batch_id: str) -> AsyncIterator[BatchOutcome]:
        client: anthropic.AsyncAnthropic = self.client()
        with self._errors():
            lines = await client.messages.batches.results(batch_id)
            async for line in lines:
                yield self._outcome(batch_id, line)

    async def cancel_batch(self, batch_id: str) -> None:
        client: anthropic.AsyncAnthropic = self.client()
        with self._errors():
            await client.messages.batches.cancel(batch_id)

    def _outcome(self, batch_id: str,
                 line: anthropic.types.messages.MessageBatchIndividualResponse) -> BatchOutcome:
        custom_id, result = line.custom_id, line.result
        if result.type == "succeeded":
            body = result.message.model_dump(mode="json")
            return self.answered(batch_id, custom_id, lambda reading: _completion(
                self.backend, body, {}, reading.call(), reading.tool))
        if result.type == "errored":
            error: Any = result.error.error
            kind = str(getattr(error, "type", "") or "api_error")
            message = str(getattr(error, "message", "") or "")
            status = _ERROR_STATUS.get(kind, 500)
            return self.failed(custom_id, f"{status} {kind}: {message}", status)
        if result.type == "canceled":
            return self.cancelled(custom_id, batch_id)
        return self.expired(custom_id, batch_id)

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """The SDK's exceptions as the ProviderError the online path raises for them."""
        import anthropic

        try:
            yield
        except (anthropic.AnthropicError, ValueError) as exc:
            error = stainless_error(self.name, exc, anthropic, self.provider.settings)
            raise error or self.unexpected(exc) from None

