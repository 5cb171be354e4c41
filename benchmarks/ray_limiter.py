"""What the cluster-wide rate limit costs: round trips, CPU per acquire, rate held.

Starts a local Ray cluster, then for 1 and 2 worker actors and each configured limit:
every worker runs --callers loops that acquire a permit from its LeasedLimiter and report
success at once (a zero-latency provider), for --seconds. Printed per row:

  adm/s      admissions per second, all workers together, first to last (this includes
             the bucket's start-up allowance: half a second's worth at once)
  lent/s     permits the limiter actor lent per second past the first second, sampled
             at the actor (admissions come in grants, so their own count is lumpy)
  of limit   lent/s over the configured limit (the limiter allows itself 95 % of it)
  max 1s     most admissions in any 1-second window past the first second
  rpc/req    calls into the limiter actor (lease, watch, refuse, close) per admission
  worker us  CPU of the worker processes per acquire (Ray's own threads included)
  actor us   CPU of the limiter actor per admission
  driver us  CPU of this process per admission while the workers ran

    python benchmarks/ray_limiter.py [--seconds 3] [--callers 64] [--limits 100,1000,unlimited]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import sys
import time
from pathlib import Path
from typing import Any

from dagengine.ray import LeasedLimiter, RayCluster


class Worker:
    """One worker actor: callers that acquire and succeed as fast as they are admitted."""

    async def run(self, limiter: Any, seconds: float, callers: int) -> dict[str, Any]:
        leased = LeasedLimiter(limiter)
        group = leased.group("openai", "gpt-4o")
        stamps: list[float] = []
        end = time.monotonic() + seconds
        cpu = time.process_time()

        async def caller() -> None:
            while time.monotonic() < end:
                permit = await group.acquire(100)
                stamps.append(time.monotonic())
                permit.success(100)

        await asyncio.gather(*(caller() for _ in range(callers)))
        cpu = time.process_time() - cpu
        await leased.aclose()
        return {"stamps": stamps, "cpu": cpu, "rpcs": leased.rpcs}


def most_in_window(stamps: list[float], seconds: float) -> int:
    return max((bisect.bisect_right(stamps, t + seconds) - i for i, t in enumerate(stamps)),
               default=0)


def measure(cluster: RayCluster, workers: list[Any], limit: float | None, seconds: float,
            callers: int) -> dict[str, float]:
    import ray

    limiter = cluster.start_limiter(
        {"openai": {"requests_per_second": limit}} if limit else None)
    actor_cpu = ray.get(limiter.stats.remote()).cpu_seconds
    driver_cpu = time.process_time()
    pending = [worker.run.remote(limiter, seconds, callers) for worker in workers]
    ray.wait(pending, num_returns=len(pending), timeout=1.0)
    first = (time.monotonic(), ray.get(limiter.stats.remote()).granted)
    ray.wait(pending, num_returns=len(pending), timeout=seconds - 1.2)
    last = (time.monotonic(), ray.get(limiter.stats.remote()).granted)
    runs = ray.get(pending)
    driver_cpu = time.process_time() - driver_cpu
    stats = ray.get(limiter.stats.remote())
    ray.kill(limiter)
    stamps = sorted(t for run in runs for t in run["stamps"])
    admitted = len(stamps)
    steady = [t for t in stamps if t >= stamps[0] + 1.0]
    return {
        "rate": admitted / (stamps[-1] - stamps[0]),
        "lent": (last[1] - first[1]) / (last[0] - first[0]),
        "max_1s": most_in_window(steady, 1.0),
        "rpc_per_request": stats.rpcs / admitted,
        "worker_us": sum(run["cpu"] for run in runs) / admitted * 1e6,
        "actor_us": (stats.cpu_seconds - actor_cpu) / admitted * 1e6,
        "driver_us": driver_cpu / admitted * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--callers", type=int, default=64, help="acquiring loops per worker")
    parser.add_argument("--limits", default="100,1000,unlimited",
                        help="requests per second, comma-separated; 'unlimited' for none")
    args = parser.parse_args()
    if args.seconds < 2:
        parser.error("--seconds must be at least 2: the first second is left out of adm/s")
    limits = [None if text == "unlimited" else float(text) for text in args.limits.split(",")]

    import ray

    started = time.perf_counter()
    cluster = RayCluster(address=None, workers=2).start()
    init_seconds = time.perf_counter() - started
    actors = [ray.remote(Worker).options(num_cpus=1).remote() for _ in range(2)]
    ray.get([actor.__ray_ready__.remote() for actor in actors])
    print(f"local Ray instance started in {init_seconds:.1f} s; {args.callers} callers per "
          f"worker, zero-latency calls, {args.seconds:g} s per row")
    print(f"{'workers':>7}{'limit/s':>10}{'adm/s':>9}{'lent/s':>9}{'of limit':>9}{'max 1s':>8}"
          f"{'rpc/req':>9}{'worker us':>10}{'actor us':>9}{'driver us':>10}")
    try:
        for count in (1, 2):
            for limit in limits:
                row = measure(cluster, actors[:count], limit, args.seconds, args.callers)
                share = f"{row['lent'] / limit:.3f}" if limit else "-"
                print(f"{count:>7}{limit or 'none':>10}{row['rate']:>9.0f}{row['lent']:>9.0f}"
                      f"{share:>9}"
                      f"{row['max_1s']:>8.0f}{row['rpc_per_request']:>9.4f}"
                      f"{row['worker_us']:>10.1f}{row['actor_us']:>9.1f}"
                      f"{row['driver_us']:>10.2f}")
    finally:
        cluster.shutdown()
    print(f"\ncommand: {Path(sys.executable).name} benchmarks/ray_limiter.py "
          f"--seconds {args.seconds:g} --callers {args.callers} --limits {args.limits}")


if __name__ == "__main__":
    main()
