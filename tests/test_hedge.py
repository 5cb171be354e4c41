"""Hedged requests (execution.hedge) against the simulator as a real server: a call still
running past its latency quantile gets one duplicate; the first answer wins, the other is
cancelled, paid for its input and never counted twice; the budget holds; never in batch
mode nor for a request marked not idempotent.

The slow call is a scripted "hang" (held until the client closes the connection), so which
request is slow is the script's, not the clock's."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dagengine import DagEngine, Dimension, Plugin, ProviderRequest
from dagengine._hedge import Hedger
from dagengine.simulator import Simulator
from dagengine.types import ProcessResult, ProgressUpdate

KEY = "sk-hedge-test-key-0123456789"
KEY_B = "sk-hedge-test-key-bbbbbbbbbb"
MODEL = "claude-3-5-haiku-20241022"
POLL_LIMIT = 1000


class Ask(Plugin):
    def __init__(self, mode: str | None = None, idempotent: bool = True) -> None:
        super().__init__("ask", "Ask")
        self.dimensions = [Dimension(name="answer", mode=mode)] if mode else ["answer"]
        self._idempotent = idempotent

    def create_prompt(self, ctx: Any) -> str:
        return f"Answer about item {ctx.sections[0].content:>04}"  # every prompt one length

    def select_provider(self, *args: Any) -> Any:
        return {"provider": "anthropic", "options": {"model": MODEL, "max_tokens": 20}}

    def before_provider_execute(self, ctx: Any) -> ProviderRequest:
        request: ProviderRequest = ctx.request
        if self._idempotent:
            return request
        return request.model_copy(
            update={"metadata": {**request.metadata, "idempotent": False}})


def hang_after(normal: int, total: int, every: int | None = None) -> list[Any]:
    """A script: `normal` answers, then a hang, then answers (or a hang every `every`)."""
    steps: list[Any] = [200] * normal
    while len(steps) < total:
        steps.extend(["hang"] + [200] * ((every or total) - 1))
    return steps[:total]


async def run(sim: Simulator, plugin: Plugin, n: int, *, budget: float = 1.0,
              concurrency: int = 1, provider_timeout: float = 60.0,
              providers: dict[str, Any] | None = None,
              ) -> tuple[ProcessResult, dict[str, Any], ProgressUpdate]:
    # A batch dimension's batch gathers and polls briefly: the test waits for no clock.
    batch = {"max_wait": 0.05, "poll_interval": 0.05}
    updates: list[ProgressUpdate] = []
    engine = DagEngine(plugin, providers=providers or {
        "anthropic": {"api_key": KEY, "base_url": sim.base_url, "timeout": provider_timeout}},
        execution={"concurrency": concurrency, "hedge": {"after": "p95", "budget": budget},
                   "max_retries": 3, "retry_delay": 0.01, "batch": batch},
        store=False)
    result = await engine.process([str(i) for i in range(n)], on_progress=updates.append)
    await engine.close()
    stats = await settled(sim)
    return result, stats, updates[-1]


async def settled(sim: Simulator) -> dict[str, Any]:
    """/stats once every request was answered or cancelled: the server handles a closed
    connection's cancellation on its own schedule, so the test polls for its effect."""
    for _ in range(POLL_LIMIT):
        stats = await sim.stats()
        if sum(stats["responses_by_status"].values()) + stats["cancelled"] == stats["requests"]:
            return stats
        await asyncio.sleep(0.01)
    raise AssertionError(f"requests still open: {stats}")


def answers(result: ProcessResult) -> list[Any]:
    return [s.results["answer"] for s in result.sections]


async def test_the_duplicate_answers_the_hung_call_and_the_loser_is_cancelled_and_paid_once(
) -> None:
    n = 30
    async with Simulator(latency=0.02, script=hang_after(25, n + 10)) as sim:
        result, stats, progress = await run(sim, Ask(), n)

    results = answers(result)
    hedged = [r for r in results if r.call.hedged]
    plain = next(r for r in results if not r.call.hedged)
    assert len(result.sections) == n and all(r.error is None for r in results)
    # One answer each, its own section's: never two, never a neighbour's.
    assert all(r.data["answer"].endswith(f"item, {i:04}.") for i, r in enumerate(results))
    # The hang was answered by its duplicate (a jittery call past p95 may be hedged too).
    assert len(hedged) >= 1 and progress.hedges == len(hedged)
    assert stats["cancelled"] >= 1  # the hung request's connection was closed
    # One duplicate per hedged call, no retry; a duplicate cancelled while still connecting
    # (its first answered meanwhile) never reaches the server, which then bills nothing.
    unreached = n + len(hedged) - stats["requests"]
    assert 0 <= unreached < len(hedged)
    # Each answer counted once, each cancelled loser for its input, as the server bills.
    assert sum(r.call.tokens.output_tokens for r in results) == stats["output_tokens"]
    assert sum(r.call.tokens.input_tokens for r in results) == (
        stats["billed_input_tokens"] + unreached * plain.call.tokens.input_tokens)
    assert all(r.call.cost > plain.call.cost for r in hedged)
    assert result.costs is not None and result.costs.hedged_calls == len(hedged)


async def test_the_budget_caps_duplicates_at_its_share_of_the_runs_requests() -> None:
    n, budget = 200, 0.05
    script = hang_after(40, 400, every=4)  # a quarter hang: far more than the budget covers
    async with Simulator(latency=0.02, script=script) as sim:
        result, stats, progress = await run(sim, Ask(), n, budget=budget, concurrency=10,
                                            provider_timeout=0.5)

    hedged_calls = sum(r.call.hedged for r in answers(result))
    hedges = progress.hedges  # a call may be hedged again on a retry: duplicates, not calls
    assert 1 <= hedged_calls <= hedges
    assert hedges <= budget * stats["requests"]
    retries = sum(r.call.attempts - 1 for r in answers(result))
    # The duplicates progress counted; one cancelled while still connecting (its first
    # answered meanwhile) never reaches the server.
    assert n + retries < stats["requests"] <= n + retries + hedges


def test_the_hedger_never_lets_duplicates_past_the_budget() -> None:
    hedger = Hedger(0.95, 0.05)
    for _ in range(1000):
        hedger.sent()
        while hedger.reserve():
            pass
        assert hedger.hedges <= 0.05 * hedger.requests
    # h duplicates among 1000 + h requests: h <= 0.05 * (1000 + h), so 52.
    assert (hedger.hedges, hedger.requests) == (52, 1052)


@pytest.mark.parametrize("plugin", [Ask(mode="batch"), Ask(idempotent=False)],
                         ids=["batch mode", "not idempotent"])
async def test_no_duplicate_for_a_batch_dimension_or_a_request_marked_not_idempotent(
        plugin: Plugin) -> None:
    n = 30
    async with Simulator(latency=0.02, script=hang_after(25, n + 10)) as control_sim:
        control, _, _ = await run(control_sim, Ask(), n, provider_timeout=0.5)
    async with Simulator(latency=0.02, script=hang_after(25, n + 10)) as sim:
        result, stats, progress = await run(sim, plugin, n, provider_timeout=0.5)

    assert any(r.call.hedged for r in answers(control))  # the same run online does hedge
    assert not any(r.call.hedged for r in answers(result)) and progress.hedges == 0
    assert all(r.error is None for r in answers(result))
    # Online, the hung request timed out and was retried: no duplicate. (Through a batch
    # API no online request is sent at all.)
    assert stats["requests"] <= n + 1


async def test_the_duplicate_goes_to_another_pool_target() -> None:
    # Target "b" answers 12 requests, then hangs every one; "a" always answers. A call hung
    # on "b" is answered by its duplicate on "a" in its first attempt: had the duplicate
    # gone to "b" again it would hang too, until the provider timeout failed the attempt.
    n = 40
    async with Simulator(latency=0.02) as sim_a, \
            Simulator(latency=0.02, script=[200] * 12 + ["hang"] * 100) as sim_b:
        providers = {"anthropic": {"timeout": 5.0, "targets": [
            {"api_key": KEY, "name": "a", "base_url": sim_a.base_url},
            {"api_key": KEY_B, "name": "b", "base_url": sim_b.base_url}]}}
        result, _, _ = await run(sim_a, Ask(), n, providers=providers)
        stats_b = await settled(sim_b)

    results = answers(result)
    answered_by_b = stats_b["responses_by_status"].get("200", 0)
    assert stats_b["requests"] > 12  # some did hang
    assert all(r.error is None and r.call.attempts == 1 for r in results)
    assert sum(r.call.target == "b" for r in results) <= answered_by_b <= 12
    assert any(r.call.hedged and r.call.target == "a" for r in results)
    assert stats_b["cancelled"] == stats_b["requests"] - answered_by_b  # each one closed
