"""Schedules of W4's DAG computed from call latencies, without running anything.

W4: each section runs sentiment and topics (independent), then summary after both; a global
call follows every summary. A section's latencies are a (sentiment, topics, summary) tuple.

    .venv/bin/python benchmarks/schedules.py        # the bound study quoted in the README

The study draws W4's latencies (lognormal, median 0.5 s, sigma 1.0) many times and replays
each draw at several concurrency bounds: how close to the ideal can any scheduler get when
it does not know a call's latency before the call ends?
"""

from __future__ import annotations

import heapq
import math
import random
import statistics
import sys

Latencies = list[tuple[float, float, float]]


def ideal(lat: Latencies, concurrency: int) -> float:
    """The lower bound: the slowest section's own chain, or all the section work spread
    perfectly over the concurrency, whichever is longer."""
    chain = max(max(a, b) + c for a, b, c in lat)
    return max(chain, sum(a + b + c for a, b, c in lat) / concurrency)


# Which ready call takes a free slot first. The online orders know only the DAG and the
# order calls became ready; "clairvoyant" knows every latency in advance.
ORDERS = ("ready order", "deepest first", "summaries first", "clairvoyant")


def replay(lat: Latencies, concurrency: int, order: str = "ready order") -> float:
    """Makespan of the section calls when every slot is refilled the instant it frees.

    "deepest first" is dagengine's order (the longest remaining chain in calls); with
    "clairvoyant" the call heading the longest remaining chain in seconds starts first.
    """
    def key(i: int, k: int, now: float) -> tuple[float, int]:
        if order == "clairvoyant":
            return -(lat[i][k] + lat[i][2] if k < 2 else lat[i][2]), i
        if order == "deepest first":
            return k // 2, i
        if order == "summaries first":
            return -(k // 2), i
        return now, i

    ready = [(key(i, k, 0.0), i, k) for i in range(len(lat)) for k in (0, 1)]
    heapq.heapify(ready)
    running: list[tuple[float, int, int]] = []
    done = [0] * len(lat)
    now = 0.0
    while ready or running:
        while ready and len(running) < concurrency:
            _, i, k = heapq.heappop(ready)
            heapq.heappush(running, (now + lat[i][k], i, k))
        now, i, k = heapq.heappop(running)
        if k < 2:
            done[i] += 1
            if done[i] == 2:
                heapq.heappush(ready, (key(i, 2, now), i, 2))
    return now


def draw(rng: random.Random, sections: int = 200) -> tuple[Latencies, float]:
    def one() -> float:
        return 0.5 * math.exp(rng.gauss(0.0, 1.0))
    return [(one(), one(), one()) for _ in range(sections)], one()


def study(draws: int = 200) -> None:
    print(f"W4 latencies drawn {draws} times; makespan / ideal, global call included")
    print(f"{'in flight':>9}  {'order':<15} {'mean':>6} {'p50':>6} {'p90':>6} {'max':>6}"
          f"  {'draws <= 1.10':>13}")
    samples = [draw(random.Random(seed)) for seed in range(draws)]
    for concurrency in (50, 100, 150, 200, 400):
        for order in ORDERS if concurrency == 50 else ("ready order", "clairvoyant"):
            ratios = sorted((replay(lat, concurrency, order) + g)
                            / (ideal(lat, concurrency) + g) for lat, g in samples)
            share = sum(r <= 1.10 for r in ratios) / len(ratios)
            print(f"{concurrency:>9}  {order:<15} "
                  f"{statistics.mean(ratios):>6.3f} {ratios[len(ratios) // 2]:>6.3f} "
                  f"{ratios[int(0.9 * len(ratios))]:>6.3f} {ratios[-1]:>6.3f}  {share:>12.0%}")


if __name__ == "__main__":
    study(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
