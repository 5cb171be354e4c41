"""The printed walkthrough: progress line, results, cost analysis, takeaways and logs."""

from __future__ import annotations

import io
import math
import time
from collections import Counter
from collections.abc import Sequence
from typing import TextIO

from ...types import DimensionResult, ProgressUpdate, Section
from .backends import Setup
from .emails import EMAIL_TYPES
from .options import DemoOptions, DemoRun
from .settings import MODEL, PORTKEY_LOGS, PRICING, PROGRESS_EVERY, RULE

__all__ = ["progress_line"]


class _Report:
    """Writes to the output stream and keeps a copy of everything written."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._copy = io.StringIO()
        try:
            self.terminal = out.isatty()
        except (AttributeError, ValueError):
            self.terminal = False

    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()
        self._copy.write(text)

    def line(self, text: str = "") -> None:
        self.write(text + "\n")

    def banner(self, title: str) -> None:
        self.line(RULE)
        self.line(title)
        self.line(RULE)

    @property
    def text(self) -> str:
        return self._copy.getvalue()


class _ProgressLine:
    """The walkthrough's onProgress: one line at most every 500 ms, in place on a terminal."""

    def __init__(self, report: _Report) -> None:
        self.report = report
        self._shown = -math.inf
        self._last = ""
        self._last_completed = -1
        self._done = False

    def __call__(self, progress: ProgressUpdate) -> None:
        now = time.monotonic()
        if self._done or now - self._shown < PROGRESS_EVERY:
            return
        self._shown = now
        self._show(progress)

    def finish(self, progress: ProgressUpdate) -> None:
        """The final state, unless it is already on screen; then end the line."""
        if not self._done:
            if progress.completed != self._last_completed:
                self._show(progress)
            if self.report.terminal and self._last:
                self.report.write("\n")
            self._done = True

    def _show(self, progress: ProgressUpdate) -> None:
        line = progress_line(progress)
        if self.report.terminal:
            padding = " " * max(0, len(self._last) - len(line))
            self.report.write("\r" + line + padding)
        else:
            self.report.line(line)
        self._last = line
        self._last_completed = progress.completed


def progress_line(p: ProgressUpdate) -> str:
    """`📊 Progress: 63/100 (63%) | 27.2 req/s | $0.0147 | ETA: 2s` (+ 429s when any)."""
    line = (f"📊 Progress: {p.completed}/{p.total} ({p.percent:.0f}%) | "
            f"{p.requests_per_second:.1f} req/s | ${p.cost:.4f} | "
            f"ETA: {math.ceil(p.eta_seconds)}s")
    if p.rate_limited:
        line += f" | 429s absorbed: {p.rate_limited}"
    return line


def _print_banner(report: _Report) -> None:
    report.line()
    report.banner("🚀 PORTKEY: PARALLEL REQUEST HANDLING DEMO")
    report.line()


def _print_intro(report: _Report, options: DemoOptions, setup: Setup,
                 emails: Sequence[Section]) -> None:
    report.line("📊 Test Configuration:")
    report.line(f"   Total Emails: {len(emails)}")
    report.line(f"   Parallel Requests: {options.concurrency} concurrent")
    report.line(f"   Provider: Anthropic Claude Haiku ({MODEL})")
    report.line(f"   Backend: {setup.backend_line}")
    if setup.limits_line:
        report.line(f"   Simulated API limits: {setup.limits_line}")
    report.line(f"   Gateway: {setup.gateway_line}")
    report.line(f"   Retry Strategy: {setup.retry_line}")
    if options.mode == "batch":
        report.line("   Mode: batch (Anthropic Message Batches, 50% of the online price)")
    report.line()
    report.line("📧 Generating test emails...")
    report.line("   Email types:")
    types = Counter(str(e.metadata["type"]) for e in emails)
    for kind in EMAIL_TYPES:
        report.line(f"     - {kind}: {types[kind]} ({_percent(types[kind], len(emails)):.0f}%)")
    report.line()
    if options.mode == "batch":
        report.line(f"⚡ Processing {len(emails)} emails through the batch API...")
    else:
        report.line(f"⚡ Processing {len(emails)} emails with {options.concurrency} parallel "
                    f"requests...")
    report.line()


def _print_report(report: _Report, run: DemoRun, setup: Setup) -> None:
    count = len(run.results)
    failed = count - run.successes
    throughput = count / run.duration if run.duration > 0 else 0.0
    simulated = run.backend == "simulator"

    report.line()
    completed_after = run.completed_after if run.completed_after is not None else run.duration
    rps = count / completed_after if completed_after > 0 else 0.0
    if failed:
        report.line(f"⚠️  Completed in {completed_after:.2f}s with {failed} failed emails")
    else:
        report.line(f"✅ Completed in {completed_after:.2f}s")
    report.line(f"📊 Throughput: {rps:.1f} requests/second")
    report.line()

    report.banner("📊 RESULTS")
    report.line()
    if simulated:
        report.line("   🧪 Simulated: answers, latencies and 429s come from the local LLM "
                    "simulator")
        report.line()
    report.line("⚡ Performance:")
    report.line(f"   Duration: {run.duration:.2f}s")
    report.line(f"   Emails Processed: {count}")
    report.line(f"   Throughput: {throughput:.1f} emails/second")
    report.line(f"   Avg Time per Email: {_per_email_ms(run.duration, count)}ms")
    report.line()
    report.line("✅ Success Rate:")
    report.line(f"   Successful: {run.successes}/{count} ({_percent(run.successes, count):.1f}%)")
    if failed:
        report.line(f"   Failed: {failed}")
        for error in _first_errors(run.results):
            report.line(f"     - {error}")
    report.line()
    if (retries := _retries_line(run)) is not None:
        report.line(retries)
        report.line()
    report.line("📂 Categories Detected:")
    for category, n in run.categories.most_common():
        report.line(f"   {category}: {n} ({_percent(n, count):.1f}%)")
    report.line()

    _print_costs(report, run)
    _print_takeaways(report, run, throughput)
    _print_logs(report, setup)


def _print_costs(report: _Report, run: DemoRun) -> None:
    count = len(run.results)
    costs = run.result.costs
    total = costs.total_cost if costs is not None else 0.0
    per_email = total / count if count else 0.0
    report.banner("💰 COST ANALYSIS")
    report.line()
    if run.backend == "simulator":
        price = PRICING["models"][MODEL]
        report.line(f"   🧪 Simulated: tokens counted by the simulator, priced as {MODEL} "
                    f"(${price['input_per_1m']:.2f} in / ${price['output_per_1m']:.2f} out "
                    f"per 1M tokens)")
        report.line()
    report.line("📊 Cost Breakdown:")
    report.line(f"   Total Cost: ${total:.4f}")
    report.line(f"   Cost per Email: ${per_email:.6f}")
    report.line(f"   Cost per 1K emails: ${per_email * 1_000:,.2f}")
    report.line(f"   Cost per 1M emails: ${per_email * 1_000_000:,.2f}")
    batch = costs.by_mode.get("batch") if costs is not None else None
    if costs is not None and batch is not None:
        saved = 100 * costs.batch_savings / batch.online_cost if batch.online_cost else 0.0
        report.line(f"   Batch mode: ${batch.cost:.4f} for {batch.calls} calls, against "
                    f"${batch.online_cost:.4f} online (saved ${costs.batch_savings:.4f}, "
                    f"{saved:.0f}%)")
    report.line()
    report.line("Token Usage:")
    tokens = costs.total_tokens if costs is not None else 0
    report.line(f"   Total Tokens: {tokens:,}")
    report.line(f"   Input Tokens: {costs.input_tokens if costs is not None else 0:,}")
    report.line(f"   Output Tokens: {costs.output_tokens if costs is not None else 0:,}")
    report.line(f"   Avg Tokens/Email: {round(tokens / count) if count else 0:,}")
    if costs is not None and costs.unpriced_models:
        report.line(f"   (no price known for {', '.join(costs.unpriced_models)}: counted as $0)")
    report.line()


def _print_takeaways(report: _Report, run: DemoRun, throughput: float) -> None:
    count = len(run.results)
    costs = run.result.costs
    total = costs.total_cost if costs is not None else 0.0
    report.banner("🎯 KEY TAKEAWAYS")
    report.line()
    report.line(f"✓ Processed {count} emails in parallel")
    report.line(f"✓ {throughput:.1f} requests per second throughput")
    report.line(f"✓ {_percent(run.successes, count):.1f}% success rate")
    report.line(f"✓ Automatic retry handling on failures{_retry_takeaway(run)}")
    report.line(f"✓ Smart rate limit protection{_limit_takeaway(run)}")
    report.line(f"✓ Real-time cost tracking: ${total:.4f} for {count} emails")
    report.line()


def _print_logs(report: _Report, setup: Setup) -> None:
    if setup.gateway == "hosted":
        report.line("📊 View detailed logs in Portkey:")
        report.line(f"   {PORTKEY_LOGS}")
        report.line()
    elif setup.gateway_log is not None:
        report.line("📊 Local Portkey gateway log:")
        report.line(f"   {setup.gateway_log}")
        report.line()
    if setup.backend == "simulator":
        report.line("🧪 Every figure above is simulated. Set ANTHROPIC_API_KEY (and "
                    "PORTKEY_API_KEY for the hosted gateway) to run it against the real "
                    "services.")
        report.line()


def _retries_line(run: DemoRun) -> str | None:
    """What the upstream saw, from the simulator's own counters."""
    stats = run.simulator_stats
    if stats is None:
        return None
    upstream = int(stats["requests"])
    refused = int(stats["rate_limited"])
    count = len(run.results)
    if run.options.mode == "batch":
        return (f"🔁 Batches: {stats['batches_created']} submitted, "
                f"{run.attempts - count} requests retried into a later batch "
                f"({stats['batch_items_billed']} items billed for {count} calls)")
    tail = (f"(429s answered upstream: {refused}, upstream requests: {upstream} for "
            f"{count} calls)")
    if run.gateway is not None:
        return f"🔁 Gateway retries absorbed: {upstream - run.attempts} {tail}"
    return f"🔁 Engine retries: {run.attempts - count} {tail}"


def _retry_takeaway(run: DemoRun) -> str:
    stats = run.simulator_stats
    if stats is None:
        return ""
    refused = int(stats["rate_limited"])
    if run.gateway is not None:
        reached = run.engine_rate_limited or "none"
        return f" ({refused} 429s retried by the gateway, {reached} reached the engine)"
    return f" ({refused} 429s retried by the engine)"


def _limit_takeaway(run: DemoRun) -> str:
    if run.backend != "simulator":
        return ""
    if run.options.mode == "batch":
        return " (batches are outside the online rate limits)"
    return (f" ({run.options.concurrency} concurrent requests against a "
            f"{run.options.requests_per_minute:,.0f} requests/min limit)")


def _first_errors(results: Sequence[DimensionResult], limit: int = 3) -> list[str]:
    errors = Counter(r.error for r in results if r.error is not None)
    return [f"{n} x {error}" for error, n in errors.most_common(limit)]


def _percent(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


def _per_email_ms(duration: float, count: int) -> int:
    return round(duration / count * 1000) if count else 0
