"""Schedules of a per-section DAG computed from call latencies, without running anything.

A section's latencies are a dict {dimension: seconds}; `deps` maps a dimension to the
section dimensions it waits for (global dimensions are left out: they come after all of
it). W4's DAG is sentiment and topics, then summary after both.

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
from collections.abc import Mapping, Sequence

Latencies = Sequence[Mapping[str, float]]
Deps = Mapping[str, Sequence[str]]

W4_DEPS: Deps = {"sentiment": (), "topics": (), "summary": ("sentiment", "topics")}

# Which ready call takes a free slot first. The online orders know only the DAG and the
# order calls became ready; "clairvoyant" knows every latency in advance.
ORDERS = ("ready order", "deepest first", "shallowest first", "clairvoyant")


def _dependents(deps: Deps) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {d: [] for d in deps}
    for name, needed in deps.items():
        for d in needed:
            out[d].append(name)
    return out


def _topological(deps: Deps) -> list[str]:
    order: list[str] = []
    while len(order) < len(deps):
        order += [n for n, needed in deps.items()
                  if n not in order and all(d in order for d in needed)]
    return order


def chains(latency: Mapping[str, float], deps: Deps) -> dict[str, float]:
    """Seconds from the start of each dimension to the end of its section's longest chain."""
    after = _dependents(deps)
    out: dict[str, float] = {}
    for name in reversed(_topological(deps)):
        out[name] = latency[name] + max((out[d] for d in after[name]), default=0.0)
    return out


def ideal(lat: Latencies, deps: Deps, concurrency: int) -> float:
    """The lower bound: the slowest section's own chain, or all the section work spread
    perfectly over the concurrency, whichever is longer."""
    slowest = max(max(chains(s, deps).values()) for s in lat)
    return max(slowest, sum(sum(s.values()) for s in lat) / concurrency)


def replay(lat: Latencies, deps: Deps, concurrency: int, order: str = "ready order") -> float:
    """Makespan of the section calls when every slot is refilled the instant it frees.

    "deepest first" is the longest remaining chain counted in calls; "clairvoyant" is the
    longest remaining chain in seconds, which needs every latency in advance.
    """
    after = _dependents(deps)
    depth = {n: 1 for n in deps}
    for name in reversed(_topological(deps)):
        depth[name] = 1 + max((depth[d] for d in after[name]), default=0)
    seconds = [chains(s, deps) for s in lat] if order == "clairvoyant" else []

    def key(i: int, d: str, now: float) -> tuple[float, int]:
        if order == "clairvoyant":
            return -seconds[i][d], i
        if order == "deepest first":
            return -depth[d], i
        if order == "shallowest first":
            return depth[d], i
        return now, i

    ready = [(key(i, d, 0.0), i, d) for i in range(len(lat)) for d in deps if not deps[d]]
    heapq.heapify(ready)
    waiting = [{d: len(deps[d]) for d in deps} for _ in lat]
    running: list[tuple[float, int, str]] = []
    now = 0.0
    while ready or running:
        while ready and len(running) < concurrency:
            _, i, d = heapq.heappop(ready)
            heapq.heappush(running, (now + lat[i][d], i, d))
        now, i, d = heapq.heappop(running)
        for dependent in after[d]:
            waiting[i][dependent] -= 1
            if not waiting[i][dependent]:
                heapq.heappush(ready, (key(i, dependent, now), i, dependent))
    return now


def paced(latencies: Sequence[float], concurrency: int, per_second: float,
          burst: float) -> float:
    """Makespan of single calls started in order, each as soon as a slot is free and a
    provider limit (`per_second`, a bucket of `burst` requests, full at 0) lets it in: what a
    client with no overhead that knows the limit exactly would take (W3's replay)."""
    running: list[float] = []  # end times
    level, stamp, end = burst, 0.0, 0.0
    for latency in latencies:
        now = stamp
        if len(running) >= concurrency:
            now = max(now, heapq.heappop(running))
        level = min(burst, level + (now - stamp) * per_second)
        if level < 1:
            now += (1 - level) / per_second
            level = 1.0
        level -= 1
        stamp = now
        heapq.heappush(running, now + latency)
        end = max(end, now + latency)
    return end


def draw(rng: random.Random, sections: int = 200) -> tuple[list[dict[str, float]], float]:
    """W4's latencies: three section calls each, and the global call."""
    def one() -> float:
        return 0.5 * math.exp(rng.gauss(0.0, 1.0))
    lat = [{"sentiment": one(), "topics": one(), "summary": one()} for _ in range(sections)]
    return lat, one()


def study(draws: int = 200) -> None:
    print(f"$ python benchmarks/schedules.py {draws}")
    print(f"W4 latencies drawn {draws} times; makespan / ideal, global call included")
    print(f"{'in flight':>9}  {'order':<16} {'mean':>6} {'p50':>6} {'p90':>6} {'max':>6}"
          f"  {'draws <= 1.10':>13}")
    samples = [draw(random.Random(seed)) for seed in range(draws)]
    for concurrency in (50, 100, 150, 200, 400):
        for order in ORDERS if concurrency == 50 else ("ready order", "clairvoyant"):
            ratios = sorted((replay(lat, W4_DEPS, concurrency, order) + g)
                            / (ideal(lat, W4_DEPS, concurrency) + g) for lat, g in samples)
            share = sum(r <= 1.10 for r in ratios) / len(ratios)
            print(f"{concurrency:>9}  {order:<16} "
                  f"{statistics.mean(ratios):>6.3f} {ratios[len(ratios) // 2]:>6.3f} "
                  f"{ratios[int(0.9 * len(ratios))]:>6.3f} {ratios[-1]:>6.3f}  {share:>12.0%}")


if __name__ == "__main__":
    study(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
