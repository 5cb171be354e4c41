"""Prompt-cache tokens from each API, priced at their own rates; built-in prices from genai-prices.

`TokenUsage.input_tokens` counts every prompt token; `cache_read_tokens` and
`cache_write_tokens` are the part of them the provider read from / wrote to its prompt cache.
The end-to-end tests run the built-in providers (official SDKs) against the simulator, which
reports cache tokens in each API's own usage format.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import BaseModel

from conftest import SimplePlugin
from dagengine import DagEngine, Dimension, ProcessResult, TokenUsage
from dagengine.cost import Pricing
from dagengine.errors import ValidationError
from dagengine.gateway import LocalGateway
from dagengine.simulator import Simulator, SimulatorConfig

KEY = "sk-test-0123456789-cache-tokens"
KINDS = ("anthropic", "openai", "gemini")
MODELS = {
    "anthropic": "claude-3-5-haiku-20241022",
    "openai": "gpt-4o-mini",
    "gemini": "gemini-2.0-flash",
}
# genai-prices 0.2.x rates in USD per million tokens: (input, cache read, cache write, output).
# OpenAI and Gemini bill no cache writes; their format has no count of them.
LIBRARY_RATES = {
    "claude-3-5-haiku-20241022": (0.8, 0.08, 1.0, 4.0),
    "gpt-4o-mini": (0.15, 0.075, 0.15, 0.6),
    "gemini-2.0-flash": (0.1, 0.025, 0.1, 0.4),
}
READ, WRITE = 40, 30
# ~100 tokens per section, so the cache tokens are a part of each prompt.
SECTIONS = [f"Section {i}: " + "the quarterly report covers budgets and plans. " * 8
            for i in range(3)]


def cost_at(rates: tuple[float, float, float, float], tokens: TokenUsage) -> float:
    """The hand-computed price: uncached input, cache reads, cache writes, output."""
    input_rate, read_rate, write_rate, output_rate = rates
    uncached = tokens.input_tokens - tokens.cache_read_tokens - tokens.cache_write_tokens
    return (uncached * input_rate + tokens.cache_read_tokens * read_rate
            + tokens.cache_write_tokens * write_rate + tokens.output_tokens * output_rate) / 1e6


def base_url(kind: str, sim: Simulator) -> str:
    return {"anthropic": sim.anthropic_base_url, "openai": sim.openai_base_url,
            "gemini": sim.gemini_base_url}[kind]


def engine_for(kind: str, provider_config: dict[str, Any], **kwargs: Any) -> DagEngine:
    plugin = SimplePlugin(["summary"], provider=kind,
                          options={"model": MODELS[kind], "max_tokens": 100})
    return DagEngine(plugin, providers={kind: {"api_key": KEY, **provider_config}},
                     execution={"concurrency": 1, "retry_delay": 0.01}, **kwargs)


def results(result: ProcessResult, dimension: str = "summary") -> list[Any]:
    return [s.results[dimension] for s in result.sections]


# -- end to end: official SDKs against the simulator ------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_cache_tokens_reach_token_usage_and_cost_at_the_cache_rates(
    kind: str, transport: str
) -> None:
    async with Simulator(cache_read_tokens=READ, cache_write_tokens=WRITE) as sim:
        config = {"base_url": base_url(kind, sim), "transport": transport}
        result = await engine_for(kind, config).process(SECTIONS)
        stats = await sim.stats()

    write = WRITE if kind == "anthropic" else 0
    model = MODELS[kind]
    for res in results(result):
        tokens = res.metadata["tokens"]
        assert res.ok, res.error
        assert (tokens.cache_read_tokens, tokens.cache_write_tokens) == (READ, write)
        assert tokens.input_tokens > READ + write
        assert tokens.total_tokens == tokens.input_tokens + tokens.output_tokens
        assert res.metadata["cost"] == pytest.approx(cost_at(LIBRARY_RATES[model], tokens))
    costs = result.costs
    assert costs is not None
    # input_tokens is every prompt token the simulator counted, cached or not.
    assert costs.input_tokens == stats["input_tokens"]
    assert costs.output_tokens == stats["output_tokens"]
    assert costs.cache_read_tokens == stats["cache_read_tokens"] == 3 * READ
    assert costs.cache_write_tokens == stats["cache_write_tokens"] == 3 * write
    for bucket in (costs.by_dimension["summary"], costs.by_provider[kind], costs.by_model[model]):
        assert bucket.tokens.cache_read_tokens == 3 * READ
        assert bucket.tokens.cache_write_tokens == 3 * write
        assert bucket.tokens.input_tokens == stats["input_tokens"]
    expected = sum(cost_at(LIBRARY_RATES[model], r.metadata["tokens"]) for r in results(result))
    assert costs.total_cost == pytest.approx(expected)
    # What pricing every prompt token at the input rate, as before, would have said:
    all_input = sum(cost_at(LIBRARY_RATES[model][:1] * 3 + LIBRARY_RATES[model][3:],
                            r.metadata["tokens"]) for r in results(result))
    assert costs.total_cost < all_input


@pytest.mark.parametrize("kind", KINDS)
async def test_the_users_cache_rates_win_over_the_library(kind: str) -> None:
    rates = (2.0, 0.5, 4.0, 8.0)
    pricing = {"models": {MODELS[kind]: {"input_per_1m": 2.0, "cache_read_per_1m": 0.5,
                                         "cache_write_per_1m": 4.0, "output_per_1m": 8.0}}}
    async with Simulator(cache_read_tokens=READ, cache_write_tokens=WRITE) as sim:
        engine = engine_for(kind, {"base_url": base_url(kind, sim)}, pricing=pricing)
        result = await engine.process(SECTIONS[:1])
    (res,) = results(result)
    assert res.metadata["cost"] == pytest.approx(cost_at(rates, res.metadata["tokens"]))


@pytest.mark.gateway
@pytest.mark.parametrize("kind", KINDS)
async def test_cache_tokens_come_through_the_portkey_gateway(
    kind: str, transport: str, portkey_gateway: LocalGateway
) -> None:
    """Portkey turns every API into OpenAI's format; its Anthropic translation keeps
    Anthropic's meaning of prompt_tokens (cache tokens apart), which must still add up."""
    async with Simulator(cache_read_tokens=READ, cache_write_tokens=WRITE) as sim:
        engine = engine_for(kind, {"base_url": base_url(kind, sim), "gateway": "portkey",
                                   "gateway_url": portkey_gateway.url, "transport": transport})
        result = await engine.process(SECTIONS[:2])
        stats = await sim.stats()
    write = WRITE if kind == "anthropic" else 0
    assert result.costs is not None
    assert result.costs.input_tokens == stats["input_tokens"]
    assert result.costs.cache_read_tokens == 2 * READ
    assert result.costs.cache_write_tokens == 2 * write
    for res in results(result):
        assert res.metadata["cost"] == pytest.approx(
            cost_at(LIBRARY_RATES[MODELS[kind]], res.metadata["tokens"]))


class Summary(BaseModel):
    summary: str


async def test_cache_tokens_of_every_attempt_add_up() -> None:
    """A re-asked answer (wrong schema first) pays for both attempts' tokens, cache included."""
    async with Simulator(cache_read_tokens=READ, cache_write_tokens=WRITE,
                         script=["schema"]) as sim:
        engine = engine_for("anthropic", {"base_url": sim.base_url})
        engine.plugin.dimensions = [Dimension(name="summary", output_schema=Summary)]
        result = await engine.process(SECTIONS[:1])
        stats = await sim.stats()
    (res,) = results(result)
    assert res.ok and res.metadata["attempts"] == 2
    tokens = res.metadata["tokens"]
    assert (tokens.cache_read_tokens, tokens.cache_write_tokens) == (2 * READ, 2 * WRITE)
    assert tokens.input_tokens == stats["input_tokens"]
    assert res.metadata["cost"] == pytest.approx(
        cost_at(LIBRARY_RATES[MODELS["anthropic"]], tokens))


async def test_stored_results_keep_their_cache_tokens(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    async with Simulator(cache_read_tokens=READ) as sim:
        first = await engine_for("openai", {"base_url": sim.openai_base_url},
                                 store=path).process(SECTIONS, process_id="p")
        again = await engine_for("openai", {"base_url": sim.openai_base_url},
                                 store=path).process(SECTIONS, process_id="p", resume=True)
        stats = await sim.stats()
    assert stats["requests"] == len(SECTIONS)  # the second run called nothing
    assert first.costs is not None and again.costs is not None
    assert again.costs.cache_read_tokens == first.costs.cache_read_tokens == 3 * READ
    assert again.costs.total_cost == pytest.approx(first.costs.total_cost)


# -- the simulator's wire formats -------------------------------------------------------------


async def _post(url: str, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.post(
        url, json=body, headers=headers
    ) as response:
        assert response.status == 200
        answer: dict[str, Any] = await response.json()
        return answer


async def test_simulator_reports_cache_tokens_in_each_apis_own_terms() -> None:
    text = "word " * 200
    messages = [{"role": "user", "content": text}]
    async with Simulator(cache_read_tokens=READ, cache_write_tokens=WRITE) as sim:
        anthropic = (await _post(
            f"{sim.base_url}/v1/messages",
            {"model": "claude-x", "max_tokens": 50, "messages": messages},
            {"x-api-key": KEY}))["usage"]
        openai = (await _post(
            f"{sim.openai_base_url}/chat/completions",
            {"model": "gpt-x", "messages": messages},
            {"authorization": f"Bearer {KEY}"}))["usage"]
        gemini = (await _post(
            f"{sim.base_url}/v1beta/models/gemini-x:generateContent",
            {"contents": [{"role": "user", "parts": [{"text": text}]}]},
            {"x-goog-api-key": KEY}))["usageMetadata"]
        stats = await sim.stats()
    prompt = stats["models"]["gpt-x"]["input_tokens"]
    # Anthropic: input_tokens leaves the cache tokens out; they are counted apart.
    assert anthropic["input_tokens"] == prompt - READ - WRITE
    assert anthropic["cache_read_input_tokens"] == READ
    assert anthropic["cache_creation_input_tokens"] == WRITE
    # OpenAI and Gemini: the cached tokens are part of the prompt's count.
    assert openai["prompt_tokens"] == prompt and openai["prompt_tokens_details"] == {
        "cached_tokens": READ}
    assert gemini["promptTokenCount"] == prompt and gemini["cachedContentTokenCount"] == READ
    assert stats["models"]["claude-x"]["input_tokens"] == prompt
    assert stats["cache_read_tokens"] == 3 * READ and stats["cache_write_tokens"] == WRITE


async def test_simulator_reports_no_cache_tokens_below_cache_min_tokens() -> None:
    async with Simulator(cache_read_tokens=READ, cache_min_tokens=50) as sim:
        long = await engine_for("openai", {"base_url": sim.openai_base_url}).process(SECTIONS[:1])
        short = await engine_for("openai", {"base_url": sim.openai_base_url}).process(["hi"])
    assert results(long)[0].metadata["tokens"].cache_read_tokens == READ
    assert results(short)[0].metadata["tokens"].cache_read_tokens == 0


async def test_simulator_caps_cache_tokens_at_the_prompt() -> None:
    async with Simulator(cache_read_tokens=10_000, cache_write_tokens=10_000) as sim:
        result = await engine_for("anthropic", {"base_url": sim.base_url}).process(["hi"])
    tokens = results(result)[0].metadata["tokens"]
    assert tokens.cache_read_tokens == tokens.input_tokens > 0
    assert tokens.cache_write_tokens == 0


@pytest.mark.parametrize("name", ["cache_read_tokens", "cache_write_tokens", "cache_min_tokens"])
@pytest.mark.parametrize("value", [-1, 1.5, "10", True])
def test_simulator_cache_options_must_be_counts(name: str, value: Any) -> None:
    with pytest.raises(ValidationError, match=f"simulator.{name} must be an integer"):
        SimulatorConfig(**{name: value})


# -- Pricing ----------------------------------------------------------------------------------


def test_builtin_prices_come_from_genai_prices_with_their_tiers() -> None:
    """claude-sonnet-4-5 bills a prompt over 200k tokens at its long-context rates (6 / 22.5),
    which the hand-kept table (3 / 15) never knew."""
    pricing = Pricing()
    long_prompt = TokenUsage.of(250_000, 1_000)
    assert pricing.cost("claude-sonnet-4-5-20250929", long_prompt) == pytest.approx(
        (250_000 * 6 + 1_000 * 22.5) / 1e6)
    # A model the old table lacked is priced too.
    assert pricing.price("o3") is not None and pricing.unpriced == set()


@pytest.mark.parametrize("model", list(LIBRARY_RATES))
def test_library_models_price_cache_tokens_at_their_cache_rates(model: str) -> None:
    writes = 200 if model.startswith("claude") else 0
    tokens = TokenUsage.of(1_000, 100, cache_read_tokens=600, cache_write_tokens=writes)
    price = Pricing().price(model)
    assert price is not None
    assert (price.input_per_1m, price.cache_read_per_1m, price.output_per_1m) == pytest.approx(
        (LIBRARY_RATES[model][0], LIBRARY_RATES[model][1], LIBRARY_RATES[model][3]))
    assert Pricing().cost(model, tokens) == pytest.approx(cost_at(LIBRARY_RATES[model], tokens))


@pytest.mark.parametrize("model", [
    "claude-3-5-haiku-20241022", "claude-haiku-4-5", "claude-sonnet-4-5", "gpt-4o-mini",
    "gpt-5", "gemini-2.0-flash", "gemini-2.0-flash-lite", "gemini-2.5-pro",
])
@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize(("prompt", "read", "write"), [
    (1_000, 600, 200), (300_000, 100_000, 50_000), (5_000, 0, 0)])
def test_costs_equal_genai_prices_own_calculation(
    model: str, batch: bool, prompt: int, read: int, write: int
) -> None:
    """Flat rates are priced without calling the library on every call (it is slow); the
    figure must still be the library's, long-context tiers and batch rates included."""
    from genai_prices import Usage, calc_price

    if not model.startswith("claude"):
        write = 0
    tokens = TokenUsage.of(prompt, 2_000, cache_read_tokens=read, cache_write_tokens=write)
    usage = Usage(input_tokens=prompt, output_tokens=2_000, cache_read_tokens=read,
                  cache_write_tokens=write)
    context = {"processing": "batch"} if batch else None
    expected = float(calc_price(usage, model, price_context=context).total_price)
    if batch and expected == float(calc_price(usage, model).total_price):
        # The library lists no batch rates for this model (claude-3-5-haiku,
        # gemini-2.0-flash); the providers bill every model half price in batch.
        expected *= 0.5
    assert Pricing().cost(model, tokens, batch=batch) == pytest.approx(expected, rel=1e-12)


def test_a_table_without_cache_rates_takes_the_librarys_ratios_for_that_model() -> None:
    pricing = Pricing({"models": {
        "claude-3-5-haiku-20241022": {"input_per_1m": 2.0, "output_per_1m": 10.0},
        "gpt-4o-mini": {"input_per_1m": 1.0, "output_per_1m": 1.0, "cache_write_per_1m": 9.0},
    }})
    haiku = pricing.price("claude-3-5-haiku-20241022")
    mini = pricing.price("gpt-4o-mini")
    assert haiku is not None and mini is not None
    assert (haiku.cache_read_per_1m, haiku.cache_write_per_1m) == pytest.approx((0.2, 2.5))
    assert (mini.cache_read_per_1m, mini.cache_write_per_1m) == pytest.approx((0.5, 9.0))


@pytest.mark.parametrize(("model", "read", "write"), [
    ("claude-house-model", 0.1, 1.25),  # Anthropic's ratios
    ("gpt-house-model", 0.5, 1.0),  # OpenAI's cached input; no write charge
    ("gemini-house-model", 0.25, 1.0),
    ("house-model", 1.0, 1.0),  # unknown family: cache tokens billed as plain input
])
def test_models_the_library_does_not_know_use_their_providers_usual_ratio(
    model: str, read: float, write: float
) -> None:
    price = Pricing({"models": {model: {"input_per_1m": 4.0, "output_per_1m": 8.0}}}).price(model)
    assert price is not None
    assert (price.cache_read_per_1m, price.cache_write_per_1m) == pytest.approx(
        (4.0 * read, 4.0 * write))


@pytest.mark.parametrize(("spec", "message"), [
    ({"cache_read_per_1m": -0.1}, r"pricing.models\['m'\].cache_read_per_1m must be between 0"),
    ({"cache_write_per_1m": "1.25"}, r"pricing.models\['m'\].cache_write_per_1m must be a number"),
    ({"cached_input_per_1m": 0.1},
     r"pricing.models\['m'\].cached_input_per_1m must be one of input_per_1m, output_per_1m, "
     r"cache_read_per_1m, cache_write_per_1m"),
])
def test_cache_rates_are_validated_like_the_other_prices(
    spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Pricing({"models": {"m": {"input_per_1m": 1, "output_per_1m": 2, **spec}}})


def test_batch_prices_are_the_librarys_batch_rates_and_half_for_other_tables() -> None:
    pricing = Pricing({"models": {"house-model": {"input_per_1m": 4.0, "output_per_1m": 8.0}}})
    tokens = TokenUsage.of(1_000, 100, cache_read_tokens=400)
    # genai-prices: gpt-4o-mini in OpenAI's Batch API is 0.075 in / 0.3 out (cache 0.075).
    assert pricing.cost("gpt-4o-mini", tokens, batch=True) == pytest.approx(
        (600 * 0.075 + 400 * 0.075 + 100 * 0.3) / 1e6)
    assert pricing.cost("house-model", tokens, batch=True) == pytest.approx(
        pricing.cost("house-model", tokens) / 2)
    assert pricing.cost("gpt-4o-mini", tokens) > pricing.cost("gpt-4o-mini", tokens, batch=True)


def test_token_usage_addition_carries_the_cache_tokens() -> None:
    a = TokenUsage.of(100, 10, cache_read_tokens=30, cache_write_tokens=20)
    b = TokenUsage.of(50, 5, cache_read_tokens=5)
    assert a + b == TokenUsage(input_tokens=150, output_tokens=15, total_tokens=165,
                               cache_read_tokens=35, cache_write_tokens=20)
    assert (a + b).uncached_input_tokens == 95
    assert TokenUsage.model_validate({"input_tokens": 3, "output_tokens": 1,
                                      "total_tokens": 4}).cache_read_tokens == 0


@pytest.mark.parametrize(("usage", "expected"), [
    # OpenAI: cached_tokens are part of prompt_tokens.
    ({"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110,
      "prompt_tokens_details": {"cached_tokens": 64}}, (100, 10, 64, 0)),
    # Portkey's Anthropic translation: prompt_tokens is Anthropic's uncached input_tokens.
    ({"prompt_tokens": 30, "completion_tokens": 10, "total_tokens": 110,
      "prompt_tokens_details": {"cached_tokens": 40}, "cache_read_input_tokens": 40,
      "cache_creation_input_tokens": 30}, (100, 10, 40, 30)),
    # Portkey's Bedrock translation: prompt_tokens already counts them.
    ({"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110,
      "prompt_tokens_details": {"cached_tokens": 40}, "cache_read_input_tokens": 40,
      "cache_creation_input_tokens": 30}, (100, 10, 40, 30)),
    ({"prompt_tokens": 7, "completion_tokens": 3}, (7, 3, 0, 0)),
])
def test_openai_format_usage_reads_cache_tokens_of_every_dialect(
    usage: dict[str, Any], expected: tuple[int, int, int, int]
) -> None:
    from dagengine.providers.openai import _usage

    assert _usage(usage) == expected


# -- genai-prices stays offline ---------------------------------------------------------------


def test_prices_never_come_from_the_network_nor_from_another_librarys_updater() -> None:
    """In a fresh interpreter with sockets refused: importing dagengine loads no price data,
    pricing starts no updater thread, and a snapshot another library installed (as
    genai_prices.UpdatePrices does) changes nothing."""
    code = """
import json, socket, sys, threading
def refuse(*args, **kwargs):
    raise OSError("network use refused by the test")
socket.socket.connect = refuse
socket.create_connection = refuse
import dagengine
from dagengine import TokenUsage
from dagengine.cost import Pricing
lazy = "genai_prices" not in sys.modules
from genai_prices import data_snapshot
data_snapshot.set_custom_snapshot(
    data_snapshot.DataSnapshot(providers=[], from_auto_update=True))
cost = Pricing().cost("gpt-4o-mini", TokenUsage.of(1_000_000, 0))
threads = [t.name for t in threading.enumerate()]
print(json.dumps({"lazy": lazy, "cost": cost, "threads": threads}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    seen = json.loads(out.stdout.splitlines()[-1])
    assert seen["lazy"] is True
    assert seen["cost"] == pytest.approx(0.15)
    assert not any("genai_prices" in name for name in seen["threads"])

