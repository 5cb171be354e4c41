"""Client-side rate limits: calls wait for capacity instead of being refused, and adapt to 429s.

A run has one RateLimiter. Each call asks it for the LimitGroup that shares its provider
limit and holds a Permit from that group while its request is in flight::

    async with await limiter.group("openai", "gpt-4o").acquire(estimated_tokens) as permit:
        response = await provider.execute(request)
        permit.success(used_tokens, rate_limit)  # or permit.rate_limited(retry_after, ...)

Pacing:

* Requests and tokens each pass a continuous token bucket refilled at the allowed rate and
  holding at most one second's worth (at least one request), so a limit holds under any
  concurrency and never lets a minute's worth out at once. A request larger than the token
  bucket goes when the bucket is full and leaves it in debt; on success the estimate is
  replaced by the actual usage.
* The allowed rate is HEADROOM (98 %) of the limit: the lower of the configured one and the
  one learned from response headers. A configured limit starts with its bucket full, but it
  refills only from the group's first answer (or START_HOLD_SECONDS): the first requests may
  reach the provider late and bunched (connections opening, a busy loop), and only its own
  bucket's refill counts then. A limit learned mid-run starts empty; one learned from the
  first answers, while the group still ramps, with what the headers say remains less the
  calls still out.
* A group with nothing known ramps up: RAMP_BURST calls at once, then a rate that doubles
  every RAMP_DOUBLING_SECONDS until, a few tenths of a second in, it admits at once. A
  provider's first 429s then come back while some calls, not all, are on their way. Its
  bucket refills only from the group's first answer (or START_HOLD_SECONDS in, if none is
  back by then): however late the first answers come back, no more than RAMP_BURST calls
  go out before them.
* requests_remaining / tokens_remaining cap what a bucket holds. When one is 0 and the group
  has no rate for it, the group pauses until reset_seconds; with a rate, waiting for the
  next unit suffices, as providers' "reset" is when the window is *fully* replenished.
* Waiters are served first in, first out, woken by one timer per group set for the moment
  the head of the queue fits; admissions and reports re-check the head, nothing polls.

A 429, limit or noise (read over the admissions of the last WINDOW_SECONDS; a call still out
that was admitted before one whose answer is back counts as let through, as providers answer
a 429 at once):

* Every 429 delays its own call: the call waits for its retry-after (call.py) and gives its
  concurrency slot back meanwhile. Nothing else happens unless the evidence says limit:
  the headers say nothing remains; nothing in the window got through; LIMIT_RUN
  consecutive admissions refused (a burst allowance running out looks like that); or a
  high share refused, of the window or of what followed its first 429. Noise (429s at a
  low share while the rest keeps getting through) does not slow anyone else down.
* A limit decreases the rate at most once per window (as TCP does once per round trip):
  only a 429 for a call admitted since the last decrease counts, and only after the pause,
  a smoothed round trip or MIN_MEASURE_SECONDS, whichever is longest. The group pauses
  (until the retry-after, or a doubling backoff without one) only when nothing gets
  through or the headers say nothing remains; otherwise the rate answers.
* A known limit (configured or from headers) is halved, but never below the rate that got
  through over the window (429s for a limit the client keeps to, requests bunched on their
  way, leave it alone), and grows back linearly to the limit RECOVERY_SECONDS later.
* With nothing known, the limit is read from the 429s: the rate the provider accepted. A
  first one is guessed from what got through since answers began, its burst included
  (taken as one second's worth); later ones are measured between two decreases, when the
  provider's bucket was empty at both ends, so a burst cannot inflate them and the rate the
  client paced at in between cannot deflate them. The group paces at INFERRED_HEADROOM of
  it, never less than half the one before (the floor: what the successes show the provider
  accepts), and after a while probes upwards, slowly at first (a cubic in time), faster
  after a guess than after a measure. A few 429s past it correct it from the measure.
* A limit read from 429s is on trial until the 429s say which it is: if slowing down made
  them rarer (a two-proportion test against the share refused since the first 429 before
  the decrease) it is confirmed; if they stay as common, they are noise: the group goes
  back to the last confirmed limit (none: admit at once) and from then on expects that
  share, so runs and shares must exceed what such noise makes before they read as a limit.
  A few 429s refute a limit sooner than many answers confirm one.
* Tokens: a refused request gives its tokens back; 429s for calls sent before a limit was
  learned or changed (the epoch at admission) never count.

Why not aiolimiter.AsyncLimiter: its waiters are ordered by amount (a large token request
starves behind small ones), its clock cannot be set, it has no pause or rate change, and
chaining two limiters holds one while waiting for the other and leaks it on cancellation.
One small gate checking every condition at once is simpler than wrapping it.
"""

from ._group import LimitGroup, Permit, ReportOnExit
from ._limiter import RateLimiter

__all__ = ["LimitGroup", "Permit", "RateLimiter", "ReportOnExit"]
