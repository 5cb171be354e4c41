"""ClusterLimiter: the one rate limit of a cluster, run as a Ray actor, lending permits.

It holds a dagengine.ratelimit.RateLimiter, so every limit group's pacing, learning from
headers and 429 adaptation is the single-process code, driven by the workers' grant
requests instead of by calls: a grant is permits acquired from the group like any call's,
and the workers' reports of how they ended are the calls' outcomes.

This module imports nothing of Ray: RayCluster.start_limiter() wraps the class as an actor.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..ratelimit import LimitGroup, Permit, RateLimiter
from ._messages import Grant, LimiterStats, Refusal, Report

LEASE_SECONDS = 0.2  # a grant covers this much of a worker's demand, gathered for at most this long
GRANT_TTL = 1.0  # seconds a worker may hold a permit unspent: a hoard later spent is a burst
SESSION_TTL = 5.0  # a worker silent this long is gone: what it held is released
MAX_GRANT = 500
_REAP_EVERY = 0.25


@dataclass
class _Held:
    """A grant's permits not reported back yet."""

    session: str
    group: LimitGroup
    permits: deque[Permit]


@dataclass
class _Session:
    """One worker's LeasedLimiter, known by its name; alive while it keeps calling."""

    name: str
    last_seen: float
    leasing: int = 0  # lease calls in progress: one may wait out a long 429 pause
    grants: set[int] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class ClusterLimiter:
    """Every limit group of a run, for the whole cluster; lent to workers in grants.

    Workers call it through dagengine.ray.LeasedLimiter, never directly: lease() for
    permits, watch() to learn of revocations (and as their heartbeat), refuse() for a 429,
    close() at the end. Reports of finished permits ride along on every call.
    """

    def __init__(
        self,
        rate_limits: Mapping[str, Mapping[str, float]] | None = None,
        *,
        lease_seconds: float = LEASE_SECONDS,
        grant_ttl: float = GRANT_TTL,
        session_ttl: float = SESSION_TTL,
        max_grant: int = MAX_GRANT,
    ) -> None:
        self._limiter = RateLimiter(rate_limits)
        self._lease_seconds = lease_seconds
        self._grant_ttl = grant_ttl
        self._session_ttl = session_ttl
        self._max_grant = max_grant
        self._sessions: dict[str, _Session] = {}
        self._held: dict[int, _Held] = {}
        # Per group: bumped by each 429 that slowed the group, so workers drop what they hold.
        self._generations: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._stats = LimiterStats()
        self._reaped_at = time.monotonic()

    # -- called by workers -----------------------------------------------------------------

    async def lease(
        self,
        session: str,
        provider: str,
        model: str | None,
        want: int,
        tokens_each: int,
        reports: list[Report],
    ) -> Grant:
        """Lend up to `want` permits of `tokens_each` tokens; wait for at least one.

        Once one is admitted, more are gathered for at most LEASE_SECONDS, so that a worker
        at a saturated limit gets a batch per round trip rather than one permit.
        """
        state = self._enter(session, reports)
        self._stats.leases += 1
        group = self._limiter.group(provider, model)
        want = max(1, min(want, self._cap(group)))
        tokens_each = max(0, tokens_each)
        state.leasing += 1
        try:
            permits, generation = await self._gather(group, want, tokens_each)
        finally:
            state.leasing -= 1
        grant_id = next(self._ids)
        if self._sessions.get(session) is not state:  # closed while this lease waited
            for permit in permits:
                permit.failed()
            permits.clear()
        self._held[grant_id] = _Held(session, group, permits)
        state.grants.add(grant_id)
        state.last_seen = time.monotonic()
        self._drop_if_done(grant_id, self._held[grant_id])
        self._stats.granted += len(permits)
        return Grant(
            grant_id=grant_id,
            group=group.name,
            count=len(permits),
            tokens_each=tokens_each if group.allowed_tokens_per_minute is not None else 0,
            generation=generation,
            ttl=self._grant_ttl,
        )

    async def watch(
        self,
        session: str,
        generations: dict[str, int],
        reports: list[Report],
        wait_seconds: float,
    ) -> dict[str, int]:
        """The groups' generations, once one differs from `generations` or after `wait_seconds`.

        A worker keeps one watch pending: it hears of a 429 elsewhere in one round trip, and
        its re-arming every `wait_seconds` is its heartbeat and its report flush.
        """
        state = self._enter(session, reports)
        if not self._differs(generations):
            wake = state.wake
            try:
                async with asyncio.timeout(wait_seconds):
                    await wake.wait()
            except TimeoutError:
                pass
        return dict(self._generations)

    def refuse(self, session: str, refusal: Refusal, reports: list[Report]) -> dict[str, int]:
        """A worker's 429: slow the group down for everyone and revoke what workers hold."""
        self._enter(session, reports)
        self._stats.refused += 1
        self._stats.settled += 1
        held = self._held.get(refusal.grant_id)
        if held is None or not held.permits:
            # Its grant was released (the worker went silent): the group cannot tell when
            # this request was admitted, so it cannot weigh the 429; the next ones will.
            return dict(self._generations)
        group = held.group
        before = _pace(group)
        held.permits.popleft().rate_limited(refusal.retry_after, refusal.rate_limit)
        self._drop_if_done(refusal.grant_id, held)
        if _pace(group) != before:
            self._generations[group.name] = self._generations.get(group.name, 0) + 1
            self._wake_all()
        return dict(self._generations)

    def close(self, session: str, reports: list[Report]) -> None:
        """The worker is done: settle its last reports, release what it still holds."""
        state = self._enter(session, reports)
        self._end(state)
        state.wake.set()

    # -- read by the driver ------------------------------------------------------------------

    def stats(self) -> LimiterStats:
        self._reap(time.monotonic(), force=True)
        stats = LimiterStats(**{
            name: getattr(self._stats, name)
            for name in ("rpcs", "leases", "granted", "settled", "unused", "refused",
                         "reaped_sessions")
        })
        stats.sessions = sorted(self._sessions)
        stats.held = sum(len(held.permits) for held in self._held.values())
        stats.cpu_seconds = time.process_time()
        return stats

    def snapshot(self) -> dict[str, dict[str, float | None]]:
        """Each limit group's state, as RateLimiter.snapshot() gives it in one process."""
        return self._limiter.snapshot()

    # -- inside ---------------------------------------------------------------------------

    def _enter(self, session: str, reports: Iterable[Report]) -> _Session:
        self._stats.rpcs += 1
        now = time.monotonic()
        state = self._sessions.get(session)
        if state is None:
            state = self._sessions[session] = _Session(session, now)
        state.last_seen = now
        for report in reports:
            self._settle(report)
        self._reap(now)
        return state

    def _cap(self, group: LimitGroup) -> int:
        """Most permits one grant may hold: LEASE_SECONDS of the group's allowed rate."""
        per_minute = group.allowed_requests_per_minute
        if per_minute is None:
            return self._max_grant
        return max(1, min(self._max_grant, int(per_minute / 60 * self._lease_seconds)))

    async def _gather(
        self, group: LimitGroup, want: int, tokens_each: int
    ) -> tuple[deque[Permit], int]:
        while True:
            first = await group.acquire(tokens_each)
            generation = self._generations.get(group.name, 0)
            permits = deque([first])
            deadline = asyncio.get_running_loop().time() + self._lease_seconds
            while len(permits) < want and generation == self._generations.get(group.name, 0):
                try:
                    # Cancellation-safe: a permit not admitted by the deadline takes nothing.
                    async with asyncio.timeout_at(deadline):
                        permits.append(await group.acquire(tokens_each))
                except TimeoutError:
                    break
            if generation == self._generations.get(group.name, 0):
                return permits, generation
            # A 429 cut the rate while these were gathered: lent now, they would overrun it.
            for permit in permits:
                permit.failed()

    def _settle(self, report: Report) -> None:
        held = self._held.get(report.grant_id)
        if held is None:
            return  # released with its session, or already settled
        permits = held.permits
        succeeded = min(report.succeeded, len(permits))
        if succeeded:
            # Permits of one grant are alike: spread the usage evenly, headers on the last.
            share, extra = divmod(report.used_tokens, succeeded)
            for index in range(succeeded):
                headers = report.rate_limit if index == succeeded - 1 else None
                permits.popleft().success(share + 1 if index < extra else share, headers)
        for _ in range(min(report.failed + report.unused, len(permits))):
            permits.popleft().failed()
        self._stats.settled += report.settled
        self._stats.unused += report.unused
        self._drop_if_done(report.grant_id, held)

    def _drop_if_done(self, grant_id: int, held: _Held) -> None:
        if not held.permits:
            del self._held[grant_id]
            state = self._sessions.get(held.session)
            if state is not None:
                state.grants.discard(grant_id)

    def _differs(self, generations: Mapping[str, int]) -> bool:
        return any(generations.get(name, 0) != gen for name, gen in self._generations.items())

    def _wake_all(self) -> None:
        for state in self._sessions.values():
            state.wake.set()
            state.wake = asyncio.Event()

    def _reap(self, now: float, *, force: bool = False) -> None:
        """End the sessions of workers that stopped calling (killed, lost with their node)."""
        if not force and now - self._reaped_at < _REAP_EVERY:
            return
        self._reaped_at = now
        for state in list(self._sessions.values()):
            if not state.leasing and now - state.last_seen > self._session_ttl:
                self._end(state)
                self._stats.reaped_sessions += 1

    def _end(self, state: _Session) -> None:
        # Their bucket units are spent either way: a permit lent is capacity gone, so a
        # dead worker cost the cluster at most its last grants; this releases the accounts.
        for grant_id in state.grants:
            held = self._held.pop(grant_id, None)
            if held is not None:
                self._stats.settled += len(held.permits)
                for permit in held.permits:
                    permit.failed()
        state.grants.clear()
        self._sessions.pop(state.name, None)


def _pace(group: LimitGroup) -> tuple[float | None, float | None, float | None]:
    """What a 429 changes when it slows a group: its pause and its allowed rates."""
    return group.paused_until, group.allowed_requests_per_minute, group.allowed_tokens_per_minute
