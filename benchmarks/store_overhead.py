"""What persisting a run costs: wall time without a store, with one, and with its cache.

5000 sections x 1 dimension, an in-process provider that answers at once, concurrency 200;
best of 3 runs per configuration. "store" and "store + cache" start from a fresh file, so
the cache row is the cost of looking up and filling the cache on a first run; "cache hits"
runs the same inputs again in that file under a new process_id (no provider calls).

    python benchmarks/store_overhead.py [--sections 5000] [--repeat 3] [--latency 0]

--latency gives every call a fixed delay, for the overhead at a more realistic pace.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dagengine import DagEngine, Plugin, PromptContext
from dagengine.testing import FunctionProvider


def instant_provider(latency: float) -> FunctionProvider:
    """Answers every request immediately (or after a fixed `latency`)."""
    return FunctionProvider(lambda request: {"label": "ok", "length": len(str(request.input))},
                            latency=latency, name="instant", model="claude-3-5-haiku-20241022",
                            tokens=(120, 30), record=False)


class Classify(Plugin):
    def __init__(self) -> None:
        super().__init__("store-bench", "Store benchmark")
        self.dimensions = ["classify"]

    def create_prompt(self, ctx: PromptContext) -> str:
        return f"Classify this email: {ctx.sections[0].content}"

    def select_provider(self, dimension: str, sections: Any = None, context: Any = None) -> Any:
        return {"provider": "instant", "options": {"model": "claude-3-5-haiku-20241022"}}


async def one_run(sections: list[str], store: Path | None, cache: bool,
                  process_id: str = "bench", latency: float = 0.0) -> float:
    engine = DagEngine(Classify(), providers={"instant": instant_provider(latency)},
                       execution={"concurrency": 200},
                       store=False if store is None else store,
                       cache=cache if store is not None else None)
    started = time.perf_counter()
    result = await engine.process(sections, process_id=process_id)
    elapsed = time.perf_counter() - started
    assert all(s.results["classify"].ok for s in result.sections)
    if store is not None:
        engine.store.close()
    return elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per call")
    args = parser.parse_args()
    logging.getLogger("dagengine").setLevel(logging.ERROR)
    sections = [f"email {i}: please review the attached invoice" for i in range(args.sections)]
    labels = ["no store", "store", "store + cache", "cache hits"]
    best: dict[str, float] = {}

    def keep(label: str, elapsed: float) -> None:
        best[label] = min(best.get(label, elapsed), elapsed)

    with tempfile.TemporaryDirectory() as tmp:
        await one_run(sections[:200], None, False)  # warm up imports and pydantic
        for round_ in range(args.repeat):
            pace = args.latency
            keep("no store", await one_run(sections, None, False, latency=pace))
            keep("store", await one_run(sections, Path(tmp) / f"store-{round_}.db", False,
                                        latency=pace))
            cached = Path(tmp) / f"cache-{round_}.db"
            keep("store + cache", await one_run(sections, cached, True, latency=pace))
            keep("cache hits", await one_run(sections, cached, True, process_id="again",
                                             latency=pace))
    base = best["no store"]
    pace = f"{args.latency * 1000:g} ms a call" if args.latency else "zero-latency provider"
    print(f"{args.sections} sections x 1 dimension, concurrency 200, {pace}, "
          f"best of {args.repeat}")
    print(f"{'configuration':<16}{'wall s':>9}{'calls/s':>10}{'overhead':>10}{'us/call':>9}")
    for label in labels:
        t = best[label]
        extra = (t - base) / args.sections * 1e6
        print(f"{label:<16}{t:>9.3f}{args.sections / t:>10.0f}{(t / base - 1) * 100:>9.1f}%"
              f"{extra:>9.1f}")
    print(f"\ncommand: {Path(sys.executable).name} benchmarks/store_overhead.py "
          f"--sections {args.sections} --repeat {args.repeat} --latency {args.latency:g}")


if __name__ == "__main__":
    asyncio.run(main())
