"""The open-source Portkey gateway, run locally by dagengine.gateway, in front of a fake upstream.

docs/portkey-gateway.md describes the behaviour these tests pin down.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import socket
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web

from conftest import loopback_server
from dagengine import gateway as gateway_module
from dagengine.errors import DagEngineError
from dagengine.gateway import (
    PIN_LOOPBACK_JS,
    GatewayError,
    LocalGateway,
    ensure_gateway_installed,
    node_available,
)
from dagengine.gateway import _install as install_module

pytestmark = [
    pytest.mark.gateway,
    pytest.mark.skipif(
        not node_available(), reason="node is not on PATH: the Portkey gateway needs Node.js 18+"
    ),
]

RETRY_CONFIG = {"retry": {"attempts": 5, "on_status_codes": [429, 500, 502, 503, 504]}}

ANTHROPIC_MESSAGE = {
    "id": "msg_test",
    "type": "message",
    "role": "assistant",
    "model": "claude-test-1",
    "content": [{"type": "text", "text": "hello from upstream"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 11, "output_tokens": 7},
}
OPENAI_COMPLETION = {
    "id": "chatcmpl-test",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "gpt-test-1",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "hello from upstream"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
}


# -- fixtures --------------------------------------------------------------------------------


# `portkey_gateway` (one gateway for the session) lives in conftest.py.


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeUpstream:
    """Answers Anthropic `/v1/messages` and OpenAI `/v1/chat/completions` on 127.0.0.1.

    `fail_next(n)` makes the next n requests fail (429 + retry-after by default);
    `hang_next()` makes the next request wait until the test ends.
    """

    requests: list[RecordedRequest] = field(default_factory=list)
    port: int = 0
    _failures: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    _hang: bool = False
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def host(self) -> str:
        """What to send as x-portkey-custom-host (the gateway appends /messages etc.)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def fail_next(self, count: int, status: int = 429, retry_after: str = "0") -> None:
        headers = {"retry-after": retry_after, "x-ratelimit-remaining-requests": "0"}
        self._failures.extend([(status, headers)] * count)

    def hang_next(self) -> None:
        self._hang = True

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(
            RecordedRequest(request.path, dict(request.headers), await request.json())
        )
        if self._hang:
            self._hang = False
            await self._release.wait()
        if self._failures:
            status, headers = self._failures.pop(0)
            error = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}
            return web.json_response(error, status=status, headers=headers)
        if request.path == "/v1/messages":
            return web.json_response(ANTHROPIC_MESSAGE)
        if request.path == "/v1/chat/completions":
            return web.json_response(OPENAI_COMPLETION)
        return web.json_response({"error": {"message": f"no route {request.path}"}}, status=404)


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    fake = FakeUpstream()
    routes = {"/v1/messages": fake.handle, "/v1/chat/completions": fake.handle}
    async with loopback_server(routes) as port:
        fake.port = port
        try:
            yield fake
        finally:
            fake._release.set()


def gateway_client(
    gateway: LocalGateway, provider: str, upstream: FakeUpstream, config: object = RETRY_CONFIG
) -> openai.AsyncOpenAI:
    headers = {"x-portkey-provider": provider, "x-portkey-custom-host": upstream.host}
    if config is not None:
        headers["x-portkey-config"] = config if isinstance(config, str) else json.dumps(config)
    # max_retries=0: the gateway is the one that retries.
    return openai.AsyncOpenAI(
        base_url=gateway.url, api_key="sk-provider-key", max_retries=0, default_headers=headers
    )


async def ask(client: openai.AsyncOpenAI, model: str = "claude-test-1") -> Any:
    async with client:
        return await client.chat.completions.with_raw_response.create(
            model=model,
            messages=[
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
            ],
            max_tokens=50,
        )


# -- loopback -------------------------------------------------------------------------------


def listening_addresses(port: int) -> list[str]:
    """Local addresses of every TCP socket in LISTEN state on `port`, from /proc/net."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                local, state = line.split()[1], line.split()[3]
                address, port_hex = local.split(":")
                if state == "0A" and int(port_hex, 16) == port:
                    found.append(decode_proc_address(address))
    return found


def decode_proc_address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # /proc/net/tcp6 prints four host-order 32-bit words.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def outward_address() -> str | None:
    """This machine's address on its default route, if it has one besides loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # UDP connect sends nothing
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def port_is_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")
def test_gateway_listens_only_on_127_0_0_1(portkey_gateway: LocalGateway) -> None:
    assert listening_addresses(portkey_gateway.port) == ["127.0.0.1"]
    assert portkey_gateway.url == f"http://127.0.0.1:{portkey_gateway.port}/v1"


def test_gateway_is_unreachable_on_the_outward_interface(portkey_gateway: LocalGateway) -> None:
    address = outward_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    assert port_is_open("127.0.0.1", portkey_gateway.port)
    assert not port_is_open(address, portkey_gateway.port)


def test_preload_pins_every_listen_call_form_to_loopback(tmp_path: Path) -> None:
    script = tmp_path / "listen_forms.js"
    script.write_text(
        """
const net = require('net');
const forms = [
  s => s.listen(0), s => s.listen(0, '0.0.0.0'), s => s.listen(0, '::'),
  s => s.listen(0, undefined, () => {}), s => s.listen(0, null, 16, () => {}),
  s => s.listen(0, () => {}), s => s.listen(0, 16), s => s.listen('0'),
  s => s.listen({port: 0}), s => s.listen({port: 0, host: '::', ipv6Only: true}),
  s => s.listen(() => {}), s => s.listen(),
];
(async () => {
  const hosts = [];
  for (const listen of forms) {
    const server = net.createServer();
    await new Promise(resolve => { server.once('listening', resolve); listen(server); });
    hosts.push(server.address().address);
    await new Promise(resolve => server.close(resolve));
  }
  console.log(JSON.stringify(hosts));
})();
"""
    )
    port_file = tmp_path / "port"
    done = subprocess.run(
        ["node", "--require", str(PIN_LOOPBACK_JS), str(script)],
        env={**os.environ, "DAGENGINE_GATEWAY_PORT_FILE": str(port_file)},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert json.loads(done.stdout) == ["127.0.0.1"] * 12
    host, port = port_file.read_text().split()
    assert host == "127.0.0.1" and int(port) > 0


# -- routing ----------------------------------------------------------------------------------


async def test_anthropic_provider_posts_messages_with_x_api_key(
    portkey_gateway: LocalGateway, upstream: FakeUpstream
) -> None:
    await ask(gateway_client(portkey_gateway, "anthropic", upstream))

    [request] = upstream.requests
    assert request.path == "/v1/messages"
    assert request.headers["x-api-key"] == "sk-provider-key"
    assert "Authorization" not in request.headers
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.body == {
        "model": "claude-test-1",
        "messages": [{"role": "user", "content": "hi"}],
        "system": [{"type": "text", "text": "be brief"}],
        "max_tokens": 50,
    }


async def test_anthropic_answer_comes_back_in_openai_format_with_usage(
    portkey_gateway: LocalGateway, upstream: FakeUpstream
) -> None:
    raw = await ask(gateway_client(portkey_gateway, "anthropic", upstream))
    completion = raw.parse()

    assert completion.object == "chat.completion"
    assert completion.model == "claude-test-1"
    assert completion.choices[0].message.content == "hello from upstream"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (11, 7)
    assert completion.usage.total_tokens == 18
    assert raw.headers["x-portkey-provider"] == "anthropic"
    assert raw.headers["x-portkey-retry-attempt-count"] == "0"


async def test_openai_provider_posts_chat_completions_with_bearer_key(
    portkey_gateway: LocalGateway, upstream: FakeUpstream
) -> None:
    raw = await ask(gateway_client(portkey_gateway, "openai", upstream), model="gpt-test-1")

    [request] = upstream.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["Authorization"] == "Bearer sk-provider-key"
    assert request.body["messages"][0] == {"role": "system", "content": "be brief"}
    assert raw.parse().usage.total_tokens == 18


async def test_string_config_id_is_rejected_by_the_local_gateway(
    portkey_gateway: LocalGateway, upstream: FakeUpstream
) -> None:
    client = gateway_client(portkey_gateway, "openai", upstream, config="pc-my-config")
    with pytest.raises(openai.BadRequestError) as caught:
        await ask(client)

    assert caught.value.body == {
        "status": "failure",
        "message": "Invalid config passed. You need to pass a valid json",
    }
    assert upstream.requests == []


ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"category": {"type": "string", "enum": ["spam", "work"]}},
    "required": ["category"],
    "additionalProperties": False,
}


async def test_response_format_json_schema_reaches_openai_unchanged(
    portkey_gateway: LocalGateway, upstream: FakeUpstream
) -> None:
    response_format = {"type": "json_schema", "json_schema": {
        "name": "Answer", "schema": ANSWER_SCHEMA, "strict": True}}
    async with gateway_client(portkey_gateway, "openai", upstream) as client:
        await client.chat.completions.create(
            model="gpt-test-1", messages=[{"role": "user", "content": "hi"}],
            response_format=response_format)  # type: ignore[arg-type]

    [request] = upstream.requests
    assert request.body["response_format"] == response_format


async def test_anthropic_gets_a_forced_function_as_a_forced_tool_but_no_response_format(
    portkey_gateway: LocalGateway, upstream: FakeUpstream
) -> None:
    """Why structured output goes to Anthropic through the gateway as a tool (see portkey.py)."""
    async with gateway_client(portkey_gateway, "anthropic", upstream) as client:
        await client.chat.completions.create(
            model="claude-test-1", messages=[{"role": "user", "content": "hi"}], max_tokens=50,
            tools=[{"type": "function", "function": {
                "name": "Answer", "description": "the answer", "parameters": ANSWER_SCHEMA}}],
            tool_choice={"type": "function", "function": {"name": "Answer"}},
            response_format={"type": "json_schema", "json_schema": {
                "name": "Answer", "schema": ANSWER_SCHEMA}})

    [request] = upstream.requests
    [tool] = request.body["tools"]
    assert tool["name"] == "Answer"
    assert tool["input_schema"]["properties"] == ANSWER_SCHEMA["properties"]
    assert request.body["tool_choice"] == {"type": "tool", "name": "Answer"}
    assert "response_format" not in request.body


# -- retries and failures -----------------------------------------------------------------


async def test_two_429s_then_200_succeeds_after_three_upstream_requests(
    portkey_gateway: LocalGateway, upstream: FakeUpstream
) -> None:
    upstream.fail_next(2, retry_after="0")

    raw = await ask(gateway_client(portkey_gateway, "anthropic", upstream))

    assert raw.http_response.status_code == 200
    assert len(upstream.requests) == 3
    assert raw.headers["x-portkey-retry-attempt-count"] == "2"


async def test_exhausted_retries_return_the_last_429_with_its_retry_after(
    portkey_gateway: LocalGateway, upstream: FakeUpstream
) -> None:
    upstream.fail_next(2, retry_after="7")
    client = gateway_client(portkey_gateway, "anthropic", upstream, {"retry": {"attempts": 1}})

    with pytest.raises(openai.RateLimitError) as caught:
        await ask(client)

    assert len(upstream.requests) == 2  # attempts counts retries: 1 + 1
    headers = caught.value.response.headers
    assert headers["retry-after"] == "7"
    assert headers["x-portkey-retry-attempt-count"] == "-1"
    assert caught.value.body == {
        "message": "anthropic error: slow",
        "type": "rate_limit_error",
        "param": None,
        "code": None,
    }


async def test_request_timeout_answers_408_timeout_error(
    portkey_gateway: LocalGateway, upstream: FakeUpstream
) -> None:
    upstream.hang_next()
    client = gateway_client(portkey_gateway, "openai", upstream, {"request_timeout": 200})

    with pytest.raises(openai.APIStatusError) as caught:
        await ask(client)

    assert caught.value.status_code == 408
    assert caught.value.body == {
        "message": "Request exceeded the timeout sent in the request: 200ms",
        "type": "timeout_error",
        "param": None,
        "code": None,
    }


async def test_refused_upstream_connection_answers_500(
    portkey_gateway: LocalGateway, upstream: FakeUpstream
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        upstream.port = sock.getsockname()[1]  # closed as soon as the block ends
    client = gateway_client(portkey_gateway, "openai", upstream, config=None)

    with pytest.raises(openai.InternalServerError) as caught:
        await ask(client)

    assert "ECONNREFUSED" in str(caught.value.body)


# -- lifecycle ------------------------------------------------------------------------------


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_gateway_is_stopped_after_its_context() -> None:
    async with LocalGateway() as gateway:
        pid, port = gateway.pid, gateway.port
        assert pid is not None and process_exists(pid)
        assert port_is_open("127.0.0.1", port)

    assert not process_exists(pid)
    assert not port_is_open("127.0.0.1", port)
    assert gateway.pid is None
    with pytest.raises(GatewayError):
        _ = gateway.url


def test_sync_start_and_stop_run_the_gateway_without_an_event_loop() -> None:
    gateway = LocalGateway().start()
    try:
        assert port_is_open("127.0.0.1", gateway.port)
    finally:
        gateway.stop()
    gateway.stop()  # idempotent


def test_start_on_a_busy_port_raises_gateway_error_with_the_gateway_output() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        gateway = LocalGateway(port=busy.getsockname()[1])
        with pytest.raises(GatewayError, match="EADDRINUSE"):
            gateway.start()
    assert gateway.pid is None


# -- installation ---------------------------------------------------------------------------


def test_install_is_reused_once_present(
    portkey_gateway: LocalGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_npm(npm: str, cache_dir: Path) -> None:
        raise AssertionError("npm install ran although the gateway is installed")

    monkeypatch.setattr(install_module, "_npm_install", no_npm)
    package_dir = ensure_gateway_installed()
    assert (package_dir / "build" / "start-server.js").is_file()


def test_concurrent_installs_into_one_cache_run_npm_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    npm_runs: list[Path] = []
    real_install = install_module._npm_install

    def counting_install(npm: str, cache_dir: Path) -> None:
        npm_runs.append(cache_dir)
        real_install(npm, cache_dir)

    monkeypatch.setattr(install_module, "_npm_install", counting_install)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        paths = list(pool.map(ensure_gateway_installed, [tmp_path, tmp_path]))

    assert paths[0] == paths[1] == tmp_path / "node_modules" / "@portkey-ai" / "gateway"
    assert npm_runs == [tmp_path]


def test_missing_npm_raises_gateway_error_saying_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(GatewayError, match=r"needs Node\.js 18\+ and npm on PATH") as caught:
        ensure_gateway_installed(tmp_path / "cache")
    assert isinstance(caught.value, DagEngineError)


def test_default_cache_dir_follows_dagengine_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGENGINE_CACHE_DIR", str(tmp_path))
    assert gateway_module.default_cache_dir() == tmp_path / "portkey-gateway"
    monkeypatch.delenv("DAGENGINE_CACHE_DIR")
    expected = Path.home() / ".cache" / "dagengine" / "portkey-gateway"
    assert gateway_module.default_cache_dir() == expected
