"""What the built-in batch APIs cost on our side: building and submitting a batch, polling it,
and reading its results back, through the official SDKs, against the simulator in its own
process (batches end as soon as they are created: only the client's work is measured).

    python benchmarks/batch_providers.py [--requests 10000] [--kinds anthropic,openai,gemini]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from dagengine.providers import build_provider
from dagengine.providers._batch import BatchAPI, BatchRequest
from dagengine.simulator import SimulatorProcess
from dagengine.types import ProviderRequest

MODELS = {"anthropic": "claude-3-5-haiku-20241022", "openai": "gpt-4o-mini",
          "gemini": "gemini-2.0-flash"}
PROMPT = ("Categorize this email as spam, work, personal or newsletter and return JSON "
          '{{"category": ..., "confidence": 0.9}}.\n\nEmail {i}: the Q3 budget review moved.')


async def measure(kind: str, sim: SimulatorProcess, count: int) -> dict[str, Any]:
    url = {"anthropic": sim.base_url, "openai": sim.openai_base_url,
           "gemini": sim.gemini_base_url}[kind]
    provider = build_provider(kind, {"api_key": "sim", "base_url": url})
    api = provider.batch_api()
    assert isinstance(api, BatchAPI)
    requests = [BatchRequest(f"s{i}-categorize", ProviderRequest(
        input=PROMPT.format(i=i), options={"model": MODELS[kind], "max_tokens": 100}))
        for i in range(count)]
    try:
        started = time.perf_counter()
        size = sum(api.request_bytes(item) for item in requests)
        batch_id = await api.submit(requests)
        submitted = time.perf_counter()
        polls = 0
        while not (await api.status(batch_id)).done:
            polls += 1
        polled = time.perf_counter()
        answered = 0
        async for outcome in api.results(batch_id, [item.custom_id for item in requests]):
            answered += outcome.response is not None
        read = time.perf_counter()
    finally:
        await provider.aclose()
    assert answered == count, (kind, answered)
    return {"kind": kind, "requests": count, "mb": size / 1e6,
            "submit": submitted - started, "poll": polled - submitted, "results": read - polled}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--kinds", default="anthropic,openai,gemini")
    args = parser.parse_args()
    async with SimulatorProcess(seed=1) as sim:
        rows = [await measure(kind, sim, args.requests) for kind in args.kinds.split(",")]
    print(f"{'format':<10} {'requests':>9} {'MB':>6} {'submit s':>9} {'status s':>9} "
          f"{'results s':>10} {'results/s':>10}")
    for row in rows:
        print(f"{row['kind']:<10} {row['requests']:>9,} {row['mb']:>6.1f} {row['submit']:>9.2f} "
              f"{row['poll']:>9.3f} {row['results']:>10.2f} "
              f"{row['requests'] / row['results']:>10,.0f}")
    print(f"\n  python benchmarks/batch_providers.py --requests {args.requests} "
          f"--kinds {args.kinds}")


if __name__ == "__main__":
    asyncio.run(main())
