"""The LLM API simulator: wire formats accepted by the official SDKs, limits, faults, stats."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from google import genai
from google.genai import types as genai_types

from dagengine.errors import ValidationError
from dagengine.simulator import (
    BaseSimulator,
    Simulator,
    SimulatorConfig,
    SimulatorProcess,
    prompt_key,
)
from dagengine.simulator._cli import build_parser, config_to_argv

EMAIL_PROMPT = """Analyze this email quickly and categorize it.

Email: {email}

Return ONLY valid JSON (no markdown):
{{
  "category": "spam" | "work" | "personal" | "newsletter",
  "confidence": 0.95,
  "summary": "Brief one-line summary"
}}"""

EMAILS = {
    "work": "Subject: Q3 review. The client meeting about the quarterly report moved to "
    "Thursday; the project deadline is unchanged. Team, please update the slides.",
    "spam": "CONGRATULATIONS WINNER! You won the lottery. Click here to claim your FREE prize "
    "$$$ now - urgent, offer ends today!",
    "personal": "Hi sweetie, Mom here. Are you coming to dinner this weekend for Dad's "
    "birthday? The whole family will be there. Love you!",
    "newsletter": "The Weekly Digest, edition #42: this week's top articles and highlights. "
    "Manage your preferences or unsubscribe at any time.",
}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator() as simulator:
        yield simulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Clients:
    """SDK clients pointed at a simulator; all closed when the test ends."""

    def __init__(self) -> None:
        self.opened: list[anthropic.AsyncAnthropic | openai.AsyncOpenAI | genai.Client] = []

    def claude(
        self, sim: BaseSimulator, api_key: str = "sim", **options: Any
    ) -> anthropic.AsyncAnthropic:
        client = anthropic.AsyncAnthropic(
            base_url=sim.base_url, api_key=api_key, max_retries=0, **options
        )
        self.opened.append(client)
        return client

    def gpt(self, sim: BaseSimulator, api_key: str = "sim") -> openai.AsyncOpenAI:
        client = openai.AsyncOpenAI(base_url=sim.openai_base_url, api_key=api_key, max_retries=0)
        self.opened.append(client)
        return client

    def gemini(self, sim: BaseSimulator, api_key: str = "sim") -> genai.Client:
        options = genai_types.HttpOptions(base_url=sim.gemini_base_url)
        client = genai.Client(api_key=api_key, http_options=options)
        self.opened.append(client)
        return client

    async def close(self) -> None:
        for client in self.opened:
            await (client.aio.aclose() if isinstance(client, genai.Client) else client.close())


@pytest.fixture
async def sdk() -> AsyncIterator[Clients]:
    clients = Clients()
    yield clients
    await clients.close()


async def ask_claude(
    sdk: Clients, sim: BaseSimulator, prompt: str, max_tokens: int = 200
) -> anthropic.types.Message:
    messages: Any = [{"role": "user", "content": prompt}]
    return await sdk.claude(sim).messages.create(
        model="claude-sim", max_tokens=max_tokens, messages=messages
    )


def text_of(message: anthropic.types.Message) -> str:
    block = message.content[0]
    assert isinstance(block, anthropic.types.TextBlock)
    return block.text


def error_type(anthropic_body: object) -> str:
    assert isinstance(anthropic_body, dict) and anthropic_body["type"] == "error"
    kind: str = anthropic_body["error"]["type"]
    return kind


async def post_messages(
    http: aiohttp.ClientSession, sim: BaseSimulator, prompt: str = "hello"
) -> aiohttp.ClientResponse:
    body = {
        "model": "claude-sim",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": prompt}],
    }
    async with http.post(f"{sim.base_url}/v1/messages", json=body) as response:
        await response.read()
        return response


# --- wire formats, through the official SDKs ---------------------------------------------


async def test_anthropic_sdk_round_trip_reports_model_and_usage(
    sim: Simulator, sdk: Clients
) -> None:
    message = await sdk.claude(sim).messages.create(
        model="claude-3-5-haiku-20241022",
        max_tokens=100,
        system=[{"type": "text", "text": "You are terse."}],
        messages=[{"role": "user", "content": "Summarize: The cat sat on the mat. It purred."}],
    )
    text = "You are terse.\nSummarize: The cat sat on the mat. It purred."
    assert message.model == "claude-3-5-haiku-20241022"
    assert message.stop_reason == "end_turn"
    assert json.loads(text_of(message)) == {"summary": "The cat sat on the mat."}
    assert message.usage.input_tokens == -(-len(text) // 4) + 3 * 2
    assert message.usage.output_tokens == -(-len(text_of(message)) // 4)


async def test_openai_sdk_round_trip_reports_model_and_usage(sim: Simulator, sdk: Clients) -> None:
    completion = await sdk.gpt(sim).chat.completions.create(
        model="gpt-4o-mini",
        max_completion_tokens=100,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is the sentiment? I love this great product."},
        ],
    )
    choice = completion.choices[0]
    assert completion.model == "gpt-4o-mini"
    assert completion.object == "chat.completion"
    assert choice.finish_reason == "stop"
    assert json.loads(choice.message.content or "") == {"sentiment": "positive", "score": 1.0}
    assert completion.usage is not None
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


async def test_gemini_sdk_round_trip_reports_model_and_usage(sim: Simulator, sdk: Clients) -> None:
    config = genai_types.GenerateContentConfig(
        system_instruction="You are terse.", max_output_tokens=100, temperature=0.1
    )
    response = await sdk.gemini(sim).aio.models.generate_content(
        model="gemini-2.0-flash",
        contents="Extract the topics: rockets, rockets and launch pads.",
        config=config,
    )
    assert response.model_version == "gemini-2.0-flash"
    assert response.candidates and response.candidates[0].finish_reason == "STOP"
    assert json.loads(response.text or "") == {"topics": ["rockets", "launch", "pads"]}
    usage = response.usage_metadata
    assert usage is not None and usage.prompt_token_count and usage.candidates_token_count
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count


async def test_gemini_v1beta_path_and_key_query_parameter_are_accepted(
    http: aiohttp.ClientSession,
) -> None:
    async with Simulator(api_key="right") as sim:
        url = f"{sim.base_url}/v1beta/models/gemini-pro:generateContent?key=right"
        body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
        async with http.post(url, json=body) as response:
            data = await response.json()
    assert response.status == 200
    assert data["candidates"][0]["content"]["role"] == "model"


async def test_streaming_requests_are_refused_with_400(sdk: Clients, sim: Simulator) -> None:
    with pytest.raises(openai.BadRequestError, match="stream=true is not simulated"):
        await sdk.gpt(sim).chat.completions.create(
            model="m", stream=True, messages=[{"role": "user", "content": "hi"}]
        )


async def test_every_response_is_labelled_simulated(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    ok = await post_messages(http, sim)
    await sim.configure(script=[500])
    failed = await post_messages(http, sim)
    async with http.get(f"{sim.base_url}/stats") as stats:
        assert stats.headers["x-simulated"] == "true"
    assert ok.headers["x-simulated"] == failed.headers["x-simulated"] == "true"


# --- answers ------------------------------------------------------------------------------


@pytest.mark.parametrize("category", sorted(EMAILS))
async def test_email_categorisation_fits_the_email(
    sim: Simulator, category: str, sdk: Clients
) -> None:
    message = await ask_claude(sdk, sim, EMAIL_PROMPT.format(email=EMAILS[category]))
    answer = json.loads(text_of(message))
    assert answer["category"] == category
    assert 0.5 < answer["confidence"] < 1
    assert answer["summary"]


async def test_answers_depend_only_on_the_prompt_text(sdk: Clients) -> None:
    prompt = EMAIL_PROMPT.format(email=EMAILS["work"])
    async with Simulator(seed=1) as first, Simulator(seed=2, latency_median=0.001) as second:
        await ask_claude(sdk, second, "something else first")
        a = await ask_claude(sdk, first, prompt)
        b = await ask_claude(sdk, second, prompt)
        c = await sdk.gpt(second).chat.completions.create(
            model="m", messages=[{"role": "user", "content": prompt}]
        )
    assert text_of(a) == text_of(b) == c.choices[0].message.content


async def test_other_prompts_get_compact_json_answers(sim: Simulator, sdk: Clients) -> None:
    replies = {}
    for prompt in (
        "Rate the sentiment: terrible service, slow and broken.",
        "Summarize this: Sales grew 20% in March. Costs fell.",
        "What is the capital of France?",
    ):
        text = text_of(await ask_claude(sdk, sim, prompt))
        assert text == json.dumps(json.loads(text), separators=(",", ":"))
        replies[prompt.split()[0]] = json.loads(text)
    assert replies["Rate"] == {"sentiment": "negative", "score": -1.0}
    assert replies["Summarize"] == {"summary": "Sales grew 20% in March."}
    assert set(replies["What"]) == {"answer", "words"}


async def test_max_tokens_cuts_the_answer_and_reports_the_stop_reason(
    sim: Simulator, sdk: Clients
) -> None:
    prompt = EMAIL_PROMPT.format(email=EMAILS["spam"])
    message = await ask_claude(sdk, sim, prompt, max_tokens=5)
    completion = await sdk.gpt(sim).chat.completions.create(
        model="m", max_tokens=5, messages=[{"role": "user", "content": prompt}]
    )
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 5
    assert len(text_of(message)) == 20
    assert completion.choices[0].finish_reason == "length"


# --- rate limits --------------------------------------------------------------------------


async def test_rate_limit_answers_429_with_retry_after_and_ratelimit_headers(
    http: aiohttp.ClientSession, sdk: Clients
) -> None:
    async with Simulator(requests_per_minute=60) as sim:
        admitted = await post_messages(http, sim)
        refused = await post_messages(http, sim)
        with pytest.raises(anthropic.RateLimitError) as raised:
            await ask_claude(sdk, sim, "hello")
    assert admitted.status == 200 and refused.status == 429
    assert refused.headers["retry-after"] == "1"
    assert 0 < int(refused.headers["retry-after-ms"]) <= 1000
    for response in (admitted, refused):
        assert response.headers["anthropic-ratelimit-requests-limit"] == "60"
        assert response.headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert response.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    assert error_type(raised.value.body) == "rate_limit_error"


async def test_openai_rate_limit_headers_use_durations(http: aiohttp.ClientSession) -> None:
    async with Simulator(requests_per_minute=60, tokens_per_minute=60_000) as sim:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        url = f"{sim.openai_base_url}/chat/completions"
        async with http.post(url, json=body) as first, http.post(url, json=body) as second:
            assert first.status == 200 and second.status == 429
            error = (await second.json())["error"]
    assert first.headers["x-ratelimit-limit-requests"] == "60"
    assert first.headers["x-ratelimit-remaining-requests"] == "0"
    assert first.headers["x-ratelimit-reset-requests"].endswith(("ms", "s"))
    assert first.headers["x-ratelimit-limit-tokens"] == "60000"
    assert error["code"] == "rate_limit_exceeded"


async def test_requests_per_minute_allows_a_burst_of_one_second_not_one_minute(
    sdk: Clients,
) -> None:
    async with Simulator(requests_per_minute=3000) as sim:
        client = sdk.claude(sim)

        async def status() -> int:
            try:
                await client.messages.create(
                    model="m", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
                )
            except anthropic.RateLimitError:
                return 429
            return 200

        started = time.monotonic()
        statuses = await asyncio.gather(*(status() for _ in range(120)))
        elapsed = time.monotonic() - started
    # 50 fit in the bucket; 50 more per second refill while the 120 arrive.
    assert 50 <= statuses.count(200) <= 50 + 50 * elapsed + 1
    assert statuses.count(429) > 0


async def test_tokens_per_minute_charges_input_plus_max_tokens(
    http: aiohttp.ClientSession,
) -> None:
    async with Simulator(tokens_per_minute=6000) as sim:  # 100 tokens/s, bucket of 100
        first = await post_messages(http, sim)  # 64 max_tokens + 5 input
        second = await post_messages(http, sim)
    assert first.status == 200 and second.status == 429
    assert first.headers["anthropic-ratelimit-tokens-remaining"] == str(100 - 64 - 5)
    assert "anthropic-ratelimit-requests-limit" not in first.headers


async def test_without_rate_limit_headers_a_429_says_only_when_to_retry_in_whole_seconds(
    http: aiohttp.ClientSession,
) -> None:
    # As Gemini and many OpenAI-compatible servers: no remaining/limit/reset, no -ms.
    async with Simulator(requests_per_minute=60, rate_limit_headers=False) as sim:
        admitted = await post_messages(http, sim)
        refused = await post_messages(http, sim)
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        async with http.post(f"{sim.openai_base_url}/chat/completions", json=body) as openai:
            await openai.read()
    assert (admitted.status, refused.status, openai.status) == (200, 429, 429)
    for response in (admitted, refused, openai):
        assert not [name for name in response.headers if "ratelimit" in name.lower()]
        assert "retry-after-ms" not in response.headers
    assert refused.headers["retry-after"] == "1"


async def test_faults_per_prompt_are_capped(http: aiohttp.ClientSession) -> None:
    async with Simulator(error_429_rate=1.0, max_faults_per_prompt=2) as sim:
        first = [(await post_messages(http, sim, "one")).status for _ in range(4)]
        second = [(await post_messages(http, sim, "two")).status for _ in range(3)]
        await sim.reset()  # the count starts again
        again = (await post_messages(http, sim, "one")).status
    assert first == [429, 429, 200, 200]
    assert second == [429, 429, 200]
    assert again == 429


async def test_no_ratelimit_headers_without_limits(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    response = await post_messages(http, sim)
    assert not [name for name in response.headers if "ratelimit" in name.lower()]


# --- scripted and injected faults ---------------------------------------------------------


async def test_script_of_statuses_is_consumed_in_order_then_normal_behaviour_resumes(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    await sim.configure(script=[429, 503, 200, 500])
    statuses = [(await post_messages(http, sim)).status for _ in range(6)]
    assert statuses == [429, 503, 200, 500, 200, 200]


async def test_scripted_429_sends_the_configured_retry_after(
    http: aiohttp.ClientSession,
) -> None:
    async with Simulator(script=[429], error_429_retry_after=2.5) as sim:
        response = await post_messages(http, sim)
    assert (response.headers["retry-after"], response.headers["retry-after-ms"]) == ("3", "2500")


async def test_wrong_api_key_gets_401_with_the_providers_auth_error(sdk: Clients) -> None:
    async with Simulator(api_key="right") as sim:
        with pytest.raises(anthropic.AuthenticationError) as claude_error:
            await sdk.claude(sim, api_key="wrong").messages.create(
                model="m", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
            )
        with pytest.raises(openai.AuthenticationError) as gpt_error:
            await sdk.gpt(sim, api_key="wrong").chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
        with pytest.raises(genai.errors.ClientError) as gemini_error:
            await sdk.gemini(sim, api_key="wrong").aio.models.generate_content(
                model="m", contents="hi"
            )
        right = await sdk.claude(sim, api_key="right").messages.create(
            model="m", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    assert error_type(claude_error.value.body) == "authentication_error"
    assert gpt_error.value.code == "invalid_api_key"
    assert (gemini_error.value.code, gemini_error.value.status) == (401, "UNAUTHENTICATED")
    assert right.content


async def test_malformed_body_is_a_200_that_is_not_json(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    await sim.configure(script=["malformed"])
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    async with http.post(f"{sim.openai_base_url}/chat/completions", json=body) as response:
        text = await response.text()
    assert response.status == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


async def test_truncated_body_is_the_json_cut_in_half(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    whole = await (await http.post(f"{sim.base_url}/v1/messages", json=_message_body())).read()
    await sim.configure(script=["truncated"])
    async with http.post(f"{sim.base_url}/v1/messages", json=_message_body()) as response:
        cut = await response.read()
    assert response.status == 200
    assert whole.replace(b"00000001", b"00000002")[: len(whole) // 2] == cut
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut)


async def test_schema_violation_keeps_the_envelope_but_answers_wrong_fields(
    sim: Simulator, sdk: Clients
) -> None:
    await sim.configure(script=["schema"])
    message = await ask_claude(sdk, sim, EMAIL_PROMPT.format(email=EMAILS["work"]))
    assert json.loads(text_of(message)) == {"unexpected": True}


async def test_reset_closes_the_connection_without_a_response(sim: Simulator, sdk: Clients) -> None:
    await sim.configure(script=["reset"])
    with pytest.raises(openai.APIConnectionError):
        await sdk.gpt(sim).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
    assert (await sim.stats())["resets"] == 1


async def test_hang_is_bounded_by_the_clients_timeout(sim: Simulator, sdk: Clients) -> None:
    await sim.configure(script=["hang"])
    started = time.monotonic()
    with pytest.raises(anthropic.APITimeoutError):
        await sdk.claude(sim, timeout=0.3).messages.create(
            model="m", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    assert time.monotonic() - started < 2
    assert (await sim.stats())["hangs"] == 1


async def test_hang_drops_the_connection_after_hang_seconds(http: aiohttp.ClientSession) -> None:
    async with Simulator(script=["hang"], hang_seconds=0.2) as sim:
        with pytest.raises(aiohttp.ClientError):
            await post_messages(http, sim)


async def test_stopping_the_simulator_does_not_wait_for_hung_requests(
    http: aiohttp.ClientSession,
) -> None:
    sim = Simulator(script=["hang"])
    await sim.start()
    # The script hangs whichever request arrives first, so once one is answered the other
    # is being held by the server.
    requests = [asyncio.create_task(post_messages(http, sim)) for _ in range(2)]
    answered, (hung,) = await asyncio.wait(requests, return_when=asyncio.FIRST_COMPLETED)
    assert [task.result().status for task in answered] == [200]
    started = time.monotonic()
    await sim.stop()
    assert time.monotonic() - started < 2
    with pytest.raises(aiohttp.ClientError):
        await hung


async def test_fault_rates_follow_the_seeded_rng(http: aiohttp.ClientSession) -> None:
    async def statuses(seed: int) -> list[int]:
        async with Simulator(error_500_rate=0.3, error_503_rate=0.2, seed=seed) as sim:
            return [(await post_messages(http, sim)).status for _ in range(100)]

    first, again, other = await statuses(7), await statuses(7), await statuses(8)
    assert first == again != other
    assert 15 <= first.count(500) <= 45 and 8 <= first.count(503) <= 35


async def test_latency_delays_the_answer(http: aiohttp.ClientSession) -> None:
    async with Simulator(latency=0.2) as sim:
        started = time.monotonic()
        await post_messages(http, sim)
    assert time.monotonic() - started >= 0.2


# --- stats, reset, configuration ----------------------------------------------------------


async def test_stats_count_statuses_apis_models_tokens_and_prompt_hashes(
    sim: Simulator, http: aiohttp.ClientSession, sdk: Clients
) -> None:
    await sdk.claude(sim).messages.create(
        model="claude-sim", max_tokens=50, system="Be brief.",
        messages=[{"role": "user", "content": "Hello there"}],
    )  # fmt: skip
    await sdk.gpt(sim).chat.completions.create(
        model="gpt-sim",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello there"},
        ],
    )
    config = genai_types.GenerateContentConfig(system_instruction="Be brief.")
    await sdk.gemini(sim).aio.models.generate_content(
        model="gemini-sim", contents="Hello there", config=config
    )
    await sim.configure(script=[429, 503])
    await post_messages(http, sim, "other")
    await post_messages(http, sim, "other")
    async with http.get(f"{sim.base_url}/stats") as response:
        stats = await response.json()

    assert stats == await sim.stats()
    assert stats["requests"] == 5
    assert stats["responses_by_status"] == {"200": 3, "429": 1, "503": 1}
    assert (stats["rate_limited"], stats["server_errors"]) == (1, 1)
    assert stats["apis"] == {"anthropic": 3, "openai": 1, "gemini": 1}
    assert stats["prompts"] == {prompt_key("Be brief.\nHello there"): 3, prompt_key("other"): 2}
    assert stats["models"]["gpt-sim"]["requests"] == 1
    assert (
        stats["models"]["claude-sim"]["input_tokens"] == -(-len("Be brief.\nHello there") // 4) + 6
    )
    assert stats["input_tokens"] == sum(m["input_tokens"] for m in stats["models"].values())
    assert stats["output_tokens"] > 0


async def test_reset_endpoint_clears_counters_and_script(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    await sim.configure(script=[500, 500])
    assert (await post_messages(http, sim)).status == 500
    async with http.post(f"{sim.base_url}/reset") as response:
        assert response.status == 200
    assert (await sim.stats())["requests"] == 0
    assert (await post_messages(http, sim)).status == 200


async def test_configure_over_http_changes_behaviour_and_rejects_unknown_options(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{sim.base_url}/config", json={"error_503_rate": 1.0}) as response:
        assert (await response.json())["error_503_rate"] == 1.0
    assert (await post_messages(http, sim)).status == 503
    async with http.post(f"{sim.base_url}/config", json={"error_503_rat": 1}) as response:
        assert response.status == 400
        assert "error_503_rate" in (await response.json())["error"]


def test_config_errors_say_what_is_allowed() -> None:
    with pytest.raises(ValidationError, match=r"simulator\.hang_rate must be between 0 and 1"):
        SimulatorConfig(hang_rate=2)
    with pytest.raises(ValidationError, match="at most 1 in total"):
        SimulatorConfig(error_500_rate=0.6, error_503_rate=0.6)
    with pytest.raises(ValidationError, match="script step must be one of"):
        SimulatorConfig(script=(418,))
    with pytest.raises(ValidationError, match="max_faults_per_prompt must be a whole number"):
        SimulatorConfig(max_faults_per_prompt=-1)
    with pytest.raises(ValidationError, match="rate_limit_headers must be true or false"):
        SimulatorConfig(rate_limit_headers="no")  # type: ignore[arg-type]


def test_cli_flags_reproduce_every_config_field() -> None:
    config = SimulatorConfig(
        latency_median=0.8, latency_sigma=0.5, seed=3, requests_per_minute=3000,
        tokens_per_minute=1e6, burst_seconds=2, error_429_rate=0.2, error_429_retry_after=2,
        error_500_rate=0.1, error_503_rate=0.1, hang_rate=0.1, hang_seconds=5, reset_rate=0.1,
        malformed_rate=0.1, truncated_rate=0.1, schema_violation_rate=0.1,
        script=(429, 200, "hang"), api_key="k", cache_read_tokens=64, cache_write_tokens=32,
        cache_min_tokens=1024, rate_limit_headers=False, max_faults_per_prompt=3,
    )  # fmt: skip
    argv = config_to_argv(config)
    args = vars(build_parser().parse_args(argv))
    del args["port"], args["watch_stdin"]
    assert SimulatorConfig(**args) == config
    assert len(argv) == 2 * len(args)
    short = vars(build_parser().parse_args(["--rpm", "600", "--script", "429,reset"]))
    assert (short["requests_per_minute"], short["script"]) == (600, (429, "reset"))


# --- out of process -----------------------------------------------------------------------


async def test_simulator_process_serves_and_leaves_no_process_behind(sdk: Clients) -> None:
    async with SimulatorProcess(requests_per_minute=6000, seed=4) as sim:
        pid = sim.pid
        assert pid is not None
        message = await ask_claude(sdk, sim, EMAIL_PROMPT.format(email=EMAILS["newsletter"]))
        assert json.loads(text_of(message))["category"] == "newsletter"
        config = await sim.configure(script=[503])
        assert config.script == (503,) and config.requests_per_minute == 6000
        with pytest.raises(anthropic.InternalServerError):
            await ask_claude(sdk, sim, "hi")
        stats = await sim.stats()
        assert stats["responses_by_status"] == {"200": 1, "503": 1}
        await sim.reset()
        assert (await sim.stats())["requests"] == 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def _message_body() -> dict[str, Any]:
    return {"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "hello"}]}
