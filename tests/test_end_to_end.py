"""The engine with the built-in providers, over real HTTP to the simulator, directly and
through the real open-source Portkey gateway."""

from __future__ import annotations

import logging
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from conftest import SimplePlugin
from dagengine import DagEngine, Dimension, ProcessResult
from dagengine.gateway import LocalGateway
from dagengine.simulator import Simulator

SEED_RETRY = {"retry": {"attempts": 5, "on_status_codes": [429, 500, 502, 503, 504]}}
HAIKU = {"model": "claude-3-5-haiku-20241022", "max_tokens": 150}
KEY = "sk-ant-test-0123456789-secret"


class Emails(SimplePlugin):
    def __init__(self, provider: str = "anthropic", options: dict[str, Any] = HAIKU) -> None:
        super().__init__(["analyze_email"], provider=provider, options=options)

    def create_prompt(self, ctx: Any) -> str:
        return ("Analyze this email quickly and categorize it.\n\n"
                f"Email: {ctx.sections[0].content}\n\nReturn ONLY valid JSON.")


EMAILS = [f"Reminder: project meeting {i} about the quarterly report deadline"
          for i in range(20)]


def attempts(result: ProcessResult) -> list[int]:
    return [s.results["analyze_email"].metadata["attempts"] for s in result.sections]


def provider_engine(kind: str, sim: Simulator, **execution: Any) -> DagEngine:
    base_url = {"anthropic": sim.base_url, "openai": sim.openai_base_url,
                "gemini": sim.gemini_base_url}[kind]
    model = {"anthropic": HAIKU["model"], "openai": "gpt-4o-mini",
             "gemini": "gemini-2.0-flash"}[kind]
    plugin = Emails(kind, {"model": model, "max_tokens": 150})
    return DagEngine(plugin, providers={kind: {"api_key": KEY, "base_url": base_url,
                                               "timeout": execution.pop("provider_timeout", 60)}},
                     execution={"concurrency": 1, "retry_delay": 0.01, **execution})


KINDS = ["anthropic", "openai", "gemini"]


async def test_gateway_retries_upstream_and_the_engine_attempts_once(
        portkey_gateway: LocalGateway) -> None:
    async with Simulator(error_429_rate=0.3, error_429_retry_after=0.0, seed=3) as sim:
        engine = DagEngine(Emails(), providers={"anthropic": {
            "api_key": KEY, "base_url": sim.base_url, "gateway": "portkey",
            "gateway_url": portkey_gateway.url, "gateway_config": SEED_RETRY}},
            execution={"concurrency": 20})
        result = await engine.process(EMAILS)
        stats = await sim.stats()
    assert all(s.results["analyze_email"].ok for s in result.sections)
    assert all(s.results["analyze_email"].data["category"] == "work" for s in result.sections)
    assert attempts(result) == [1] * len(EMAILS)
    assert stats["rate_limited"] > 0
    assert stats["requests"] == len(EMAILS) + stats["rate_limited"]
    assert result.costs is not None and result.costs.total_cost > 0
    assert result.costs.input_tokens == stats["input_tokens"]
    assert result.costs.output_tokens == stats["output_tokens"]


@pytest.mark.parametrize("kind", KINDS)
async def test_engine_retries_429s_and_5xx_itself_without_a_gateway(kind: str) -> None:
    async with Simulator(error_429_rate=0.2, error_500_rate=0.1,
                         error_429_retry_after=0.0, seed=5) as sim:
        engine = provider_engine(kind, sim, concurrency=10, max_retries=6)
        result = await engine.process(EMAILS)
        stats = await sim.stats()
    assert all(s.results["analyze_email"].ok for s in result.sections)
    assert sum(attempts(result)) == stats["requests"]
    assert stats["requests"] > len(EMAILS)


async def test_bad_key_is_reported_once_per_section_and_never_printed(
        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[str] = []
    async with Simulator(api_key="the-right-key") as sim:
        engine = DagEngine(Emails(), providers={"anthropic": {"api_key": KEY,
                                                              "base_url": sim.base_url}},
                           execution={"concurrency": 5, "retry_delay": 0.01})
        result = await engine.process(EMAILS[:3], on_error=lambda e, ctx: errors.append(
            f"{e!s} {e!r}"))
        stats = await sim.stats()
    assert stats["requests"] == 3  # 401 is not retried
    texts = [s.results["analyze_email"].error or "" for s in result.sections]
    assert all("401" in t and "authentication" in t for t in texts)
    captured = capsys.readouterr()
    everything = "\n".join([*texts, *errors, caplog.text, captured.out, captured.err,
                            repr(engine), repr(engine.registry.get("anthropic")),
                            result.model_dump_json()])
    assert KEY not in everything
    assert KEY[-10:] not in everything


class EmailCategory(BaseModel):
    category: Literal["spam", "work", "personal", "newsletter"]
    confidence: float
    summary: str


def structured_engine(sim: Simulator, **execution: Any) -> DagEngine:
    plugin = Emails()
    plugin.dimensions = [Dimension(name="analyze_email", output_schema=EmailCategory)]
    return DagEngine(plugin, providers={"anthropic": {"api_key": KEY, "base_url": sim.base_url}},
                     execution={"retry_delay": 0.01, **execution})


async def test_schema_violations_are_reasked_until_the_answer_validates() -> None:
    async with Simulator(script=["schema", "schema"]) as sim:
        result = await structured_engine(sim, concurrency=1).process(EMAILS[:3])
        stats = await sim.stats()
    assert all(s.results["analyze_email"].ok for s in result.sections)
    assert all(s.results["analyze_email"].data["category"] == "work" for s in result.sections)
    # One slot: while section 0 waits to re-ask, section 1 takes the second bad answer.
    assert [s.results["analyze_email"].metadata["attempts"] for s in result.sections] == [2, 2, 1]
    assert stats["requests"] == 5 and stats["schema_violations"] == 2
    # The re-asks were new prompts that carried the validation error back to the model.
    assert len(stats["prompts"]) == 5


async def test_schema_violations_that_never_stop_end_in_a_clear_per_section_error() -> None:
    async with Simulator(schema_violation_rate=1.0) as sim:
        result = await structured_engine(sim, concurrency=3, max_retries=2).process(EMAILS[:3])
        stats = await sim.stats()
    for section in result.sections:
        res = section.results["analyze_email"]
        assert not res.ok
        assert "does not match EmailCategory" in (res.error or "")
        assert "category" in (res.error or "") and "after 3 attempts" in (res.error or "")
    assert stats["requests"] == 9
    # Every attempt was answered, so every attempt's tokens are paid for and counted.
    assert result.costs is not None and result.costs.output_tokens == stats["output_tokens"]


@pytest.mark.parametrize("kind", KINDS)
async def test_each_provider_retries_a_429_no_sooner_than_its_retry_after(kind: str) -> None:
    async with Simulator(script=[429], error_429_retry_after=0.4) as sim:
        engine = provider_engine(kind, sim)
        result = await engine.process(EMAILS[:1])
    res = result.sections[0].results["analyze_email"]
    assert res.ok and res.metadata["attempts"] == 2
    assert res.metadata["duration"] >= 0.4
    assert res.metadata["tokens"].total_tokens > 0 and res.metadata["model"]


@pytest.mark.parametrize("kind", KINDS)
async def test_each_provider_retries_a_500(kind: str) -> None:
    async with Simulator(script=[500]) as sim:
        result = await provider_engine(kind, sim).process(EMAILS[:1])
        stats = await sim.stats()
    assert result.sections[0].results["analyze_email"].ok
    assert stats["requests"] == 2 and stats["server_errors"] == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_each_provider_turns_a_malformed_body_into_an_error_result(kind: str) -> None:
    async with Simulator(malformed_rate=1.0) as sim:
        result = await provider_engine(kind, sim, max_retries=1).process(EMAILS[:2])
        stats = await sim.stats()
    for section in result.sections:
        error = section.results["analyze_email"].error or ""
        assert "malformed" in error.lower() or "json" in error.lower()
    assert stats["requests"] == 4  # retried once each, then given up


@pytest.mark.parametrize("kind", KINDS)
async def test_each_provider_bounds_a_hang_by_its_timeout(kind: str) -> None:
    async with Simulator(hang_rate=1.0, hang_seconds=60) as sim:
        result = await provider_engine(kind, sim, provider_timeout=0.3,
                                       max_retries=1).process(EMAILS[:1])
    res = result.sections[0].results["analyze_email"]
    assert not res.ok and res.metadata["attempts"] == 2
    assert res.metadata["duration"] < 10


async def test_a_configured_rate_limit_holds_against_the_simulators_limit() -> None:
    async with Simulator(requests_per_minute=600) as sim:  # 10/s, bursts of 10
        engine = DagEngine(Emails(), providers={"anthropic": {"api_key": KEY,
                                                              "base_url": sim.base_url}},
                           execution={"concurrency": 30, "retry_delay": 0.01, "rate_limits": {
                               "anthropic": {"requests_per_minute": 600}}})
        result = await engine.process([f"email {i} about the project" for i in range(30)])
        stats = await sim.stats()
    assert all(s.results["analyze_email"].ok for s in result.sections)
    assert stats["rate_limited"] == 0
    assert stats["requests"] == 30


async def test_an_unconfigured_limit_is_learned_from_the_providers_headers() -> None:
    async with Simulator(requests_per_minute=600) as sim:
        engine = DagEngine(Emails(), providers={"anthropic": {"api_key": KEY,
                                                              "base_url": sim.base_url}},
                           execution={"concurrency": 30, "retry_delay": 0.01, "max_retries": 8})
        result = await engine.process([f"email {i} about the project" for i in range(60)])
        stats = await sim.stats()
        snapshot = engine.get_rate_limits()
    assert all(s.results["analyze_email"].ok for s in result.sections)
    [group] = snapshot.values()
    assert group["learned_requests_per_minute"] == 600
    # Only the first blind burst can overshoot: 30 sent at once against a burst of 10.
    assert stats["rate_limited"] <= 20
    progress = engine.get_progress()
    assert progress is not None and progress.rate_limited == stats["rate_limited"]
