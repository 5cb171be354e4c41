"""The built-in providers (anthropic, openai, gemini) on both transports (the documented wire
format over aiohttp, and the official SDKs), and Portkey routing.

Most tests run against dagengine.simulator; wire details (where the system prompt goes, which
headers the gateway mode sends, how answer text becomes `data`) are checked against a small
recording upstream defined here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from conftest import loopback_server
from dagengine.errors import ConfigurationError, MissingAPIKeyError, ProviderError
from dagengine.gateway import LocalGateway
from dagengine.providers import BaseProvider, build_provider
from dagengine.providers._http import rate_limit, retry_after
from dagengine.providers._sdk import SDKProvider
from dagengine.providers.portkey import DEFAULT_RETRY
from dagengine.simulator import Simulator
from dagengine.types import ProviderRequest, TokenUsage

# google-genai subclasses aiohttp.ClientSession, which aiohttp warns about on first use.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Inheritance class AiohttpClientSession:DeprecationWarning"
)

KEY = "sk-test-0123456789-SECRET-provider-key"
PORTKEY_KEY = "pk-test-9876543210-SECRET-portkey-key"
KINDS = ("anthropic", "openai", "gemini")
MODELS = {
    "anthropic": "claude-3-5-haiku-20241022",
    "openai": "gpt-4o-mini",
    "gemini": "gemini-2.0-flash",
}
ENV_VARS = {
    "anthropic": ["ANTHROPIC_API_KEY"],
    "openai": ["OPENAI_API_KEY"],
    "gemini": ["GEMINI_API_KEY", "GOOGLE_API_KEY"],
}
EMAIL_PROMPT = (
    "Analyze this email quickly and categorize it.\n\n"
    "Email: Team meeting tomorrow at 10 to review the Q3 budget and project deadline.\n\n"
    "Return ONLY valid JSON (no markdown):\n"
    '{"category": "spam" | "work" | "personal" | "newsletter", "confidence": 0.95, '
    '"summary": "Brief one-line summary"}'
)


@pytest.fixture(autouse=True)
def _no_keys_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "ANTHROPIC_API_KEY",
        "OPENAI_API_KEY",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "PORTKEY_API_KEY",
        "ANTHROPIC_BASE_URL",
        "OPENAI_BASE_URL",
    ):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(api_key=KEY) as simulator:
        yield simulator


def sim_url(sim: Simulator, kind: str) -> str:
    return {
        "anthropic": sim.base_url,
        "openai": sim.openai_base_url,
        "gemini": sim.gemini_base_url,
    }[kind]


@pytest.fixture
async def make(transport: str) -> AsyncIterator[Callable[..., BaseProvider]]:
    """Build providers from config dicts, on each transport in turn (a test using this runs
    twice); every one is closed at the end of the test."""
    built: list[BaseProvider] = []

    def build(kind: str, **config: Any) -> BaseProvider:
        provider = build_provider(kind, {"transport": transport, **config})
        built.append(provider)
        return provider

    yield build
    for provider in built:
        await provider.aclose()


def request(prompt: str | list[dict[str, Any]] = EMAIL_PROMPT, **options: Any) -> ProviderRequest:
    return ProviderRequest(input=prompt, options=options, dimension="analyze_email")


async def failure(provider: BaseProvider, req: ProviderRequest) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await provider.execute(req)
    return caught.value


# -- against the simulator -------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_answer_has_parsed_data_model_and_tokens(
    kind: str, sim: Simulator, make: Any
) -> None:
    provider = make(kind, api_key=KEY, base_url=sim_url(sim, kind))

    response = await provider.execute(request(model=MODELS[kind], temperature=0.1, max_tokens=150))

    assert response.data["category"] == "work"
    assert response.metadata["model"] == MODELS[kind]
    assert response.metadata["provider"] == kind
    assert response.metadata["status_code"] == 200
    tokens = response.metadata["tokens"]
    assert isinstance(tokens, TokenUsage)
    assert tokens.input_tokens > 0 and tokens.output_tokens > 0
    assert tokens.total_tokens == tokens.input_tokens + tokens.output_tokens
    assert response.metadata["finish_reason"] in ("end_turn", "stop", "STOP")


@pytest.mark.parametrize("kind", KINDS)
async def test_rate_limited_call_raises_429_with_retry_after_and_the_next_succeeds(
    kind: str, sim: Simulator, make: Any
) -> None:
    await sim.configure(script=[429, 200], error_429_retry_after=2.5)
    provider = make(kind, api_key=KEY, base_url=sim_url(sim, kind))

    error = await failure(provider, request(model=MODELS[kind]))
    response = await provider.execute(request(model=MODELS[kind]))

    assert error.status_code == 429
    assert error.retry_after == pytest.approx(2.5)
    assert error.retryable
    assert error.message.startswith(f"{kind}: 429 ")
    assert response.data["category"] == "work"
    assert (await sim.stats())["requests"] == 2  # the provider itself never retries


@pytest.mark.parametrize("kind", KINDS)
async def test_server_error_is_retryable(kind: str, sim: Simulator, make: Any) -> None:
    await sim.configure(script=[500])
    provider = make(kind, api_key=KEY, base_url=sim_url(sim, kind))

    error = await failure(provider, request(model=MODELS[kind]))

    assert error.status_code == 500
    assert error.retryable
    assert error.provider == kind


@pytest.mark.parametrize("kind", KINDS)
async def test_bad_key_fails_as_authentication_not_retried_and_never_shown(
    kind: str, sim: Simulator, make: Any
) -> None:
    wrong_key = "sk-wrong-5555555555-SECRET"
    provider = make(kind, api_key=wrong_key, base_url=sim_url(sim, kind))

    error = await failure(provider, request(model=MODELS[kind]))

    assert error.status_code == 401
    assert not error.retryable
    assert "authentication failed" in str(error)
    for text in (str(error), repr(error), repr(provider)):
        assert wrong_key not in text


@pytest.mark.parametrize("fault", ["malformed", "truncated"])
@pytest.mark.parametrize("kind", KINDS)
async def test_broken_body_raises_a_retryable_provider_error(
    kind: str, fault: str, sim: Simulator, make: Any
) -> None:
    await sim.configure(script=[fault])
    provider = make(kind, api_key=KEY, base_url=sim_url(sim, kind))

    error = await failure(provider, request(model=MODELS[kind]))

    assert error.retryable
    assert "malformed response body" in error.message


@pytest.mark.parametrize("kind", KINDS)
async def test_hang_is_cut_at_the_timeout(kind: str, sim: Simulator, make: Any) -> None:
    await sim.configure(script=["hang"])
    provider = make(kind, api_key=KEY, base_url=sim_url(sim, kind), timeout=0.3)

    started = time.perf_counter()
    error = await failure(provider, request(model=MODELS[kind]))

    assert time.perf_counter() - started < 2.0
    assert error.status_code is None
    assert error.retryable
    assert "timeout" in error.message


@pytest.mark.parametrize("kind", KINDS)
async def test_reset_connection_is_a_retryable_connection_error(
    kind: str, sim: Simulator, make: Any
) -> None:
    await sim.configure(script=["reset"])
    provider = make(kind, api_key=KEY, base_url=sim_url(sim, kind))

    error = await failure(provider, request(model=MODELS[kind]))

    assert error.status_code is None
    assert error.retryable
    assert "connection failed" in error.message


@pytest.mark.parametrize("kind", KINDS)
async def test_refused_connection_fails_at_once_without_a_hidden_retry(
    kind: str, make: Any
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{closed_port}" + ("/v1" if kind == "openai" else "")
    provider = make(kind, api_key=KEY, base_url=url, default_model="m")

    started = time.perf_counter()
    error = await failure(provider, request())

    assert time.perf_counter() - started < 1.0  # google-genai alone would sleep 1-10 s, retry
    assert error.status_code is None
    assert error.retryable
    assert "connection failed" in error.message


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
async def test_rate_limit_headers_become_metadata(kind: str, sim: Simulator, make: Any) -> None:
    await sim.configure(requests_per_minute=600, tokens_per_minute=90_000)
    provider = make(kind, api_key=KEY, base_url=sim_url(sim, kind))

    response = await provider.execute(request(model=MODELS[kind], max_tokens=100))

    limits = response.metadata["rate_limit"]
    assert limits["requests_per_minute"] == 600
    assert limits["tokens_per_minute"] == 90_000
    assert 0 <= limits["requests_remaining"] < 600
    assert 0 <= limits["tokens_remaining"] < 90_000
    assert limits["reset_seconds"] is not None and 0 <= limits["reset_seconds"] <= 60


async def test_gemini_sends_no_rate_limit_headers_so_metadata_has_none(
    sim: Simulator, make: Any
) -> None:
    await sim.configure(requests_per_minute=600)
    provider = make("gemini", api_key=KEY, base_url=sim.gemini_base_url)

    response = await provider.execute(request(model=MODELS["gemini"]))

    assert "rate_limit" not in response.metadata


@pytest.mark.parametrize("kind", KINDS)
async def test_key_appears_in_no_log_error_or_repr(
    kind: str,
    sim: Simulator,
    make: Any,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    provider = make(kind, api_key=KEY, base_url=sim_url(sim, kind), timeout=0.5)
    seen = [repr(provider), str(provider), repr(provider.settings)]
    await provider.execute(request(model=MODELS[kind]))
    for step in (401, 429, 500, "malformed", "reset", "hang"):
        await sim.configure(script=[step])
        error = await failure(provider, request(model=MODELS[kind]))
        seen += [str(error), repr(error), str(error.args), str(error.__cause__)]
        logging.getLogger("test").exception("provider failed", exc_info=error)

    captured = capsys.readouterr()
    seen += [caplog.text, captured.out, captured.err]
    assert all(KEY not in text for text in seen)


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_missing_key_raises_at_construction_naming_the_env_var(kind: str) -> None:
    with pytest.raises(MissingAPIKeyError) as caught:
        build_provider(kind, {})

    for var in ENV_VARS[kind]:
        assert var in str(caught.value)


@pytest.mark.parametrize("kind", KINDS)
def test_key_comes_from_the_environment(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VARS[kind][-1], KEY)

    provider = build_provider(kind, {})

    assert provider.settings.api_key == KEY  # type: ignore[attr-defined]


def test_unknown_config_key_is_refused_naming_the_allowed_keys() -> None:
    with pytest.raises(ConfigurationError) as caught:
        build_provider("anthropic", {"api_key": KEY, "api_base": "http://x"})

    message = str(caught.value)
    assert "'api_base'" in message
    assert "base_url" in message and "gateway_config" in message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("timeout", 0),
        ("timeout", "60"),
        ("max_tokens", 1.5),
        ("gateway", "kong"),
        ("gateway_config", ["retry"]),
        ("base_url", 42),
    ],
)
def test_invalid_config_value_is_refused_naming_the_key(key: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=key):
        build_provider("openai", {"api_key": KEY, key: value})


def test_config_type_selects_the_built_in_under_another_name() -> None:
    provider = build_provider("claude", {"type": "anthropic", "api_key": KEY})

    assert provider.name == "claude"
    assert type(provider).__name__ == "AnthropicProvider"


def test_hosted_gateway_without_portkey_key_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="PORTKEY_API_KEY"):
        build_provider("anthropic", {"api_key": KEY, "gateway": "portkey"})


def test_portkey_key_may_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTKEY_API_KEY", PORTKEY_KEY)

    provider = build_provider("anthropic", {"api_key": KEY, "gateway": "portkey"})

    assert provider.handles_retries


def test_local_gateway_needs_no_portkey_key() -> None:
    provider = build_provider(
        "anthropic", {"api_key": KEY, "gateway": "portkey", "gateway_url": "http://127.0.0.1:1/v1"}
    )

    assert provider.handles_retries


def test_direct_providers_leave_retries_to_the_engine() -> None:
    assert not build_provider("openai", {"api_key": KEY}).handles_retries


async def test_missing_model_is_a_clear_non_retryable_error(make: Any) -> None:
    provider = make("anthropic", api_key=KEY)

    error = await failure(provider, request())

    assert not error.retryable
    assert "default_model" in error.message


async def test_client_is_created_on_first_call_and_released_by_aclose(
    sim: Simulator, make: Any
) -> None:
    provider = make("anthropic", api_key=KEY, base_url=sim.base_url, default_model="m")
    assert isinstance(provider, SDKProvider)
    backend = provider.backend
    assert backend.open_client is None

    await provider.execute(request())
    client = backend.open_client
    await provider.execute(request())

    assert client is not None and backend.open_client is client
    await provider.aclose()
    assert backend.open_client is None


# -- wire details, against a recording upstream ----------------------------------------------


@dataclass
class Upstream:
    """Answers the three APIs with `text` and records what it was sent."""

    text: str = '{"ok": true}'
    error: tuple[int, dict[str, Any]] | None = None  # answer every request with this instead
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    async def handle(self, req: web.Request) -> web.Response:
        body = await req.json()
        self.requests.append({"path": req.path, "headers": dict(req.headers), "body": body})
        if self.error is not None:
            return web.json_response(self.error[1], status=self.error[0])
        model = body.get("model") or req.match_info.get("model", "")
        if req.path.endswith("/messages"):
            return web.json_response(
                {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [{"type": "text", "text": self.text}],
                    "stop_reason": "end_turn",
                    "usage": {"input_tokens": 3, "output_tokens": 2},
                }
            )
        if req.path.endswith("/chat/completions"):
            return web.json_response(
                {
                    "id": "c1",
                    "object": "chat.completion",
                    "created": 0,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": self.text},
                        }
                    ],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
                }
            )
        return web.json_response(
            {
                "candidates": [
                    {
                        "content": {"role": "model", "parts": [{"text": self.text}]},
                        "finishReason": "STOP",
                    }
                ],
                "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2},
                "modelVersion": model,
            }
        )

    def base_url(self, kind: str) -> str:
        return f"{self.url}/v1" if kind == "openai" else self.url


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    recorder = Upstream()
    routes = {"/v1/messages": recorder.handle, "/v1/chat/completions": recorder.handle,
              "/{version}/models/{model}:generateContent": recorder.handle}
    async with loopback_server(routes) as port:
        recorder.url = f"http://127.0.0.1:{port}"
        yield recorder


CHAT = [
    {"role": "system", "content": "Answer in JSON."},
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "{}"},
    {"role": "user", "content": "again"},
]


async def test_anthropic_gets_system_field_stop_sequences_and_temperature(
    upstream: Upstream, make: Any
) -> None:
    provider = make("anthropic", api_key=KEY, base_url=upstream.url)

    await provider.execute(request(CHAT, model="claude-x", temperature=0.2, stop="END"))

    body = upstream.requests[0]["body"]
    assert body["system"] == "Answer in JSON."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["max_tokens"] == 1024
    assert body["temperature"] == 0.2
    assert body["stop_sequences"] == ["END"]


async def test_openai_keeps_the_system_message_first(upstream: Upstream, make: Any) -> None:
    provider = make("openai", api_key=KEY, base_url=upstream.base_url("openai"), max_tokens=77)

    await provider.execute(request(CHAT, model="gpt-x", top_p=0.5, seed=7))

    body = upstream.requests[0]["body"]
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert body["max_tokens"] == 77
    assert body["top_p"] == 0.5 and body["seed"] == 7
    assert upstream.requests[0]["headers"]["Authorization"] == f"Bearer {KEY}"


async def test_gemini_gets_system_instruction_and_model_role(upstream: Upstream, make: Any) -> None:
    provider = make("gemini", api_key=KEY, base_url=upstream.url)

    await provider.execute(request(CHAT, model="gemini-x", temperature=0.3, max_tokens=50))

    sent = upstream.requests[0]
    body = sent["body"]
    assert sent["path"].endswith("/models/gemini-x:generateContent")
    assert body["systemInstruction"]["parts"][0]["text"] == "Answer in JSON."
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["generationConfig"]["temperature"] == 0.3
    assert body["generationConfig"]["maxOutputTokens"] == 50


async def test_option_system_is_joined_with_system_messages(upstream: Upstream, make: Any) -> None:
    provider = make("anthropic", api_key=KEY, base_url=upstream.url, default_model="claude-x")

    await provider.execute(request(CHAT, system="You classify email."))

    assert upstream.requests[0]["body"]["system"] == "You classify email.\n\nAnswer in JSON."


@pytest.mark.parametrize(
    ("text", "data"),
    [
        ('```json\n{"category": "work",}\n```', {"category": "work"}),
        ('Sure! Here it is: {"a": [1, 2]} Hope that helps.', {"a": [1, 2]}),
        ("Plain words, no JSON here.", "Plain words, no JSON here."),
        ("A note [see above] in prose.", "A note [see above] in prose."),
    ],
)
@pytest.mark.parametrize("kind", KINDS)
async def test_answer_text_becomes_data(
    kind: str, text: str, data: Any, upstream: Upstream, make: Any
) -> None:
    upstream.text = text
    provider = make(kind, api_key=KEY, base_url=upstream.base_url(kind), default_model="m")

    response = await provider.execute(request())

    assert response.data == data


@pytest.mark.parametrize("kind", KINDS)
async def test_broken_json_answer_is_a_retryable_error(
    kind: str, upstream: Upstream, make: Any
) -> None:
    upstream.text = '{"category": "work", <html><body>upstream hiccup</body></html>'
    provider = make(kind, api_key=KEY, base_url=upstream.base_url(kind), default_model="m")

    error = await failure(provider, request())

    assert error.retryable
    assert "could not parse JSON" in error.message


async def test_json_false_keeps_the_text(upstream: Upstream, make: Any) -> None:
    upstream.text = '{"a": 1}'
    provider = make("openai", api_key=KEY, base_url=upstream.base_url("openai"))

    response = await provider.execute(request(model="gpt-x", json=False))

    assert response.data == '{"a": 1}'


@pytest.mark.parametrize("kind", KINDS)
async def test_key_echoed_by_the_api_is_redacted(kind: str, upstream: Upstream, make: Any) -> None:
    upstream.error = (
        401,
        {
            "error": {
                "message": f"Incorrect API key provided: {KEY}.",
                "type": "invalid_request_error",
                "code": 401,
            }
        },
    )
    provider = make(kind, api_key=KEY, base_url=upstream.base_url(kind), default_model="m")

    error = await failure(provider, request())

    assert "Incorrect API key provided: [redacted]" in error.message
    assert KEY not in repr(error)


@pytest.mark.parametrize(
    ("kind", "portkey_provider", "custom_host"),
    [
        ("anthropic", "anthropic", "{url}/v1"),  # the gateway posts to <host>/messages
        ("openai", "openai", "{url}/v1"),
        ("gemini", "google", "{url}"),
    ],
)
async def test_gateway_mode_sends_portkey_headers(
    kind: str, portkey_provider: str, custom_host: str, upstream: Upstream, make: Any
) -> None:
    config = {"retry": {"attempts": 5, "on_status_codes": [429, 500]}}
    provider = make(
        kind,
        api_key=KEY,
        base_url=upstream.base_url(kind),
        gateway="portkey",
        gateway_url=f"{upstream.url}/v1",
        gateway_api_key=PORTKEY_KEY,
        gateway_config=config,
    )

    response = await provider.execute(request(CHAT, model="m", max_tokens=10))

    sent = upstream.requests[0]
    headers = sent["headers"]
    assert sent["path"] == "/v1/chat/completions"
    assert headers["x-portkey-provider"] == portkey_provider
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert headers["x-portkey-api-key"] == PORTKEY_KEY
    assert json.loads(headers["x-portkey-config"]) == config
    assert headers["x-portkey-custom-host"] == custom_host.format(url=upstream.url)
    assert sent["body"]["messages"][0] == {"role": "system", "content": "Answer in JSON."}
    assert response.data == {"ok": True}


async def test_gateway_config_id_is_sent_as_is_and_missing_retry_gets_a_default(
    upstream: Upstream, make: Any
) -> None:
    by_id = make(
        "openai",
        api_key=KEY,
        gateway="portkey",
        gateway_url=f"{upstream.url}/v1",
        gateway_config="pc-my-config",
    )
    bare = make("openai", api_key=KEY, gateway="portkey", gateway_url=f"{upstream.url}/v1")

    await by_id.execute(request(model="m"))
    await bare.execute(request(model="m"))

    first, second = (r["headers"] for r in upstream.requests)
    assert first["x-portkey-config"] == "pc-my-config"
    assert json.loads(second["x-portkey-config"]) == {"retry": DEFAULT_RETRY}
    assert "x-portkey-custom-host" not in second and "x-portkey-api-key" not in second


# -- header parsing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "1500", "retry-after": "2"}, 1.5),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # a date in the past
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_reads_ms_seconds_and_http_dates(
    headers: dict[str, str], seconds: float | None
) -> None:
    assert retry_after(headers) == seconds


def test_retry_after_http_date_in_the_future_is_seconds_from_now() -> None:
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))

    assert retry_after({"retry-after": when}) == pytest.approx(30, abs=2)


def test_openai_rate_limit_durations_are_parsed() -> None:
    limits = rate_limit(
        {
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "499",
            "x-ratelimit-reset-requests": "6m0s",
            "x-ratelimit-limit-tokens": "30000",
            "x-ratelimit-remaining-tokens": "29000",
            "x-ratelimit-reset-tokens": "20ms",
        }
    )

    assert limits == {
        "requests_per_minute": 500,
        "tokens_per_minute": 30000,
        "requests_remaining": 499,
        "tokens_remaining": 29000,
        "reset_seconds": 360.0,
    }


def test_exhausted_token_window_gives_its_own_reset() -> None:
    limits = rate_limit(
        {
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "10",
            "x-ratelimit-reset-requests": "1s",
            "x-ratelimit-limit-tokens": "30000",
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-tokens": "1m30.5s",
        }
    )

    assert limits is not None and limits["reset_seconds"] == 90.5


def test_anthropic_rate_limit_reset_is_an_rfc3339_time() -> None:
    reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 20))

    limits = rate_limit(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": reset,
        }
    )

    assert limits is not None
    assert limits["requests_per_minute"] == 50 and limits["requests_remaining"] == 0
    assert limits["tokens_per_minute"] is None
    assert limits["reset_seconds"] == pytest.approx(20, abs=2)


def test_no_rate_limit_headers_give_none() -> None:
    assert rate_limit({"content-type": "application/json"}) is None


# -- through the real open-source Portkey gateway --------------------------------------------


def through_gateway(kind: str, sim: Simulator, gateway: LocalGateway, **extra: Any) -> Any:
    return {
        "api_key": KEY,
        "base_url": sim_url(sim, kind),
        "gateway": "portkey",
        "gateway_url": gateway.url,
        **extra,
    }


@pytest.mark.gateway
@pytest.mark.parametrize("kind", KINDS)
async def test_call_through_the_gateway_succeeds(
    kind: str, sim: Simulator, portkey_gateway: LocalGateway, make: Any
) -> None:
    provider = make(kind, **through_gateway(kind, sim, portkey_gateway))

    response = await provider.execute(request(model=MODELS[kind], max_tokens=150))

    assert provider.handles_retries
    assert response.data["category"] == "work"
    assert response.metadata["model"] == MODELS[kind]
    assert response.metadata["tokens"].total_tokens > 0
    assert (await sim.stats())["apis"][kind] == 1


@pytest.mark.gateway
async def test_gateway_retries_two_429s_so_the_call_succeeds(
    sim: Simulator, portkey_gateway: LocalGateway, make: Any
) -> None:
    config = {"retry": {"attempts": 5, "on_status_codes": [429, 500, 502, 503, 504]}}
    provider = make(
        "anthropic", **through_gateway("anthropic", sim, portkey_gateway, gateway_config=config)
    )
    await sim.configure(script=[429, 429, 200])

    response = await provider.execute(request(model=MODELS["anthropic"], max_tokens=150))

    assert response.data["category"] == "work"
    stats = await sim.stats()
    assert stats["requests"] == 3
    assert stats["rate_limited"] == 2


@pytest.mark.gateway
async def test_gateway_passes_upstream_errors_and_rate_limit_headers_back(
    sim: Simulator, portkey_gateway: LocalGateway, make: Any
) -> None:
    provider = make(
        "openai",
        **through_gateway("openai", sim, portkey_gateway,
                          gateway_config={"retry": {"attempts": 0}}),
    )
    await sim.configure(requests_per_minute=600)
    response = await provider.execute(request(model=MODELS["openai"], max_tokens=100))
    await sim.configure(script=[401])

    error = await failure(provider, request(model=MODELS["openai"]))

    assert response.metadata["rate_limit"]["requests_per_minute"] == 600
    assert error.status_code == 401 and not error.retryable
    assert KEY not in str(error)


async def test_provider_works_again_in_a_new_event_loop(make: Any) -> None:
    """engine.run() twice means two event loops, with aclose() at the end of each."""
    provider = make("openai", api_key=KEY, default_model="m")

    async def answer_once() -> Any:
        async with Simulator(api_key=KEY) as simulator:
            provider.backend.base_url = simulator.openai_base_url
            try:
                return (await provider.execute(request())).data
            finally:
                await provider.aclose()

    first = await asyncio.to_thread(asyncio.run, answer_once())
    second = await asyncio.to_thread(asyncio.run, answer_once())

    assert first == second


# -- the SDKs are imported when a provider of their kind is built --------------------------------

SDKS = ("anthropic", "openai", "google.genai")


def imported_sdks(code: str) -> list[str]:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\n"
         f"print(' '.join(m for m in {SDKS!r} if m in sys.modules))"],
        capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.split()


def test_importing_dagengine_its_providers_and_the_demo_imports_no_sdk() -> None:
    assert imported_sdks("import dagengine, dagengine.providers.anthropic, "
                         "dagengine.providers.openai, dagengine.providers.gemini, "
                         "dagengine.providers.portkey, dagengine.cli.demo, dagengine.cli") == []


@pytest.mark.parametrize(("config", "sdks"), [
    ({"type": "anthropic", "transport": "sdk"}, ["anthropic"]),
    ({"type": "openai", "transport": "sdk"}, ["openai"]),
    ({"type": "gemini", "transport": "sdk"}, ["google.genai"]),
    # Through the gateway every provider speaks the OpenAI format.
    ({"type": "anthropic", "gateway": "portkey", "gateway_url": "http://127.0.0.1:1/v1",
      "transport": "sdk"}, ["openai"]),
    # The http transport (the default) needs none.
    ({"type": "anthropic"}, []),
    ({"type": "openai"}, []),
    ({"type": "gemini"}, []),
    ({"type": "anthropic", "gateway": "portkey", "gateway_url": "http://127.0.0.1:1/v1"}, []),
])
def test_building_a_provider_imports_the_one_sdk_it_uses(
    config: dict[str, Any], sdks: list[str]
) -> None:
    code = ("from dagengine.providers import build_provider\n"
            f"build_provider('p', {{**{config!r}, 'api_key': 'k'}})")
    assert imported_sdks(code) == sdks
