"""One attempt's request within the rate limits, when the provider is a pool or the run
hedges (call.py sends plain requests itself):

* To a pool (providers/_pool.py): the target that can send now, by weight; a target that
  answers 429 or fails (5xx, timeout, reset) is avoided until its retry-after (or a backoff)
  has passed and the request moves on at once to another target that can send now. Only
  when none can does the error go back to the call, whose retry waits as for any provider.
  Each request a target sends counts as one of the call's attempts.
* Hedged (dagengine/_hedge.py): once the call has run past its key's latency quantile, one
  duplicate goes to another target of the pool that can send now (else to the same
  provider, if it can), within the budget; the first answer wins and the other request is
  cancelled, which closes its connection. Never in batch mode, and never for a request
  whose metadata a before_provider_execute hook set to {"idempotent": False}. A duplicate
  never waits for capacity: one that cannot go now is not sent. It runs within its call's
  concurrency slot.

The cancelled one is paid for its input: its tokens are counted as the estimate counts a
prompt's (estimate.count_tokens), priced at its model, and added to the call's tokens and
cost; a duplicate that answered too (both at once) is counted at what it reported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from . import _permitted
from ._hedge import Hedger, LatencyKey
from ._run import Run
from .errors import ProviderError
from .estimate import count_tokens
from .plugin import Observers
from .providers._pool import PoolProvider, PoolTarget
from .providers.base import BaseProvider
from .ratelimit import LimitGroup, Permit
from .ratelimit._group import loop_time
from .retry import is_retryable
from .types import Dimension, ProviderRequest, ProviderResponse, TokenUsage


@dataclass(slots=True)
class Sent:
    """What an attempt's routed request came back with."""

    response: ProviderResponse
    target: str | None = None  # the pool target that answered
    requests: int = 1  # requests the attempt sent (moving on after a 429 sends more)
    hedged: bool = False  # a duplicate was sent
    lost_tokens: TokenUsage = field(default_factory=TokenUsage)  # the cancelled one's
    lost_cost: float = 0.0


def routes(run: Run, provider: BaseProvider) -> bool:
    """Whether `provider`'s requests go through here rather than call.py's plain path."""
    return run.hedger is not None or isinstance(provider, PoolProvider)


def hedgeable(run: Run, dimension: Dimension, request: ProviderRequest) -> bool:
    mode = dimension.mode or run.config.mode
    return run.hedger is not None and mode != "batch" \
        and request.metadata.get("idempotent") is not False


@dataclass(slots=True)
class _Route:
    """One attempt's request and where it may go."""

    run: Run
    observers: Observers
    provider: BaseProvider
    request: ProviderRequest
    dimension: str
    tokens: int  # the rate limiter's estimate
    requests: int = 0

    @property
    def model(self) -> str | None:
        model = self.request.options.get("model")
        return model if isinstance(model, str) else None

    @property
    def pool(self) -> PoolProvider | None:
        return self.provider if isinstance(self.provider, PoolProvider) else None

    def plain_group(self) -> LimitGroup:
        return self.run.limiter.group(self.provider.name, self.model,
                                      ramp=not self.provider.handles_retries)


async def send(run: Run, observers: Observers, provider: BaseProvider, request: ProviderRequest,
               dimension: Dimension, tokens: int, on_sent: Callable[[], None]) -> Sent:
    """The answer to one attempt's request, through the pool's targets and hedged as the run
    says; raises what the last request raised."""
    route = _Route(run, observers, provider, request, dimension.name, tokens)
    hedger = run.hedger
    if hedger is None or not hedgeable(run, dimension, request):
        response, target = await _moving_on(route, on_sent)
        return Sent(response, target.name if target else None, route.requests)
    return await _hedged(route, hedger, on_sent)


async def _moving_on(route: _Route, on_sent: Callable[[], None],
                     sent: Callable[[PoolTarget | None], None] | None = None,
                     ) -> tuple[ProviderResponse, PoolTarget | None]:
    """The answer of the target that can send now, moving on past those that refuse."""
    pool = route.pool
    if pool is None:
        permit = await route.plain_group().acquire(route.tokens)
        if sent is not None:
            sent(None)
        return await _one(route, route.provider, route.request, permit, None, on_sent), None
    tried: list[PoolTarget] = []
    error: BaseException | None = None
    while True:
        now = loop_time()
        choice = pool.choose(route.run.limiter, route.model, route.tokens, now, exclude=tried)
        if error is not None and (choice is None or choice[1] > 0):
            raise error  # no other target can send now: the call's retry waits
        if choice is None:  # every target excluded: cannot happen without an error
            raise ProviderError(f"{pool.name}: no pool target to send to", provider=pool.name)
        target, wait = choice
        if wait > 0 and target.avoid_until > now:
            await asyncio.sleep(target.avoid_until - now)
            continue
        permit = await pool.group(route.run.limiter, target, route.model).acquire(route.tokens)
        if sent is not None:
            sent(target)
        try:
            response = await _one(route, target.bound, pool.request_for(target, route.request),
                                  permit, target, on_sent)
        except (ProviderError, TimeoutError, ConnectionError) as exc:
            if not is_retryable(exc):
                raise
            status = getattr(exc, "status_code", None)
            target.avoid(loop_time(), getattr(exc, "retry_after", None) if status == 429 else None)
            tried.append(target)
            error = exc
            continue
        target.answered()
        return response, target


async def _one(route: _Route, sender: BaseProvider, request: ProviderRequest, permit: Permit,
               target: PoolTarget | None, on_sent: Callable[[], None], *,
               hedge: bool = False) -> ProviderResponse:
    """One request to one provider under its permit (as call.py's plain path sends one)."""
    name, dimension, observers = route.provider.name, route.dimension, route.observers
    if not hedge:  # a duplicate is no attempt of the call's; the hedger counted it
        route.requests += 1
        if route.run.hedger is not None:
            route.run.hedger.sent()
    on_sent()
    await observers.call("request_sent", dimension, name)
    if target is not None or hedge:
        await observers.call("request_routed", dimension, name,
                             target.name if target is not None else None, hedge)
    return await _permitted.execute(sender, request, permit, observers, dimension, name)


# -- hedging --------------------------------------------------------------------------------


async def _hedged(route: _Route, hedger: Hedger, on_sent: Callable[[], None]) -> Sent:
    key: LatencyKey = (route.provider.name, route.model, route.dimension)
    loop = asyncio.get_running_loop()
    first_sent = asyncio.Event()
    sent_at: list[float] = []
    first_target: list[PoolTarget | None] = [None]

    def primary_sent() -> None:
        if not sent_at:
            sent_at.append(loop.time())
            first_sent.set()
        on_sent()

    def primary_target(target: PoolTarget | None) -> None:
        first_target[0] = target

    primary = asyncio.create_task(_moving_on(route, primary_sent, primary_target))
    duplicate: asyncio.Task[tuple[ProviderResponse, PoolTarget | None]] | None = None
    duplicate_at = 0.0
    try:
        if not await _past_threshold(primary, first_sent, sent_at, hedger, key):
            response, target = await primary
            hedger.record(key, loop.time() - sent_at[0])
            return Sent(response, target.name if target else None, route.requests)
        duplicate = _launch_duplicate(route, hedger, first_target[0])
        if duplicate is None:
            response, target = await primary
            hedger.record(key, loop.time() - sent_at[0])
            return Sent(response, target.name if target else None, route.requests)
        duplicate_at = loop.time()
        winner = await _first_answer(primary, duplicate)
        loser = duplicate if winner is primary else primary
        if winner is duplicate:
            hedger.won += 1
            hedger.record(key, loop.time() - duplicate_at)  # a draw of its own
        hedger.record(key, loop.time() - sent_at[0])  # the first: its time, or a bound on it
        response, target = winner.result()
        lost_tokens, lost_cost = await _settle_loser(route, loser)
        return Sent(response, target.name if target else None, route.requests, hedged=True,
                    lost_tokens=lost_tokens, lost_cost=lost_cost)
    finally:
        for task in (primary, duplicate):
            if task is not None and not task.done():
                task.cancel()
        await asyncio.gather(*(t for t in (primary, duplicate) if t is not None),
                             return_exceptions=True)


async def _past_threshold(primary: asyncio.Task[object], first_sent: asyncio.Event,
                          sent_at: list[float], hedger: Hedger, key: LatencyKey) -> bool:
    """Wait until the first request is answered (False) or has run past its key's
    threshold (True)."""
    waiter = asyncio.create_task(first_sent.wait())
    try:
        await asyncio.wait({primary, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if primary.done():
        return False
    threshold = hedger.threshold(key)
    if threshold is None:
        return False
    remaining = threshold - (asyncio.get_running_loop().time() - sent_at[0])
    if remaining > 0:
        await asyncio.wait({primary}, timeout=remaining)
    return not primary.done()


def _launch_duplicate(route: _Route, hedger: Hedger, first: PoolTarget | None,
                      ) -> asyncio.Task[tuple[ProviderResponse, PoolTarget | None]] | None:
    """The duplicate's task, when a target can send it now and the budget allows it."""
    pool, limiter, now = route.pool, route.run.limiter, loop_time()
    target: PoolTarget | None = None
    if pool is not None:
        for exclude in ([first] if first is not None else [], []):
            choice = pool.choose(limiter, route.model, route.tokens, now, exclude=exclude)
            if choice is not None and choice[1] <= 0:
                target = choice[0]
                break
        if target is None:
            return None
        group = pool.group(limiter, target, route.model)
    else:
        group = route.plain_group()
        if group.ready_in(route.tokens) > 0:
            return None
    if not hedger.reserve():
        return None

    async def duplicate() -> tuple[ProviderResponse, PoolTarget | None]:
        permit = await group.acquire(route.tokens)
        if target is None or pool is None:
            return await _one(route, route.provider, route.request, permit, None, _nothing,
                              hedge=True), None
        response = await _one(route, target.bound, pool.request_for(target, route.request),
                              permit, target, _nothing, hedge=True)
        return response, target

    return asyncio.create_task(duplicate())


def _nothing() -> None:
    pass


_Answer = asyncio.Task[tuple[ProviderResponse, PoolTarget | None]]


async def _first_answer(primary: _Answer, duplicate: _Answer) -> _Answer:
    """The first of the two to answer; when both fail, the first request's error."""
    pending: set[_Answer] = {primary, duplicate}
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in sorted(done, key=lambda t: t is not primary):  # the first request first
            if task.exception() is None:
                return task
    if primary.exception() is not None:
        raise primary.exception()  # type: ignore[misc]
    return primary


async def _settle_loser(route: _Route, loser: _Answer) -> tuple[TokenUsage, float]:
    """Cancel the loser; what it is paid for: its input when cancelled, what it reported
    when it answered too, nothing when it was refused."""
    if not loser.done():
        loser.cancel()
    await asyncio.wait({loser})  # its cancellation done: the connection is closed
    pricing, model = route.run.pricing, route.model
    if not loser.cancelled():
        if loser.exception() is not None:
            return TokenUsage(), 0.0
        response, _ = loser.result()
        tokens = response.metadata.get("tokens")
        if not isinstance(tokens, TokenUsage):
            return TokenUsage(), 0.0
        return tokens, pricing.cost(response.metadata.get("model") or model, tokens)
    request = route.request
    input_tokens = count_tokens(request.input, request.options.get("system"))
    tokens = TokenUsage.of(input_tokens, 0)
    return tokens, pricing.cost(model, tokens)
