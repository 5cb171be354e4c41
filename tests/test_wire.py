"""The http transport's own HTTP/1.1 client (providers/_wire.py), against raw servers on
127.0.0.1 that answer byte for byte what each test needs: how answers are framed (length,
chunked, to the end of the stream), which connections are reused, and what a broken
answer becomes (a connection error the engine retries, never a silent success).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dagengine.errors import ProviderError
from dagengine.providers import BaseProvider, _wire, build_provider
from dagengine.providers._wire import WireError, WireSession
from dagengine.types import ProviderRequest, ProviderResponse

KEY = "sk-wire-0123456789-SECRET-key"
ANSWER = json.dumps({
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
    "content": [{"type": "text", "text": '{"ok": true}'}], "stop_reason": "end_turn",
    "usage": {"input_tokens": 3, "output_tokens": 2}}).encode()

Reply = Callable[[bytes], bytes | None]  # the request's bytes -> what to write (None: close)
Serve = Callable[..., Awaitable["RawServer"]]


@dataclass
class RawServer:
    """A loopback server: each connection reads one request at a time and writes `reply`'s
    bytes; it counts connections and keeps every request it read."""

    reply: Reply
    close_after: bool = False  # close each connection after its first answer
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    base: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                raw = head + await reader.readexactly(length)
                self.requests.append(raw)
                answer = self.reply(raw)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if self.close_after or b"connection: close" in answer.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []

    async def start(reply: Reply, close_after: bool = False) -> RawServer:
        raw = RawServer(reply, close_after)
        server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
        servers.append(server)
        raw.base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        return raw

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def http(body: bytes = ANSWER, status: str = "200 OK", *headers: str, length: bool = True) -> bytes:
    lines = [f"HTTP/1.1 {status}", "Content-Type: application/json", *headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(body: bytes, size: int = 7) -> bytes:
    parts = [b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
             for i in range(0, len(body), size)]
    head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head.encode() + b"".join(parts) + b"0\r\n\r\n"


async def session_post(base: str, n: int = 1, **headers: str) -> list[_wire.WireResponse]:
    session = WireSession(base, {"x-api-key": KEY})
    try:
        return [await session.post("/v1/messages", b'{"a": 1}', headers or None)
                for _ in range(n)]
    finally:
        await session.close()


def provider(base: str) -> BaseProvider:
    return build_provider("anthropic", {"api_key": KEY, "base_url": base,
                                        "default_model": "claude-x"})


async def execute(base: str) -> ProviderResponse:
    chosen = provider(base)
    try:
        return await chosen.execute(ProviderRequest(input="hi", options={}, dimension="d"))
    finally:
        await chosen.aclose()


# -- framing ----------------------------------------------------------------------------------


async def test_a_session_reuses_one_connection_for_answers_that_allow_it(serve: Serve) -> None:
    server = await serve(lambda raw: http())
    answers = await session_post(server.base, 5)
    assert [a.status for a in answers] == [200] * 5 and answers[0].body == ANSWER
    assert server.connections == 1 and len(server.requests) == 5
    first = server.requests[0].decode()
    assert first.startswith("POST /v1/messages HTTP/1.1\r\n")
    assert f"Host: {server.base.removeprefix('http://')}\r\n" in first
    assert "Content-Length: 8\r\n" in first and first.endswith('\r\n\r\n{"a": 1}')


async def test_connection_close_and_http_1_0_answers_are_not_reused(serve: Serve) -> None:
    server = await serve(lambda raw: http(ANSWER, "200 OK", "Connection: close"))
    await session_post(server.base, 3)
    assert server.connections == 3


async def test_chunked_and_gzip_answers_are_decoded(serve: Serve) -> None:
    packed = gzip.compress(ANSWER)
    answers = iter([chunked(ANSWER), http(packed, "200 OK", "Content-Encoding: gzip")])
    server = await serve(lambda raw: next(answers))
    got = await session_post(server.base, 2)
    assert [a.body for a in got] == [ANSWER, ANSWER] and server.connections == 1
    assert got[1].headers["content-encoding"] == "gzip"  # headers read case-insensitively


async def test_an_answer_without_length_ends_with_the_stream(serve: Serve) -> None:
    server = await serve(lambda raw: http(ANSWER, "200 OK", "Connection: close", length=False))
    [answer] = await session_post(server.base)
    assert answer.body == ANSWER


async def test_an_interim_answer_is_skipped(serve: Serve) -> None:
    server = await serve(lambda raw: b"HTTP/1.1 100 Continue\r\n\r\n" + http())
    [answer] = await session_post(server.base)
    assert answer.status == 200 and answer.body == ANSWER


async def test_an_idle_connection_past_keepalive_is_not_reused(
        serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    server = await serve(lambda raw: http())
    monkeypatch.setattr(_wire, "KEEPALIVE", 0.0)
    await session_post(server.base, 2)
    assert server.connections == 2


# -- broken answers ---------------------------------------------------------------------------


@pytest.mark.parametrize("answer", [
    http()[:-5],  # closed before the whole body
    b"HTTP/1.1 200 OK\r\nContent-Le",  # ... before the headers end
    b"SSH-2.0-OpenSSH_9.6\r\n",  # not HTTP
    http(b"\x00garbage", "200 OK", "Content-Encoding: gzip"),  # says gzip, is not
    http(ANSWER, "200 OK", "Content-Encoding: br"),  # an encoding never asked for
], ids=["short-body", "short-head", "not-http", "bad-gzip", "unasked-encoding"])
async def test_a_broken_answer_is_a_retryable_connection_error(serve: Serve, answer: bytes) -> None:
    server = await serve(lambda raw: answer, close_after=True)
    with pytest.raises(WireError):
        await session_post(server.base)
    with pytest.raises(ProviderError) as caught:
        await execute(server.base)
    error = caught.value
    assert error.status_code is None and error.retryable and "connection failed" in error.message
    assert KEY not in str(error)


async def test_a_refused_connection_is_a_connection_error() -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()  # the port is free again: nothing listens on it
    await listener.wait_closed()
    with pytest.raises(ProviderError) as caught:
        await execute(f"http://127.0.0.1:{port}")
    assert caught.value.status_code is None and caught.value.retryable
    assert "connection failed" in caught.value.message


async def test_status_errors_keep_their_code_and_retry_after(serve: Serve) -> None:
    body = json.dumps({"type": "error", "error": {"type": "rate_limit_error",
                                                  "message": "slow down"}}).encode()
    server = await serve(lambda raw: http(body, "429 Too Many Requests", "Retry-After: 7"))
    with pytest.raises(ProviderError) as caught:
        await execute(server.base)
    assert caught.value.status_code == 429 and caught.value.retry_after == 7.0
    assert server.connections == 1


async def test_a_cancelled_request_closes_its_connection(serve: Serve) -> None:
    arrived = asyncio.Event()

    def reply(raw: bytes) -> bytes | None:
        if len(server.requests) == 1:
            arrived.set()
            return b""  # never answer the first request
        return http()

    server = await serve(reply)
    session = WireSession(server.base, {})
    first = asyncio.ensure_future(session.post("/v1/messages", b"{}"))
    await arrived.wait()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    answer = await session.post("/v1/messages", b"{}")
    await session.close()
    assert answer.status == 200 and server.connections == 2  # the silent one was not reused


async def test_a_header_with_a_line_break_is_refused_before_sending(serve: Serve) -> None:
    server = await serve(lambda raw: http())
    with pytest.raises(ValueError, match="line break"):
        await session_post(server.base, **{"x-extra": "a\r\nInjected: yes"})
    with pytest.raises(ValueError, match="line break"):
        WireSession(server.base, {"x-api-key": "k\nInjected: yes"})
    assert server.requests == []


async def test_the_provider_answers_through_the_wire_session(serve: Serve) -> None:
    server = await serve(lambda raw: http())
    response = await execute(server.base)
    assert response.data == {"ok": True}
    sent = server.requests[0].decode()
    assert f"x-api-key: {KEY}\r\n" in sent and "anthropic-version:" in sent
    assert '"model":"claude-x"' in sent


def certificate_for_localhost(folder: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not on PATH")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


async def test_https_verifies_the_server_and_reuses_its_connection(tmp_path: Path) -> None:
    cert, key = await asyncio.to_thread(certificate_for_localhost, tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    raw = RawServer(lambda request: http())
    server = await asyncio.start_server(raw.handle, "127.0.0.1", 0, ssl=server_context)
    base = f"https://localhost:{server.sockets[0].getsockname()[1]}"
    trusting = ssl.create_default_context(cafile=str(cert))
    try:
        session = WireSession(base, {}, ssl_context=trusting)
        answers = [await session.post("/v1/messages", b"{}") for _ in range(3)]
        await session.close()
        with pytest.raises(WireError, match="CERTIFICATE_VERIFY_FAILED"):
            await WireSession(base, {}).post("/v1/messages", b"{}")  # not in the trust store
    finally:
        server.close()
        await server.wait_closed()
    assert [a.body for a in answers] == [ANSWER] * 3 and raw.connections == 1
    assert f"Host: localhost:{base.rsplit(':', 1)[1]}\r\n" in raw.requests[0].decode()
