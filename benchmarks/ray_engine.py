"""A DagEngine run over Ray: rate held, 429s, wall time; what the driver pays per call.

Starts a local Ray cluster (2 CPUs) and the simulator in its own process, then runs
--sections sections x 2 dependent section dimensions + 1 global dimension (the issue's
acceptance shape) with cluster=RayCluster(workers=2):

  limited     the simulator allows --limit requests/s (bursts of one second's worth); the
              run sets rate_limits to that limit, then sets nothing. Printed: wall time
              against the calls / limit bound, and the share of requests answered 429.
  zero lat.   no limit, no latency: the driver's CPU per call (time.process_time of this
              process, Ray's own threads included: the difference between a run of N and
              one of N/2 sections over the difference in calls, so a run's fixed start-up
              is printed apart), the limiter actor's remote calls per request, and calls/s
              with 1 and 2 workers (and in one process, for comparison). "of it: summary" is the
              end-of-run cost summary (cost.summarize_costs) that one process pays alike.

Wall time counts from process() to its return: the worker actors and the limiter actor
start inside it (about a second). The store is off (store=False); the driver's CPU with
the store on is printed too. Ray counts as started before the runs (`local Ray instance
started in`).

    python benchmarks/ray_engine.py [--sections 1000] [--limit 100] [--zero-sections 2000]
        [--repeat 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dagengine import DagEngine, Dimension, Plugin
from dagengine.cost import summarize_costs
from dagengine.ray import RayCluster
from dagengine.simulator import SimulatorProcess

MODEL = "gpt-4o-mini"


class Reviews(Plugin):
    """sentiment -> summary per section, then an overview over all summaries."""

    def __init__(self) -> None:
        super().__init__("reviews", "Reviews", "benchmark plugin")
        self.dimensions = ["sentiment", "summary", Dimension("overview", scope="global")]

    def define_dependencies(self, ctx: Any) -> dict[str, list[str]]:
        return {"summary": ["sentiment"], "overview": ["summary"]}

    def create_prompt(self, ctx: Any) -> str:
        if ctx.is_global:
            return f"Summarize these {len(ctx.sections)} reviews in one line."
        if ctx.dimension == "sentiment":
            return f"Sentiment of: {ctx.sections[0].content}"
        return f"Summarize this review:\n{ctx.sections[0].content}"

    def select_provider(self, dimension: str, sections: Any = None, context: Any = None) -> Any:
        return {"provider": "openai", "options": {"model": MODEL, "max_tokens": 40}}


def inputs(count: int) -> list[str]:
    moods = ["great product, works well", "terrible, it broke", "fine, nothing special"]
    return [f"Review {i}: {moods[i % 3]}" for i in range(count)]


async def one_run(cluster: RayCluster | None, sim: SimulatorProcess, count: int,
                  store: Any = False, **execution: Any) -> dict[str, float]:
    engine = DagEngine(Reviews(), providers={"openai": {"api_key": "sk-bench",
                                                        "base_url": sim.openai_base_url}},
                       execution={"retry_delay": 0.05, "max_retries": 8, **execution},
                       cluster=cluster, store=store)
    await sim.reset()
    cpu, wall = time.process_time(), time.perf_counter()
    result = await engine.process(inputs(count))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    # The end-of-run cost summary (cost.summarize_costs), which one process pays alike.
    pairs = [(d, r) for s in result.sections for d, r in s.results.items()]
    pairs += list(result.global_results.items())
    summary_cpu = time.process_time()
    summarize_costs(pairs, engine.pricing)
    summary_cpu = time.process_time() - summary_cpu
    await engine.close()
    stats = await sim.stats()
    ok = sum(r.ok for s in result.sections for r in s.results.values())
    ok += sum(r.ok for r in result.global_results.values())
    calls = 2 * count + 1
    limiter = cluster.last_limiter_stats if cluster is not None else None
    return {"wall": wall, "cpu_us": cpu / calls * 1e6, "summary_us": summary_cpu / calls * 1e6,
            "ok": ok, "calls": calls,
            "requests": stats["requests"], "r429": stats["rate_limited"],
            "rpc_per_req": (limiter.rpcs / stats["requests"]) if limiter else 0.0,
            "calls_per_s": calls / wall}


async def main(args: argparse.Namespace) -> None:
    print(f"machine: {os.cpu_count()} CPUs, shared "
          f"with whatever else runs (figures are lower bounds on a busy machine)")
    two = RayCluster(address=None, workers=2)
    started = time.perf_counter()
    two.start()
    print(f"local Ray instance started in {time.perf_counter() - started:.1f} s")
    one = RayCluster(address=None, workers=1).start()  # joins the same instance
    calls = 2 * args.sections + 1
    bound = calls / args.limit
    try:
        print(f"\n{args.sections} sections x 2 + 1 global = {calls} calls; simulator limit "
              f"{args.limit:g}/s (bound {bound:.1f} s), latency {args.latency:g} s, "
              f"2 workers, concurrency {args.concurrency}")
        print(f"{'configured':<22}{'wall s':>8}{'x bound':>9}{'429 %':>8}{'ok':>7}")
        async with SimulatorProcess(requests_per_minute=args.limit * 60,
                                    latency=args.latency, seed=1) as sim:
            for name, limits in [("rate_limits = limit", {"openai": {
                                     "requests_per_second": args.limit}}),
                                 ("nothing", {})]:
                row = await one_run(two, sim, args.sections, concurrency=args.concurrency,
                                    rate_limits=limits)
                print(f"{name:<22}{row['wall']:>8.1f}{row['wall'] / bound:>9.2f}"
                      f"{100 * row['r429'] / row['requests']:>8.2f}"
                      f"{row['ok']:>5.0f}/{row['calls']}")
        small, large = args.zero_sections // 2, args.zero_sections
        print(f"\nzero latency, no limit, concurrency {args.zero_concurrency}: runs of "
              f"{2 * small + 1} and {2 * large + 1} calls; driver CPU per call is the "
              f"difference of the two runs' CPU over the difference of their calls (what a "
              f"run start costs, once, is left out and printed apart)")
        print(f"{'run':<22}{'calls/s':>9}{'driver us/call':>16}{'of it: summary':>16}"
              f"{'per run ms':>12}{'limiter rpc/req':>17}")
        async with SimulatorProcess(seed=1) as sim:
            rows = [("one process", None, False), ("1 worker", one, False),
                    ("2 workers", two, False), ("2 workers, store on", two, True)]
            for name, cluster, store in rows:
                pairs = []
                for _ in range(args.repeat):
                    measured = []
                    for count in (small, large):
                        with tempfile.TemporaryDirectory() as tmp:
                            measured.append(await one_run(
                                cluster, sim, count,
                                store=f"{tmp}/runs.db" if store else False,
                                concurrency=args.zero_concurrency))
                    first, second = measured
                    cpu = [r["cpu_us"] * r["calls"] / 1e6 for r in measured]
                    per_call = (cpu[1] - cpu[0]) / (second["calls"] - first["calls"])
                    pairs.append((per_call, cpu[1] - per_call * second["calls"], second))
                # The median pair: on a shared machine one pair can land on a busy moment.
                per_call, fixed, second = sorted(pairs, key=lambda p: p[0])[len(pairs) // 2]
                rpc = f"{second['rpc_per_req']:.4f}" if cluster is not None else "-"
                print(f"{name:<22}{second['calls_per_s']:>9.0f}{per_call * 1e6:>16.1f}"
                      f"{second['summary_us']:>16.1f}{fixed * 1e3:>12.0f}{rpc:>17}")
    finally:
        two.shutdown()
    print(f"\ncommand: {Path(sys.executable).name} benchmarks/ray_engine.py --sections "
          f"{args.sections} --limit {args.limit:g} --latency {args.latency:g} --concurrency "
          f"{args.concurrency} --zero-sections {args.zero_sections} --zero-concurrency "
          f"{args.zero_concurrency} --repeat {args.repeat}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", type=int, default=1000)
    parser.add_argument("--limit", type=float, default=100.0, help="requests/s")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per answer")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--zero-sections", type=int, default=2000)
    parser.add_argument("--zero-concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=1,
                        help="pairs of zero-latency runs per row; the median pair is printed")
    asyncio.run(main(parser.parse_args()))
