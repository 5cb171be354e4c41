"""Provider pools: one provider entry over several API keys (or providers), each its own
rate-limit group, against the simulator as a real server with limits per key."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from dagengine import DagEngine, Plugin
from dagengine.errors import ConfigurationError
from dagengine.providers._pool import key_fingerprint
from dagengine.simulator import Simulator
from dagengine.simulator import key_fingerprint as simulator_fingerprint
from dagengine.types import ProgressUpdate

KEY_A = "sk-pool-test-key-aaaaaaaaaaaa"
KEY_B = "sk-pool-test-key-bbbbbbbbbbbb"
MODEL = "claude-3-5-haiku-20241022"
AMPLE = {"requests_per_minute": 60_000}


class Ask(Plugin):
    def __init__(self, provider: str = "anthropic", model: str = MODEL) -> None:
        super().__init__("ask", "Ask")
        self.dimensions = ["answer"]
        self._provider, self._model = provider, model

    def create_prompt(self, ctx: Any) -> str:
        return f"Answer about {ctx.sections[0].content}"

    def select_provider(self, *args: Any) -> Any:
        return {"provider": self._provider, "options": {"model": self._model, "max_tokens": 20}}


def pool(sim: Simulator, *targets: dict[str, Any]) -> dict[str, Any]:
    return {"anthropic": {"base_url": sim.base_url, "targets": list(targets)}}


def by_key(stats: dict[str, Any], key: str) -> dict[str, int]:
    entry = stats["keys"].get(simulator_fingerprint(key), {})
    return dict(entry.get("responses_by_status", {}))


async def test_calls_split_between_targets_by_their_weights() -> None:
    async with Simulator(key_limits={KEY_A: AMPLE, KEY_B: AMPLE}) as sim:
        engine = DagEngine(Ask(), providers=pool(
            sim, {"api_key": KEY_A, "weight": 3, "name": "big"}, {"api_key": KEY_B}),
            execution={"concurrency": 1, "rate_limits": {"anthropic": AMPLE}}, store=False)
        result = await engine.process([f"item {i}" for i in range(40)])
        stats = await sim.stats()

    targets = Counter(s.results["answer"].call.target for s in result.sections)
    assert targets == {"big": 30, key_fingerprint(KEY_B): 10}
    assert by_key(stats, KEY_A) == {"200": 30} and by_key(stats, KEY_B) == {"200": 10}
    assert {name: cost.calls for name, cost in result.costs.by_target.items()} == {
        "anthropic[big]": 30, f"anthropic[{key_fingerprint(KEY_B)}]": 10}
    assert result.sections[0].results["answer"].metadata["target"] == "big"


async def test_a_limit_configured_for_the_provider_applies_to_each_target() -> None:
    async with Simulator() as sim:
        engine = DagEngine(Ask(), providers=pool(
            sim, {"api_key": KEY_A, "name": "a"}, {"api_key": KEY_B, "name": "b"}),
            execution={"rate_limits": {"anthropic": {"requests_per_minute": 600},
                                       "anthropic[b]": {"requests_per_minute": 60}}},
            store=False)
        await engine.process(["one", "two"])
        limits = engine.get_rate_limits()

    assert limits["anthropic[a]"]["requests_per_minute"] == 600
    assert limits["anthropic[b]"]["requests_per_minute"] == 60


async def test_a_target_that_answers_429_is_avoided_until_its_limit_allows_again() -> None:
    # Key A lets one request a second through (bucket of one); no headers, so only the 429
    # and its retry-after tell the client. The pool moves each refused call on to key B at
    # once, and comes back to A only once A's retry-after has passed.
    limits = {KEY_A: {"requests_per_minute": 60, "burst_seconds": 1}, KEY_B: AMPLE}
    async with Simulator(key_limits=limits, latency=0.05, rate_limit_headers=False) as sim:
        engine = DagEngine(Ask(), providers=pool(sim, {"api_key": KEY_A}, {"api_key": KEY_B}),
                           execution={"concurrency": 1}, store=False)
        result = await engine.process([f"item {i}" for i in range(60)])
        stats = await sim.stats()

    a, b = by_key(stats, KEY_A), by_key(stats, KEY_B)
    answers = [s.results["answer"] for s in result.sections]
    assert all(r.error is None for r in answers)
    # Back to A after each wait (more than one answer from it), but never hammering it:
    # without the avoidance every other call would meet a 429 there.
    assert a["200"] >= 2
    assert a.get("429", 0) <= a["200"] + 1
    assert b["200"] == 60 - a["200"]
    moved_on = [r for r in answers if r.call.attempts == 2]
    assert len(moved_on) == a.get("429", 0)  # each refusal cost its call one request, no wait
    assert all(r.call.target == key_fingerprint(KEY_B) for r in moved_on)


async def test_two_unproven_targets_send_no_more_than_the_ramps_burst_before_an_answer() -> None:
    # No limit configured: each key's limit (a burst of 30) is learned from its first
    # answers, which take 0.3 s. A ramp clocked from the start would have let the whole
    # concurrency (50 a key) out blind by then, and 20 a key would have met a 429.
    limits = {KEY_A: {"requests_per_minute": 1800}, KEY_B: {"requests_per_minute": 1800}}
    async with Simulator(key_limits=limits, latency=0.3) as sim:
        engine = DagEngine(Ask(), providers=pool(
            sim, {"api_key": KEY_A, "name": "a"}, {"api_key": KEY_B, "name": "b"}),
            execution={"concurrency": 100}, store=False)
        result = await engine.process([f"item {i}" for i in range(120)])
        stats = await sim.stats()

    assert all(s.results["answer"].error is None for s in result.sections)
    refused = by_key(stats, KEY_A).get("429", 0) + by_key(stats, KEY_B).get("429", 0)
    assert refused <= 2, (by_key(stats, KEY_A), by_key(stats, KEY_B))


async def test_a_pool_across_providers_is_one_name_for_select_provider() -> None:
    async with Simulator() as sim:
        providers = {
            "claude": {"type": "anthropic", "api_key": KEY_A, "base_url": sim.base_url},
            "gpt": {"type": "openai", "api_key": KEY_B, "base_url": sim.openai_base_url},
            "any": {"targets": [{"provider": "claude", "weight": 2},
                                {"provider": "gpt", "model": "gpt-4o-mini"}]},
        }
        engine = DagEngine(Ask("any"), providers=providers, execution={"concurrency": 1},
                           store=False)
        result = await engine.process([f"item {i}" for i in range(9)])
        stats = await sim.stats()

    calls = [s.results["answer"].call for s in result.sections]
    assert Counter(c.target for c in calls) == {"claude": 6, "gpt": 3}
    assert {c.model for c in calls if c.target == "gpt"} == {"gpt-4o-mini"}
    assert all(c.provider == "any" for c in calls)
    assert by_key(stats, KEY_A) == {"200": 6} and by_key(stats, KEY_B) == {"200": 3}


async def test_progress_counts_requests_by_target() -> None:
    updates: list[ProgressUpdate] = []
    async with Simulator() as sim:
        engine = DagEngine(Ask(), providers=pool(
            sim, {"api_key": KEY_A, "name": "a"}, {"api_key": KEY_B, "name": "b"}),
            execution={"concurrency": 1, "rate_limits": {"anthropic": AMPLE}}, store=False)
        await engine.process([f"item {i}" for i in range(6)], on_progress=updates.append)

    assert updates[-1].requests_by_target == {"anthropic[a]": 3, "anthropic[b]": 3}


async def test_keys_appear_nowhere_only_names_and_fingerprints(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    store = tmp_path / "runs.db"
    limits = {KEY_A: {"requests_per_minute": 60, "burst_seconds": 1}, KEY_B: AMPLE}
    async with Simulator(key_limits=limits, rate_limit_headers=False) as sim:
        engine = DagEngine(Ask(), providers=pool(sim, {"api_key": KEY_A}, {"api_key": KEY_B}),
                           execution={"concurrency": 2}, store=str(store))
        result = await engine.process([f"item {i}" for i in range(10)])
        shown = [json.dumps(result.to_dict(), default=str), repr(engine.registry),
                 repr(engine.registry.get("anthropic")), str(engine.get_rate_limits()),
                 caplog.text]
        await engine.close()

    stored = store.read_bytes()
    for key in (KEY_A, KEY_B):
        assert all(key not in text for text in shown)
        assert key.encode() not in stored
    assert key_fingerprint(KEY_A) in shown[0] or key_fingerprint(KEY_B) in shown[0]


@pytest.mark.parametrize(("targets", "fix"), [
    ([], "non-empty list"),
    ([{"api_key": KEY_A, "weight": 0}], "weight must be a positive number"),
    ([{"provider": "nowhere"}], "not another configured provider"),
    ([{"provider": "anthropic", "api_key": KEY_A}], "takes only provider"),
    (["not a dict"], "must be a dict"),
])
def test_a_bad_pool_config_is_refused_with_the_fix(targets: Any, fix: str) -> None:
    with pytest.raises(ConfigurationError, match=fix) as refused:
        DagEngine(Ask(), providers={"anthropic": {"targets": targets, "api_key": KEY_B}},
                  store=False)
    assert KEY_A not in str(refused.value) and KEY_B not in str(refused.value)


async def test_the_run_report_shows_cost_by_target_and_the_hedged_calls(tmp_path: Path) -> None:
    from dagengine.report import render_report, report_data

    store = tmp_path / "runs.db"
    script = [200] * 25 + ["hang"] + [200] * 20  # the 26th hangs until its duplicate answers
    async with Simulator(latency=0.02, script=script) as sim:
        engine = DagEngine(Ask(), providers=pool(
            sim, {"api_key": KEY_A, "name": "a"}, {"api_key": KEY_B, "name": "b"}),
            execution={"concurrency": 1, "hedge": {"after": "p95", "budget": 1.0}},
            store=str(store))
        result = await engine.process([f"item {i:02}" for i in range(30)])
        await engine.close()

    data = report_data(str(store))
    hedged = sum(s.results["answer"].call.hedged for s in result.sections)
    assert hedged >= 1 and data.totals.hedged == hedged
    assert result.costs is not None
    assert {label: calls for label, (calls, _) in data.totals.by_target.items()} == {
        label: cost.calls for label, cost in result.costs.by_target.items()}
    assert set(data.totals.by_target) == {"anthropic[a]", "anthropic[b]"}
    page = render_report(str(store))
    assert "Pool targets" in page and "anthropic[a]" in page and "hedged" in page
