"""Gemini batch mode through the official SDK (`client.aio.batches`), with inlined requests.

Each inlined request is the one the online SDK path sends to generateContent (its contents
and GenerateContentConfig), with the custom_id as its metadata `key`. Inlined responses come
back in request order: they are mapped to custom_ids by position, and by the echoed key when
the API gives it back.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp

from ._batch import BatchLimits, BatchOutcome, BatchRequest, BatchState, BatchStatus
from ._batch_common import SDKBatchAPI
from ._http import connection_error, malformed_error, status_error
from ._sdk import Call
from .gemini import GeminiBackend, _contents, sdk_completion

if TYPE_CHECKING:
    from google import genai
    from google.genai import types as genai_types

    from .gemini import GeminiProvider

__all__ = ["LIMITS", "GeminiBatchAPI"]

# Inlined requests suit "smaller batches that keep the total request size under 20 MB"
# (Gemini API docs, Batch API: https://ai.google.dev/gemini-api/docs/batch-api); no request
# count is documented for them, so the byte limit is the one that binds and the count is
# Anthropic's, a bound for memory only.
LIMITS = BatchLimits(max_requests=100_000, max_bytes=20_000_000)

_STATES: dict[str, BatchState] = {
    "SUCCEEDED": "ended",
    "PARTIALLY_SUCCEEDED": "ended",
    "FAILED": "failed",
    "CANCELLED": "cancelled",
    "EXPIRED": "expired",
}  # every other state (PENDING, QUEUED, RUNNING, CANCELLING, PAUSED, ...) is in_progress
# The HTTP status each google.rpc.Code stands for (google/rpc/code.proto).
_GRPC_STATUS = {1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400,
                10: 409, 11: 400, 12: 501, 13: 500, 14: 503, 15: 500, 16: 401}
_GRPC_CANCELLED, _GRPC_DEADLINE_EXCEEDED = 1, 4


class GeminiBatchAPI(SDKBatchAPI):
    backend: GeminiBackend

    def __init__(self, provider: GeminiProvider) -> None:
        super().__init__(provider, GeminiBackend(provider.name, provider.settings), LIMITS)

    def item(self, custom_id: str, call: Call) -> tuple[Any, int, str | None]:
        # An InlinedRequestDict: the SDK converts dicts to the wire format many times faster
        # than its pydantic objects. The config is the online path's GenerateContentConfig.
        config = self.backend._config(call).model_dump(exclude_none=True)
        inlined = {"contents": _contents(call.messages), "config": config,
                   "metadata": {"key": custom_id}}
        return inlined, len(self.encode(inlined)) + 1, None

    async def submit(self, requests: Sequence[BatchRequest]) -> str:
        from google.genai import types as genai_types

        calls, inlined, tools = self.items(requests)
        model = self.one_model(calls)
        client: genai.Client = self.client()
        try:
            with self._errors(parsing=False):
                job = await client.aio.batches.create(
                    model=model, src=inlined,
                    config=genai_types.CreateBatchJobConfig(display_name="dagengine"))
        except ValueError as exc:  # the SDK checks requests before it sends them
            raise self.refused(f"google-genai refused a request of the batch: {exc}") from None
        if not job.name:
            raise malformed_error(self.name, "the batch job has no name", self.provider.settings)
        self.remember(job.name, requests, calls, tools)
        return job.name

    async def status(self, batch_id: str) -> BatchStatus:
        operation = await self._operation(batch_id)
        metadata = operation.get("metadata") or {}
        state = _state(str(metadata.get("state") or ""))
        stats = metadata.get("batchStats") or {}
        total, succeeded, failed, pending = (
            _count(stats, name) for name in ("requestCount", "successfulRequestCount",
                                             "failedRequestCount", "pendingRequestCount"))
        rest = max(total - succeeded - failed, 0)  # not run yet, or never to run
        error = operation.get("error") or metadata.get("error")
        return BatchStatus(
            batch_id, state,
            processing=(pending or rest) if state == "in_progress" else 0,
            succeeded=succeeded,
            errored=failed,
            expired=rest if state == "expired" else 0,
            cancelled=rest if state == "cancelled" else 0,
            error=self._why(error) if state == "failed" else None,
        )

    def results(self, batch_id: str, custom_ids: Sequence[str]) -> AsyncIterator[BatchOutcome]:
        return self._results(batch_id, custom_ids)

    async def _results(self, batch_id: str,
                       custom_ids: Sequence[str]) -> AsyncIterator[BatchOutcome]:
        client: genai.Client = self.client()
        with self._errors():
            job = await client.aio.batches.get(name=batch_id)
        state = _state(job.state.value if job.state is not None else "")
        if state == "failed":
            why = self._why(job.error.model_dump(exclude_none=True) if job.error else None)
            for custom_id in custom_ids:
                yield self.failed(custom_id, f"batch {batch_id} failed: {why}", 400)
            return
        responses = list(job.dest.inlined_responses or ()) if job.dest else []
        unanswered = {"expired": self.expired, "cancelled": self.cancelled}.get(state)
        found = self._outcomes(batch_id, custom_ids, responses, state)
        async for outcome in self.every(batch_id, custom_ids, found, unanswered):
            yield outcome

    async def _outcomes(self, batch_id: str, custom_ids: Sequence[str],
                        responses: list[genai_types.InlinedResponse],
                        state: BatchState) -> AsyncIterator[BatchOutcome]:
        asked = set(custom_ids)
        for index, response in enumerate(responses):
            key = (response.metadata or {}).get("key")
            if key in asked:
                custom_id = str(key)
            elif index < len(custom_ids):
                custom_id = custom_ids[index]
            else:
                continue
            yield self._outcome(batch_id, custom_id, response, state)

    def _outcome(self, batch_id: str, custom_id: str, inlined: genai_types.InlinedResponse,
                 state: BatchState) -> BatchOutcome:
        if inlined.response is not None:
            answer = inlined.response
            return self.answered(batch_id, custom_id,
                                 lambda reading: sdk_completion(answer, reading.call()))
        error = inlined.error
        code = error.code if error is not None else None
        if code == _GRPC_CANCELLED and state == "cancelled":
            return self.cancelled(custom_id, batch_id)
        if code == _GRPC_DEADLINE_EXCEEDED and state == "expired":
            return self.expired(custom_id, batch_id)
        status = _GRPC_STATUS.get(code or 2, 500)
        body = {"error": {"code": code, "message": error.message if error else None}}
        return BatchOutcome(custom_id, error=status_error(self.name, status, body, {},
                                                          self.provider.settings))

    async def cancel_batch(self, batch_id: str) -> None:
        client: genai.Client = self.client()
        with self._errors():
            await client.aio.batches.cancel(name=batch_id)

    async def _operation(self, batch_id: str) -> dict[str, Any]:
        """The batch's long-running Operation as the API sends it. The SDK's BatchJob drops
        the Gemini API's batchStats (the request counts), so the status reads the Operation
        through the SDK's own API client (its key, base_url, timeout)."""
        client: genai.Client = self.client()
        with self._errors():
            response = await client.aio._api_client.async_request("get", batch_id, {})
            operation = json.loads(response.body) if response.body else {}
        if not isinstance(operation, dict):
            raise malformed_error(self.name, "the batch is not a JSON object",
                                  self.provider.settings)
        return operation

    def _why(self, error: Any) -> str:
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        return "the provider gave no reason"

    @contextlib.contextmanager
    def _errors(self, *, parsing: bool = True) -> Iterator[None]:
        """The SDK's exceptions as the ProviderError the online path raises for them; with
        `parsing`, a ValueError is an answer that is not JSON."""
        from google.genai import errors as genai_errors

        try:
            yield
        except genai_errors.APIError as exc:
            raise self.backend._status_error(exc) from None
        except aiohttp.ClientError as exc:
            raise connection_error(self.name, exc, self.provider.settings) from None
        except ValueError as exc:
            if not parsing:
                raise
            raise malformed_error(self.name, str(exc), self.provider.settings) from None


def _state(name: str) -> BatchState:
    for prefix in ("JOB_STATE_", "BATCH_STATE_"):
        name = name.removeprefix(prefix)
    return _STATES.get(name, "in_progress")


def _count(stats: dict[str, Any], name: str) -> int:
    try:
        return int(stats.get(name) or 0)  # int64 counts come as strings
    except (TypeError, ValueError):
        return 0

