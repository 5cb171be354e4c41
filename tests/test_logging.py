"""The `dagengine` loggers over real simulator runs: each event says itself in one line, at
the level the README gives, and no line at any level shows a key or the prompt text."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from conftest import SimplePlugin
from dagengine import DagEngine, Dimension
from dagengine.simulator import Simulator

KEY = "sk-ant-logging-SECRET-0042"
GATEWAY_KEY = "sk-gateway-target-SECRET-0043"
MODEL = "claude-3-5-haiku-20241022"
PROMPT_WORD = "Zanzibarquux"  # in every section: no log line may show it


def sections(count: int) -> list[str]:
    return [f"{PROMPT_WORD} review {i}: the parcel came late" for i in range(count)]


def engine(sim: Simulator, plugin: Any = None, *, store: Any = False, cache: bool | None = None,
           providers: Any = None, **execution: Any) -> DagEngine:
    plugin = plugin or SimplePlugin(["a"], provider="anthropic",
                                    options={"model": MODEL, "max_tokens": 50})
    return DagEngine(plugin, providers=providers or {
        "anthropic": {"api_key": KEY, "base_url": sim.base_url}},
        execution={"concurrency": 1, "retry_delay": 0.001, **execution}, store=store,
        cache=cache)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG):  # every logger, aiohttp's included
        yield caplog


def lines(caplog: pytest.LogCaptureFixture, logger: str, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno == level]


def assert_nothing_secret(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        text = record.getMessage()
        assert KEY not in text and GATEWAY_KEY not in text, text
        assert PROMPT_WORD.lower() not in text.lower(), text  # the simulator's answers quote it


async def test_a_retry_says_where_which_provider_why_which_attempt_and_the_wait(
        logs: pytest.LogCaptureFixture) -> None:
    async with Simulator(script=[500, 503]) as sim:
        result = await engine(sim, max_retries=3).process(sections(1))
    assert result.sections[0].results["a"].ok
    retries = lines(logs, "dagengine.call", logging.INFO)
    assert len(retries) == 2
    assert re.fullmatch(rf"retry a\[0\] on anthropic/{MODEL} after HTTP 500: attempt 1/4 "
                        r"failed, next in \d+\.\d\ds", retries[0])
    assert "after HTTP 503: attempt 2/4 failed" in retries[1]
    assert_nothing_secret(logs)


async def test_a_429_is_logged_with_its_retry_after_and_then_retried(
        logs: pytest.LogCaptureFixture) -> None:
    async with Simulator(script=[429], error_429_retry_after=0.05) as sim:
        result = await engine(sim, max_retries=2).process(sections(1))
    assert result.sections[0].results["a"].ok
    [limited] = lines(logs, "dagengine.call", logging.DEBUG)
    assert limited == f"429 from anthropic/{MODEL} for a[0] (retry-after 0.05s)"
    [retry] = lines(logs, "dagengine.call", logging.INFO)
    assert "after HTTP 429: attempt 1/3 failed" in retry
    assert_nothing_secret(logs)


async def test_a_fallback_names_the_failed_provider_its_cause_and_the_next(
        logs: pytest.LogCaptureFixture) -> None:
    class WithFallback(SimplePlugin):
        def select_provider(self, dimension: str, sections: Any = None,
                            context: Any = None) -> Any:
            return {"provider": "anthropic", "options": {"model": MODEL, "max_tokens": 50},
                    "fallbacks": [{"provider": "openai",
                                   "options": {"model": "gpt-4o-mini", "max_tokens": 50}}]}

    async with Simulator(script=[500]) as sim:
        providers = {"anthropic": {"api_key": KEY, "base_url": sim.base_url},
                     "openai": {"api_key": KEY, "base_url": sim.openai_base_url}}
        result = await engine(sim, WithFallback(["a"]), providers=providers,
                              max_retries=0).process(sections(1))
    assert result.sections[0].results["a"].call.provider == "openai"  # type: ignore[union-attr]
    assert lines(logs, "dagengine.call", logging.INFO) == [
        "fallback a[0]: anthropic failed (HTTP 500), trying openai"]
    assert_nothing_secret(logs)


async def test_an_answer_that_fails_validation_is_re_asked_and_says_so(
        logs: pytest.LogCaptureFixture) -> None:
    class Label(BaseModel):
        label: str

    plugin = SimplePlugin([Dimension(name="a", output_schema=Label)], provider="anthropic",
                          options={"model": MODEL, "max_tokens": 50})
    async with Simulator(script=["schema"]) as sim:
        result = await engine(sim, plugin, max_retries=2).process(sections(1))
    assert result.sections[0].results["a"].ok
    info = lines(logs, "dagengine.call", logging.INFO)
    assert ("re-ask a[0] on anthropic: attempt 1/3 failed output validation; the next asks "
            "again with the validation error") in info
    assert any("after invalid output: attempt 1/3 failed" in line for line in info)
    assert_nothing_secret(logs)


async def test_a_limit_announced_in_headers_is_logged_once_with_the_rate_it_allows(
        logs: pytest.LogCaptureFixture) -> None:
    async with Simulator(requests_per_minute=6000, tokens_per_minute=900_000) as sim:
        result = await engine(sim, concurrency=4).process(sections(6))
    assert all(s.results["a"].ok for s in result.sections)
    # The group allows itself 98 % of what the headers announce.
    assert lines(logs, "dagengine.ratelimit", logging.INFO) == [
        f"rate limit anthropic/{MODEL}: no limit -> 5,880 requests/min, 882,000 tokens/min "
        "(the provider's headers announce 6,000 requests/min, 900,000 tokens/min)"]
    assert_nothing_secret(logs)


async def test_a_limit_read_from_429s_logs_each_decrease_with_old_and_new_rate(
        logs: pytest.LogCaptureFixture) -> None:
    # As test_ratelimit's: 10 requests/s, no headers; a 429 says only "retry-after: 1".
    async with Simulator(requests_per_minute=600, rate_limit_headers=False, latency=0.05,
                         seed=2) as sim:
        eng = engine(sim, concurrency=30, max_retries=8)
        result = await eng.process(sections(40))
    assert all(s.results["a"].ok for s in result.sections)
    changes = lines(logs, "dagengine.ratelimit", logging.INFO)
    decreases = [c for c in changes if "(429s: the provider accepts about" in c]
    assert decreases, changes
    for line in decreases:
        change = re.fullmatch(rf"rate limit anthropic/{MODEL}: ([\d.,]+) requests/min -> "
                              r"([\d.,]+) requests/min \(429s: the provider accepts about "
                              r"([\d.,]+) requests/min\)", line)
        assert change is not None, line
        old, new, accepted = (float(n.replace(",", "")) for n in change.groups())
        assert new < old and new <= accepted  # slowed down, to below what got through
    [group] = eng.get_rate_limits().values()
    assert group["inferred_requests_per_minute"] is not None
    assert_nothing_secret(logs)


async def test_a_resumed_run_says_how_many_results_it_reuses_and_how_many_it_runs(
        logs: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    store = tmp_path / "runs.db"
    async with Simulator(script=[500, 500]) as sim:
        first = await engine(sim, store=store, max_retries=0).process(
            sections(4), process_id="resumable")
        assert sum(not s.results["a"].ok for s in first.sections) == 2
        logs.clear()
        await engine(sim, store=store).process(sections(4), process_id="resumable",
                                               resume=True)
    [resumed] = [line for line in lines(logs, "dagengine", logging.INFO) if "resumed" in line]
    assert re.fullmatch(rf"resumed run resumable from {re.escape(str(store))}: 2 of 4 results "
                        r"from the store, 2 to run", resumed)
    [started] = lines(logs, "dagengine.run", logging.INFO)[:1]
    assert started == ("run resumable started: 4 sections, dimensions a, concurrency 1, "
                       "2 results from the store")
    assert_nothing_secret(logs)


async def test_a_response_cache_hit_is_a_debug_line(logs: pytest.LogCaptureFixture,
                                                   tmp_path: Path) -> None:
    store = tmp_path / "runs.db"
    async with Simulator() as sim:
        await engine(sim, store=store, cache=True).process(sections(2))
        assert lines(logs, "dagengine.call", logging.DEBUG) == []
        await engine(sim, store=store, cache=True).process(sections(2), process_id="again")
    assert lines(logs, "dagengine.call", logging.DEBUG) == [
        "cache hit a[0] on anthropic: answered from the response cache",
        "cache hit a[1] on anthropic: answered from the response cache"]
    assert_nothing_secret(logs)


async def test_a_run_logs_its_start_and_a_summary_at_its_end(
        logs: pytest.LogCaptureFixture) -> None:
    async with Simulator(script=[200, 400]) as sim:
        result = await engine(sim, max_retries=0).process(sections(3), process_id="summed")
    assert result.costs is not None
    started, done = lines(logs, "dagengine.run", logging.INFO)
    assert started == "run summed started: 3 sections, dimensions a, concurrency 1"
    summary = re.fullmatch(r"run summed finished in [\d.]+s: 2 ok, 1 failed, 0 skipped, "
                           r"0 from the cache; 3 requests, (\d+) input \+ (\d+) output tokens, "
                           r"\$([\d.]+)", done)
    assert summary is not None, done
    assert int(summary.group(1)) == result.costs.input_tokens > 0
    assert int(summary.group(2)) == result.costs.output_tokens > 0
    assert float(summary.group(3)) == round(result.costs.total_cost, 4)
    assert_nothing_secret(logs)


async def test_no_key_of_a_gateway_config_and_no_prompt_in_any_line_of_a_faulty_run(
        logs: pytest.LogCaptureFixture) -> None:
    config = {"retry": {"attempts": 1}, "targets": [{"provider": "openai",
                                                     "api_key": GATEWAY_KEY}]}
    async with Simulator(script=[429, 500, "schema", "malformed", 400],
                         error_429_retry_after=0.01) as sim:
        providers = {"openai": {"api_key": KEY, "gateway": "portkey",
                                "gateway_url": sim.openai_base_url, "gateway_config": config}}
        plugin = SimplePlugin(["a"], provider="openai",
                              options={"model": "gpt-4o-mini", "max_tokens": 50})
        await engine(sim, plugin, providers=providers, max_retries=4).process(sections(3))
    # The gateway retries, so the engine makes one attempt per call; its 429 is logged.
    assert lines(logs, "dagengine.call", logging.DEBUG) == [
        "429 from openai/gpt-4o-mini for a[0] (retry-after 0.01s)"]
    assert_nothing_secret(logs)
