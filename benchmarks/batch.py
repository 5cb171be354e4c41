"""Batch mode against online: the same DAG over the same sections, cost and wall time.

summarize -> classify (per section, the second depending on the first) -> overview (one
global call over all classifications), Anthropic Message Batches through the official SDK.
The simulator runs in its own process: online calls take a lognormal latency (median 0.8 s,
the demo's) under a 3,000 requests/min limit, and a batch ends `--batch-delay` seconds after
its submission (real batches take minutes to hours: the wall time here is the engine's
pipelining, not the provider's). Batch mode also runs once more with a store, killed
(cancelled) while its batches are in flight and resumed, to show what resume re-uses.

    python benchmarks/batch.py [--sections 1000] [--batch-delay 5] [--concurrency 100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dagengine import DagEngine, Dimension, Plugin, ProcessResult, PromptContext
from dagengine.simulator import SimulatorProcess

TOPICS = ("quarterly report for the client", "birthday dinner with family",
          "weekly newsletter digest", "urgent prize claim, click now", "project deadline")


class BatchPlugin(Plugin):
    """summarize, then classify from the summary, then one overview of every category."""

    def __init__(self) -> None:
        super().__init__("batch-benchmark", "Batch benchmark")
        self.dimensions = ["summarize", "classify", Dimension("overview", scope="global")]

    def define_dependencies(self, ctx: Any) -> dict[str, list[str]]:
        return {"classify": ["summarize"], "overview": ["classify"]}

    def create_prompt(self, ctx: PromptContext) -> str:
        if ctx.is_global:
            labels = [r.data for r in ctx.dependencies["classify"].data["sections"]]
            return (f"Give an overview of {len(labels)} emails from their categories.\n"
                    + json.dumps(labels, sort_keys=True))
        email = ctx.sections[0].content
        if ctx.dimension == "summarize":
            return f"Summarize this email in one sentence.\n{email}"
        return (f"Categorize this email as work, personal, newsletter or spam.\n"
                f"Earlier summary: {json.dumps(ctx.dependencies['summarize'].data)}\n{email}")

    def select_provider(self, dimension: str, sections: Any = None, context: Any = None) -> Any:
        return {"provider": "anthropic",
                "options": {"model": "claude-3-5-haiku-20241022", "max_tokens": 64}}


def batch_sections(count: int) -> list[str]:
    return [f"Email {i}: about the {TOPICS[i % len(TOPICS)]} (ref {i * 7919 % 10007})."
            for i in range(count)]


KEY = "sk-benchmark"


def engine(base_url: str, mode: str, concurrency: int, store: Any = False) -> DagEngine:
    return DagEngine(BatchPlugin(), providers={"anthropic": {"api_key": KEY,
                                                             "base_url": base_url}},
                     execution={"mode": mode, "concurrency": concurrency, "max_retries": 3,
                                "retry_delay": 0.5,
                                "batch": {"max_size": 10_000, "max_wait": 1.0,
                                          "poll_interval": 1.0}},
                     store=store, cache=False if store else None)


async def timed(eng: DagEngine, sections: list[str], **kwargs: Any) -> tuple[ProcessResult,
                                                                             float]:
    started = time.monotonic()
    result = await eng.process(sections, **kwargs)
    await eng.close()
    return result, time.monotonic() - started


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sections", type=int, default=1000)
    parser.add_argument("--batch-delay", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args(argv)
    sections = batch_sections(args.sections)
    calls = 2 * args.sections + 1
    rows = []
    async with SimulatorProcess(api_key=KEY, latency_median=0.8, latency_sigma=0.35,
                                requests_per_minute=3000, seed=1,
                                batch_delay=args.batch_delay) as sim:
        online, online_s = await timed(engine(sim.base_url, "online", args.concurrency),
                                       sections)
        online_stats = await sim.stats()
        rows.append(("online", online, online_s, online_stats))
        await sim.reset()
        batch, batch_s = await timed(engine(sim.base_url, "batch", args.concurrency),
                                     sections)
        rows.append(("batch", batch, batch_s, await sim.stats()))

        # Interrupted once its first batches are in flight, then resumed from the store.
        await sim.reset()
        with tempfile.TemporaryDirectory() as tmp:
            store = Path(tmp) / "runs.db"
            stopped = engine(sim.base_url, "batch", args.concurrency, store)
            first = asyncio.create_task(stopped.process(sections, process_id="bench"))
            for _ in range(100_000):  # until its first batch is at the provider
                if (await sim.stats())["batches_created"]:
                    break
                await asyncio.sleep(0.05)
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await first
            await stopped.close()
            created_before = (await sim.stats())["batches_created"]
            resumed, resumed_s = await timed(engine(sim.base_url, "batch", args.concurrency,
                                                    store), sections, process_id="bench",
                                             resume=True)
            resumed_stats = await sim.stats()
            resumed_ok = all(r.ok for s in resumed.sections for r in s.results.values())

    print(f"{args.sections:,} sections x (summarize -> classify) + 1 global overview = "
          f"{calls:,} calls; claude-3-5-haiku on the simulator (online latency median 0.8 s, "
          f"3,000 requests/min; a batch takes {args.batch_delay:g} s)")
    print()
    print(f"{'mode':<8} {'wall s':>8} {'cost $':>10} {'vs online':>10} {'HTTP calls':>11} "
          f"{'batches':>8} {'ok':>6}")
    for mode, result, seconds, stats in rows:
        assert result.costs is not None and online.costs is not None
        ok = sum(1 for s in result.sections for r in s.results.values() if r.ok) + sum(
            1 for r in result.global_results.values() if r.ok)
        share = result.costs.total_cost / online.costs.total_cost
        http = stats["requests"] + sum(stats["batch_requests"].values())
        print(f"{mode:<8} {seconds:>8.1f} {result.costs.total_cost:>10.4f} {share:>9.0%} "
              f"{http:>11,} {stats['batches_created']:>8} {ok:>6,}")
    billed = resumed_stats["batch_items_billed"]
    print()
    print(f"resume: the run was stopped with {created_before} batch(es) in flight; the resumed "
          f"run re-attached to them, took {resumed_s:.1f} s, submitted "
          f"{resumed_stats['batches_created'] - created_before} more, and the simulator "
          f"billed {billed:,} items for {calls:,} calls "
          f"({'every section has data' if resumed_ok else 'some sections failed'})")
    print()
    print("command: python benchmarks/batch.py " + " ".join(argv))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
