"""A durable run the crash test kills: two dimensions over N sections on the simulator.

    python tests/store_crash_worker.py STORE PROCESS_ID BASE_URL [--sections N]
        [--concurrency C] [--cache]

Prints one progress line per 50 results and "done" at the end. test_store.py imports
`CrashPlugin`, `crash_sections` and `crash_engine` from here so the killed run, the resumed
run and the uninterrupted reference run are the same workload.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from dagengine import DagEngine, Plugin, ProgressUpdate, PromptContext

MODEL = "claude-3-5-haiku-20241022"
TOPICS = ("quarterly report for the client", "birthday dinner with family",
          "weekly newsletter digest", "urgent prize claim, click now", "project deadline")


class CrashPlugin(Plugin):
    """summarize each email, then classify it using the summary (classify depends on it)."""

    def __init__(self) -> None:
        super().__init__("crash-test", "Crash test", "summarize -> classify")
        self.dimensions = ["summarize", "classify"]

    def define_dependencies(self, ctx: Any) -> dict[str, list[str]]:
        return {"classify": ["summarize"]}

    def create_prompt(self, ctx: PromptContext) -> str:
        email = ctx.sections[0].content
        if ctx.dimension == "summarize":
            return f"Summarize this email in one sentence.\n{email}"
        summary = ctx.dependencies["summarize"].data
        return (f"Categorize this email as work, personal, newsletter or spam.\n"
                f"Earlier summary: {json.dumps(summary, sort_keys=True)}\n{email}")

    def select_provider(self, dimension: str, sections: Any = None, context: Any = None) -> Any:
        return {"provider": "anthropic", "options": {"model": MODEL, "max_tokens": 64}}


def crash_sections(count: int) -> list[str]:
    return [f"Email {i}: about the {TOPICS[i % len(TOPICS)]} (ref {i * 7919 % 10007})."
            for i in range(count)]


def crash_engine(store: Any, base_url: str, *, concurrency: int, cache: bool) -> DagEngine:
    return DagEngine(
        CrashPlugin(),
        providers={"anthropic": {"api_key": "test-key", "base_url": base_url}},
        execution={"concurrency": concurrency, "max_retries": 2, "retry_delay": 0.05},
        store=False if store is None else store,  # None: no store at all, not the default one
        cache=cache if store is not None else None,
    )


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("store", type=Path)
    parser.add_argument("process_id")
    parser.add_argument("base_url")
    parser.add_argument("--sections", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--cache", action="store_true")
    args = parser.parse_args(argv)

    printed = -1

    def progress(update: ProgressUpdate) -> None:
        nonlocal printed
        if update.completed // 50 != printed // 50:
            printed = update.completed
            print(f"progress {update.completed}/{update.total}", flush=True)

    engine = crash_engine(args.store, args.base_url, concurrency=args.concurrency,
                          cache=args.cache)
    print("started", flush=True)
    await engine.process(crash_sections(args.sections), process_id=args.process_id,
                         on_progress=progress)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
