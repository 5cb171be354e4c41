"""LimitGroup: the queue, pause and adaptive rate of calls that share one provider limit;
the Permit each admitted call holds (its group's receipt) and the Bucket each limit paces with.

How a group decides is described in the package docstring, dagengine/ratelimit/__init__.py.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Mapping

Clock = Callable[[], float]

HEADROOM = 0.95  # share of a provider limit the client allows itself
START_FILL = 0.5  # share of its burst a configured limit allows at once when the run starts
RECOVERY_SECONDS = 4.0  # after a 429, time for the rate to grow from half back to the limit
PROBE_SPEED = 0.125  # growth past an inferred limit, relative to recovery
MIN_SCALE = 1 / 64  # the allowed rate never drops below this share of the limit
BACKOFF_SECONDS = 1.0  # first pause after a 429 without retry-after; doubles, capped
MAX_BACKOFF_SECONDS = 60.0
MIN_RATE_TO_INFER = 2.0  # calls/s below which a 429 is not read as a request limit
MIN_INFERRED_PER_SECOND = 1 / 60  # an inferred limit is never below one request a minute
_EPS = 1e-9  # rounding slack when a timer fires exactly at a bucket's refill time


class Permit:
    """One admitted request. Report its outcome exactly once: success, rate_limited or failed.

    As a (sync or async) context manager it reports failed() on exit if the body did not
    report, so an exception or cancellation leaks nothing.
    """

    __slots__ = ("_epoch", "_group", "_released", "_request", "_tokens")

    def __init__(self, group: LimitGroup, request: bool, tokens: int, epoch: int) -> None:
        self._group = group
        self._request = request  # a request unit was taken from the group's bucket
        self._tokens = tokens  # tokens taken from the group's bucket
        self._epoch = epoch
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
        """The call got a 429: pause the whole group and slow it down."""
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


class Bucket:
    """A continuous token bucket holding at most one second's worth (at least 1)."""

    __slots__ = ("available", "capacity", "rate")

    def __init__(self, rate: float, available: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.available = min(available, self.capacity)

    def set_rate(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.available = min(self.available, self.capacity)

    def add(self, amount: float) -> None:
        self.available = min(self.capacity, self.available + amount)

    def delay(self, amount: float) -> float:
        """Seconds until `amount` fits; an amount above capacity fits a full bucket."""
        short = min(amount, self.capacity) - self.available
        return short / self.rate if short > _EPS else 0.0


class LimitGroup:
    """Calls that share one provider limit: one queue, one pause, one adaptive rate."""

    def __init__(
        self,
        name: str,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self.name = name
        self.requests_per_minute = requests_per_minute  # configured
        self.tokens_per_minute = tokens_per_minute
        self.learned_requests_per_minute: float | None = None  # from response headers
        self.learned_tokens_per_minute: float | None = None
        self.in_flight = 0
        self.waiting = 0
        self.rate_limited = 0  # 429s reported
        self._clock = clock
        self._queue: deque[tuple[asyncio.Future[Permit], int]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._paused_until = -math.inf
        self._requests: Bucket | None = None
        self._tokens: Bucket | None = None
        self._refilled_at = clock()
        self._inferred_per_second: float | None = None  # request limit guessed at a 429
        self._scale = 1.0  # share of the limit currently allowed
        self._growing_since = 0.0
        self._epoch = 0  # bumped at every decrease and limit change
        self._strikes = 0  # counted 429s since the last success, for the backoff
        self._observed_rate = 0.0  # EWMA of admissions per second (1 s time constant)
        self._observed_at = 0.0
        self._set_rates(start=START_FILL)

    async def acquire(self, estimated_tokens: int = 0) -> Permit:
        """Wait until the group has room for one request of `estimated_tokens` tokens.

        Cancellation-safe: a waiter cancelled before or while being admitted takes nothing.
        """
        if estimated_tokens < 0:
            raise ValueError(f"estimated_tokens must be >= 0, got {estimated_tokens}")
        if self._unlimited and not self._queue:
            now = self._clock()
            if now >= self._paused_until:
                self._observe(now)
                self.in_flight += 1
                return Permit(self, False, 0, self._epoch)
        now = self._refill()
        if not self._queue and self._delay(estimated_tokens, now) <= 0:
            return self._admit(estimated_tokens, now)
        future: asyncio.Future[Permit] = asyncio.get_running_loop().create_future()
        self._queue.append((future, estimated_tokens))
        self.waiting += 1
        if len(self._queue) == 1:
            self._dispatch()
        try:
            return await future
        except asyncio.CancelledError:
            if future.cancelled():
                self.waiting -= 1
            else:  # admitted in the same loop iteration as cancelled: undo it
                permit = future.result()
                permit._release()
                self._give_back(permit, request=True)
            self._dispatch()
            raise

    @property
    def paused_until(self) -> float | None:
        """Clock time the group's 429 pause ends, None when not paused."""
        return self._paused_until if self._paused_until > self._clock() else None

    @property
    def allowed_requests_per_minute(self) -> float | None:
        return self._requests.rate * 60 if self._requests else None

    @property
    def allowed_tokens_per_minute(self) -> float | None:
        return self._tokens.rate * 60 if self._tokens else None

    def snapshot(self) -> dict[str, float | None]:
        return {
            "requests_per_minute": self.requests_per_minute,
            "tokens_per_minute": self.tokens_per_minute,
            "learned_requests_per_minute": self.learned_requests_per_minute,
            "learned_tokens_per_minute": self.learned_tokens_per_minute,
            "allowed_requests_per_minute": self.allowed_requests_per_minute,
            "allowed_tokens_per_minute": self.allowed_tokens_per_minute,
            "in_flight": self.in_flight,
            "waiting": self.waiting,
            "rate_limited": self.rate_limited,
            "paused_until": self.paused_until,
        }

    def __repr__(self) -> str:
        return f"<LimitGroup {self.name!r} {self.snapshot()}>"

    # -- admission ---------------------------------------------------------------------

    def _refill(self) -> float:
        now = self._clock()
        elapsed = now - self._refilled_at
        if elapsed > 0:
            if self._requests is not None:
                self._requests.add(elapsed * self._requests.rate)
            if self._tokens is not None:
                self._tokens.add(elapsed * self._tokens.rate)
            self._refilled_at = now
        return now

    def _delay(self, tokens: int, now: float) -> float:
        """Seconds until a request of `tokens` may start (<= 0: now)."""
        delay = self._paused_until - now
        if self._requests is not None:
            delay = max(delay, self._requests.delay(1))
        if tokens and self._tokens is not None:
            delay = max(delay, self._tokens.delay(tokens))
        return delay

    def _admit(self, tokens: int, now: float) -> Permit:
        self._observe(now)
        self.in_flight += 1
        if self._requests is not None:
            self._requests.available -= 1
        if self._tokens is None:
            tokens = 0
        else:
            self._tokens.available -= tokens
        return Permit(self, self._requests is not None, tokens, self._epoch)

    def _observe(self, now: float) -> None:
        self._observed_rate = self._observed_rate * math.exp(self._observed_at - now) + 1.0
        self._observed_at = now

    def _dispatch(self) -> None:
        """Admit waiters from the head of the queue; set the timer for the next one."""
        queue = self._queue
        if not queue:
            return
        now = self._refill()
        while queue:
            future, tokens = queue[0]
            if future.done():  # cancelled while waiting
                queue.popleft()
                continue
            delay = self._delay(tokens, now)
            if delay > 0:
                self._wake_at(delay)
                return
            queue.popleft()
            self.waiting -= 1
            future.set_result(self._admit(tokens, now))

    def _wake_at(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()

    # -- outcomes ----------------------------------------------------------------------

    def _succeeded(
        self, permit: Permit, used_tokens: int | None, rate_limit: Mapping[str, float | None] | None
    ) -> None:
        if used_tokens is not None and self._tokens is not None:
            self._refill()
            self._tokens.add(permit._tokens - used_tokens)
        if rate_limit:
            self._learn(rate_limit)
        if permit._epoch == self._epoch:
            self._recovered()
        self._dispatch()

    def _refused(
        self,
        permit: Permit,
        retry_after: float | None,
        rate_limit: Mapping[str, float | None] | None,
    ) -> None:
        self.rate_limited += 1
        self._give_back(permit, request=False)  # a refused request used no tokens
        if rate_limit:
            self._learn(rate_limit)
        self._congested(retry_after, counts=permit._epoch == self._epoch)
        self._dispatch()

    def _give_back(self, permit: Permit, *, request: bool) -> None:
        self._refill()
        if request and permit._request and self._requests is not None:
            self._requests.add(1)
        if permit._tokens and self._tokens is not None:
            self._tokens.add(permit._tokens)

    # -- adaptation --------------------------------------------------------------------

    @property
    def _unlimited(self) -> bool:
        return self._requests is None and self._tokens is None

    def _limit_per_second(self, unit: str) -> float | None:
        """The lower of the configured and learned limits, per second, with headroom."""
        if unit == "requests":
            known = [self.requests_per_minute, self.learned_requests_per_minute]
        else:
            known = [self.tokens_per_minute, self.learned_tokens_per_minute]
        limits = [limit for limit in known if limit is not None]
        return min(limits) * HEADROOM / 60 if limits else None

    def _set_rates(self, *, start: float = 0.0) -> None:
        """Apply limits and scale to the buckets; a new one starts `start` full."""
        requests = self._limit_per_second("requests") or self._inferred_per_second
        tokens = self._limit_per_second("tokens")
        if requests is not None or tokens is not None:
            self._refill()
        self._requests = self._rebuilt(self._requests, requests, start)
        self._tokens = self._rebuilt(self._tokens, tokens, start)

    def _rebuilt(self, bucket: Bucket | None, limit: float | None, start: float) -> Bucket | None:
        if limit is None:
            return None
        rate = limit * self._scale
        if bucket is None:
            return Bucket(rate, max(1.0, start * rate) if start else 0.0)
        bucket.set_rate(rate)
        return bucket

    @property
    def _max_scale(self) -> float:
        return 1.0 if self._inferred_per_second is None else math.inf

    def _learn(self, rate_limit: Mapping[str, float | None]) -> None:
        requests = positive(rate_limit.get("requests_per_minute"))
        tokens = positive(rate_limit.get("tokens_per_minute"))
        changed = False
        if requests is not None and requests != self.learned_requests_per_minute:
            self.learned_requests_per_minute = requests
            changed = True
        if tokens is not None and tokens != self.learned_tokens_per_minute:
            self.learned_tokens_per_minute = tokens
            changed = True
        if changed:
            self._epoch += 1  # 429s for calls sent before we knew do not count
            self._inferred_per_second = None
            self._scale = min(self._scale, 1.0)
            self._set_rates()
        reset = positive(rate_limit.get("reset_seconds"))
        for key, bucket in (
            ("requests_remaining", self._requests),
            ("tokens_remaining", self._tokens),
        ):
            remaining = rate_limit.get(key)
            if remaining is None or remaining < 0:
                continue
            if bucket is not None:
                self._refill()
                bucket.available = min(bucket.available, remaining)
            elif remaining == 0 and reset is not None:
                self._pause(reset)

    def _congested(self, retry_after: float | None, *, counts: bool) -> None:
        """A 429: pause for the provider's retry-after; decrease once per congestion event."""
        if not counts:
            # Sent before the last decrease: the pause that decrease set already covers it,
            # and extending it for every late 429 of one burst would stall the group.
            return
        self._strikes += 1
        if retry_after is None or retry_after < 0:
            retry_after = min(MAX_BACKOFF_SECONDS, BACKOFF_SECONDS * 2 ** max(0, self._strikes - 1))
        self._pause(retry_after)
        self._epoch += 1
        if self._limit_per_second("requests") is None and self._limit_per_second("tokens") is None:
            # nothing known: the rate that failed becomes the guess
            failed = self._observed_rate if self._requests is None else self._requests.rate
            if self._requests is None and failed < MIN_RATE_TO_INFER:
                # A trickle of calls says nothing about a request limit (it may be tokens,
                # or overload): the pause alone answers the 429.
                return
            self._inferred_per_second = max(MIN_INFERRED_PER_SECOND, failed)
            self._scale = 0.5
        else:
            self._scale = max(MIN_SCALE, self._scale / 2)
        self._growing_since = self._paused_until
        self._set_rates()

    def _recovered(self) -> None:
        """A success of a call sent since the last decrease: grow the rate back."""
        self._strikes = 0
        if self._scale >= self._max_scale:
            return
        now = self._clock()
        if now > self._growing_since:
            speed = 0.5 if self._scale < 1 else PROBE_SPEED  # past a guess: probe slowly
            self._scale += (now - self._growing_since) * speed / RECOVERY_SECONDS
            self._scale = min(self._scale, self._max_scale)
            self._growing_since = now
            self._set_rates()

    def _pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self._clock() + seconds)


def positive(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 < value < math.inf else None
