"""One request to a provider under its rate-limit permit: the permit hears how it went.

Shared by the plain path of a call (call.py) and a pool's or a hedge's requests (_pool.py).
"""

from __future__ import annotations

from .errors import ProviderError
from .plugin import Observers
from .providers.base import BaseProvider
from .ratelimit import Permit
from .types import ProviderRequest, ProviderResponse, TokenUsage


async def execute(sender: BaseProvider, request: ProviderRequest, permit: Permit,
                  observers: Observers, dimension: str, name: str) -> ProviderResponse:
    """`sender`'s answer to `request`, or the ProviderError it failed with; the permit is told
    of a success (with its tokens and headers), a 429 or another failure, and the observers
    of the request's end (`request_sent` is the caller's to announce)."""
    try:
        response = await sender.execute(request)
    except ProviderError as exc:
        report_failure(permit, exc)
        raise
    except BaseException:
        permit.failed()
        raise
    finally:
        await observers.call("request_done", dimension, name)
    meta = response.metadata
    if response.error is not None:
        failure = ProviderError(response.error, meta.get("status_code"), meta.get("retry_after"),
                                provider=name, rate_limit=meta.get("rate_limit"))
        report_failure(permit, failure)
        raise failure
    tokens = meta.get("tokens")
    permit.success(tokens.total_tokens if isinstance(tokens, TokenUsage) else None,
                   meta.get("rate_limit"))
    return response


def report_failure(permit: Permit, exc: ProviderError) -> None:
    if exc.status_code == 429:
        permit.rate_limited(exc.retry_after, exc.rate_limit)
    else:
        permit.failed()
