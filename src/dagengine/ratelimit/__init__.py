"""Client-side rate limits: calls wait for capacity instead of being refused, and adapt to 429s.

A run has one RateLimiter. Each call asks it for the LimitGroup that shares its provider
limit and holds a Permit from that group while its request is in flight::

    async with await limiter.group("openai", "gpt-4o").acquire(estimated_tokens) as permit:
        response = await provider.execute(request)
        permit.success(used_tokens, rate_limit)  # or permit.rate_limited(retry_after, ...)

How a group decides:

* Requests and tokens each pass a continuous token bucket refilled at the allowed rate and
  holding at most one second's worth (at least one request), so a limit holds under any
  concurrency and never lets a minute's worth out at once. A request larger than the token
  bucket goes when the bucket is full and leaves it in debt; on success the estimate is
  replaced by the actual usage. A configured limit starts half full: the first requests
  reach the provider late and bunched while connections open, and its bucket cannot bank
  that time. A limit learned mid-run starts empty (the provider has just seen traffic).
* The allowed rate is HEADROOM of the limit (the lower of the configured one and the one
  learned from response headers): latency jitters arrivals at the provider, and a client
  pacing at exactly its rate has no slack for a request that arrives a little early.
* A 429 pauses the whole group until its retry-after (an exponential backoff when the
  provider gave none) and halves the allowed rate, which then grows back linearly, reaching
  the limit RECOVERY_SECONDS after the pause if successes keep coming. Permits carry the
  group's epoch at admission and only a 429 for a permit admitted after the last decrease
  (or limit change) decreases again, so a burst of 429s sent together shrinks the rate once.
* A group with nothing known admits at once. Its first 429 turns the rate it was sending at
  (an EWMA over about a second) into a guessed limit, which then adapts the same way but,
  being a guess, slowly probes past itself.
* requests_remaining / tokens_remaining cap what a bucket holds. When one is 0 and the group
  has no rate for it, the group pauses until reset_seconds; with a rate, waiting for the
  next unit suffices, as providers' "reset" is when the window is *fully* replenished.
* Waiters are served first in, first out, woken by one timer per group set for the moment
  the head of the queue fits; admissions and reports re-check the head, nothing polls.

Why not aiolimiter.AsyncLimiter: its waiters are ordered by amount (a large token request
starves behind small ones), it reads the loop clock, it has no pause or rate change, and
chaining two limiters holds one while waiting for the other and leaks it on cancellation.
One small gate checking every condition at once is simpler than wrapping it.
"""

from ._group import LimitGroup, Permit
from ._limiter import RateLimiter

__all__ = ["LimitGroup", "Permit", "RateLimiter"]
