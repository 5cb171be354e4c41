"""LeasedLimiter: a worker's side of the cluster limit, with RateLimiter's interface.

A call path written for dagengine.ratelimit works unchanged with it::

    permit = await limiter.group("openai", "gpt-4o").acquire(estimated_tokens)
    ...
    permit.success(used_tokens, rate_limit)  # or permit.rate_limited(...) or permit.failed()

Admissions are served from permits the ClusterLimiter actor lent this worker, so the hot
path is local. A group leases again when its spare permits fall below half of what it
asks for (about LEASE_SECONDS of its own recent admission rate), so at a steady rate the
next grant arrives before the current one runs out. Outcomes are counted per grant and ride
along on the next call to the actor; a 429 is sent at once. One watch call stays pending
at the actor: it returns when a 429 anywhere slowed a group, and the worker then drops
the permits it holds for that group, so a 429 pauses every worker within a round trip.
Each watch times out after KEEPALIVE_SECONDS and is sent again, which is the worker's
heartbeat: a worker that stops (killed, its node lost) stops renewing, and the actor
releases what it held after its session TTL.

Nothing here polls or runs a task of its own: the actor's replies arrive as futures whose
callbacks run on the worker's event loop.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..ratelimit import ReportOnExit
from ._errors import ClusterError
from ._lender import LEASE_SECONDS, MAX_GRANT
from ._messages import Grant, Refusal, Report

KEEPALIVE_SECONDS = 1.0
_TOKENS_SMOOTHING = 0.1  # weight of the newest estimate in the running mean of estimates


@dataclass(slots=True, eq=False)  # held grants are told apart by identity
class _Lent:
    """A grant as the worker holds it: what is left to admit, until when."""

    grant: Grant
    expires_at: float
    remaining: int
    tokens_left: int

    def fits(self, tokens: int) -> bool:
        return self.remaining > 0 and (not self.grant.tokens_each or tokens <= self.tokens_left)


class LeasedPermit(ReportOnExit):
    """One admitted request. Report its outcome exactly once: success, rate_limited or failed.

    As a (sync or async) context manager it reports failed() on exit if the body did not
    report, so an exception or cancellation leaks nothing. Same contract as
    dagengine.ratelimit.Permit.
    """

    __slots__ = ("_group", "_lent", "_released", "_tokens")

    def __init__(self, group: LeasedGroup, lent: _Lent, tokens: int) -> None:
        self._group = group
        self._lent = lent
        self._tokens = tokens
        self._released = False

    @property
    def released(self) -> bool:
        return self._released

    def success(
        self,
        used_tokens: int | None = None,
        rate_limit: Mapping[str, float | None] | None = None,
    ) -> None:
        """The call succeeded: settle the token estimate, pass the headers on."""
        self._release()._succeeded(self, used_tokens, rate_limit)

    def rate_limited(
        self,
        retry_after: float | None = None,
        rate_limit: Mapping[str, float | None] | None = None,
    ) -> None:
        """The call got a 429: slow the group down for the whole cluster."""
        self._release()._refused(self, retry_after, rate_limit)

    def failed(self) -> None:
        """Any other failure (5xx, timeout, cancellation): release only."""
        self._release()._report(self).failed += 1

    def _release(self) -> LeasedGroup:
        if self._released:
            raise RuntimeError("this Permit was already reported; report each one once")
        self._released = True
        self._group.in_flight -= 1
        return self._group


class LeasedGroup:
    """Calls to one provider/model on this worker: a FIFO queue served from leased permits."""

    def __init__(self, limiter: LeasedLimiter, provider: str, model: str | None) -> None:
        self.provider = provider
        self.model = model
        self.name: str | None = None  # the actor's group, known from the first grant
        self.in_flight = 0
        self.waiting = 0
        self.rate_limited = 0  # 429s reported from this worker
        self._limiter = limiter
        self._lent: deque[_Lent] = deque()
        self._queue: deque[tuple[asyncio.Future[LeasedPermit], int]] = deque()
        self._leasing = False
        self._observed_rate = 0.0  # EWMA of admissions per second (1 s time constant)
        self._observed_at = 0.0
        self._mean_tokens = 0.0

    async def acquire(self, estimated_tokens: int = 0) -> LeasedPermit:
        """Wait until the cluster lends room for one request of `estimated_tokens` tokens.

        Cancellation-safe: a waiter cancelled before or while being admitted takes nothing.
        """
        if estimated_tokens < 0:
            raise ValueError(f"estimated_tokens must be >= 0, got {estimated_tokens}")
        limiter = self._limiter
        limiter._check_usable()
        limiter._start_watch()
        self._mean_tokens += (estimated_tokens - self._mean_tokens) * _TOKENS_SMOOTHING
        if not self._queue:
            permit = self._take(estimated_tokens)
            if permit is not None:
                self._lease_if_needed()
                return permit
        future: asyncio.Future[LeasedPermit] = asyncio.get_running_loop().create_future()
        self._queue.append((future, estimated_tokens))
        self.waiting += 1
        self._lease_if_needed()
        try:
            return await future
        except asyncio.CancelledError:
            if future.cancelled():
                self.waiting -= 1
            elif future.exception() is None:  # admitted in the same iteration: undo it
                self._give_back(future.result())
            self._dispatch()
            raise

    @property
    def spare(self) -> int:
        """Permits held and not admitted yet."""
        return sum(lent.remaining for lent in self._lent)

    def snapshot(self) -> dict[str, float | None]:
        return {
            "in_flight": self.in_flight,
            "waiting": self.waiting,
            "rate_limited": self.rate_limited,
            "spare": self.spare,
            "observed_per_second": round(self._observed_rate, 3),
        }

    def __repr__(self) -> str:
        return f"<LeasedGroup {self.provider}/{self.model} {self.snapshot()}>"

    # -- admission -------------------------------------------------------------------

    def _take(self, tokens: int) -> LeasedPermit | None:
        now = self._limiter._clock()
        self._drop_expired(now)
        for lent in self._lent:
            if lent.fits(tokens):
                lent.remaining -= 1
                lent.tokens_left -= tokens
                self.in_flight += 1
                self._observed_rate = self._observed_rate * math.exp(self._observed_at - now) + 1
                self._observed_at = now
                return LeasedPermit(self, lent, tokens)
        return None

    def _give_back(self, permit: LeasedPermit) -> None:
        permit._released = True
        self.in_flight -= 1
        lent = permit._lent
        if any(held is lent for held in self._lent):
            lent.remaining += 1
            lent.tokens_left += permit._tokens
        else:
            self._limiter._report_for(lent.grant).unused += 1

    def _dispatch(self) -> None:
        queue = self._queue
        while queue:
            future, tokens = queue[0]
            if future.done():  # cancelled while waiting
                queue.popleft()
                continue
            permit = self._take(tokens)
            if permit is None:
                break
            queue.popleft()
            self.waiting -= 1
            future.set_result(permit)
        self._lease_if_needed()

    def _want(self) -> int:
        """Permits to ask for: LEASE_SECONDS of recent demand, at least the waiters."""
        rate = self._observed_rate * math.exp(self._observed_at - self._limiter._clock())
        return max(1, min(MAX_GRANT, max(math.ceil(rate * LEASE_SECONDS), len(self._queue))))

    def _lease_if_needed(self) -> None:
        if self._leasing or self._limiter._broken is not None or self._limiter._closed:
            return
        want = self._want()
        recent = self._limiter._clock() - self._observed_at < LEASE_SECONDS
        if not self._queue and not (recent and self.spare < max(1, want // 2)):
            return
        tokens_each = math.ceil(self._mean_tokens)
        if self._queue:
            tokens_each = max(tokens_each, self._queue[0][1])
        self._leasing = True
        limiter = self._limiter
        sent_at = limiter._clock()
        future = limiter._call("lease", self.provider, self.model, want, tokens_each,
                               limiter._take_reports())
        future.add_done_callback(lambda done: self._on_grant(done, sent_at))

    def _on_grant(self, done: asyncio.Future[Any], sent_at: float) -> None:
        self._leasing = False
        limiter = self._limiter
        if done.cancelled():
            return
        error = done.exception()
        if error is not None:
            limiter._break(error)
            return
        grant: Grant = done.result()
        self.name = grant.group
        if limiter._closed:
            limiter._report_for(grant).unused += grant.count
            return
        if grant.generation > limiter._generations.get(grant.group, 0):
            limiter._revoke({grant.group: grant.generation})
        if grant.generation < limiter._generations.get(grant.group, 0):
            limiter._report_for(grant).unused += grant.count  # lent before a 429 we heard of
        else:
            self._lent.append(_Lent(grant, sent_at + grant.ttl, grant.count,
                                    grant.count * grant.tokens_each))
        self._dispatch()

    # -- outcomes and revocation -----------------------------------------------------

    def _report(self, permit: LeasedPermit) -> Report:
        return self._limiter._report_for(permit._lent.grant)

    def _succeeded(
        self,
        permit: LeasedPermit,
        used_tokens: int | None,
        rate_limit: Mapping[str, float | None] | None,
    ) -> None:
        report = self._report(permit)
        report.succeeded += 1
        # Unknown usage keeps the actor's estimate: it is what the actor took for it.
        report.used_tokens += permit._lent.grant.tokens_each if used_tokens is None else used_tokens
        if rate_limit:
            report.rate_limit = dict(rate_limit)

    def _refused(
        self,
        permit: LeasedPermit,
        retry_after: float | None,
        rate_limit: Mapping[str, float | None] | None,
    ) -> None:
        self.rate_limited += 1
        limiter = self._limiter
        if limiter._closed or limiter._broken is not None:
            return
        # Stop spending at once, whatever the actor decides: the provider just said no.
        for group in limiter._groups.values():
            if group is self or (group.name is not None and group.name == self.name):
                group._drop()
        refusal = Refusal(permit._lent.grant.grant_id, retry_after,
                          dict(rate_limit) if rate_limit else None)
        limiter._call("refuse", refusal, limiter._take_reports()).add_done_callback(
            limiter._on_generations)
        self._dispatch()

    def _drop(self, *, before_generation: float = math.inf, now: float = -math.inf) -> None:
        """Drop the grants lent before `before_generation`, spent, or expired by `now`
        (by default: all of them); what was left of them is reported unused."""
        kept: deque[_Lent] = deque()
        for lent in self._lent:
            fresh = lent.expires_at > now and lent.grant.generation >= before_generation
            if lent.remaining and fresh:
                kept.append(lent)
            elif lent.remaining:
                self._limiter._report_for(lent.grant).unused += lent.remaining
        self._lent = kept

    def _drop_expired(self, now: float) -> None:
        if self._lent and (self._lent[0].expires_at <= now or not self._lent[0].remaining):
            self._drop(before_generation=-math.inf, now=now)

    def _fail_waiters(self, error: BaseException) -> None:
        while self._queue:
            future, _ = self._queue.popleft()
            if not future.done():
                self.waiting -= 1
                future.set_exception(error)


class LeasedLimiter:
    """One worker's view of a ClusterLimiter actor; use it where a RateLimiter goes.

    `limiter` is the actor handle RayCluster.start_limiter() returned. Create one per
    worker process and use it from one event loop; close it with `await aclose()` (or
    `async with`) so the actor settles its last reports at once rather than at its TTL.
    """

    def __init__(
        self,
        limiter: Any,
        *,
        session: str | None = None,
        keepalive: float = KEEPALIVE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session = session or uuid.uuid4().hex
        self.rpcs = 0  # calls this worker made into the actor
        self._actor = limiter
        self._keepalive = keepalive
        self._clock = clock
        self._groups: dict[tuple[str, str | None], LeasedGroup] = {}
        self._generations: dict[str, int] = {}  # per actor group: the last 429 heard of
        self._reports: dict[int, Report] = {}
        self._watching = False
        self._closed = False
        self._broken: ClusterError | None = None

    def group(self, provider: str, model: str | None = None, *,
              ramp: bool = True) -> LeasedGroup:
        """The group a call to `provider` / `model` waits in on this worker."""
        group = self._groups.get((provider, model))
        if group is None:
            group = self._groups[provider, model] = LeasedGroup(self, provider, model)
        return group

    @property
    def waiting(self) -> int:
        """Calls waiting for capacity on this worker, across groups."""
        return sum(group.waiting for group in self._groups.values())

    @property
    def rate_limited(self) -> int:
        """429s reported from this worker, across groups."""
        return sum(group.rate_limited for group in self._groups.values())

    def snapshot(self) -> dict[str, dict[str, float | None]]:
        """This worker's groups; the cluster's limits are the actor's snapshot()."""
        return {
            f"{provider}/{model}" if model else provider: group.snapshot()
            for (provider, model), group in self._groups.items()
        }

    async def aclose(self) -> None:
        """Return unspent permits and end this worker's session at the actor."""
        if self._closed:
            return
        self._closed = True
        closed = ClusterError("the LeasedLimiter was closed while calls waited for capacity")
        for group in self._groups.values():
            group._fail_waiters(closed)
            group._drop()
        if self._broken is None:
            await self._call("close", self._take_reports())

    async def __aenter__(self) -> LeasedLimiter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- talking to the actor ----------------------------------------------------------

    def _call(self, method: str, *args: Any) -> asyncio.Future[Any]:
        self.rpcs += 1
        ref = getattr(self._actor, method).remote(self.session, *args)
        return asyncio.wrap_future(ref.future())

    def _start_watch(self) -> None:
        if self._watching or self._closed or self._broken is not None:
            return
        self._watching = True
        self._call("watch", dict(self._generations), self._take_reports(),
                   self._keepalive).add_done_callback(self._on_watch)

    def _on_watch(self, done: asyncio.Future[Any]) -> None:
        self._watching = False
        self._on_generations(done)
        self._start_watch()

    def _on_generations(self, done: asyncio.Future[Any]) -> None:
        if done.cancelled() or self._closed:
            return
        error = done.exception()
        if error is not None:
            self._break(error)
            return
        self._revoke(done.result())

    def _revoke(self, generations: Mapping[str, int]) -> None:
        """Drop permits lent before a 429 that the actor counted; lease again if waited for."""
        changed = {name: gen for name, gen in generations.items()
                   if gen > self._generations.get(name, 0)}
        if not changed:
            return
        self._generations.update(changed)
        for group in self._groups.values():
            if group.name in changed:
                group._drop(before_generation=changed[group.name])
                group._dispatch()

    def _report_for(self, grant: Grant) -> Report:
        report = self._reports.get(grant.grant_id)
        if report is None:
            report = self._reports[grant.grant_id] = Report(grant.grant_id)
        return report

    def _take_reports(self) -> list[Report]:
        now = self._clock()
        for group in self._groups.values():
            group._drop_expired(now)
        reports = [report for report in self._reports.values() if report.settled]
        self._reports = {}
        return reports

    def _check_usable(self) -> None:
        if self._broken is not None:
            raise self._broken
        if self._closed:
            raise ClusterError("this LeasedLimiter was closed; create a new one")

    def _break(self, error: BaseException) -> None:
        if self._broken is not None:
            return
        broken = ClusterError(
            f"the cluster's limiter actor cannot be reached ({type(error).__name__}: "
            f"{error}); the run cannot pace its calls without it"
        )
        broken.__cause__ = error
        self._broken = broken
        for group in self._groups.values():
            group._fail_waiters(broken)
