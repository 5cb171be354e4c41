"""What a provider's batch API offers the engine: submit, poll, read back, cancel.

A provider with a batch API returns a `BatchAPI` from `BaseProvider.batch_api()`; the engine
gathers ready calls into `BatchRequest`s, submits them, records the batch id before it waits,
polls `status` until the batch is done and reads every item's `BatchOutcome` back by its
`custom_id`.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal

from ..errors import ProviderError
from ..types import ProviderRequest, ProviderResponse

BatchState = Literal["in_progress", "ended", "expired", "cancelled", "failed"]
"""in_progress: still running (also while being cancelled). ended: results can be read (items
may still have errored). expired / cancelled: ended before every item ran; the items that did
run have results. failed: the provider refused the whole batch; no item ran."""


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """The most one batch may hold, as the provider documents it."""

    max_requests: int
    max_bytes: int


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """One call in a batch; `custom_id` maps its answer back to (section, dimension)."""

    custom_id: str
    request: ProviderRequest


@dataclass(frozen=True, slots=True)
class BatchStatus:
    """A batch as the provider reports it now, with its request counts."""

    batch_id: str
    state: BatchState
    processing: int = 0
    succeeded: int = 0
    errored: int = 0
    expired: int = 0
    cancelled: int = 0
    error: str | None = None  # why the provider failed the whole batch, when it did

    @property
    def done(self) -> bool:
        return self.state != "in_progress"


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """One item of a finished batch: its answer (tokens and model in the metadata, as an
    online answer has them) or the error that left it without one (errored with its status,
    expired, cancelled, missing from the provider's results)."""

    custom_id: str
    response: ProviderResponse | None = None
    error: ProviderError | None = None


class BatchAPI(abc.ABC):
    """A provider's batch endpoints."""

    limits: BatchLimits

    @abc.abstractmethod
    async def submit(self, requests: Sequence[BatchRequest]) -> str:
        """Create a batch of `requests` (at most `limits`); return the provider's batch id."""

    @abc.abstractmethod
    async def status(self, batch_id: str) -> BatchStatus:
        """The batch's state and counts now; cheap, called at each poll."""

    @abc.abstractmethod
    def results(self, batch_id: str, custom_ids: Sequence[str]) -> AsyncIterator[BatchOutcome]:
        """Every one of `custom_ids` exactly once, as answered or failed, for a done batch.
        (`custom_ids` are those submitted, in order: some providers answer by position.)"""

    @abc.abstractmethod
    async def cancel(self, batch_id: str) -> None:
        """Ask the provider to cancel the batch; items already answered keep their results."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook for APIs with clients
        """Release the API's clients; called by the provider's `aclose()`."""

    def request_bytes(self, request: BatchRequest) -> int:
        """How many of `limits.max_bytes` the request takes: a batch whose requests' sizes
        add up to at most that is not refused for its size. This default is the size of the
        request as JSON; the built-ins measure the body they send for it."""
        return len(request.request.model_dump_json()) + len(request.custom_id) + 16
