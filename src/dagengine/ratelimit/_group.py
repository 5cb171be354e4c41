"""LimitGroup: the queue, pause and adaptive rate of calls that share one provider limit;
the Permit each admitted call holds (its group's receipt) and the Bucket each limit paces with.

How a group decides is described in the package docstring, dagengine/ratelimit/__init__.py.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Self

from . import _log
from ._evidence import Evidence, Trial

Clock = Callable[[], float]


def loop_time() -> float:
    """The running event loop's clock (time.monotonic unless a test runs virtual time)."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


HEADROOM = 0.98  # share of a configured or announced limit the client allows itself
INFERRED_HEADROOM = 0.95  # share of a limit read from 429s alone (a measure, not a figure)
START_FILL = 1.0  # share of its burst a configured limit allows at once when the run starts...
START_HOLD_SECONDS = 0.5  # ...refilling from the group's first answer, or this long after it
#   starts if none is back by then: the first requests may reach the provider late and bunched
#   (connections opening, a busy loop or provider), and only its bucket's refill counts then
RECOVERY_SECONDS = 4.0  # after a decrease of a known limit, time to grow from half back to it
MIN_SCALE = 1 / 64  # a known limit's allowed rate never drops below this share of it
BACKOFF_SECONDS = 1.0  # first pause after a 429 without retry-after; doubles, capped
MAX_BACKOFF_SECONDS = 60.0
MIN_RATE_TO_INFER = 2.0  # accepted calls/s below which a 429 is not read as a request limit
MIN_GUESS_ACCEPTED = 5  # ...nor with fewer calls let through in the window
MIN_INFERRED_PER_SECOND = 1 / 60  # an inferred limit is never below one request a minute
_EPS = 1e-9  # rounding slack when a timer fires exactly at a bucket's refill time


class ReportOnExit:
    """A permit as a (sync or async) context manager: on exit it reports failed() unless the
    body reported, so an exception or cancellation leaks nothing."""

    __slots__ = ()
    _released: bool

    def failed(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._released:
            self.failed()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if not self._released:
            self.failed()


class Permit(ReportOnExit):
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


class Bucket:
    """A continuous token bucket holding at most one second's worth (at least 1), or
    `capacity` when one is given."""

    __slots__ = ("available", "capacity", "fixed_capacity", "rate")

    def __init__(self, rate: float, available: float, capacity: float | None = None) -> None:
        self.rate = rate
        self.fixed_capacity = capacity
        self.capacity = capacity if capacity is not None else max(1.0, rate)
        self.available = min(available, self.capacity)

    def set_rate(self, rate: float) -> None:
        self.rate = rate
        if self.fixed_capacity is None:
            self.capacity = max(1.0, rate)
        self.available = min(self.available, self.capacity)

    def add(self, amount: float) -> None:
        self.available = min(self.capacity, self.available + amount)

    def delay(self, amount: float) -> float:
        """Seconds until `amount` fits; an amount above capacity fits a full bucket."""
        short = min(amount, self.capacity) - self.available
        return short / self.rate if short > _EPS else 0.0


# What tells a limit from noise (read over the admissions of the last WINDOW_SECONDS).
WINDOW_SECONDS = 1.0
LIMIT_RUN = 5  # this many consecutive admissions refused is a limit...
RUN_CHANCE = 1e-4  # ...or, once 429s are known as noise, a run that noise makes this rarely
LIMIT_SHARE = 0.3  # a share of 429s this high (or halfway from the noise share to 1)...
LIMIT_SHARE_SINCE = 0.5  # ...or this high since the window's first 429...
MIN_LIMIT_REFUSALS = 8  # ...is a limit once it counts this many
NEAR_LIMIT_SHARE = 0.01  # past an inferred limit, 429s since the last decrease at a share
#   this much above 1.5 times the noise share say it is lower
MIN_TEST_ADMISSIONS = 20  # admissions after an inferred decrease before it is confirmed...
MIN_TEST_REFUSALS = 3  # ...or 429s among them before it can be refuted
MIN_TEST_BEFORE = 5  # calls still out at the decrease that its test compares with
SAME_SHARE = 0.75  # a few 429s after it at 3/4 of the share before or more: noise
MAX_NOISE_SHARE = 0.75  # a share above this is never taken for noise
CONFIRM_SHARE = 0.05  # a share after it below half the one before and this: confirmed
MIN_MEASURE_SECONDS = 0.2  # an accepted rate is measured between two decreases this far...
MEASURE_SECONDS = 10.0  # ...to this far apart (beyond, a provider's bucket may overflow)
BURST_GUESS_SECONDS = 1.0  # a first guess takes the provider's burst as this much of its rate
OVERFLOWED = 0.8  # a measure below this share of the rate refused past a guess reads low

# A group with nothing known starts at a rate that doubles about once a round trip, so that
# a limit's first 429s (or its headers) come back while some calls, not all, are on their way.
RAMP_BURST = 16.0
RAMP_RATE = 100.0  # calls/s at the start
RAMP_DOUBLING_SECONDS = 0.1
RAMP_END_RATE = 100_000.0  # past this the ramp is dropped: the group admits at once...
RAMP_END_ANSWERS = 16  # ...as it is once this many answers are back, quickly

# Past an inferred limit the rate probes upwards, slowly first: 1 + (t / PROBE_SECONDS)**3.
PROBE_SECONDS_GUESS = 1.5  # the limit was guessed from the first acceptances
PROBE_SECONDS_MEASURED = 8.0  # it was measured between two decreases

class LimitGroup:
    """Calls that share one provider limit: one queue, one pause, one adaptive rate."""

    def __init__(
        self,
        name: str,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        clock: Clock = loop_time,
        ramp: bool = True,
    ) -> None:
        self.name = name
        self.requests_per_minute = requests_per_minute  # configured
        self.tokens_per_minute = tokens_per_minute
        self.learned_requests_per_minute: float | None = None  # from response headers
        self.learned_tokens_per_minute: float | None = None
        self.in_flight = 0
        self.waiting = 0
        self.rate_limited = 0  # 429s reported
        self._clock = _resolved(clock)
        now = self._clock()
        # pacing
        self._queue: deque[tuple[asyncio.Future[Permit], int]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._paused_until = -math.inf
        self._requests: Bucket | None = None
        self._tokens: Bucket | None = None
        self._refilled_at = now
        unknown = requests_per_minute is None and tokens_per_minute is None
        # A configured limit's bucket, and the ramp's of a group with nothing known, refill
        # from the first answer (or START_HOLD_SECONDS): the ramp's rate grows with time, so
        # a refill running before any answer would let a whole provider burst out blind when
        # the first answers come back late (connections opening, a busy loop or provider).
        self._refill_from = -math.inf if unknown and not ramp else now + START_HOLD_SECONDS
        self._scale = 1.0  # share of a known limit currently allowed
        self._growing_since = 0.0
        # A gateway that retries 429s itself starts at once, as a plain client would: the
        # blind first burst is what it absorbs.
        self._ramp_from: float | None = now if unknown and ramp else None
        self._ramp_answers = 0
        # what the 429s say
        self._epoch = 0  # bumped at every decrease and limit change
        self._epoch_admitted = 0
        self._epoch_refused = 0
        self._strikes = 0  # counted 429s since the last success, for the backoff
        self._recent: deque[Permit] = deque()  # admissions of the last WINDOW_SECONDS
        self._seq = 0  # admissions so far
        self._run = 0  # consecutive admissions refused, ending at _last_refused
        self._last_refused = 0
        self._answered_seq = 0  # latest admission of a call whose answer is back
        self._first_answer_at = math.inf
        self._latency: float | None = None  # smoothed duration of successful calls
        self._decreased_at = -math.inf
        self._next_decrease_at = -math.inf  # at most one decrease per window
        self._noise_share = 0.0  # share of 429s found not to be a limit
        self._inferred_per_second: float | None = None  # request limit read from 429s
        self._confirmed: float | None = None  # the last inferred limit a test confirmed
        self._trial: Trial | None = None
        self._measured = False  # the inferred limit was measured between two decreases
        self._probe_seconds = PROBE_SECONDS_GUESS
        self._probe_from = math.inf
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
                return self._admit(0, now)
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

    def ready_in(self, estimated_tokens: int = 0) -> float:
        """Seconds until a request of `estimated_tokens` could be admitted; <= 0: now.

        Non-blocking, takes nothing: a pool asks each target's group before it queues in
        one. Waiters already queued go first, so a group with a queue is never ready now,
        and each of them adds one request's time at the group's rate (the guess a pool
        compares its targets by).
        """
        now = self._refill()
        delay = self._delay(estimated_tokens, now)
        if not self._queue:
            return delay
        rate = self._requests.rate if self._requests is not None else 0.0
        return max(delay, _EPS) + (len(self._queue) / rate if rate > 0 else 0.0)

    @property
    def paused_until(self) -> float | None:
        """Clock time the group's 429 pause ends, None when not paused."""
        return self._paused_until if self._paused_until > self._clock() else None

    @property
    def allowed_requests_per_minute(self) -> float | None:
        """The request rate the group paces at; None while it admits at once (or ramps up
        at its start, having learned nothing yet)."""
        if self._requests is None or self._ramp_from is not None:
            return None
        return self._requests.rate * 60

    @property
    def allowed_tokens_per_minute(self) -> float | None:
        return self._tokens.rate * 60 if self._tokens else None

    @property
    def inferred_requests_per_minute(self) -> float | None:
        """The request limit read from 429s alone (no configured or learned limit)."""
        inferred = self._inferred_per_second
        return inferred * 60 if inferred is not None else None

    @property
    def noise_share(self) -> float:
        """The share of requests answered 429 that the group has found not to be a limit."""
        return self._noise_share

    def snapshot(self) -> dict[str, float | None]:
        return {
            "requests_per_minute": self.requests_per_minute,
            "tokens_per_minute": self.tokens_per_minute,
            "learned_requests_per_minute": self.learned_requests_per_minute,
            "learned_tokens_per_minute": self.learned_tokens_per_minute,
            "inferred_requests_per_minute": self.inferred_requests_per_minute,
            "allowed_requests_per_minute": self.allowed_requests_per_minute,
            "allowed_tokens_per_minute": self.allowed_tokens_per_minute,
            "in_flight": self.in_flight,
            "waiting": self.waiting,
            "rate_limited": self.rate_limited,
            "noise_share": self._noise_share,
            "paused_until": self.paused_until,
        }

    def __repr__(self) -> str:
        return f"<LimitGroup {self.name!r} {self.snapshot()}>"

    # -- admission ---------------------------------------------------------------------

    def _refill(self) -> float:
        now = self._clock()
        if self._requests is None and self._tokens is None:
            self._refilled_at = now  # a bucket made later starts from here
            return now
        elapsed = now - max(self._refilled_at, self._refill_from)
        if elapsed > 0:
            if self._requests is not None:
                self._requests.add(elapsed * self._requests.rate)
            if self._tokens is not None:
                self._tokens.add(elapsed * self._tokens.rate)
        self._refilled_at = max(self._refilled_at, now)
        if self._ramp_from is not None and self._requests is not None:
            self._ramp(now)
        return now

    def _ramp_answered(self) -> None:
        self._ramp_answers += 1
        quick = self._latency is not None and self._latency < RAMP_DOUBLING_SECONDS / 2
        if quick and self._ramp_answers >= RAMP_END_ANSWERS:
            # Answers come back well within the ramp's doubling time: a limit's 429s would
            # too, before its rate has grown much, so the ramp protects nothing.
            self._ramp_from = None
            self._requests = None

    def _ramp(self, now: float) -> None:
        assert self._ramp_from is not None and self._requests is not None
        rate = RAMP_RATE * 2 ** ((now - self._ramp_from) / RAMP_DOUBLING_SECONDS)
        if rate < RAMP_END_RATE:
            self._requests.set_rate(rate)
        else:
            self._ramp_from = None
            self._requests = None

    def _delay(self, tokens: int, now: float) -> float:
        """Seconds until a request of `tokens` may start (<= 0: now)."""
        delay = self._paused_until - now
        held = max(0.0, self._refill_from - now)
        if self._requests is not None and (wait := self._requests.delay(1)):
            delay = max(delay, held + wait)
        if tokens and self._tokens is not None and (wait := self._tokens.delay(tokens)):
            delay = max(delay, held + wait)
        return delay

    def _admit(self, tokens: int, now: float) -> Permit:
        self.in_flight += 1
        self._epoch_admitted += 1
        self._seq += 1
        if self._trial is not None and self._trial.start is not None:
            self._trial.admitted += 1
        if self._requests is not None:
            self._requests.available -= 1
        if self._tokens is None:
            tokens = 0
        else:
            self._tokens.available -= tokens
        permit = Permit(self, self._requests is not None, tokens, self._epoch, now, self._seq)
        recent = self._recent
        recent.append(permit)
        while recent[0]._admitted_at < now - WINDOW_SECONDS:
            recent.popleft()
        return permit

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
        now = self._refill()
        self._answered(permit, now)
        duration = now - permit._admitted_at
        self._latency = duration if self._latency is None else (7 * self._latency + duration) / 8
        if used_tokens is not None and self._tokens is not None:
            self._tokens.add(permit._tokens - used_tokens)
        if rate_limit:
            self._learn(rate_limit)
        if self._ramp_from is not None:
            self._ramp_answered()
        if permit._epoch == self._epoch:
            test = self._trial
            if (
                test is not None
                and test.admitted >= MIN_TEST_ADMISSIONS / 2
                and test.after <= CONFIRM_SHARE
                and test.fell()
            ):
                self._confirm()
            self._recovered(now)
        self._dispatch()

    def _refused(
        self,
        permit: Permit,
        retry_after: float | None,
        rate_limit: Mapping[str, float | None] | None,
    ) -> None:
        self.rate_limited += 1
        self._give_back(permit, request=False)  # a refused request used no tokens
        permit._refused = True
        if self._ramp_from is not None:
            self._ramp_answered()
        test = self._trial
        if test is not None:
            if test.start is not None and permit._admitted_at >= test.start:
                test.refused += 1
            elif test.first_seq <= permit._seq <= test.last_seq:
                test.refused_before += 1
        self._answered(permit, self._clock())
        if permit._epoch == self._epoch:
            self._epoch_refused += 1
        if permit._seq == self._last_refused + 1:
            self._run += 1
        elif permit._seq > self._last_refused:
            self._run = 1
        self._last_refused = max(self._last_refused, permit._seq)
        exhausted = bool(rate_limit) and _exhausted(rate_limit or {})
        if rate_limit:
            self._learn(rate_limit)
        if permit._epoch == self._epoch:
            self._congested(retry_after, exhausted=exhausted)
        self._dispatch()

    def _answered(self, permit: Permit, now: float) -> None:
        if self._first_answer_at > now:
            self._first_answer_at = now
            self._refill_from = min(self._refill_from, now)
        if permit._seq > self._answered_seq:
            self._answered_seq = permit._seq
        test = self._trial
        if test is not None and test.start is None and permit._epoch == self._epoch:
            # Calls admitted since the decrease may have queued behind earlier ones and
            # reached the provider bunched; from here on they arrive at the new pace.
            test.start = now

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

    @property
    def _known(self) -> bool:
        """A limit was configured or learned from headers (not only read from 429s)."""
        return self._limit_per_second("requests") is not None or (
            self._limit_per_second("tokens") is not None
        )

    def _limit_per_second(self, unit: str) -> float | None:
        """The lower of the configured and learned limits, per second, with headroom."""
        if unit == "requests":
            known = [self.requests_per_minute, self.learned_requests_per_minute]
        else:
            known = [self.tokens_per_minute, self.learned_tokens_per_minute]
        limits = [limit for limit in known if limit is not None]
        return min(limits) * HEADROOM / 60 if limits else None

    def _set_rates(self, *, start: float = 0.0, why: str | None = None) -> None:
        """Apply limits and scale to the buckets; a new one starts `start` full. `why`: the
        reason logged with the change (see _log)."""
        before = _log.allowed(self) if why and _log.log.isEnabledFor(logging.INFO) else None
        now = self._refill()
        requests = self._limit_per_second("requests")
        tokens = self._limit_per_second("tokens")
        if requests is not None:
            requests *= self._scale
        elif self._inferred_per_second is not None:
            requests = self._inferred_per_second * INFERRED_HEADROOM * self._probe_factor(now)
        if requests is not None or tokens is not None:
            self._ramp_from = None  # something is known: the start is over
        if self._ramp_from is not None:
            if self._requests is None:
                self._requests = Bucket(RAMP_RATE, RAMP_BURST, capacity=RAMP_BURST)
            self._ramp(now)
        else:
            if self._requests is not None and self._requests.fixed_capacity is not None:
                self._requests = None  # the ramp's bucket: a limit starts its own
            self._requests = _rebuilt(self._requests, requests, start)
        self._tokens = _rebuilt(self._tokens, tokens * self._scale if tokens else None, start)
        if before is not None and why:
            _log.rates_changed(self, before, why)

    def _probe_factor(self, now: float) -> float:
        if now <= self._probe_from:
            return 1.0
        return 1.0 + ((now - self._probe_from) / self._probe_seconds) ** 3

    def _learn(self, rate_limit: Mapping[str, float | None]) -> None:
        requests = positive(rate_limit.get("requests_per_minute"))
        tokens = positive(rate_limit.get("tokens_per_minute"))
        ramping = self._ramp_from is not None
        changed = False
        if requests is not None and requests != self.learned_requests_per_minute:
            self.learned_requests_per_minute = requests
            changed = True
        if tokens is not None and tokens != self.learned_tokens_per_minute:
            self.learned_tokens_per_minute = tokens
            changed = True
        if changed:
            self._bump_epoch()  # 429s for calls sent before we knew do not count
            self._inferred_per_second = self._confirmed = None
            self._trial = None
            self._scale = min(self._scale, 1.0)
            self._set_rates(why=_log.HEADERS)
            remaining = rate_limit.get("requests_remaining")
            if ramping and self._requests is not None and isinstance(remaining, int | float) \
                    and requests is not None:
                # Learned from the first answers: what remains of the provider's burst may
                # go now, less the calls still out (counted there or on their way).
                self._requests.available = max(0.0, min(remaining, self._requests.capacity)
                                               - self.in_flight)
        reset = positive(rate_limit.get("reset_seconds"))
        for key, unit, bucket in (
            ("requests_remaining", "requests", self._requests),
            ("tokens_remaining", "tokens", self._tokens),
        ):
            remaining = rate_limit.get(key)
            if remaining is None or remaining < 0:
                continue
            if self._limit_per_second(unit) is not None and bucket is not None:
                self._refill()
                bucket.available = min(bucket.available, remaining)
            elif remaining == 0 and reset is not None:
                self._pause(reset)

    def _congested(self, retry_after: float | None, *, exhausted: bool) -> None:
        """A 429 for a call sent since the last decrease: a limit, or noise?

        Noise (429s at a low share while the rest gets through) only delays the call that
        got it. A limit slows the group down, at most once per window, and pauses it only
        when nothing gets through (or the headers say nothing remains).
        """
        now = self._clock()
        if now < self._next_decrease_at:
            return
        evidence = self._evidence(now)
        if exhausted or evidence.nothing_through:
            self._decrease(now, retry_after, evidence, pause=True)
            return
        test = self._trial
        if test is not None:
            verdict = self._verdict(test)
            if verdict is None:
                return  # too early to tell: the decrease under test answers for now
            if verdict == "higher":
                # Fewer 429s, but still many: past the limit yet, and the rate the provider
                # accepted since the decrease measures it.
                self._decrease(now, retry_after, evidence, pause=False, fell_before=True)
                return
            if verdict == "noise":
                # Slowing down made them no rarer: they are not a limit (or, after a first
                # decrease did make them rarer, what is left of them is not).
                self._noise_share = min(MAX_NOISE_SHARE, max(self._noise_share, test.after))
                self._trial = None
                if test.fell_before:
                    self._confirmed = test.inferred_before
                self._inferred_per_second = self._confirmed
                self._probe_from = math.inf if self._confirmed is None else now
                self._set_rates(why=_log.NOISE)
                return
        epoch_share = self._epoch_refused / max(1, self._epoch_admitted)
        near = (
            self._inferred_per_second is not None
            and epoch_share > self._noise_share * 1.5 + NEAR_LIMIT_SHARE
        )
        if near or self._looks_like_a_limit(evidence):
            self._decrease(now, retry_after, evidence, pause=False, near_limit=near)

    def _verdict(self, test: Trial) -> str | None:
        """None (too early), "lower" (429s rare now: confirmed), "noise", or "higher" (fewer,
        but still past the limit). A few 429s can refute a limit before many answers
        confirm one."""
        if test.start is None:
            return None
        plausible = test.after <= MAX_NOISE_SHARE  # most get through, as noise lets them
        if test.admitted < MIN_TEST_ADMISSIONS:
            if (
                plausible
                and test.refused >= MIN_TEST_REFUSALS
                and test.after >= SAME_SHARE * test.before
            ):
                return "noise"
            if test.admitted >= MIN_TEST_ADMISSIONS / 2 and test.refused == 0 and test.fell():
                self._confirm()
                return "lower"
            return None
        if plausible and not test.fell():
            return "noise"
        if test.after > CONFIRM_SHARE:
            return "higher"
        self._confirm()
        return "lower"

    def _confirm(self) -> None:
        self._trial = None
        self._confirmed = self._inferred_per_second
        self._probe_from = max(self._clock(), self._next_decrease_at)

    def _evidence(self, now: float) -> Evidence:
        """What the admissions of the last window say.

        Providers answer a 429 at once, so a call still out that was admitted before one
        whose answer is back was let through; one admitted after every answer that is back
        is counted as going through at the share that did since the window's first 429.
        """
        evidence = Evidence()
        oldest = now - WINDOW_SECONDS
        answered_since = refused_since = 0
        for permit in self._recent:
            if permit._admitted_at < oldest:
                continue
            evidence.admitted += 1
            if permit._refused:
                evidence.refused += 1
                refused_since += 1
                answered_since += 1
                evidence.first_refused = evidence.first_refused or permit._seq
            elif permit._released or permit._seq < self._answered_seq:
                evidence.through += 1
                answered_since += bool(refused_since)
            else:
                evidence.unknown += 1
                evidence.unknown_in_epoch += permit._epoch == self._epoch
        if answered_since:
            evidence.share_since = refused_since / answered_since
        return evidence

    def _looks_like_a_limit(self, evidence: Evidence) -> bool:
        """429s clustered in a run, or at a high share: of the window, or of what followed
        its first 429 (a provider's burst may have let everything before it through)."""
        noise = self._noise_share
        run = LIMIT_RUN
        if noise > 0:
            run = max(run, math.ceil(math.log(RUN_CHANCE) / math.log(noise)))
        if self._run >= run:
            return True
        if evidence.refused < MIN_LIMIT_REFUSALS or 2 * evidence.unknown > evidence.admitted:
            return False  # too few answers to weigh yet (429s come back before the rest)
        share = max(LIMIT_SHARE, (1 + noise) / 2)
        since = max(LIMIT_SHARE_SINCE, (1 + noise) / 2)
        return evidence.share >= share or evidence.share_since >= since

    def _decrease(
        self,
        now: float,
        retry_after: float | None,
        evidence: Evidence,
        *,
        pause: bool,
        near_limit: bool = False,
        fell_before: bool = False,
    ) -> None:
        """A limit: pause when nothing gets through, and pace at what does."""
        pause_seconds = self._pause_for(retry_after) if pause else 0.0
        rate, measured = self._accepted_rate(now, evidence)
        if self._known:
            # Halved, but never below what got through over the window: 429s for a limit
            # the client keeps to (requests bunched on their way) leave its rate alone.
            requests = self._limit_per_second("requests")
            span = max(MIN_MEASURE_SECONDS, min(WINDOW_SECONDS, now - self._first_answer_at))
            floor = evidence.accepted / span / requests if requests else 0.0
            self._scale = max(MIN_SCALE, self._scale / 2, min(1.0, floor))
        elif pause or rate <= 0 or (self._inferred_per_second is None and (
            rate < MIN_RATE_TO_INFER or evidence.accepted < MIN_GUESS_ACCEPTED
        )):
            # Nothing gets through (the pause answers), or a trickle of calls says nothing
            # about a request limit (it may be tokens, or overload), or too few got through
            # yet to tell what it is: look again in a window.
            self._next_decrease_at = now + self._window_after(pause_seconds)
            return
        else:
            self._infer(now, rate, measured, evidence, near_limit, fell_before)
        self._bump_epoch()
        self._decreased_at = now
        self._next_decrease_at = now + self._window_after(pause_seconds)
        self._growing_since = max(now, self._paused_until)
        # A new limit probes once its test confirms it; a correction after the window.
        self._probe_from = math.inf if self._trial is not None else self._next_decrease_at
        self._set_rates(why=_log.DECREASE)
        if self._requests is not None:
            self._requests.available = min(self._requests.available, 0.0)

    def _infer(
        self,
        now: float,
        rate: float,
        measured: bool,
        evidence: Evidence,
        near_limit: bool,
        fell_before: bool,
    ) -> None:
        """Take `rate`, what the provider accepted, as its limit; put a new one on trial."""
        previous = self._inferred_per_second
        if previous is not None:
            if near_limit and not self._measured:
                rate = max(rate, self._refused_past_a_guess(now, rate, evidence))
            rate = max(rate, previous / 2)  # at most halved at once
        self._inferred_per_second = max(MIN_INFERRED_PER_SECOND, rate)
        self._measured = measured
        self._probe_seconds = PROBE_SECONDS_MEASURED if measured else PROBE_SECONDS_GUESS
        self._ramp_from = None
        if near_limit and self._trial is None:
            self._confirmed = self._inferred_per_second  # a correction, not a new limit
            return
        # Before: the calls whose answers were not back yet (the ones that were decided
        # this, a run of 429s say, would make any share after it look lower); else those
        # since the window's first 429.
        first = self._answered_seq + 1
        if self._seq - first + 1 < MIN_TEST_BEFORE:
            first = evidence.first_refused or self._seq + 1
        refused = sum(p._refused for p in self._recent if p._seq >= first)
        self._trial = Trial(first, max(first, self._seq), refused, previous, fell_before)

    def _refused_past_a_guess(self, now: float, rate: float, evidence: Evidence) -> float:
        """After a guess, a measure well below the rate calls were just sent and refused at
        reads low (the provider's bucket filled up, and overflowed, while the client paced
        below the guess): the limit is then not far below that rate."""
        if not self._recent:
            return rate
        span = max(MIN_MEASURE_SECONDS, now - self._recent[0]._admitted_at)
        sent = evidence.admitted / min(WINDOW_SECONDS, span)
        if self._requests is not None:
            sent = min(sent, self._requests.rate)
        if rate >= OVERFLOWED * sent:
            return rate
        return INFERRED_HEADROOM * sent * (1 - evidence.share)

    def _pause_for(self, retry_after: float | None) -> float:
        """Pause the group for the provider's retry-after, else a doubling backoff."""
        self._strikes += 1
        if retry_after is None or retry_after < 0:
            retry_after = min(MAX_BACKOFF_SECONDS, BACKOFF_SECONDS * 2 ** (self._strikes - 1))
        self._pause(retry_after)
        return retry_after

    def _window_after(self, pause_seconds: float) -> float:
        """Seconds before the next decrease: the pause, a round trip, or MIN_MEASURE_SECONDS."""
        return max(pause_seconds, self._latency or 0.0, MIN_MEASURE_SECONDS)

    def _accepted_rate(self, now: float, evidence: Evidence) -> tuple[float, bool]:
        """Requests/s the provider accepted, and whether that was measured between two
        decreases (the provider's bucket empty at both) rather than guessed."""
        span = now - self._decreased_at
        if MIN_MEASURE_SECONDS <= span <= MEASURE_SECONDS and self._epoch_admitted:
            unknown = evidence.unknown_in_epoch * evidence.share_since  # presumed refused
            accepted = self._epoch_admitted - self._epoch_refused - unknown
            return max(0.0, accepted) / span, True
        answering = now - self._first_answer_at
        if answering >= WINDOW_SECONDS:
            return evidence.accepted / WINDOW_SECONDS, False
        # What the provider let through since answers started coming back, its burst
        # included, taken as about a second's worth.
        return evidence.accepted / (answering + BURST_GUESS_SECONDS), False

    def _bump_epoch(self) -> None:
        self._epoch += 1
        self._epoch_admitted = 0
        self._epoch_refused = 0

    def _recovered(self, now: float) -> None:
        """A success of a call sent since the last decrease: grow the rate back."""
        self._strikes = 0
        if self._inferred_per_second is not None and not self._known:
            if now > self._probe_from:
                self._set_rates(why=_log.PROBE)
            return
        if self._scale >= 1.0:
            return
        if now > self._growing_since:
            self._scale += (now - self._growing_since) * 0.5 / RECOVERY_SECONDS
            self._scale = min(self._scale, 1.0)
            self._growing_since = now
            self._set_rates(why=_log.RECOVERY)

    def _pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self._clock() + seconds)


def _resolved(clock: Clock) -> Clock:
    """loop_time as the running loop's own clock, looked up once."""
    if clock is not loop_time:
        return clock
    try:
        return asyncio.get_running_loop().time
    except RuntimeError:
        return time.monotonic


def _rebuilt(bucket: Bucket | None, rate: float | None, start: float) -> Bucket | None:
    if rate is None:
        return None
    if bucket is None:
        return Bucket(rate, max(1.0, start * rate) if start else 0.0)
    bucket.set_rate(rate)
    return bucket


def _exhausted(rate_limit: Mapping[str, float | None]) -> bool:
    """The headers say no request or no token is left."""
    return rate_limit.get("requests_remaining") == 0 or rate_limit.get("tokens_remaining") == 0


def positive(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 < value < math.inf else None
