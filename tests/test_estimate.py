"""engine.estimate(sections) and `dagengine estimate`: calls, tokens, cost and time before a
run, checked against real runs of the built-in providers on the simulator."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import dagengine.estimate as estimate_module
from conftest import FakeProvider
from dagengine import (
    CircularDependencyError,
    DagEngine,
    Dimension,
    DimensionEstimate,
    Estimate,
    Plugin,
    PreflightError,
    ProcessResult,
    PromptContext,
    Section,
    ValidationError,
)
from dagengine.cli import main
from dagengine.cli.demo.emails import generate_emails
from dagengine.cli.demo.plugin import EmailAnalyzer
from dagengine.cli.demo.settings import PRICING
from dagengine.simulator import Simulator

ROOT = Path(__file__).resolve().parent.parent
HAIKU = "claude-3-5-haiku-20241022"
MINI = "gpt-4o-mini"


def providers(sim: Simulator, **anthropic: Any) -> dict[str, Any]:
    return {"anthropic": {"api_key": "sim", "base_url": sim.base_url, **anthropic},
            "openai": {"api_key": "sim", "base_url": f"{sim.base_url}/v1"}}


class ReviewOverview(Plugin):
    """Two dimensions: a sentiment per review (Anthropic), then one overview of all of them
    (OpenAI) whose prompt lists every review's sentiment."""

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
            return {"provider": "openai", "options": {"model": MINI, "max_tokens": 200}}
        return {"provider": "anthropic", "options": {"model": HAIKU, "max_tokens": 100}}


def reviews(count: int, seed: int = 0) -> list[str]:
    words = ["great", "terrible", "fine", "slow", "love", "broken", "fast", "refund", "happy"]
    import random

    rng = random.Random(seed)
    return [f"Review {i}: " + " ".join(rng.choice(words) for _ in range(rng.randint(8, 40)))
            + "." for i in range(count)]


def total_cost(result: ProcessResult) -> float:
    assert result.costs is not None
    return result.costs.total_cost


def assert_brackets(estimate: Estimate, result: ProcessResult) -> None:
    actual = total_cost(result)
    assert actual > 0
    assert estimate.cost_low <= actual <= estimate.cost_high, (
        estimate.cost_low, actual, estimate.cost_high)


async def timed(engine: DagEngine, sections: list[Any]) -> tuple[ProcessResult, float]:
    started = time.monotonic()
    result = await engine.process(sections)
    return result, time.monotonic() - started


# -- acceptance: the seed demo and a DAG with a global dimension ----------------------------------


async def test_demo_estimate_brackets_the_actual_cost_and_counts_its_input_tokens() -> None:
    emails = generate_emails(100)
    async with Simulator() as sim:
        engine = DagEngine(EmailAnalyzer(), providers=providers(sim),
                           execution={"concurrency": 100}, pricing=PRICING)
        estimate = engine.estimate(emails)
        result = await engine.process(emails)
    assert estimate.calls == {"analyze_email": 100}
    assert_brackets(estimate, result)
    assert result.costs is not None
    # The simulator counts tokens as the estimate does: the prompts are the real ones.
    assert estimate.input_tokens == result.costs.input_tokens
    assert estimate.output_tokens_max == 100 * 150  # the demo's max_tokens
    dim = estimate.dimensions["analyze_email"]
    assert dim.output_tokens_source.startswith("guess")
    assert dim.seconds_source.startswith("guess")
    assert any("no earlier run" in note for note in estimate.notes)  # the default store is empty


async def test_global_dag_estimate_brackets_the_actual_cost() -> None:
    sections = reviews(60)
    async with Simulator() as sim:
        engine = DagEngine(ReviewOverview(), providers=providers(sim),
                           execution={"concurrency": 20})
        estimate = engine.estimate(sections)
        result = await engine.process(sections)
    assert estimate.calls == {"sentiment": 60, "overview": 1}
    assert_brackets(estimate, result)
    overview = estimate.dimensions["overview"]
    assert overview.scope == "global" and overview.model == MINI
    # The overview's dependencies do not exist before the run: stand-ins, said to be a guess.
    assert overview.input_tokens_source.endswith(
        "dependencies: guess: placeholders (no earlier result)")
    assert estimate.dimensions["sentiment"].input_tokens_source.startswith("guess")


@dataclass
class Rerun:
    """A second run of a workload, and what the estimate said of it beforehand, with the
    first run in the store."""

    estimate: Estimate
    result: ProcessResult
    seconds: float

    def assert_cost_within(self, share: float) -> None:
        assert_brackets(self.estimate, self.result)
        actual = total_cost(self.result)
        assert abs(self.estimate.cost_expected - actual) <= share * actual, (
            self.estimate.cost_expected, actual)

    def assert_time_within(self, share: float) -> None:
        assert abs(self.estimate.seconds_expected - self.seconds) <= share * self.seconds, (
            self.estimate.seconds_expected, self.seconds)


async def rerun(plugin: Plugin, sections: Any, store: Path, latency: float,
                concurrency: int, **engine: Any) -> Rerun:
    # A fixed latency long against the CPU time of a call, and three waves of calls: the
    # run's time is mostly the calls', even on a loaded machine.
    async with Simulator(latency=latency) as sim:
        config = {"plugin": plugin, "providers": providers(sim),
                  "execution": {"concurrency": concurrency}, **engine}
        # A first run in this process pays one-time costs (imports, first connections)
        # that a later run does not: warm up outside the store.
        await DagEngine(**config).process(sections(concurrency, 99))
        first = DagEngine(**config, store=store)
        await first.process(sections(3 * concurrency, 1))
        second = sections(3 * concurrency, 2)
        # A new engine: what it knows of the first run comes from the store alone.
        estimate = DagEngine(**config, store=store).estimate(second)
        result, seconds = await timed(first, second)
    return Rerun(estimate, result, seconds)


@pytest.fixture(scope="module")
def demo_rerun(tmp_path_factory: pytest.TempPathFactory) -> Rerun:
    return asyncio.run(rerun(EmailAnalyzer(), lambda n, seed: generate_emails(n, seed),
                             tmp_path_factory.mktemp("demo") / "runs.db", latency=1.0,
                             concurrency=20, pricing=PRICING))


@pytest.fixture(scope="module")
def dag_rerun(tmp_path_factory: pytest.TempPathFactory) -> Rerun:
    return asyncio.run(rerun(ReviewOverview(), lambda n, seed: reviews(n, seed),
                             tmp_path_factory.mktemp("dag") / "runs.db", latency=0.8,
                             concurrency=20))


def test_demo_estimate_after_one_run_is_within_15_percent_of_the_cost(demo_rerun: Rerun) -> None:
    dim = demo_rerun.estimate.dimensions["analyze_email"]
    # ~60: an email the first run drew twice was answered by the cache the second time.
    assert dim.output_tokens_source.startswith("earlier runs (")
    assert dim.seconds_source.startswith("earlier runs (")
    assert dim.input_tokens_source.startswith("prompts counted, calibrated on 50 earlier calls")
    assert len(demo_rerun.estimate.history) == 1
    demo_rerun.assert_cost_within(0.15)


@pytest.mark.timing
def test_demo_estimate_after_one_run_is_within_25_percent_of_the_time(demo_rerun: Rerun) -> None:
    demo_rerun.assert_time_within(0.25)  # three waves of 20 calls of 1 s


def test_global_dag_estimate_after_one_run_is_within_15_percent_of_the_cost(
    dag_rerun: Rerun,
) -> None:
    estimate = dag_rerun.estimate
    assert estimate.calls == {"sentiment": 60, "overview": 1}
    assert estimate.dimensions["overview"].output_tokens_source == "earlier runs (1 calls)"
    assert estimate.dimensions["overview"].input_tokens_source.endswith(
        "dependencies: guess: earlier results of other sections")
    dag_rerun.assert_cost_within(0.15)


@pytest.mark.timing
def test_global_dag_estimate_after_one_run_is_within_25_percent_of_the_time(
    dag_rerun: Rerun,
) -> None:
    dag_rerun.assert_time_within(0.25)  # three waves of sentiment (0.8 s), then the overview


# -- no call, any context -------------------------------------------------------------------------


async def test_estimate_makes_no_provider_call_even_with_a_store_and_cache(tmp_path: Path) -> None:
    async with Simulator() as sim:
        engine = DagEngine(ReviewOverview(), providers=providers(sim), store=tmp_path / "r.db")
        await engine.process(reviews(10))
        before = (await sim.stats())["requests"]
        engine.estimate(reviews(10))
        engine.estimate(reviews(20, seed=3))
        assert (await sim.stats())["requests"] == before


def test_estimate_works_outside_an_event_loop() -> None:
    engine = DagEngine(EmailAnalyzer(), providers={"anthropic": {"api_key": "unused"}})
    estimate = engine.estimate(generate_emails(5))
    assert estimate.calls == {"analyze_email": 5}


async def test_estimate_inside_a_running_loop_awaits_async_hooks() -> None:
    class AsyncPrompts(EmailAnalyzer):
        async def create_prompt(self, ctx: PromptContext) -> str:  # type: ignore[override]
            await asyncio.sleep(0)
            return "Categorize: " + ctx.sections[0].content

    engine = DagEngine(AsyncPrompts(), providers={"anthropic": {"api_key": "unused"}})
    estimate = engine.estimate(["a" * 400, "b" * 800])
    # 4 characters a token, plus the prompt's own words and 3 for the message.
    assert estimate.input_tokens == (412 // 4 + 3) + (812 // 4 + 3)


# -- bad input: what process() refuses, estimate refuses the same way -----------------------------


@pytest.mark.parametrize("sections", ["one email as a string", None, 42, {"content": "x"}])
def test_estimate_refuses_what_is_not_a_list_of_sections(sections: Any) -> None:
    engine = DagEngine(EmailAnalyzer(), providers={"anthropic": {"api_key": "unused"}})
    with pytest.raises(ValidationError, match="sections must be a list of sections"):
        engine.estimate(sections)


def test_estimate_names_the_bad_section() -> None:
    engine = DagEngine(EmailAnalyzer(), providers={"anthropic": {"api_key": "unused"}})
    with pytest.raises(ValidationError, match=r"sections\[1\] must be a Section"):
        engine.estimate(["fine", 3.5])


async def test_estimate_raises_the_preflight_error_process_raises() -> None:
    engine = DagEngine(EmailAnalyzer(), providers={"openai": {"api_key": "unused"}})
    with pytest.raises(PreflightError) as estimated:
        engine.estimate(["an email"])
    with pytest.raises(PreflightError) as processed:
        await engine.process(["an email"])
    assert str(estimated.value) == str(processed.value)
    assert "'anthropic' is not configured" in str(estimated.value)


def test_estimate_raises_on_a_cycle() -> None:
    class Cycle(EmailAnalyzer):
        def __init__(self) -> None:
            super().__init__()
            self.dimensions = ["a", "b"]

        def define_dependencies(self, ctx: Any) -> dict[str, list[str]]:
            return {"a": ["b"], "b": ["a"]}

    engine = DagEngine(Cycle(), providers={"anthropic": {"api_key": "unused"}})
    with pytest.raises(CircularDependencyError):
        engine.estimate(["x"])


# -- calls: skips, transformations, the response cache --------------------------------------------


class Pipeline(Plugin):
    """classify every email; reply to the non-spam ones, reading the classification."""

    def __init__(self, skip: str = "") -> None:
        super().__init__("pipeline")
        self.dimensions = ["classify", "reply"]
        self.skip = skip

    def define_dependencies(self, ctx: Any) -> dict[str, list[str]]:
        return {"reply": ["classify"]}

    def should_skip_section_dimension(self, ctx: Any) -> bool:
        if self.skip == "content" and ctx["dimension"] == "classify":
            return "WINNER" in ctx["section"].content
        if self.skip == "dependency" and ctx["dimension"] == "reply":
            return bool(ctx["dependencies"]["classify"].data["category"] == "spam")
        return False

    def create_prompt(self, ctx: PromptContext) -> str:
        if ctx.dimension == "reply":
            category = ctx.dependencies["classify"].data["category"]
            return f"Draft a reply to this {category} email:\n{ctx.sections[0].content}"
        return f"Categorize this email as JSON:\n{ctx.sections[0].content}"

    def select_provider(self, dimension: str, sections: Any = None, context: Any = None) -> Any:
        return {"provider": "anthropic", "options": {"model": HAIKU, "max_tokens": 100}}


def test_a_skip_hook_on_the_section_alone_gives_the_exact_count() -> None:
    emails = ["You are a WINNER! Claim your prize", "Meeting moved to Monday", "WINNER again"]
    engine = DagEngine(Pipeline(skip="content"), providers={"anthropic": {"api_key": "unused"}})
    estimate = engine.estimate(emails)
    classify = estimate.dimensions["classify"]
    assert classify.calls == classify.calls_expected == 1
    assert not classify.calls_upper_bound


def test_a_skip_hook_on_results_not_there_yet_gives_an_upper_bound() -> None:
    engine = DagEngine(Pipeline(skip="dependency"), providers={"anthropic": {"api_key": "unused"}})
    estimate = engine.estimate(["a", "b", "c", "d"])
    reply = estimate.dimensions["reply"]
    assert reply.calls == 4 and reply.calls_upper_bound
    assert any("reply: its skip hook decides on results that do not exist yet" in note
               for note in estimate.notes)
    # An upper bound is not a certain call: the low cost leaves those calls out.
    assert reply.cost_low == 0 < reply.cost_high


def keep_first(result: Any, sections: list[Section]) -> list[Section]:
    return sections[:1]


class Filtered(Plugin):
    """classify, then a global that keeps the first section only, then reply to it."""

    def __init__(self, provider: str = "anthropic") -> None:
        super().__init__("filtered")
        self.dimensions = ["classify", Dimension(name="pick", scope="global",
                                                 transform=keep_first), "reply"]
        self.provider = provider

    def define_dependencies(self, ctx: Any) -> dict[str, list[str]]:
        return {"pick": ["classify"], "reply": ["pick"]}

    def create_prompt(self, ctx: PromptContext) -> str:
        return f"{ctx.dimension}: {[s.content for s in ctx.sections]}"

    def select_provider(self, dimension: str, sections: Any = None, context: Any = None) -> Any:
        return {"provider": self.provider, "options": {"model": HAIKU}}


def test_calls_after_a_transformation_are_not_known() -> None:
    estimate = DagEngine(Filtered(), providers={"anthropic": {"api_key": "unused"}}).estimate(
        ["a", "b", "c"])
    assert estimate.dimensions["classify"].calls_known
    reply = estimate.dimensions["reply"]
    assert not reply.calls_known and reply.calls == 3 and reply.cost_low == 0
    assert "~3" in estimate.table()


def test_calls_after_a_transformation_scale_as_in_the_earlier_run(
    tmp_path: Path, fake: FakeProvider,
) -> None:
    engine = DagEngine(Filtered("fake"), providers={"fake": fake}, store=tmp_path / "runs.db")
    engine.run(["a", "b", "c"])  # the transformation kept 1 section of 3
    reply = engine.estimate([f"s{i}" for i in range(9)]).dimensions["reply"]
    assert reply.calls == 3 and not reply.calls_known


async def test_calls_the_response_cache_answers_cost_nothing(tmp_path: Path) -> None:
    emails = generate_emails(20)
    async with Simulator() as sim:
        engine = DagEngine(Pipeline(), providers=providers(sim), store=tmp_path / "runs.db")
        await engine.process(emails)
        estimate = engine.estimate(emails)
        again = await engine.process(emails)
    for name in ("classify", "reply"):
        dim = estimate.dimensions[name]
        assert (dim.calls, dim.cached_calls, dim.cost_high) == (0, 20, 0)
    # The reply's prompt reads the classification: the stored one of the same email.
    assert estimate.dimensions["reply"].input_tokens_source.endswith(
        "dependencies: the same sections' results in an earlier run")
    assert total_cost(again) == estimate.cost_expected == 0


async def test_prompts_reading_dependencies_use_the_same_sections_earlier_results(
    tmp_path: Path,
) -> None:
    emails = generate_emails(30)
    async with Simulator() as sim:
        engine = DagEngine(Pipeline(), providers=providers(sim), store=tmp_path / "runs.db",
                           cache=False)
        await engine.process(emails)
        estimate = engine.estimate(emails)
        again = await engine.process(emails)
    assert again.costs is not None
    reply = again.costs.by_dimension["reply"]
    # The reply prompts are exactly the run's, so their tokens are too.
    assert estimate.dimensions["reply"].input_tokens == reply.tokens.input_tokens


def test_a_prompt_that_fails_on_placeholders_counts_as_the_others() -> None:
    class Picky(Pipeline):
        def create_prompt(self, ctx: PromptContext) -> str:
            if ctx.dimension == "reply":
                category = ctx.dependencies["classify"].data.get("category")
                return "Reply to this " + category + " email"  # None + str: TypeError
            return super().create_prompt(ctx)

    estimate = DagEngine(Picky(), providers={"anthropic": {"api_key": "unused"}}).estimate(
        ["one", "two"])
    reply = estimate.dimensions["reply"]
    assert reply.calls == 2 and reply.input_tokens > 0
    assert any("create_prompt failed for 2 of 2 prompts" in note for note in estimate.notes)


# -- tokens, ceilings, time -----------------------------------------------------------------------


def test_a_large_input_is_sampled_and_scaled(monkeypatch: pytest.MonkeyPatch) -> None:
    emails = generate_emails(3000)
    engine = DagEngine(EmailAnalyzer(), providers={"anthropic": {"api_key": "unused"}})
    full = engine.estimate(emails)
    monkeypatch.setattr(estimate_module, "RENDER_SECONDS", 0.0)
    monkeypatch.setattr(estimate_module, "MIN_SAMPLE", 300)
    sampled = engine.estimate(emails)
    assert sampled.calls == full.calls == {"analyze_email": 3000}
    assert abs(sampled.input_tokens - full.input_tokens) <= 0.03 * full.input_tokens
    assert any("300 of 3,000 prompts rendered" in note for note in sampled.notes)


@pytest.mark.parametrize(("config", "ceiling", "source"), [
    ({}, 1024, "max_tokens 1,024 (the provider's default)"),
    ({"max_tokens": 300}, 300, "max_tokens 300 (provider config)"),
])
def test_the_output_ceiling_is_max_tokens_from_options_config_or_default(
    config: dict[str, Any], ceiling: int, source: str,
) -> None:
    class NoMax(EmailAnalyzer):
        def select_provider(self, dimension: str, sections: Any = None,
                            context: Any = None) -> Any:
            return {"provider": "anthropic", "options": {"model": HAIKU}}

    engine = DagEngine(NoMax(), providers={"anthropic": {"api_key": "unused", **config}})
    dim = engine.estimate(["x", "y"]).dimensions["analyze_email"]
    assert dim.output_tokens_max == 2 * ceiling
    assert dim.output_tokens_max_source == source


def test_rate_limits_bound_the_time() -> None:
    emails = generate_emails(100)
    fast = DagEngine(EmailAnalyzer(), providers={"anthropic": {"api_key": "unused"}},
                     execution={"concurrency": 100})
    limited = DagEngine(EmailAnalyzer(), providers={"anthropic": {"api_key": "unused"}},
                        execution={"concurrency": 100,
                                   "rate_limits": {"anthropic": {"requests_per_minute": 300}}})
    assert fast.estimate(emails).seconds_expected < 10
    # 100 requests at 5 a second take 20 s, whatever the concurrency.
    estimate = limited.estimate(emails)
    assert estimate.seconds_expected >= 20
    assert "time: the rate limit of 'anthropic'" in "\n".join(estimate.notes)


def test_concurrency_spreads_the_work() -> None:
    emails = generate_emails(100)
    times = [DagEngine(EmailAnalyzer(), providers={"anthropic": {"api_key": "unused"}},
                       execution={"concurrency": c}).estimate(emails).seconds_expected
             for c in (10, 100)]
    assert times[0] > 3 * times[1]


def test_an_unpriced_model_says_so() -> None:
    class Unknown(EmailAnalyzer):
        def select_provider(self, dimension: str, sections: Any = None,
                            context: Any = None) -> Any:
            return {"provider": "anthropic", "options": {"model": "my-own-model"}}

    estimate = DagEngine(Unknown(), providers={"anthropic": {"api_key": "unused"}}).estimate(
        ["x"])
    assert estimate.cost_high == 0
    assert any("no price known for my-own-model" in note for note in estimate.notes)


def test_the_estimate_is_plain_data_and_prints_as_a_table() -> None:
    estimate = DagEngine(EmailAnalyzer(), providers={"anthropic": {"api_key": "unused"}},
                         pricing=PRICING).estimate(generate_emails(10))
    again = Estimate.model_validate_json(estimate.model_dump_json())
    assert again == estimate
    assert isinstance(again.dimensions["analyze_email"], DimensionEstimate)
    text = str(estimate)
    assert text.startswith("Estimate for simple-email-analyzer: 10 sections, 1 dimension")
    assert "analyze_email" in text and "cost: $" in text and "notes:" in text


# -- the command line ------------------------------------------------------------------------------


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dagengine", "estimate", *args],
                          capture_output=True, text=True, input=stdin, timeout=120, cwd=ROOT)


def jsonl(path: Path, sections: list[Section]) -> Path:
    path.write_text("".join(json.dumps(s.to_dict()) + "\n" for s in sections))
    return path


def test_cli_prints_the_demo_estimate_without_an_api_key(tmp_path: Path) -> None:
    emails = jsonl(tmp_path / "emails.jsonl", generate_emails(100))
    done = cli("dagengine.cli.demo:EmailAnalyzer", str(emails), "--execution",
               '{"concurrency": 100}')
    assert done.returncode == 0, done.stderr
    assert "Estimate for simple-email-analyzer: 100 sections" in done.stdout
    assert "analyze_email    100" in done.stdout
    assert "at concurrency 100" in done.stdout


def test_cli_json_matches_the_engine_and_reads_a_store(tmp_path: Path) -> None:
    emails = generate_emails(12)
    store = tmp_path / "runs.db"

    async def first_run() -> None:
        async with Simulator() as sim:
            await DagEngine(EmailAnalyzer(), providers=providers(sim), pricing=PRICING,
                            store=store, cache=False).process(emails)

    asyncio.run(first_run())
    done = cli("dagengine.cli.demo:EmailAnalyzer", str(jsonl(tmp_path / "e.jsonl", emails)),
               "--json", "--store", str(store), "--pricing", json.dumps(PRICING))
    assert done.returncode == 0, done.stderr
    estimate = Estimate.model_validate_json(done.stdout)
    assert estimate.calls == {"analyze_email": 12} and len(estimate.history) == 1
    assert estimate.dimensions["analyze_email"].output_tokens_source == "earlier runs (12 calls)"


def test_cli_a_plugin_the_run_would_refuse_exits_1() -> None:
    done = cli(f"{ROOT / 'examples' / 'review_pipeline.py'}:ReviewPipeline", "-",
               stdin='"a review"\n')
    assert done.returncode == 1
    assert "provider 'offline' is not configured" in done.stderr
    assert "--providers" in done.stderr


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str],
            monkeypatch: pytest.MonkeyPatch, stdin: str = "") -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(["estimate", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_reads_plain_strings_from_standard_input(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, out, err = run_cli(
        [f"{ROOT / 'examples' / 'review_pipeline.py'}:ReviewPipeline", "-", "--providers",
         '{"offline": {"type": "openai", "default_model": "gpt-4o-mini"}}'],
        capsys, monkeypatch, stdin='"Great blender"\n\n"It broke after a week"\n')
    assert code == 0, err
    assert "Estimate for reviews: 2 sections, 5 dimensions" in out
    assert "overview (global)" in out


@pytest.mark.parametrize(("args", "message"), [
    (["no_such_module:Plugin", "x.jsonl"], "no module named 'no_such_module'"),
    (["dagengine.cli.demo:EmailAnalyzer", "missing.jsonl"], "no such file: missing.jsonl"),
    (["dagengine.cli.demo:EmailAnalyzer", "-", "--providers", "{nope"], "--providers is not JSON"),
    (["dagengine.cli.demo:EmailAnalyzer", "-", "--execution", "[1]"],
     "--execution must be a JSON object"),
    (["dagengine.cli.demo:EmailAnalyzer", "-", "--store", "none.db"], "no run store at none.db"),
])
def test_cli_bad_usage_exits_2_and_says_what_to_fix(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, _, err = run_cli(args, capsys, monkeypatch)
    assert code == 2
    assert message in err


def test_cli_a_bad_line_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('"fine"\n{not json\n')
    code, _, err = run_cli(["dagengine.cli.demo:EmailAnalyzer", str(path)], capsys, monkeypatch)
    assert code == 2
    assert "bad.jsonl line 2 is not JSON" in err


@pytest.mark.parametrize(("args", "message"), [
    (["--execution", '{"concurrency": 0}'], "execution.concurrency must be between 1 and"),
    (["--providers", '{"anthropic": 3}'], "--providers: 'anthropic' must be a config object"),
    (["--providers", '{"openai": {}}'], "provider 'anthropic' is not configured"),
])
def test_cli_a_configuration_the_run_would_refuse_exits_1(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, _, err = run_cli(["dagengine.cli.demo:EmailAnalyzer", "-", *args], capsys, monkeypatch,
                           stdin='"an email"\n')
    assert code == 1
    assert message in err
