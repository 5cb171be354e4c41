"""`dagengine demo`: the Portkey parallel-requests walkthrough, end to end.

100 emails, 100 concurrent requests, through the Portkey gateway with retries on 429/5xx,
live progress with throughput, cost and ETA, then the results and cost report, printed in
the walkthrough's own format. Every figure comes from the run's ProcessResult, its timing
and, on the simulator, the simulator's own /stats.

Backends:

* default: the local LLM simulator (in a child process, so it never shares our event loop),
  with Haiku-like latency and a rate limit that 100 simultaneous requests do exceed, behind
  the open-source Portkey gateway on 127.0.0.1 when Node.js is there (else the engine
  retries the 429s itself, and the report says so);
* `--backend anthropic` (chosen by default when ANTHROPIC_API_KEY is set): the real
  Anthropic API, through the hosted Portkey gateway when PORTKEY_API_KEY is set, else
  through a local gateway.

`run_demo()` returns the ProcessResult, the simulator's counts and the report text together,
so the report can be checked against the run that produced it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import io
import math
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from .config import ExecutionConfig
from .engine import DagEngine
from .errors import ConfigurationError, DagEngineError
from .gateway import PORTKEY_GATEWAY_VERSION, GatewayError, LocalGateway, node_available
from .plugin import Plugin, PromptContext
from .providers.portkey import HOSTED_GATEWAY_URL
from .simulator import SimulatorProcess
from .types import DimensionResult, ProcessResult, ProgressUpdate, ProviderSelection, Section

__all__ = [
    "EMAIL_TYPES",
    "DemoOptions",
    "DemoRun",
    "EmailAnalyzer",
    "build_parser",
    "generate_emails",
    "main",
    "run_demo",
]

# -- the walkthrough's settings ------------------------------------------------------------

MODEL = "claude-3-5-haiku-20241022"
DIMENSION = "analyze_email"
PRICING = {"models": {MODEL: {"input_per_1m": 0.8, "output_per_1m": 4.0}}}
EXECUTION = {"max_retries": 3, "continue_on_error": True, "retry_delay": 1.0}
RETRY_ON = [429, 500, 502, 503, 504]
GATEWAY_CONFIG = {"retry": {"attempts": 5, "on_status_codes": RETRY_ON}}
PROGRESS_EVERY = 0.5  # seconds, as the walkthrough's onProgress throttle
PORTKEY_LOGS = "https://app.portkey.ai/logs"
RULE = "=" * 70

# The simulated API. Haiku-like latency; 3,000 requests/min refills 50 per second with a
# bucket of 50, so of 100 simultaneous requests about half get a 429 and the gateway's first
# retry, one second later, fits them all: ~3.5 s in all, the walkthrough's 3.67 s.
LATENCY_MEDIAN = 0.8
LATENCY_SIGMA = 0.35
REQUESTS_PER_MINUTE = 3000.0

# 727 draws exactly the walkthrough's mix for 100 emails: 38 work, 22 newsletter,
# 13 personal, 27 spam.
DEFAULT_SEED = 727

Backend = Literal["simulator", "anthropic"]
BACKENDS: tuple[Backend, ...] = ("simulator", "anthropic")
DISPLAY_CHOICES = ("bar", "multi", "simple", "none")


# -- the plugin ------------------------------------------------------------------------------


class EmailAnalyzer(Plugin):
    """The walkthrough's plugin: one dimension, each email on its own, all in parallel."""

    def __init__(self) -> None:
        super().__init__("simple-email-analyzer", "Simple Email Analyzer",
                         "Fast parallel email analysis with Portkey")
        self.dimensions = [DIMENSION]

    def create_prompt(self, ctx: PromptContext) -> str:
        email = ctx.sections[0]
        return f"""Analyze this email quickly and categorize it.

Email: {email.content}

Return ONLY valid JSON (no markdown):
{{
  "category": "spam" | "work" | "personal" | "newsletter",
  "confidence": 0.95,
  "summary": "Brief one-line summary"
}}"""

    def select_provider(self, dimension: str, sections: Any = None,
                        context: Any = None) -> ProviderSelection:
        return ProviderSelection(
            provider="anthropic",
            options={"model": MODEL, "temperature": 0.1, "max_tokens": 150},
        )


# -- the test emails -------------------------------------------------------------------------

EMAIL_TYPES = ("work", "newsletter", "personal", "spam")
_TYPE_WEIGHTS = (0.35, 0.25, 0.15, 0.25)

# (subject, body) templates; {slots} are filled from _WORDS. Each reads like its kind, and
# none uses words that a classifier prompt's own instructions would mask.
_TEMPLATES: dict[str, tuple[tuple[str, str], ...]] = {
    "work": (
        ("{project} project: deadline moved to {day}",
         "Hi {name},\n\nThe client asked us to move the {project} deadline to {day}. Can you "
         "update the project schedule and share the revised report before our team meeting "
         "at {time}? The budget stays the same.\n\nThanks,\n{sender}"),
        ("{quarter} report draft attached",
         "Hi team,\n\nAttached is the draft of the {quarter} quarterly report. Please review "
         "the KPI slides before the board presentation on {day}. Comments by {time} would "
         "help me finish the deliverable.\n\nBest,\n{sender}"),
        ("Agenda for {day}'s standup",
         "Morning {name},\n\nFor tomorrow's standup: sprint review, the {project} release "
         "milestone and the open invoice from the client. The manager wants the roadmap "
         "update in the meeting notes.\n\n{sender}"),
        ("Interview schedule for the analyst role",
         "Hi {name},\n\nHiring update: three interviews are on the schedule for {day} at "
         "{time}. Please review the candidates' work samples before the meeting and send "
         "your notes to the hiring manager.\n\nRegards,\n{sender}"),
        ("Contract proposal for {project}",
         "Hello {name},\n\nThe customer signed off on the proposal. Legal needs the final "
         "contract and the budget breakdown by {day}; the stakeholder review is on the "
         "schedule for {time}.\n\nThanks,\n{sender}"),
        ("Onboarding plan for the new colleague",
         "Hi {name},\n\n{other} joins the team on {day}. Could you prepare the onboarding "
         "agenda, book a meeting room in the office, and add the {project} project to their "
         "first sprint?\n\nCheers,\n{sender}"),
    ),
    "newsletter": (
        ("{publication} #{number}: {area}",
         "This week in {publication}, edition #{number}: five articles on {area}, curated "
         "for our subscribers. Read the highlights below.\n\nYou are receiving this "
         "newsletter because you subscribed. Unsubscribe or update preferences anytime."),
        ("Your monthly roundup from {publication}",
         "Welcome to the monthly roundup! The most read articles this month cover {area} "
         "and more.\n\nManage your subscription preferences or unsubscribe with one link."),
        ("The {publication} weekly digest",
         "Your weekly digest is here: curated articles about {area}, community highlights "
         "and new reads.\n\nThis newsletter goes to {subscribers} subscribers. "
         "Unsubscribe at any time."),
        ("Bulletin: new on {area}",
         "{publication} bulletin, issue {number}. Highlights: three long reads on {area} and "
         "our editors' curated picks.\n\nNot interested? Unsubscribe from this newsletter."),
        ("Edition {number} is out",
         "Hello subscriber, edition {number} of {publication} is ready to read. Inside: "
         "{area}, reader highlights and the monthly articles archive.\n\nUpdate your "
         "preferences or unsubscribe."),
    ),
    "personal": (
        ("Dinner this weekend?",
         "Hi honey,\n\n{relative} is cooking {food} this weekend and the whole family is "
         "coming. Can you bring the kids for dinner on Saturday? We miss you!\n\nLove,\n"
         "{sender}"),
        ("Happy birthday!!",
         "Happy birthday, {name}! Hope you have a wonderful day. Let's catch up over brunch "
         "this weekend, my treat. Big hug from all of us.\n\nxoxo\n{sender}"),
        ("Trip to {place}",
         "Hey {name},\n\nWe booked the family vacation to {place}! {relative} and the kids "
         "are so excited. Want to visit us there for a weekend? Miss you lots.\n\n{sender}"),
        ("Photos from the wedding",
         "Hi sweetie,\n\nHere are the photos from your cousin's wedding party. Grandma loved "
         "them! Come visit for a family dinner soon, we miss you.\n\nLove, {sender}"),
        ("Movie night?",
         "Hey {name}! Movie night at my place on Friday with pizza? Bring your brother and "
         "your sister too. Would love to catch up before the holiday.\n\n{sender}"),
    ),
    "spam": (
        ("CONGRATULATIONS! You WON {amount}",
         "Dear winner, you have been selected in our international lottery! Claim your "
         "{amount} cash prize now. Click here and verify your details to receive your "
         "reward. This exclusive offer is limited to {hours} hours, act now! Ref: {ref}"),
        ("URGENT: your account is suspended",
         "URGENT notice from {brand}: your account is suspended. Click the link and verify "
         "your password within {hours} hours to claim your free bonus and avoid losing access. "
         "Act now! Case {ref}"),
        ("Guaranteed {crypto} profits!!!",
         "Make $$$ fast! Our guaranteed {crypto} system doubles your cash in a week. Free "
         "bonus for the first {spots} selected members only. Click now, this exclusive deal is "
         "limited!"),
        ("Inheritance claim: {amount}",
         "Dear friend, I am a lawyer contacting you about an unclaimed inheritance of "
         "{amount}. Claim the cash by wire transfer: click to verify, it is guaranteed and "
         "urgent. Reply with your password to receive the million dollar reward.\n\n"
         "Barrister {name} {surname}, file {ref}"),
        ("FREE spins at {brand}",
         "You are a WINNER! Get {spots} free spins and a guaranteed casino bonus. Click to "
         "claim your prize within {hours} hours. Exclusive discount, limited offer, act now!"),
    ),
}
_WORDS: dict[str, tuple[str, ...]] = {
    "name": ("Alice", "Ben", "Chloe", "Dan", "Elena", "Farid", "Grace", "Hiro", "Ines",
             "Jonas", "Kara", "Liam", "Maya", "Noah", "Olga", "Priya", "Quinn", "Rosa"),
    "project": ("Atlas", "Beacon", "Cobalt", "Delta", "Evergreen", "Falcon", "Granite",
                "Helix", "Orion", "Zephyr"),
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday"),
    "time": ("9:30", "10:00", "11:15", "1:00", "2:30", "3:00", "4:45"),
    "quarter": ("Q1", "Q2", "Q3", "Q4"),
    "publication": ("The Morning Byte", "Data Engineering Digest", "Frontend Focus",
                    "The Product Letter", "Cloud Native Notes", "Python Weekly",
                    "Design Matters", "The Growth Memo"),
    "area": ("serverless databases", "vector search", "CSS container queries",
             "pricing pages", "Kubernetes upgrades", "async Python", "onboarding emails",
             "dark mode palettes"),
    "food": ("lasagna", "tacos", "pizza", "curry", "pancakes", "barbecue"),
    "place": ("the lake house", "Lisbon", "the beach", "Grandma's place", "the mountains",
              "Barcelona"),
    "relative": ("Mom", "Dad", "Aunt Sue", "Uncle Pete", "Grandma", "your sister",
                 "your brother"),
    "amount": ("$5,000,000", "$850,000", "$1,250,000", "$2,400,000", "$7,500"),
    "crypto": ("Bitcoin", "crypto", "Ethereum"),
    "brand": ("PayPa1", "Amaz0n Rewards", "Netfl1x Billing", "Apple ID Center",
              "W1nBig Casino"),
    "surname": ("Okafor", "Smith", "Mensah", "Williams", "Adeyemi", "Brown"),
    "hours": ("12", "24", "48", "72"),
}


def generate_emails(count: int, seed: int = DEFAULT_SEED) -> list[Section]:
    """`count` varied emails; metadata carries the `type` each was written as and its subject.

    The mix depends on `seed` alone (the texts come from a second stream), so the same seed
    gives the same types for any template changes.
    """
    kinds = random.Random(seed).choices(EMAIL_TYPES, _TYPE_WEIGHTS, k=count)
    rng = random.Random(f"email-texts:{seed}")
    emails = []
    for kind in kinds:
        subject, body = rng.choice(_TEMPLATES[kind])
        slots = {slot: rng.choice(words) for slot, words in _WORDS.items()}
        slots.update(sender=rng.choice(_WORDS["name"]), other=rng.choice(_WORDS["name"]),
                     number=str(rng.randint(12, 480)), spots=str(rng.randint(5, 50) * 10),
                     subscribers=f"{rng.randint(2, 90) * 1000:,}",
                     ref=f"{rng.choice('ABCDEFGHJKMNPRSTUVWXYZ')}-{rng.randint(10000, 99999)}")
        subject = subject.format(**slots)
        emails.append(Section(content=f"Subject: {subject}\n\n{body.format(**slots)}",
                              metadata={"type": kind, "subject": subject}))
    return emails


# -- options and the result ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DemoOptions:
    emails: int = 100
    concurrency: int = 100
    backend: Backend | None = None  # None: anthropic when ANTHROPIC_API_KEY is set
    gateway: bool = True
    gateway_url: str | None = None  # a local gateway already running (else one is started)
    display: str | None = None  # None: the walkthrough's own progress line on stdout
    seed: int = DEFAULT_SEED
    latency_scale: float = 1.0  # multiplies the simulator's latency (tests make it small)
    requests_per_minute: float = REQUESTS_PER_MINUTE  # the simulator's limit

    @property
    def chosen_backend(self) -> Backend:
        if self.backend is not None:
            return self.backend
        return "anthropic" if os.environ.get("ANTHROPIC_API_KEY") else "simulator"


@dataclass(slots=True)
class Setup:
    """Where the calls go, as the report describes it."""

    backend: Backend
    provider: dict[str, Any]  # the "anthropic" provider config
    backend_line: str
    gateway_line: str
    retry_line: str
    limits_line: str | None = None
    gateway: Literal["local", "hosted"] | None = None
    gateway_log: Path | None = None
    simulator: SimulatorProcess | None = None


@dataclass(slots=True)
class DemoRun:
    """One demo run: what went in, what came back, and the report printed about it."""

    options: DemoOptions
    emails: list[Section]
    result: ProcessResult
    duration: float  # seconds spent in engine.process()
    completed_after: float | None  # when on_dimension_complete fired, seconds from the start
    backend: Backend
    gateway: Literal["local", "hosted"] | None
    simulator_stats: dict[str, Any] | None  # GET /stats after the run (simulator only)
    engine_rate_limited: int = 0  # 429s that reached the engine
    report: str = ""
    results: list[DimensionResult] = field(default_factory=list)

    @property
    def successes(self) -> int:
        return sum(1 for r in self.results if _succeeded(r))

    @property
    def categories(self) -> Counter[str]:
        return Counter(_category(r) for r in self.results if _succeeded(r))

    @property
    def attempts(self) -> int:
        """Requests the engine sent (its own retries included)."""
        return sum(int(r.metadata.get("attempts") or 1) for r in self.results)


def _succeeded(result: DimensionResult) -> bool:
    return result.ok and result.data is not None


def _category(result: DimensionResult) -> str:
    data = result.data
    category = data.get("category") if isinstance(data, dict) else None
    return str(category) if category else "unknown"


# -- running it ------------------------------------------------------------------------------


async def run_demo(options: DemoOptions, out: TextIO | None = None) -> DemoRun:
    """Run the walkthrough, printing it to `out` (stdout); the run and its report text."""
    report = _Report(out if out is not None else sys.stdout)
    emails = generate_emails(options.emails, options.seed)
    async with contextlib.AsyncExitStack() as stack:
        # Importing the SDKs takes a second or more: do it while the simulator and the
        # gateway start in their own processes.
        importing = asyncio.create_task(asyncio.to_thread(_import_sdks))
        try:
            setup = await stack.enter_async_context(_open_setup(options))
        finally:
            await importing
        _print_intro(report, options, setup, emails)
        engine = DagEngine(
            plugin=EmailAnalyzer(),
            providers={"anthropic": setup.provider},
            execution={"concurrency": options.concurrency, **EXECUTION},
            pricing=PRICING,
            progress_display=None if options.display in (None, "none") else options.display,
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


def _import_sdks() -> None:
    for module in ("dagengine.providers.anthropic", "dagengine.providers.openai"):
        importlib.import_module(module)


@contextlib.asynccontextmanager
async def _open_setup(options: DemoOptions) -> AsyncIterator[Setup]:
    """Start what the run needs (simulator, gateway) and stop all of it afterwards."""
    async with contextlib.AsyncExitStack() as stack:
        backend = options.chosen_backend
        if backend == "simulator":
            median = LATENCY_MEDIAN * options.latency_scale
            simulator = await stack.enter_async_context(SimulatorProcess(
                latency_median=median, latency_sigma=LATENCY_SIGMA,
                requests_per_minute=options.requests_per_minute, seed=options.seed))
            burst = max(1, math.floor(options.requests_per_minute / 60))
            setup = Setup(
                backend=backend,
                provider={"api_key": "simulated", "base_url": simulator.base_url},
                backend_line="local LLM simulator (simulated figures)",
                limits_line=(f"{options.requests_per_minute:,.0f} requests/min (bursts of "
                             f"{burst}), latency median {median:.2f}s (simulated)"),
                gateway_line="", retry_line="", simulator=simulator,
            )
        else:
            setup = Setup(
                backend=backend,
                provider={"api_key": os.environ.get("ANTHROPIC_API_KEY", "")},
                backend_line="Anthropic API (real calls, real cost)",
                gateway_line="", retry_line="",
            )
        await _route(stack, options, setup)
        yield setup


async def _route(stack: contextlib.AsyncExitStack, options: DemoOptions, setup: Setup) -> None:
    """Through which gateway, if any, the calls go; fills in the setup's gateway lines."""
    reason = None
    if not options.gateway:
        reason = "--no-gateway"
    elif options.gateway_url is not None:
        _use_gateway(setup, "local", options.gateway_url,
                     f"Portkey with smart retries (local gateway at {options.gateway_url})")
        return
    elif setup.backend == "anthropic" and os.environ.get("PORTKEY_API_KEY"):
        _use_gateway(setup, "hosted", None,
                     f"Portkey with smart retries (hosted, {HOSTED_GATEWAY_URL})")
        return
    elif not node_available():
        reason = "Node.js is not installed, so the open-source Portkey gateway cannot run"
    else:
        log_path = _gateway_log_path()
        try:
            gateway = await stack.enter_async_context(LocalGateway(log_path=log_path))
        except GatewayError as exc:
            reason = f"the local Portkey gateway did not start: {str(exc).splitlines()[0]}"
        else:
            _use_gateway(setup, "local", gateway.url,
                         f"Portkey with smart retries (open-source gateway "
                         f"{PORTKEY_GATEWAY_VERSION} on 127.0.0.1:{gateway.port})")
            setup.gateway_log = log_path
            return
    setup.gateway_line = f"none ({reason}): the engine retries 429s and 5xx itself"
    setup.retry_line = (f"Up to {EXECUTION['max_retries']} retries per email in the engine, "
                        f"{EXECUTION['retry_delay']:g}s backoff doubling, honouring "
                        f"retry-after")


def _use_gateway(setup: Setup, kind: Literal["local", "hosted"], url: str | None,
                 line: str) -> None:
    setup.gateway = kind
    setup.provider.update(gateway="portkey", gateway_config=GATEWAY_CONFIG)
    if url is not None:
        setup.provider["gateway_url"] = url
    setup.gateway_line = line
    attempts = GATEWAY_CONFIG["retry"]["attempts"]
    setup.retry_line = (f"Up to {attempts} attempts on errors "
                        f"({', '.join(map(str, RETRY_ON))}), in the gateway")


def _gateway_log_path() -> Path:
    """One log per user, overwritten by each run, so the report can say where it is."""
    path = Path(tempfile.gettempdir()) / f"dagengine-demo-{os.getuid()}" / "portkey-gateway.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


# -- printing --------------------------------------------------------------------------------


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


def _print_intro(report: _Report, options: DemoOptions, setup: Setup,
                 emails: Sequence[Section]) -> None:
    report.line()
    report.banner("🚀 PORTKEY: PARALLEL REQUEST HANDLING DEMO")
    report.line()
    report.line("📊 Test Configuration:")
    report.line(f"   Total Emails: {len(emails)}")
    report.line(f"   Parallel Requests: {options.concurrency} concurrent")
    report.line(f"   Provider: Anthropic Claude Haiku ({MODEL})")
    report.line(f"   Backend: {setup.backend_line}")
    if setup.limits_line:
        report.line(f"   Simulated API limits: {setup.limits_line}")
    report.line(f"   Gateway: {setup.gateway_line}")
    report.line(f"   Retry Strategy: {setup.retry_line}")
    report.line()
    report.line("📧 Generating test emails...")
    report.line("   Email types:")
    types = Counter(str(e.metadata["type"]) for e in emails)
    for kind in EMAIL_TYPES:
        report.line(f"     - {kind}: {types[kind]} ({_percent(types[kind], len(emails)):.0f}%)")
    report.line()
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
    return (f" ({run.options.concurrency} concurrent requests against a "
            f"{run.options.requests_per_minute:,.0f} requests/min limit)")


def _first_errors(results: Sequence[DimensionResult], limit: int = 3) -> list[str]:
    errors = Counter(r.error for r in results if r.error is not None)
    return [f"{n} x {error}" for error, n in errors.most_common(limit)]


def _percent(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


def _per_email_ms(duration: float, count: int) -> int:
    return round(duration / count * 1000) if count else 0


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
        requests_per_minute=args.requests_per_minute,
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
