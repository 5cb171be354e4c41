"""How many requests per second the simulator serves at zero latency.

The simulator runs as a child process (SimulatorProcess), so it has its own core and event
loop; this process fires the requests from plain aiohttp clients, rotating through the three
APIs and a few hundred distinct email prompts.

    .venv/bin/python benchmarks/simulator_throughput.py --requests 20000 --concurrency 200
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import time
from collections import Counter
from typing import Any

import aiohttp

from dagengine.simulator import SimulatorProcess

WORDS = ("meeting", "deadline", "prize", "unsubscribe", "birthday", "report", "free", "weekly")


def request_for(index: int, base_url: str) -> tuple[str, dict[str, Any]]:
    """The URL and body of request `index`: APIs in turn, 500 distinct prompts."""
    prompt = (
        f"Categorize this email as spam, work, personal or newsletter.\n\nEmail: #{index % 500} "
        + " ".join(WORDS[(index + k) % len(WORDS)] for k in range(6))
    )
    api = index % 3
    if api == 0:
        body = {
            "model": "claude-sim",
            "max_tokens": 150,
            "messages": [{"role": "user", "content": prompt}],
        }
        return f"{base_url}/v1/messages", body
    if api == 1:
        body = {"model": "gpt-sim", "messages": [{"role": "user", "content": prompt}]}
        return f"{base_url}/v1/chat/completions", body
    body = {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}
    return f"{base_url}/v1beta/models/gemini-sim:generateContent", body


async def fire(base_url: str, total: int, concurrency: int) -> tuple[float, Counter[int]]:
    """Send `total` requests with `concurrency` in flight; returns (seconds, statuses)."""
    statuses: Counter[int] = Counter()
    next_index = iter(range(total))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for index in next_index:
                url, body = request_for(index, base_url)
                async with session.post(url, json=body) as response:
                    await response.read()
                    statuses[response.status] += 1

        started = time.perf_counter()
        async with asyncio.TaskGroup() as tasks:
            for _ in range(concurrency):
                tasks.create_task(worker())
        return time.perf_counter() - started, statuses


async def run(args: argparse.Namespace) -> None:
    async with SimulatorProcess(latency=args.latency) as sim:
        await fire(sim.base_url, min(2000, args.requests), args.concurrency)  # warm-up
        await sim.reset()
        cpu_before = cpu_seconds(sim.pid)
        seconds, statuses = await fire(sim.base_url, args.requests, args.concurrency)
        cpu = cpu_seconds(sim.pid) - cpu_before
        served = (await sim.stats())["requests"]
    row = "{:>10} {:>10} {:>8} {:>8} {:>11} {:>22}"
    print(
        row.format(
            "requests", "in flight", "latency", "seconds", "requests/s", "simulator CPU/request"
        )
    )
    print(
        row.format(
            args.requests,
            args.concurrency,
            args.latency,
            f"{seconds:.2f}",
            round(args.requests / seconds),
            f"{cpu / args.requests * 1e6:.0f} us" if cpu > 0 else "n/a",
        )
    )
    print(f"statuses: {dict(statuses)}; simulator counted {served} requests (simulated)")
    print("command: " + shlex.join([sys.executable, *sys.argv]))


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0.0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.0, help="simulated latency, seconds")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
