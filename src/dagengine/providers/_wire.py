"""HTTP/1.1 for the http transport: kept-alive connections to one origin, one request at a time
on each, on asyncio's protocols and httptools' parser (llhttp, Node.js's HTTP parser, in C).

Why not aiohttp's client for this: a provider call is one small JSON POST to one origin and one
small JSON answer, and aiohttp's ClientSession builds a request object, a header multidict
per request, a cookie jar pass, tracing signals and a response object around it: about 0.08 ms
of CPU a call on this machine, which at thousands of calls a second is as much as the engine
itself. Here a request is its head (made once per path, with the session's fixed headers,
plus the body's Content-Length) and its body in one write, and an answer is its status, its
headers and its body. What that leaves out is what provider APIs do not use: redirects (the
SDKs do not follow them either), cookies, proxies (a session with a proxy stays on aiohttp:
see _transport.py), 1xx negotiation, pipelining and compression other than gzip and deflate.

Failures: a connection that cannot be made, is closed or reset before the whole answer, or
answers something that is not HTTP raises `WireError` (the transport reports it as a
connection error, which the engine retries). A connection is reused only after a complete
answer that allows it, and not after `KEEPALIVE` seconds idle (servers close idle ones: a
request on one the server is closing would fail for nothing). A request whose caller is
cancelled (its time limit) closes its connection: the answer may still come.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import zlib
from collections import deque
from collections.abc import Mapping
from urllib.parse import urlsplit

import aiohttp.connector
import httptools
from multidict import CIMultiDict, CIMultiDictProxy

__all__ = ["KEEPALIVE", "WireError", "WireResponse", "WireSession"]

KEEPALIVE = 15.0  # seconds a connection may stay idle and still be reused (aiohttp's default)
_ENCODINGS = {"gzip": 47, "x-gzip": 47, "deflate": 15}  # zlib wbits per Content-Encoding


class WireError(Exception):
    """No complete HTTP answer: the connection failed, closed early or spoke something else."""


class WireResponse:
    """A complete answer: its status, headers (case-insensitive) and decoded body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: CIMultiDictProxy[str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """The verifying context aiohttp made when it was imported (loading the system's trust
    store takes 50 ms here), or one of our own, made once a process, if it has none."""
    made = getattr(aiohttp.connector, "_SSL_CONTEXT_VERIFIED", None)
    return made if isinstance(made, ssl.SSLContext) else ssl.create_default_context()


def _checked(text: str, what: str) -> str:
    if "\r" in text or "\n" in text:
        raise ValueError(f"the {what} {text[:40]!r} holds a line break")
    return text


def _header_lines(headers: Mapping[str, str]) -> str:
    return "".join(f"{_checked(k, 'header name')}: {_checked(str(v), 'header')}\r\n"
                   for k, v in headers.items())


class WireSession:
    """Connections to the origin of `base_url` (http or https), each sending `headers`;
    https verifies the server with `ssl_context` (by default the system's trust store)."""

    def __init__(self, base_url: str, headers: Mapping[str, str], *,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._host = parts.hostname
        self._tls = parts.scheme == "https"
        self._ssl_context = ssl_context
        self._port = parts.port or (443 if self._tls else 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        if parts.port is not None and parts.port != (443 if self._tls else 80):
            host = f"{host}:{parts.port}"
        fixed = {"Host": host, "Accept-Encoding": "gzip, deflate", **headers}
        self._fixed = _header_lines(fixed)
        self._heads: dict[str, bytes] = {}  # request target -> the head up to Content-Length
        self._idle: deque[_Connection] = deque()
        self._open: set[_Connection] = set()
        self.closed = False

    async def post(self, target: str, body: bytes,
                   headers: Mapping[str, str] | None = None) -> WireResponse:
        """POST `body` to `target` (path and query, already encoded) and its complete answer."""
        if self.closed:
            raise WireError("the session is closed")
        head = self._heads.get(target)
        if head is None:
            head = self._heads[target] = (
                f"POST {_checked(target, 'request target')} HTTP/1.1\r\n{self._fixed}"
                .encode("latin-1"))
        extra = _header_lines(headers).encode("latin-1") if headers else b""
        connection = self._reused() or await self._connect()
        try:
            response = await connection.exchange(
                b"%sContent-Length: %d\r\n%s\r\n" % (head, len(body), extra), body)
        except BaseException:
            connection.close()
            raise
        if connection.keep_alive and not self.closed:
            connection.idle_since = connection.loop.time()
            self._idle.append(connection)
        else:
            connection.close()
        return response

    def _reused(self) -> _Connection | None:
        """The most recently used idle connection still worth reusing."""
        idle = self._idle
        while idle:
            connection = idle.pop()
            if not connection.lost and connection.loop.time() - connection.idle_since < KEEPALIVE:
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(loop, self._open), self._host, self._port,
                ssl=(self._ssl_context or _ssl_context()) if self._tls else None,
                server_hostname=self._host if self._tls else None)
        except OSError as exc:
            raise WireError(f"cannot connect to {self._host}:{self._port}: {exc}") from exc
        return connection

    async def close(self) -> None:
        self.closed = True
        self._idle.clear()
        for connection in list(self._open):
            connection.close()


class _Connection(asyncio.Protocol):
    """One connection and the answer it is reading."""

    def __init__(self, loop: asyncio.AbstractEventLoop, registry: set[_Connection]) -> None:
        self.loop = loop
        self._registry = registry
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[WireResponse] | None = None
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._status = 0
        self._eof_delimited = False  # no length and not chunked: the body ends with the stream
        self.keep_alive = False
        self.lost = False
        self.idle_since = 0.0

    async def exchange(self, head: bytes, body: bytes) -> WireResponse:
        transport = self.transport
        if self.lost or transport is None or transport.is_closing():
            raise WireError("the connection closed before the request was sent")
        waiter: asyncio.Future[WireResponse] = self.loop.create_future()
        self._waiter = waiter
        transport.writelines((head, body))
        return await waiter

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._registry.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._registry.discard(self)
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._eof_delimited and self._status:
            self.keep_alive = False
            self._complete()
            return
        detail = f": {exc}" if exc else ""
        waiter.set_exception(WireError(
            f"the server closed the connection before the whole answer{detail}"))

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():  # nothing asked: not HTTP we expect
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail("the server switched protocols")
        except httptools.HttpParserError as exc:
            self._fail(f"the answer is not HTTP/1.1: {exc}")

    def eof_received(self) -> bool:
        return False  # a half-closed connection is closed: connection_lost sees the rest

    # -- httptools' callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._headers = []
        self._body = []
        self._status = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        names = {name.lower() for name, _ in self._headers}
        self._eof_delimited = "content-length" not in names and "transfer-encoding" not in names

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:  # an interim answer: the real one follows
            return
        self.keep_alive = self._parser.should_keep_alive()
        self._complete()

    # -----------------------------------------------------------------------------------------

    def _complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            return
        headers = CIMultiDictProxy(CIMultiDict(self._headers))
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        encoding = headers.get("Content-Encoding", "identity").strip().lower()
        if encoding != "identity":
            wbits = _ENCODINGS.get(encoding)
            if wbits is None:
                waiter.set_exception(WireError(f"the answer is encoded as {encoding!r}"))
                self.close()
                return
            try:
                body = zlib.decompress(body, wbits)
            except zlib.error as exc:
                waiter.set_exception(WireError(f"the {encoding} answer does not decode: {exc}"))
                self.close()
                return
        waiter.set_result(WireResponse(self._status, headers, body))

    def _fail(self, detail: str) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(WireError(detail))
        self.close()
