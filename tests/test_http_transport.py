"""The http transport (the default): each API's documented wire format over one aiohttp
session.

Requests go to dagengine.simulator (or, where a test needs an answer the simulator does not
give, a small loopback server) as a real server; GET /requests shows what went on the wire.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import BaseModel

from conftest import SimplePlugin, loopback_server
from dagengine import DagEngine
from dagengine._structured import request_schema
from dagengine.errors import ConfigurationError, ProviderError
from dagengine.providers import BaseProvider, build_provider
from dagengine.providers._sdk import SDKProvider
from dagengine.providers._transport import HTTPBackend, _environment_proxy
from dagengine.providers.anthropic import AnthropicHTTPBackend
from dagengine.providers.gemini import CONFIG_FIELDS, GeminiHTTPBackend
from dagengine.providers.openai import OpenAIChatBackend, OpenAIHTTPBackend
from dagengine.simulator import Simulator, SimulatorProcess
from dagengine.types import ProviderRequest

KEY = "sk-direct-0123456789-SECRET-key"
KINDS = ("anthropic", "openai", "gemini")
MODELS = {"anthropic": "claude-x", "openai": "gpt-x", "gemini": "gemini-x"}
CHAT = [
    {"role": "system", "content": "Answer in JSON."},
    {"role": "user", "content": "Categorize: team meeting at 10 about the budget."},
    {"role": "assistant", "content": "{}"},
    {"role": "user", "content": "again"},
]


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("ANTHROPIC_BASE_URL", "OPENAI_BASE_URL", "GOOGLE_GEMINI_BASE_URL",
                "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(var, raising=False)


def url_for(kind: str, base: str) -> str:
    return f"{base}/v1" if kind == "openai" else base


def provider_for(kind: str, base: str, **config: Any) -> BaseProvider:
    return build_provider(kind, {"api_key": KEY, "base_url": url_for(kind, base), **config})


def request(prompt: Any = CHAT, schema: dict[str, Any] | None = None,
            **options: Any) -> ProviderRequest:
    return ProviderRequest(input=prompt, options=options, dimension="d", output_schema=schema)


def backend(provider: BaseProvider) -> Any:
    assert isinstance(provider, SDKProvider)
    return provider.backend


# -- what goes on the wire --------------------------------------------------------------------


EXPECTED = {
    "anthropic": ("/v1/messages", {
        "model": "claude-x", "max_tokens": 50, "temperature": 0.2, "system": "Answer in JSON.",
        "messages": CHAT[1:]}),
    "openai": ("/v1/chat/completions", {
        "model": "gpt-x", "max_tokens": 50, "temperature": 0.2, "messages": CHAT}),
    "gemini": ("/v1beta/models/gemini-x:generateContent", {
        "contents": [{"role": "user", "parts": [{"text": CHAT[1]["content"]}]},
                     {"role": "model", "parts": [{"text": "{}"}]},
                     {"role": "user", "parts": [{"text": "again"}]}],
        "systemInstruction": {"role": "user", "parts": [{"text": "Answer in JSON."}]},
        "generationConfig": {"temperature": 0.2, "maxOutputTokens": 50}}),
}
KEY_HEADERS = {"anthropic": ("x-api-key", "[redacted]"),
               "openai": ("authorization", "Bearer [redacted]"),
               "gemini": ("x-goog-api-key", "[redacted]")}


@pytest.mark.parametrize("kind", KINDS)
async def test_each_api_gets_its_documented_path_headers_and_body(kind: str) -> None:
    async with Simulator(api_key=KEY) as sim:  # which refuses any other key with a 401
        provider = provider_for(kind, sim.base_url)
        response = await provider.execute(request(model=MODELS[kind], temperature=0.2,
                                                  max_tokens=50))
        await provider.aclose()
        [sent] = await sim.recent_requests()

    path, body = EXPECTED[kind]
    assert response.metadata["status_code"] == 200
    assert response.metadata["model"] == MODELS[kind]
    assert sent["path"] == path
    assert sent["body"] == body
    headers = sent["headers"]
    name, shown = KEY_HEADERS[kind]
    assert headers[name] == shown  # the key went there, and only there
    others = {"x-api-key", "authorization", "x-goog-api-key"} - {name}
    assert not others & headers.keys()
    assert headers["content-type"] == "application/json"
    if kind == "anthropic":
        assert headers["anthropic-version"] == "2023-06-01"


class Email(BaseModel):
    category: str
    confidence: float


@pytest.mark.parametrize("case", ["options", "schema"])
@pytest.mark.parametrize("kind", KINDS)
async def test_the_http_body_is_the_body_the_sdk_sends(kind: str, case: str) -> None:
    if case == "options":
        req = request(model=MODELS[kind], temperature=0.2, top_p=0.9, stop="END", max_tokens=40)
    else:
        req = request(model=MODELS[kind], schema=request_schema(Email), system="Be brief.")
    bodies = []
    async with Simulator(api_key=KEY) as sim:
        for transport in ("http", "sdk"):
            provider = provider_for(kind, sim.base_url, transport=transport)
            await sim.reset()
            await provider.execute(req)
            await provider.aclose()
            [sent] = await sim.recent_requests()
            bodies.append(sent["body"])
    direct, sdk = bodies
    assert direct == sdk


async def test_sdk_request_options_keep_their_meaning() -> None:
    """extra_body, extra_headers and timeout are the SDKs' create() arguments; options written
    for the SDK transport do the same on the http one."""
    async with Simulator(api_key=KEY) as sim:
        provider = provider_for("anthropic", sim.base_url, default_model="claude-x")
        await provider.execute(request(extra_body={"metadata": {"user_id": "u-1"}},
                                       extra_headers={"x-trace-id": "t-1"}))
        [sent] = await sim.recent_requests()
        await sim.configure(script=["hang"])
        with pytest.raises(ProviderError) as caught:
            await provider.execute(request(timeout=0.2))
        await provider.aclose()

    assert sent["body"]["metadata"] == {"user_id": "u-1"}
    assert "extra_body" not in sent["body"] and "timeout" not in sent["body"]
    assert sent["headers"]["x-trace-id"] == "t-1"
    assert caught.value.status_code is None and "within 0.2s (timeout)" in caught.value.message


# -- errors -----------------------------------------------------------------------------------


@pytest.fixture
async def answering() -> AsyncIterator[tuple[list[web.StreamResponse], str]]:
    """A loopback server answering each API with the next queued response."""
    queue: list[web.StreamResponse] = []

    async def handle(_: web.Request) -> web.StreamResponse:
        return queue.pop(0)

    routes = {"/v1/messages": handle, "/v1/chat/completions": handle,
              "/{version}/models/{model}:generateContent": handle}
    async with loopback_server(routes) as port:
        yield queue, f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("headers", [{"retry-after": "7"}, {"retry-after-ms": "1500"}])
@pytest.mark.parametrize("kind", KINDS)
async def test_a_429_says_how_long_to_wait_from_either_header(
        kind: str, headers: dict[str, str], transport: str,
        answering: tuple[list[web.StreamResponse], str]) -> None:
    queue, base = answering
    queue.append(web.json_response({"error": {"message": "slow down", "type": "rate_limit"}},
                                   status=429, headers=headers))
    provider = provider_for(kind, base, transport=transport, default_model="m")

    with pytest.raises(ProviderError) as caught:
        await provider.execute(request())
    await provider.aclose()

    error = caught.value
    assert error.status_code == 429 and error.retryable
    assert error.retry_after == (7.0 if "retry-after" in headers else 1.5)
    assert error.message == f"{kind}: 429 rate_limit: slow down"


async def test_a_gemini_429_without_headers_waits_as_its_retry_info_says(
        transport: str, answering: tuple[list[web.StreamResponse], str]) -> None:
    queue, base = answering
    queue.append(web.json_response({"error": {
        "code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED",
        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                     "retryDelay": "30s"}]}}, status=429))
    provider = provider_for("gemini", base, transport=transport, default_model="m")

    with pytest.raises(ProviderError) as caught:
        await provider.execute(request())
    await provider.aclose()

    assert caught.value.retry_after == 30.0
    assert caught.value.message == "gemini: 429 RESOURCE_EXHAUSTED: quota"


@pytest.mark.parametrize(("status", "retryable"), [(400, False), (404, False), (503, True)])
@pytest.mark.parametrize("kind", KINDS)
async def test_status_errors_keep_their_code_and_say_whether_to_retry(
        kind: str, status: int, retryable: bool, transport: str) -> None:
    async with Simulator(api_key=KEY, script=[status]) as sim:
        provider = provider_for(kind, sim.base_url, transport=transport,
                                default_model=MODELS[kind])
        with pytest.raises(ProviderError) as caught:
            await provider.execute(request())
        await provider.aclose()

    assert caught.value.status_code == status
    assert caught.value.retryable is retryable
    assert caught.value.message.startswith(f"{kind}: {status} ")


async def test_an_answer_that_is_not_json_is_malformed_and_a_non_json_error_keeps_its_text(
        answering: tuple[list[web.StreamResponse], str]) -> None:
    queue, base = answering
    queue.append(web.Response(text="<html>upstream hiccup</html>", status=200))
    queue.append(web.Response(text="<html>Bad gateway</html>", status=502))
    provider = provider_for("openai", base, default_model="m")

    errors = []
    for _ in range(2):
        with pytest.raises(ProviderError) as caught:
            await provider.execute(request())
        errors.append(caught.value)
    await provider.aclose()

    assert errors[0].status_code == 200 and errors[0].retryable
    assert "malformed response body" in errors[0].message
    assert errors[1].status_code == 502 and errors[1].retryable
    assert errors[1].message == "openai: 502: <html>Bad gateway</html>"


@pytest.mark.parametrize("kind", KINDS)
async def test_no_key_reaches_an_error_a_repr_or_the_simulators_log(kind: str) -> None:
    async with Simulator(api_key=KEY) as sim:
        provider = provider_for(kind, sim.base_url, default_model=MODELS[kind], timeout=0.3)
        seen = [repr(provider), repr(backend(provider)), repr(backend(provider).settings)]
        for step in (401, 429, 500, "reset", "hang", "malformed"):
            await sim.configure(script=[step])
            with pytest.raises(ProviderError) as caught:
                await provider.execute(request())
            seen += [str(caught.value), repr(caught.value), repr(caught.value.__context__)]
        seen.append(repr(backend(provider).client()))
        await provider.aclose()
        seen.append(json.dumps(await sim.recent_requests()))
    assert all(KEY not in text for text in seen)


# -- one session per engine and loop ----------------------------------------------------------


@pytest.fixture
async def counting() -> AsyncIterator[tuple[list[Any], str]]:
    """An Anthropic-format loopback server recording the client port of every request."""
    peers: list[Any] = []

    async def handle(req: web.Request) -> web.Response:
        peers.append(req.transport.get_extra_info("peername") if req.transport else None)
        return web.json_response({
            "id": "m", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [{"type": "text", "text": '{"ok": true}'}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 3, "output_tokens": 2}})

    async with loopback_server({"/v1/messages": handle}) as port:
        yield peers, f"http://127.0.0.1:{port}"


def http_engine(base: str) -> DagEngine:
    plugin = SimplePlugin(["a"], provider="anthropic", options={"model": "claude-x"})
    return DagEngine(plugin, providers={"anthropic": {"api_key": KEY, "base_url": base}},
                     execution={"concurrency": 1}, store=False)


async def test_two_runs_on_one_loop_share_one_session_and_connection_until_close(
        counting: tuple[list[Any], str]) -> None:
    peers, base = counting
    engine = http_engine(base)
    first = await engine.process(["x", "y"])
    session = backend(engine.registry.get("anthropic")).open_client
    second = await engine.process(["z", "w"])

    assert all(s.results["a"].ok for s in first.sections + second.sections)
    assert len(peers) == 4 and len(set(peers)) == 1  # one TCP connection for both runs
    assert backend(engine.registry.get("anthropic")).open_client is session
    assert not session.closed
    await engine.close()
    assert session.closed
    assert backend(engine.registry.get("anthropic")).open_client is None


async def test_async_with_closes_the_engines_sessions(counting: tuple[list[Any], str]) -> None:
    _, base = counting
    async with http_engine(base) as engine:
        await engine.process(["x"])
        session = backend(engine.registry.get("anthropic")).open_client
    assert session.closed


async def test_a_session_left_open_closes_when_its_event_loop_ends(
        counting: tuple[list[Any], str]) -> None:
    peers, base = counting
    engine = http_engine(base)

    async def unclosed_run() -> Any:
        await engine.process(["x"])
        return backend(engine.registry.get("anthropic")).open_client

    # asyncio.run in a thread: a loop of its own that ends, with the engine left open.
    session = await asyncio.to_thread(asyncio.run, unclosed_run())
    assert session.closed
    await engine.process(["y"])  # this loop gets a session of its own
    assert backend(engine.registry.get("anthropic")).open_client is not session
    await engine.close()
    assert len(peers) == 2


CHILD = textwrap.dedent("""
    import asyncio, gc, sys
    from dagengine import DagEngine, Plugin

    class One(Plugin):
        def __init__(self):
            super().__init__("one")
            self.dimensions = ["a"]
        def create_prompt(self, ctx):
            return "Categorize: team meeting at 10 about the budget."
        def select_provider(self, dimension, *args):
            return {"provider": sys.argv[2], "options": {"model": "m"}}

    base = sys.argv[1] + ("/v1" if sys.argv[2] == "openai" else "")
    engine = DagEngine(One(), providers={sys.argv[2]: {"api_key": "k", "base_url": base,
                                                      "transport": sys.argv[3]}}, store=False)
    assert engine.run(["x"]).sections[0].results["a"].ok
    assert engine.run(["y"]).sections[0].results["a"].ok  # a new loop: a new session

    async def left_open():
        assert (await engine.process(["z"])).sections[0].results["a"].ok
    asyncio.run(left_open())
    KEPT = engine  # still referenced at interpreter exit, never closed
    gc.collect()
    print("modules:", sorted({m.split(".")[0] for m in sys.modules} & {"anthropic", "openai"}),
          "google.genai" in sys.modules)
""")


@pytest.mark.parametrize("kind", KINDS)
async def test_no_unclosed_session_warnings_and_no_sdk_import_on_the_http_transport(
        kind: str, transport: str, tmp_path: Path) -> None:
    """engine.run() twice (two loops), then process() in a third loop and no close() at all:
    with ResourceWarnings shown (-X dev), nothing is reported unclosed."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    async with SimulatorProcess() as sim:
        done = await asyncio.to_thread(run_child, script, sim.base_url, kind, transport)
    assert done.returncode == 0, done.stderr
    assert "nclosed" not in done.stderr, done.stderr
    assert "ResourceWarning" not in done.stderr, done.stderr
    if transport == "http":
        assert "modules: [] False" in done.stdout  # no SDK imported at all


def run_child(script: Path, base: str, kind: str,
              transport: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-X", "dev", "-W", "always::ResourceWarning", str(script), base, kind,
         transport], capture_output=True, text=True, env=env, timeout=120)


# -- SSL --------------------------------------------------------------------------------------


async def empty_answer(_: web.Request) -> web.Response:
    return web.json_response({})


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not on PATH")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


async def test_sessions_make_no_ssl_context_and_https_verifies_the_certificate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        counting: tuple[list[Any], str]) -> None:
    _, plain_base = counting
    cert, key = self_signed_certificate(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    app = web.Application()
    app.router.add_post("/v1/messages", empty_answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context).start()
    tls_base = f"https://127.0.0.1:{runner.addresses[0][1]}"
    made: list[Any] = []
    real = ssl.create_default_context
    monkeypatch.setattr(ssl, "create_default_context",
                        lambda *a, **k: made.append(a) or real(*a, **k))
    try:
        for base in (plain_base, plain_base, tls_base, tls_base):
            engine = http_engine(base)
            result = await engine.process(["x"])
            await engine.close()
            outcome = result.sections[0].results["a"]
            if base == tls_base:  # a self-signed certificate: verification refuses it
                assert not outcome.ok and "CERTIFICATE_VERIFY_FAILED" in (outcome.error or "")
            else:
                assert outcome.ok
    finally:
        await runner.cleanup()
    assert made == []  # https uses the process's default context, made once at import


# -- the transport switch ---------------------------------------------------------------------


def test_the_http_transport_is_the_default_and_sdk_picks_the_official_sdks() -> None:
    kinds = {"anthropic": AnthropicHTTPBackend, "openai": OpenAIHTTPBackend,
             "gemini": GeminiHTTPBackend}
    for kind, direct in kinds.items():
        assert type(backend(build_provider(kind, {"api_key": KEY}))) is direct
        sdk = backend(build_provider(kind, {"api_key": KEY, "transport": "sdk"}))
        assert not isinstance(sdk, HTTPBackend)
    gateway = {"api_key": KEY, "gateway": "portkey", "gateway_url": "http://127.0.0.1:1/v1"}
    assert type(backend(build_provider("anthropic", gateway))) is OpenAIHTTPBackend
    assert type(backend(build_provider("anthropic", {**gateway, "transport": "sdk"}))) \
        is OpenAIChatBackend


def test_an_unknown_transport_is_refused_naming_the_choices() -> None:
    with pytest.raises(ConfigurationError, match=r"transport must be one of 'http', 'sdk'"):
        build_provider("openai", {"api_key": KEY, "transport": "httpx"})


# -- Gemini's options -------------------------------------------------------------------------


def test_gemini_takes_the_options_generate_content_config_has() -> None:
    from google.genai import types as genai_types

    assert set(genai_types.GenerateContentConfig.model_fields) == CONFIG_FIELDS


async def test_gemini_options_go_where_the_api_reads_them() -> None:
    safety = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]
    async with Simulator(api_key=KEY) as sim:
        provider = provider_for("gemini", sim.base_url, default_model="gemini-x")
        await provider.execute(request(topK=3, safety_settings=safety, seed=5,
                                       thinking_config={"thinking_budget": 0}))
        with pytest.raises(ProviderError) as caught:
            await provider.execute(request(temprature=0.1))
        await provider.aclose()
        sent = await sim.recent_requests()

    assert len(sent) == 1  # the misspelt option never left
    body = sent[0]["body"]
    assert body["safetySettings"] == safety
    assert body["generationConfig"] == {"topK": 3, "seed": 5,
                                        "thinkingConfig": {"thinking_budget": 0}}
    assert not caught.value.retryable and "'temprature'" in caught.value.message


async def test_gemini_thoughts_are_not_the_answer_but_their_tokens_are_output(
        answering: tuple[list[web.StreamResponse], str]) -> None:
    queue, base = answering
    queue.append(web.json_response({
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "Let me think about it.", "thought": True}, {"text": '{"ok": true}'}]},
            "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 4,
                          "thoughtsTokenCount": 6, "cachedContentTokenCount": 2},
        "modelVersion": "gemini-x-001"}))
    provider = provider_for("gemini", base, default_model="gemini-x")

    response = await provider.execute(request())
    await provider.aclose()

    tokens = response.metadata["tokens"]
    assert response.data == {"ok": True}
    assert response.metadata["model"] == "gemini-x-001"
    assert response.metadata["finish_reason"] == "STOP"
    assert (tokens.input_tokens, tokens.output_tokens, tokens.cache_read_tokens) == (10, 10, 2)


# -- proxies ----------------------------------------------------------------------------------


async def test_requests_go_through_the_environments_proxy(
        monkeypatch: pytest.MonkeyPatch, counting: tuple[list[Any], str]) -> None:
    peers, proxy = counting  # the "proxy" answers itself, as if it were the API
    for name in ("HTTP_PROXY", "http_proxy"):  # urllib prefers the lowercase one
        monkeypatch.setenv(name, proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    provider = provider_for("anthropic", "http://api.example.invalid", default_model="claude-x")

    response = await provider.execute(request())
    await provider.aclose()

    assert response.data == {"ok": True} and len(peers) == 1


def test_no_proxy_exempts_a_host(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "api.openai.com")
    assert _environment_proxy("https://api.openai.com/v1") is None
    assert _environment_proxy("https://api.anthropic.com") == "http://proxy.internal:3128"
    assert _environment_proxy("http://127.0.0.1:8080") is None  # no HTTP_PROXY
