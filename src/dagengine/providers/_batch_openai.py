"""OpenAI Batch API through the official SDK: the requests uploaded as a JSONL file
(`files.create`, purpose "batch"), `batches.create/retrieve/cancel`, and the answers read
from the batch's output and error files (`files.content`).

Each line's `body` is the one the online path posts to /chat/completions.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

import orjson

from ._batch import BatchLimits, BatchOutcome, BatchRequest, BatchState, BatchStatus
from ._batch_common import SDKBatchAPI
from ._http import redact, stainless_error, status_error
from ._sdk import Call
from .openai import OpenAIChatBackend, _completion, chat_body

if TYPE_CHECKING:
    import openai

    from .openai import OpenAIProvider

__all__ = ["LIMITS", "OpenAIBatchAPI"]

# "A single batch may include up to 50,000 requests, and a batch input file can be up to
# 200 MB in size" (OpenAI's Batch API guide).
LIMITS = BatchLimits(max_requests=50_000, max_bytes=200_000_000)
ENDPOINT: Final = "/v1/chat/completions"

_STATES: dict[str, BatchState] = {
    "validating": "in_progress",
    "in_progress": "in_progress",
    "finalizing": "in_progress",
    "cancelling": "in_progress",
    "completed": "ended",
    "expired": "expired",
    "cancelled": "cancelled",
    "failed": "failed",
}


class OpenAIBatchAPI(SDKBatchAPI):
    def __init__(self, provider: OpenAIProvider) -> None:
        backend = OpenAIChatBackend(provider.name, provider.settings,
                                    base_url=provider.settings.base_url)
        super().__init__(provider, backend, LIMITS)

    def item(self, custom_id: str, call: Call) -> tuple[Any, int, str | None]:
        body, _, tool = chat_body(call)  # request options shape no batch line
        line = self.encode({"custom_id": custom_id, "method": "POST", "url": ENDPOINT,
                            "body": body}) + b"\n"
        return line, len(line), tool

    async def submit(self, requests: Sequence[BatchRequest]) -> str:
        calls, lines, tools = self.items(requests)
        self.one_model(calls)  # the Batch API fails a file that mixes models
        client: openai.AsyncOpenAI = self.client()
        with self._errors():
            uploaded = await client.files.create(
                file=("dagengine-batch.jsonl", b"".join(lines), "application/jsonl"),
                purpose="batch")
            batch = await client.batches.create(
                input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h")
        self.remember(batch.id, requests, calls, tools)
        return batch.id

    async def status(self, batch_id: str) -> BatchStatus:
        status = _status(await self._retrieve(batch_id))
        if status.error is None:
            return status
        return dataclasses.replace(status, error=redact(status.error, self.provider.settings))

    def results(self, batch_id: str, custom_ids: Sequence[str]) -> AsyncIterator[BatchOutcome]:
        return self._results(batch_id, custom_ids)

    async def _results(self, batch_id: str,
                       custom_ids: Sequence[str]) -> AsyncIterator[BatchOutcome]:
        batch = await self._retrieve(batch_id)
        state = _STATES.get(batch.status, "in_progress")
        if state == "failed":
            why = _failure(batch)
            for custom_id in custom_ids:
                yield self.failed(custom_id, f"batch {batch_id} failed: {why}", 400)
            return
        # The provider leaves out of both files what an expired or cancelled batch never ran.
        unanswered = {"expired": self.expired, "cancelled": self.cancelled}.get(state)
        found = self._lines(batch_id, [batch.output_file_id, batch.error_file_id])
        async for outcome in self.every(batch_id, custom_ids, found, unanswered):
            yield outcome

    async def _lines(self, batch_id: str,
                     file_ids: list[str | None]) -> AsyncIterator[BatchOutcome]:
        client: openai.AsyncOpenAI = self.client()
        for file_id in file_ids:
            if not file_id:
                continue
            with self._errors():
                async with client.files.with_streaming_response.content(file_id) as response:
                    async for text in response.iter_lines():
                        if text.strip():
                            yield self._outcome(batch_id, orjson.loads(text))

    async def cancel_batch(self, batch_id: str) -> None:
        client: openai.AsyncOpenAI = self.client()
        with self._errors():
            await client.batches.cancel(batch_id)

    async def _retrieve(self, batch_id: str) -> openai.types.Batch:
        client: openai.AsyncOpenAI = self.client()
        with self._errors():
            return await client.batches.retrieve(batch_id)

    def _outcome(self, batch_id: str, line: dict[str, Any]) -> BatchOutcome:
        custom_id = str(line.get("custom_id"))
        response = line.get("response") or {}
        error = line.get("error") or {}
        status = response.get("status_code")
        if status == 200:
            body = response.get("body")
            return self.answered(batch_id, custom_id, lambda reading: _completion(
                self.backend, body, {}, reading.call(), reading.tool))
        if isinstance(status, int):
            failure = status_error(self.name, status, response.get("body"), {},
                                   self.provider.settings)
            return BatchOutcome(custom_id, error=failure)
        code = error.get("code")
        if code == "batch_expired":
            return self.expired(custom_id, batch_id)
        if code == "batch_cancelled":
            return self.cancelled(custom_id, batch_id)
        return self.failed(custom_id, f"{code or 'error'}: {error.get('message') or ''}", None)

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """The SDK's exceptions as the ProviderError the online path raises for them."""
        import openai

        try:
            yield
        except (openai.OpenAIError, ValueError) as exc:
            error = stainless_error(self.name, exc, openai, self.provider.settings)
            raise error or self.unexpected(exc) from None


def _status(batch: openai.types.Batch) -> BatchStatus:
    state = _STATES.get(batch.status, "in_progress")
    counts = batch.request_counts
    total = counts.total if counts else 0
    succeeded = counts.completed if counts else 0
    errored = counts.failed if counts else 0
    rest = max(total - succeeded - errored, 0)  # not run yet, or never to run
    return BatchStatus(
        batch.id, state,
        processing=rest if state == "in_progress" else 0,
        succeeded=succeeded,
        errored=errored,
        expired=rest if state == "expired" else 0,
        cancelled=rest if state == "cancelled" else 0,
        error=_failure(batch) if state == "failed" else None,
    )


def _failure(batch: openai.types.Batch) -> str:
    errors = batch.errors.data if batch.errors and batch.errors.data else []
    parts = [f"{e.message or e.code}" + (f" (line {e.line})" if e.line else "")
             for e in errors[:5]]
    return "; ".join(parts) or "the provider gave no reason"
