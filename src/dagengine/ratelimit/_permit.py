"""Permit: one admitted request, and the report of how it ended."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._group import LimitGroup


class Permit:
    """One admitted request. Report its outcome exactly once: success, rate_limited or failed.

    As a (sync or async) context manager it reports failed() on exit if the body did not
    report, so an exception or cancellation leaks nothing.
    """

    __slots__ = (
        "_admitted_at",
        "_epoch",
        "_group",
        "_refused",
        "_released",
        "_request",
        "_seq",
        "_tokens",
    )

    def __init__(
        self,
        group: LimitGroup,
        request: bool,
        tokens: int,
        epoch: int,
        admitted_at: float = 0.0,
        seq: int = 0,
    ) -> None:
        self._group = group
        self._request = request  # a request unit was taken from the group's bucket
        self._tokens = tokens  # tokens taken from the group's bucket
        self._epoch = epoch
        self._admitted_at = admitted_at
        self._seq = seq  # admission order within the group
        self._refused = False
        self._released = False

    @property
    def released(self) -> bool:
        return self._released

    def success(
        self,
        used_tokens: int | None = None,
        rate_limit: Mapping[str, float | None] | None = None,
    ) -> None:
        """The call succeeded: settle the token estimate, learn from headers, grow back."""
        self._release()._succeeded(self, used_tokens, rate_limit)

    def rate_limited(
        self,
        retry_after: float | None = None,
        rate_limit: Mapping[str, float | None] | None = None,
    ) -> None:
        """The call got a 429. When the evidence says it is a limit rather than noise, the
        group slows down (and pauses, when nothing gets through); else only this call waits."""
        self._release()._refused(self, retry_after, rate_limit)

    def failed(self) -> None:
        """Any other failure (5xx, timeout, cancellation): release only."""
        self._release()

    def _release(self) -> LimitGroup:
        if self._released:
            raise RuntimeError("this Permit was already reported; report each one once")
        self._released = True
        self._group.in_flight -= 1
        return self._group

    def __enter__(self) -> Permit:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._released:
            self.failed()

    async def __aenter__(self) -> Permit:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if not self._released:
            self.failed()
