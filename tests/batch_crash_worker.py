"""A durable batch-mode run the batch crash test kills: summarize -> classify -> overview
(global) over N sections through Anthropic Message Batches on the simulator.

    python tests/batch_crash_worker.py STORE PROCESS_ID BASE_URL [--sections N] [--flag FILE]

With --flag, FILE holds how many batch submissions are on the wire now (written before a
submission's request leaves and after its answer is back), so the test can stop the process
at a moment no submission is between it and the provider.

Prints "started" and "done". test_batch_engine.py imports `batch_plugin`, `batch_engine`
and `batch_sections` from here, so the killed run, the resumed run and the uninterrupted
reference run are the same workload.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from dagengine import DagEngine, Dimension, Plugin, PromptContext

MODEL = "claude-3-5-haiku-20241022"
KEY = "sk-batch-crash-test-key"
TOPICS = ("quarterly report for the client", "birthday dinner with family",
          "weekly newsletter digest", "urgent prize claim, click now", "project deadline")
BATCH = {"max_size": 40, "max_wait": 0.02, "poll_interval": 0.02}


class BatchPlugin(Plugin):
    """Two dependent section dimensions and a global one over all of them."""

    def __init__(self, mode: str | None = None) -> None:
        super().__init__("batch-test", "Batch test", "summarize -> classify -> overview")
        self.dimensions = ["summarize", "classify",
                           Dimension("overview", scope="global", mode=mode)]

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
        summary = ctx.dependencies["summarize"].data
        return (f"Categorize this email as work, personal, newsletter or spam.\n"
                f"Earlier summary: {json.dumps(summary, sort_keys=True)}\n{email}")

    def select_provider(self, dimension: str, sections: Any = None, context: Any = None) -> Any:
        return {"provider": "anthropic", "options": {"model": MODEL, "max_tokens": 64}}


def batch_sections(count: int) -> list[str]:
    return [f"Email {i}: about the {TOPICS[i % len(TOPICS)]} (ref {i * 7919 % 10007})."
            for i in range(count)]


def batch_engine(store: Any, base_url: str, *, mode: str = "batch", retries: int = 3,
                 plugin: Plugin | None = None, **batch: float) -> DagEngine:
    return DagEngine(
        plugin or BatchPlugin(),
        providers={"anthropic": {"api_key": KEY, "base_url": base_url}},
        execution={"mode": mode, "concurrency": 16, "max_retries": retries,
                   "retry_delay": 0.01, "batch": {**BATCH, **batch}},
        store=False if store is None else store,  # None: no store at all, not the default
        cache=False if store is not None else None,
    )


def mark_submissions(engine: DagEngine, flag: Path) -> None:
    """Count the provider batch API's submissions on the wire in `flag` (instrumentation
    only: each submission still goes to the real API)."""
    api = engine.registry.get("anthropic").batch_api()
    assert api is not None
    submit, on_wire = api.submit, 0

    def write(count: int) -> None:  # a few bytes, and it must land before the request
        flag.write_text(str(count))

    async def counted(requests: Any) -> str:
        nonlocal on_wire
        on_wire += 1
        write(on_wire)
        try:
            return await submit(requests)
        finally:
            on_wire -= 1
            write(on_wire)

    api.submit = counted  # type: ignore[method-assign]
    write(0)


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("store", type=Path)
    parser.add_argument("process_id")
    parser.add_argument("base_url")
    parser.add_argument("--sections", type=int, default=200)
    parser.add_argument("--flag", type=Path)
    args = parser.parse_args(argv)
    engine = batch_engine(args.store, args.base_url)
    if args.flag is not None:
        mark_submissions(engine, args.flag)
    print("started", flush=True)
    await engine.process(batch_sections(args.sections), process_id=args.process_id)
    await engine.close()
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
