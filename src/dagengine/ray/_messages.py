"""What workers and the limiter actor send each other: plain data, pickled by Ray."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Grant:
    """Permits the limiter actor lent one worker: `count` requests of `tokens_each` tokens.

    `group` is the actor's limit group the permits came from (calls to several models can
    share one); `generation` is that group's revocation counter when they were lent: a
    worker drops unspent permits of an older generation (a 429 somewhere in the cluster).
    The worker may admit them until `ttl` seconds after it sent the lease request.
    """

    grant_id: int
    group: str
    count: int
    tokens_each: int  # 0 when the group has no token limit: the worker then ignores tokens
    generation: int
    ttl: float


@dataclass(slots=True)
class Report:
    """How the permits of one grant ended since the last report."""

    grant_id: int
    succeeded: int = 0
    used_tokens: int = 0  # summed over `succeeded` (the estimate where usage is unknown)
    failed: int = 0
    unused: int = 0  # never admitted: expired, revoked or returned
    rate_limit: dict[str, float | None] | None = None  # the latest headers seen

    @property
    def settled(self) -> int:
        return self.succeeded + self.failed + self.unused


@dataclass(slots=True)
class Refusal:
    """One 429: sent at once, since it slows the whole cluster down."""

    grant_id: int
    retry_after: float | None
    rate_limit: dict[str, float | None] | None = None


@dataclass(slots=True)
class LimiterStats:
    """The limiter actor's counters, for tests, benchmarks and the driver's progress."""

    rpcs: int = 0  # calls into the actor from workers: lease, watch, refuse, close
    leases: int = 0
    granted: int = 0  # permits lent
    settled: int = 0  # permits reported back (succeeded, failed, refused or unused)
    unused: int = 0
    refused: int = 0  # 429s reported
    reaped_sessions: int = 0  # sessions ended because their worker stopped calling
    sessions: list[str] = field(default_factory=list)
    held: int = 0  # permits lent and not reported back yet, across sessions
    cpu_seconds: float = 0.0  # the actor process's CPU time so far
