"""Running the walkthrough: `run_demo()` and the `dagengine demo` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from ...config import ExecutionConfig
from ...engine import DagEngine
from ...errors import ConfigurationError, DagEngineError
from ...gateway import GatewayError
from ...types import DimensionResult
from .backends import _gateway_expected, _open_setup, _starting_line
from .emails import generate_emails
from .options import DemoOptions, DemoRun
from .plugin import EmailAnalyzer
from .report import _print_banner, _print_intro, _print_report, _ProgressLine, _Report
from .settings import (
    BACKENDS,
    BATCH,
    BATCH_DELAY,
    DEFAULT_SEED,
    DIMENSION,
    DISPLAY_CHOICES,
    EXECUTION,
    MODES,
    PRICING,
    REQUESTS_PER_MINUTE,
)

__all__ = ["build_parser", "main", "run_demo"]


# -- running it ------------------------------------------------------------------------------


async def run_demo(options: DemoOptions, out: TextIO | None = None) -> DemoRun:
    """Run the walkthrough, printing it to `out` (stdout); the run and its report text."""
    report = _Report(out if out is not None else sys.stdout)
    # The banner first: what follows (starting the simulator and the gateway, importing an
    # SDK) takes seconds.
    _print_banner(report)
    if starting := _starting_line(options):
        report.line(starting)
        report.line()
    emails = generate_emails(options.emails, options.seed)
    async with contextlib.AsyncExitStack() as stack:
        # Importing the SDK takes a second or more: do it while the simulator and the
        # gateway start in their own processes.
        importing = asyncio.create_task(asyncio.to_thread(_import_sdk, options))
        try:
            setup = await stack.enter_async_context(_open_setup(options))
        finally:
            await importing
        _print_intro(report, options, setup, emails)
        engine = DagEngine(
            plugin=EmailAnalyzer(),
            providers={"anthropic": setup.provider},
            execution={"concurrency": options.concurrency, **EXECUTION,
                       "mode": options.mode, "batch": BATCH},
            pricing=PRICING,
            progress_display=None if options.display in (None, "none") else options.display,
            # A walkthrough of live calls: a re-run must not be answered from the cache.
            store=False,
        )
        line = None if options.display is not None else _ProgressLine(report)
        completed_after: list[float] = []
        started = time.monotonic()

        def dimension_complete(dimension: str, summary: DimensionResult) -> None:
            completed_after.append(time.monotonic() - started)

        result = await engine.process(emails, on_progress=line,
                                      on_dimension_complete=dimension_complete)
        duration = time.monotonic() - started
        final = engine.get_progress()
        if line is not None and final is not None:
            line.finish(final)
        stats = await setup.simulator.stats() if setup.simulator is not None else None
        run = DemoRun(
            options=options, emails=emails, result=result, duration=duration,
            completed_after=completed_after[0] if completed_after else None,
            backend=setup.backend, gateway=setup.gateway, simulator_stats=stats,
            engine_rate_limited=final.rate_limited if final is not None else 0,
            results=[s.results.get(DIMENSION) or DimensionResult(error="no result")
                     for s in result.sections],
        )
        _print_report(report, run, setup)
    run.report = report.text
    return run


def _import_sdk(options: DemoOptions) -> None:
    """The SDK the provider will likely use: openai through a gateway, else anthropic."""
    importlib.import_module("openai" if _gateway_expected(options) else "anthropic")


# -- command line ----------------------------------------------------------------------------


def build_parser(prog: str = "dagengine demo") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "The Portkey parallel-requests walkthrough: classify emails with 100 concurrent "
            "requests through the Portkey gateway, with live progress and a cost report. "
            "Runs on the local LLM simulator unless ANTHROPIC_API_KEY is set."
        ),
    )
    parser.add_argument("--emails", type=_positive_int, default=100, metavar="N",
                        help="how many emails to generate and classify (default 100)")
    parser.add_argument("--concurrency", type=_positive_int, default=100, metavar="C",
                        help="requests in flight at once (default 100)")
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="where the calls go (default: anthropic when ANTHROPIC_API_KEY "
                             "is set, else simulator)")
    parser.add_argument("--no-gateway", dest="gateway", action="store_false",
                        help="call the backend directly; the engine retries 429s itself")
    parser.add_argument("--gateway-url", default=None, metavar="URL",
                        help="use a local Portkey gateway that is already running "
                             "(http://127.0.0.1:PORT/v1) instead of starting one")
    parser.add_argument("--display", choices=DISPLAY_CHOICES, default=None,
                        help="the engine's progress display on stderr instead of the "
                             "walkthrough's progress line")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"seed of the generated emails and of the simulator "
                             f"(default {DEFAULT_SEED})")
    parser.add_argument("--latency-scale", type=_positive_float, default=1.0, metavar="X",
                        help="multiply the simulator's latency (default 1.0; tests use less)")
    parser.add_argument("--mode", choices=MODES, default="online",
                        help="online (default): one request per email; batch: the provider's "
                             "batch API at half the price, the saving shown next to the "
                             "online price (no gateway)")
    parser.add_argument("--batch-delay", type=_positive_float, default=BATCH_DELAY,
                        metavar="S", help=f"seconds a simulated batch takes (default "
                                          f"{BATCH_DELAY:g})")
    parser.add_argument("--rpm", type=_positive_float, default=REQUESTS_PER_MINUTE,
                        dest="requests_per_minute",
                        help=f"the simulator's requests-per-minute limit "
                             f"(default {REQUESTS_PER_MINUTE:g})")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "dagengine demo") -> int:
    """Run the demo from the command line: 0 when every email succeeded, 1 otherwise,
    2 for bad usage."""
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return _exit_code(exc)
    try:
        ExecutionConfig.from_value({"concurrency": args.concurrency, **EXECUTION})
    except ConfigurationError as exc:
        print(f"{prog}: error: --concurrency: {exc}", file=sys.stderr)
        return 2
    options = DemoOptions(
        emails=args.emails, concurrency=args.concurrency, backend=args.backend,
        gateway=args.gateway, gateway_url=args.gateway_url, display=args.display,
        seed=args.seed, latency_scale=args.latency_scale,
        requests_per_minute=args.requests_per_minute, mode=args.mode,
        batch_delay=args.batch_delay,
    )
    if options.chosen_backend == "anthropic" and not os.environ.get("ANTHROPIC_API_KEY"):
        print(f"{prog}: error: --backend anthropic needs the ANTHROPIC_API_KEY environment "
              f"variable (or leave out --backend to run on the local simulator)",
              file=sys.stderr)
        return 2
    try:
        run = asyncio.run(run_demo(options))
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return 130
    except (DagEngineError, GatewayError, RuntimeError, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    return 0 if run.successes == len(run.results) else 1


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    return code if isinstance(code, int) else 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value
