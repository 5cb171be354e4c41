"""The simulator as several keys and a hedged request see it: rate limits per API key, latency
drawn per request, and requests cancelled by the client counted and billed for their input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from dagengine.errors import ValidationError
from dagengine.simulator import (
    BaseSimulator,
    Simulator,
    SimulatorConfig,
    SimulatorProcess,
    key_fingerprint,
)
from dagengine.simulator._cli import build_parser, config_to_argv

KEY_A = "sk-pool-key-a-0123456789"
KEY_B = "sk-pool-key-b-9876543210"
KEY_C = "sk-pool-key-c-5555555555"
MESSAGES: Any = [{"role": "user", "content": "What is the capital of France?"}]
POLL_LIMIT = 1000  # polls of /stats (10 ms apart) before a test gives up waiting


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def claude(sim: BaseSimulator, key: str, **options: Any) -> Any:
    """One Messages call with `key` through the Anthropic SDK; the raw response (any status)."""
    async with anthropic.AsyncAnthropic(
        base_url=sim.base_url, api_key=key, max_retries=0, **options
    ) as client:
        try:
            return await client.messages.with_raw_response.create(
                model="claude-sim", max_tokens=50, messages=MESSAGES
            )
        except anthropic.APIStatusError as error:
            return error.response


async def statuses(sim: BaseSimulator, key: str, count: int) -> list[int]:
    return [(await claude(sim, key)).status_code for _ in range(count)]


async def poll_stats(sim: BaseSimulator, ready: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """/stats once `ready(stats)` holds; the handler's cancellation runs on the server's own
    schedule, so the test polls for its effect instead of guessing a delay."""
    for _ in range(POLL_LIMIT):
        stats = await sim.stats()
        if ready(stats):
            return stats
        await asyncio.sleep(0.01)
    raise AssertionError(f"/stats never got there: {stats}")


# -- rate limits per key -----------------------------------------------------------------------


async def test_each_listed_key_meets_its_own_limit_and_retry_after() -> None:
    limits = {KEY_A: {"requests_per_minute": 3}, KEY_B: {"requests_per_minute": 30}}
    async with Simulator(key_limits=limits, burst_seconds=1) as sim:
        first_a, first_b = await claude(sim, KEY_A), await claude(sim, KEY_B)
        second_a, second_b = await claude(sim, KEY_A), await claude(sim, KEY_B)
        unlisted = await statuses(sim, KEY_C, 5)  # no top-level limit: never refused

    assert (first_a.status_code, first_b.status_code) == (200, 200)
    assert (second_a.status_code, second_b.status_code) == (429, 429)
    # 3 requests a minute refill one every 20 s, 30 a minute one every 2 s.
    assert 10_000 < int(second_a.headers["retry-after-ms"]) <= 20_000
    assert 0 < int(second_b.headers["retry-after-ms"]) <= 2_000
    assert first_a.headers["anthropic-ratelimit-requests-limit"] == "3"
    assert first_b.headers["anthropic-ratelimit-requests-limit"] == "30"
    assert unlisted == [200] * 5


async def test_unlisted_keys_share_the_top_level_limit() -> None:
    async with Simulator(requests_per_minute=6, burst_seconds=1,
                         key_limits={KEY_A: {"requests_per_minute": 60}}) as sim:
        got = [await statuses(sim, key, 1) for key in (KEY_A, KEY_B, KEY_C)]

    assert got == [[200], [200], [429]]  # C found the bucket B emptied


async def test_the_star_entry_gives_every_key_its_own_copy_of_the_top_level_limit() -> None:
    async with Simulator(requests_per_minute=6, burst_seconds=1, key_limits={"*": {}}) as sim:
        got = [await statuses(sim, key, 2) for key in (KEY_A, KEY_B, KEY_C)]

    assert got == [[200, 429]] * 3


async def test_an_entry_takes_the_top_level_limits_it_does_not_name() -> None:
    # Each key's own token bucket (100 a minute, 1 s burst: 1.67 tokens) fits no prompt plus
    # max_tokens, so a bucket is admitted once, when full; a shared one would refuse B.
    async with Simulator(tokens_per_minute=100, burst_seconds=1,
                         key_limits={KEY_A: {"requests_per_minute": 600}, KEY_B: {}}) as sim:
        got = [await statuses(sim, key, 2) for key in (KEY_A, KEY_B)]
        first = await claude(sim, KEY_C)

    assert got == [[200, 429], [200, 429]]
    assert first.status_code == 200
    assert first.headers["anthropic-ratelimit-tokens-limit"] == "100"


async def test_openai_bearer_and_gemini_keys_get_their_own_buckets(
    http: aiohttp.ClientSession,
) -> None:
    limits = {KEY_A: {"requests_per_minute": 6}, KEY_B: {"requests_per_minute": 6}}
    async with Simulator(key_limits=limits, burst_seconds=1) as sim:
        async with openai.AsyncOpenAI(base_url=sim.openai_base_url, api_key=KEY_A,
                                      max_retries=0) as gpt:
            await gpt.chat.completions.create(model="gpt-sim", messages=MESSAGES)
            with pytest.raises(openai.RateLimitError) as refused:
                await gpt.chat.completions.create(model="gpt-sim", messages=MESSAGES)
        gemini = genai.Client(api_key=KEY_B,
                              http_options=genai_types.HttpOptions(base_url=sim.gemini_base_url))
        try:
            await gemini.aio.models.generate_content(model="gemini-sim", contents="hi")
        finally:
            await gemini.aio.aclose()
        # The REST form: the key in the query string, as ?key= (B's bucket is empty now).
        url = f"{sim.base_url}/v1beta/models/gemini-sim:generateContent?key={KEY_B}"
        body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
        async with http.post(url, json=body) as by_query:
            query_status = by_query.status
        with pytest.raises(genai_errors.ClientError) as gemini_refused:
            client = genai.Client(
                api_key=KEY_B, http_options=genai_types.HttpOptions(base_url=sim.gemini_base_url))
            try:
                await client.aio.models.generate_content(model="gemini-sim", contents="hi")
            finally:
                await client.aio.aclose()
        stats = await sim.stats()

    assert 5_000 < int(refused.value.response.headers["retry-after-ms"]) <= 10_000
    assert query_status == 429 and gemini_refused.value.code == 429
    assert stats["keys"][key_fingerprint(KEY_A)]["responses_by_status"] == {"200": 1, "429": 1}
    assert stats["keys"][key_fingerprint(KEY_B)]["responses_by_status"] == {"200": 1, "429": 2}


async def test_stats_count_each_key_under_a_fingerprint_never_the_key() -> None:
    async with Simulator(key_limits={KEY_A: {"requests_per_minute": 6}}, burst_seconds=1) as sim:
        await statuses(sim, KEY_A, 3)
        await statuses(sim, KEY_B, 2)
        stats = await sim.stats()
        async with aiohttp.ClientSession() as session, session.get(
            f"{sim.base_url}/stats"
        ) as response:
            served = await response.text()

    a, b = stats["keys"][key_fingerprint(KEY_A)], stats["keys"][key_fingerprint(KEY_B)]
    assert (a["requests"], a["successes"], a["rate_limited"]) == (3, 1, 2)
    assert (b["requests"], b["successes"], b["rate_limited"]) == (2, 2, 0)
    assert a["input_tokens"] > 0 and b["input_tokens"] == 2 * a["input_tokens"]
    assert stats["requests"] == 5 and stats["rate_limited"] == 2
    assert key_fingerprint(KEY_A).startswith("sha256:") and len(key_fingerprint(KEY_A)) == 19
    for key in (KEY_A, KEY_B):
        assert key not in served and key[-10:] not in served


async def test_with_api_key_set_the_listed_keys_are_let_in_too() -> None:
    async with Simulator(api_key=KEY_A, key_limits={KEY_B: {}}) as sim:
        got = [(await claude(sim, key)).status_code for key in (KEY_A, KEY_B, KEY_C)]

    assert got == [200, 200, 401]


async def test_key_limits_reach_a_simulator_process_through_its_flags() -> None:
    async with SimulatorProcess(key_limits={KEY_A: {"requests_per_minute": 6}},
                                burst_seconds=1) as sim:
        got = [await statuses(sim, KEY_A, 2), await statuses(sim, KEY_B, 2)]
        config = await sim.configure(key_limits={KEY_B: {"requests_per_minute": 6}})
        after = await statuses(sim, KEY_B, 2)

    assert got == [[200, 429], [200, 200]]
    assert config.key_limits == {KEY_B: {"requests_per_minute": 6.0}}
    assert after == [200, 429]


def test_key_limit_and_latency_draw_flags_reproduce_the_config() -> None:
    config = SimulatorConfig(
        key_limits={KEY_A: {"requests_per_minute": 60, "tokens_per_minute": None}, "*": {}},
        latency_draw="request",
    )
    args = vars(build_parser().parse_args(config_to_argv(config)))
    del args["port"], args["watch_stdin"]

    assert SimulatorConfig(**args) == config


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([KEY_A], r"simulator\.key_limits must be a dict of API key -> limits"),
        ({KEY_A: {"rpm": 5}}, r"key_limits\[sha256:\w{12}\] field must be one of requests_per_"),
        ({KEY_A: {"requests_per_minute": 0}},
         r"requests_per_minute must be a number between 0\.001 and 1e\+12 or None, got 0"),
        ({KEY_A: {"burst_seconds": None}}, r"burst_seconds must be a number between"),
        ({KEY_A: 60}, r"key_limits\[sha256:\w{12}\] must be a dict with some of"),
    ],
)
def test_bad_key_limits_say_what_to_fix_and_never_show_the_key(value: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        SimulatorConfig(key_limits=value)
    assert KEY_A not in str(caught.value)


def test_latency_draw_is_prompt_or_request() -> None:
    with pytest.raises(ValidationError, match=r"simulator\.latency_draw must be prompt or request"):
        SimulatorConfig(latency_draw="arrival")  # type: ignore[arg-type]


# -- latency per request -----------------------------------------------------------------------


async def latencies(sim: BaseSimulator, prompts: list[str]) -> list[float]:
    """The latency the simulator applied to each prompt, sent one after another."""
    drawn = []
    async with anthropic.AsyncAnthropic(base_url=sim.base_url, api_key="sim",
                                        max_retries=0) as client:
        for prompt in prompts:
            raw = await client.messages.with_raw_response.create(
                model="claude-sim", max_tokens=50,
                messages=[{"role": "user", "content": prompt}])
            drawn.append(float(raw.headers["x-simulated-latency-ms"]))
    return drawn


LATENCY = {"latency_median": 0.002, "latency_sigma": 1.0, "seed": 9}


async def test_request_draws_give_duplicates_of_a_prompt_their_own_latencies() -> None:
    async with Simulator(**LATENCY, latency_draw="request") as same, \
            Simulator(**LATENCY, latency_draw="request") as other:
        duplicates = await latencies(same, ["hi", "hi", "hi", "hi"])
        different = await latencies(other, ["a", "b", "c", "hi"])

    assert len(set(duplicates)) == 4
    # One seeded sequence in arrival order, whatever the prompts are.
    assert duplicates == different


async def test_prompt_draws_stay_the_default_and_tie_a_latency_to_the_prompt() -> None:
    async with Simulator(**LATENCY) as first, Simulator(**LATENCY) as second:
        forward = await latencies(first, ["a", "b", "a"])
        backward = await latencies(second, ["b", "a", "a"])

    assert (forward[0], forward[1], forward[2]) == (backward[1], backward[0], backward[2])
    assert forward[0] != forward[2]  # the second sending of a prompt draws anew
    assert SimulatorConfig().latency_draw == "prompt"


# -- cancelled requests ------------------------------------------------------------------------


async def answered_input_tokens() -> int:
    """What the same request is billed for when it is answered."""
    async with Simulator() as sim:
        message = await (await claude(sim, KEY_A)).parse()
    tokens: int = message.usage.input_tokens
    return tokens


def parsed(count: int) -> Callable[[dict[str, Any]], bool]:
    """The simulator has read `count` prompts: their handlers are now in the latency wait."""
    return lambda stats: sum(m["requests"] for m in stats["models"].values()) >= count


async def test_a_request_closed_during_its_latency_is_counted_and_billed_for_its_input() -> None:
    body = {"model": "claude-sim", "max_tokens": 50, "messages": MESSAGES}
    async with Simulator(latency=60) as sim:
        session = aiohttp.ClientSession(headers={"x-api-key": KEY_A})
        post = asyncio.create_task(session.post(f"{sim.base_url}/v1/messages", json=body))
        await poll_stats(sim, parsed(1))
        post.cancel()
        await session.close()  # the hedged loser's connection closes
        stats = await poll_stats(sim, lambda stats: stats["cancelled"] == 1)

    expected = await answered_input_tokens()
    assert stats["cancelled_input_tokens"] == expected
    assert stats["billed_input_tokens"] == expected
    assert stats["input_tokens"] == 0 and stats["responses_by_status"] == {}
    model = stats["models"]["claude-sim"]
    assert (model["cancelled"], model["cancelled_input_tokens"]) == (1, expected)
    by_key = stats["keys"][key_fingerprint(KEY_A)]
    assert (by_key["requests"], by_key["cancelled"], by_key["successes"]) == (1, 1, 0)
    assert by_key["billed_input_tokens"] == expected


async def test_an_sdk_that_gives_up_leaves_a_cancelled_request_beside_the_answered_ones() -> None:
    async with Simulator(latency=0.01) as sim:
        await claude(sim, KEY_B)
        await sim.configure(latency=60)
        async with anthropic.AsyncAnthropic(base_url=sim.base_url, api_key=KEY_B, max_retries=0,
                                            timeout=0.3) as client:
            with pytest.raises(anthropic.APITimeoutError):
                await client.messages.create(model="claude-sim", max_tokens=50,
                                             messages=MESSAGES)
        stats = await poll_stats(sim, lambda stats: stats["cancelled"] == 1)

    assert stats["requests"] == 2 and stats["responses_by_status"] == {"200": 1}
    assert stats["cancelled_input_tokens"] == stats["input_tokens"] > 0
    assert stats["billed_input_tokens"] == 2 * stats["input_tokens"]


async def test_answers_are_never_counted_as_cancelled() -> None:
    async with Simulator(latency=0.01) as sim:
        calls: list[Awaitable[Any]] = [claude(sim, KEY_A) for _ in range(5)]
        await asyncio.gather(*calls)
        stats = await sim.stats()

    assert stats["responses_by_status"] == {"200": 5}
    assert stats["cancelled"] == 0 and stats["cancelled_input_tokens"] == 0
    assert stats["billed_input_tokens"] == stats["input_tokens"] > 0
