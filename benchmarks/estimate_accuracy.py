"""How close engine.estimate() comes to the run it estimates: cost and wall time.

For each workload: estimate, run, and compare; then the same for a second set of sections
with the first run in a store (what `cost_expected` and `seconds_expected` learn from).
The simulator runs in its own process, as in the demo; built-in providers over HTTP.

    python benchmarks/estimate_accuracy.py [--repeat 2]

Workloads:
  demo      the walkthrough's plugin, 100 emails, 100 in flight, lognormal latency
            (median 0.8 s, sigma 0.35, the demo's)
  demo-25   the same plugin, 100 emails, 25 in flight, fixed latency 0.5 s (the test's)
  dag       sentiment per review (Anthropic format), then one global overview of all of
            them (OpenAI format); 120 reviews, 30 in flight, lognormal median 0.4 s
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dagengine import DagEngine, Dimension, Estimate, Plugin, ProcessResult, PromptContext
from dagengine.cli.demo.emails import generate_emails
from dagengine.cli.demo.plugin import EmailAnalyzer
from dagengine.cli.demo.settings import PRICING
from dagengine.simulator import SimulatorProcess


class ReviewOverview(Plugin):
    def __init__(self) -> None:
        super().__init__("review-overview", "Review overview")
        self.dimensions = ["sentiment", Dimension(name="overview", scope="global")]

    def define_dependencies(self, ctx: Any) -> dict[str, list[str]]:
        return {"overview": ["sentiment"]}

    def create_prompt(self, ctx: PromptContext) -> str:
        if ctx.dimension == "overview":
            labels = [r.data["sentiment"] for r in ctx.dependencies["sentiment"].data["sections"]]
            return f"Summarize these review sentiments in one sentence: {labels}"
        return f"What is the sentiment of this review? Answer as JSON.\n\n{ctx.sections[0].content}"

    def select_provider(self, dimension: str, sections: Any = None, context: Any = None) -> Any:
        if dimension == "overview":
            return {"provider": "openai", "options": {"model": "gpt-4o-mini", "max_tokens": 200}}
        return {"provider": "anthropic",
                "options": {"model": "claude-3-5-haiku-20241022", "max_tokens": 100}}


def reviews(count: int, seed: int) -> list[str]:
    words = ["great", "terrible", "fine", "slow", "love", "broken", "fast", "refund", "happy"]
    rng = random.Random(seed)
    return [f"Review {i}: " + " ".join(rng.choice(words) for _ in range(rng.randint(8, 40)))
            for i in range(count)]


WORKLOADS: dict[str, dict[str, Any]] = {
    "demo": {"sim": {"latency_median": 0.8, "latency_sigma": 0.35}, "concurrency": 100,
             "plugin": EmailAnalyzer, "sections": lambda seed: generate_emails(100, seed)},
    "demo-25": {"sim": {"latency": 0.5}, "concurrency": 25, "plugin": EmailAnalyzer,
                "sections": lambda seed: generate_emails(100, seed)},
    "dag": {"sim": {"latency_median": 0.4, "latency_sigma": 0.35}, "concurrency": 30,
            "plugin": ReviewOverview, "sections": lambda seed: reviews(120, seed)},
}


async def measure(name: str, spec: dict[str, Any], seed: int) -> list[tuple[str, Estimate,
                                                                              ProcessResult,
                                                                              float]]:
    rows = []
    async with SimulatorProcess(seed=seed, **spec["sim"]) as sim:
        config = {
            "plugin": spec["plugin"](), "pricing": PRICING,
            "execution": {"concurrency": spec["concurrency"]},
            "providers": {"anthropic": {"api_key": "sim", "base_url": sim.base_url},
                          "openai": {"api_key": "sim", "base_url": f"{sim.base_url}/v1"}},
        }
        await DagEngine(**config).process(spec["sections"](1000 + seed))  # warm-up
        with tempfile.TemporaryDirectory() as folder:
            engine = DagEngine(**config, store=Path(folder) / "runs.db")
            for label, sections in (("no history", spec["sections"](seed)),
                                    ("after 1 run", spec["sections"](seed + 500))):
                estimate = engine.estimate(sections)
                started = time.monotonic()
                result = await engine.process(sections)
                rows.append((f"{name}, {label}", estimate, result, time.monotonic() - started))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="runs of each workload")
    parser.add_argument("workloads", nargs="*", metavar="WORKLOAD",
                        help=f"any of {', '.join(WORKLOADS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.workloads) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(WORKLOADS)}")
    args.workloads = args.workloads or list(WORKLOADS)
    print(f"$ python benchmarks/estimate_accuracy.py --repeat {args.repeat} "
          f"{' '.join(args.workloads)}   ({sys.version.split()[0]}, simulated backend)")
    print(f"{'workload':<24} {'cost low':>9} {'expected':>9} {'high':>9} {'actual':>9} "
          f"{'exp/act':>7} {'in range':>8} {'est s':>6} {'wall s':>6} {'est/wall':>8}")
    for name in args.workloads:
        for seed in range(1, args.repeat + 1):
            for label, estimate, result, wall in asyncio.run(measure(name, WORKLOADS[name],
                                                                     seed)):
                actual = result.costs.total_cost if result.costs else 0.0
                inside = estimate.cost_low <= actual <= estimate.cost_high
                print(f"{label:<24} {estimate.cost_low:>9.5f} {estimate.cost_expected:>9.5f} "
                      f"{estimate.cost_high:>9.5f} {actual:>9.5f} "
                      f"{estimate.cost_expected / actual:>7.3f} {'yes' if inside else 'NO':>8} "
                      f"{estimate.seconds_expected:>6.2f} {wall:>6.2f} "
                      f"{estimate.seconds_expected / wall:>8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
