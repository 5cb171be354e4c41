"""The http transport: a provider's documented wire format, posted over one session per loop.

The official SDKs build, validate and wrap every request through several layers (a vendored
httpx client on top of their aiohttp backend); at thousands of calls a second that is most of
a call's CPU. An `HTTPBackend` posts the JSON body the API documents, encoded with orjson,
over one session per event loop that lives as long as the engine, and turns every failure
into the same ProviderError the SDK backends give: the status code and its `retry-after`,
timeouts and connection errors without one, a 200 that is not JSON as malformed. Each wire
format (anthropic.py, openai.py, gemini.py) only builds its body and reads its answer.

Sessions: a `WireSession` (_wire.py: kept-alive HTTP/1.1 connections, a third of aiohttp's CPU
a request), or an aiohttp session when the environment names a proxy for the API (read once).
Either way one SSL context a process, no connection limit (the engine bounds what is in
flight), no client timeout (the provider's `asyncio.timeout` bounds a call), no redirects
followed (as the SDKs).
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import orjson
from yarl import URL

from ._http import connection_error, malformed_error, status_error, timeout_error
from ._sdk import Backend
from ._settings import Settings
from ._wire import WireError, WireSession
from .base import ProviderError

__all__ = ["HTTPBackend", "request_options"]

# The SDKs' create() keyword arguments that shape the HTTP request rather than its JSON body;
# the http backends honour them too, so options written for the SDKs keep their meaning.
_REQUEST_OPTIONS = frozenset({"extra_headers", "extra_query", "extra_body", "timeout"})
_USER_AGENT = "dagengine (python)"


class RequestOptions:
    """What `extra_headers`, `extra_query` and `timeout` ask of one request."""

    __slots__ = ("headers", "query", "timeout")

    def __init__(self, headers: Mapping[str, str] | None, query: Mapping[str, Any] | None,
                 timeout: float | None) -> None:
        self.headers = headers
        self.query = query
        self.timeout = timeout


def request_options(params: Mapping[str, Any]) -> tuple[dict[str, Any], RequestOptions | None]:
    """The body parameters (with `extra_body` merged in, as the SDKs do) and the request's own
    options, None when there are none (the usual case, so nothing is built for it)."""
    if _REQUEST_OPTIONS.isdisjoint(params):
        return dict(params), None
    body = {k: v for k, v in params.items() if k not in _REQUEST_OPTIONS}
    body.update(params.get("extra_body") or {})
    timeout = params.get("timeout")
    return body, RequestOptions(
        params.get("extra_headers"), params.get("extra_query"),
        float(timeout) if isinstance(timeout, (int, float)) else None)


class HTTPBackend(Backend):
    """POST JSON to the provider's API over one aiohttp session per event loop.

    `base_url` is the API root the SDK of that provider would take (a subclass appends its
    path); `headers` go with every request and hold the key, so they never appear in a repr.
    """

    def __init__(self, provider: str, settings: Settings, *, base_url: str,
                 headers: Mapping[str, str]) -> None:
        super().__init__(provider, settings)
        self.base_url = base_url.rstrip("/")
        self._headers = {"Content-Type": "application/json", "Accept": "application/json",
                         "User-Agent": _USER_AGENT, **headers}
        self._urls: dict[str, URL] = {}
        self._targets: dict[str, str] = {}

    def new_client(self) -> WireSession | aiohttp.ClientSession:
        proxy = _environment_proxy(self.base_url)
        if proxy is None:
            try:
                return WireSession(self.base_url, self._headers)
            except ValueError:
                pass  # aiohttp's session says what is wrong with the URL on the first request
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            headers=self._headers,
            timeout=aiohttp.ClientTimeout(),
            proxy=proxy,
        )

    @staticmethod
    async def close_client(client: WireSession | aiohttp.ClientSession) -> None:
        await client.close()

    async def post(self, path: str, body: Mapping[str, Any],
                   options: RequestOptions | None = None) -> tuple[Any, Mapping[str, str]]:
        """The decoded JSON of a 2xx answer to POST base_url + path, and its headers."""
        session: WireSession | aiohttp.ClientSession = self.client()
        data = self._encode(body)
        try:
            if isinstance(session, WireSession):
                status, headers, raw = await self._on_wire(session, path, data, options)
            else:
                status, headers, raw = await self._on_aiohttp(session, path, data, options)
        except TimeoutError:
            raise timeout_error(self.provider, options.timeout if options and options.timeout
                                else self.settings.timeout) from None
        except (WireError, aiohttp.ClientError, ConnectionError, ValueError) as exc:
            # ValueError: a URL or header that cannot be sent (aiohttp.InvalidURL is one).
            raise connection_error(self.provider, exc, self.settings) from None
        if not 200 <= status < 300:
            raise self.status_error(status, _error_body(raw), headers)
        try:
            return orjson.loads(raw), headers
        except orjson.JSONDecodeError as exc:
            raise malformed_error(self.provider, str(exc), self.settings) from None

    async def _on_wire(self, session: WireSession, path: str, data: bytes,
                       options: RequestOptions | None) -> tuple[int, Mapping[str, str], bytes]:
        target = self._target(path)
        if options is None:
            response = await session.post(target, data)
        else:
            if options.query:
                target += ("&" if "?" in target else "?") + urlencode(options.query, doseq=True)
            async with asyncio.timeout(options.timeout):
                response = await session.post(target, data, options.headers)
        return response.status, response.headers, response.body

    async def _on_aiohttp(self, session: aiohttp.ClientSession, path: str, data: bytes,
                          options: RequestOptions | None) -> tuple[int, Mapping[str, str], bytes]:
        url = self._url(path)
        if options is None:
            async with session.post(url, data=data, allow_redirects=False) as response:
                return response.status, response.headers, await response.read()
        async with asyncio.timeout(options.timeout), session.post(
                url, data=data, allow_redirects=False, headers=options.headers,
                params=options.query) as response:
            return response.status, response.headers, await response.read()

    def status_error(self, status: int, body: Any, headers: Mapping[str, str]) -> ProviderError:
        return status_error(self.provider, status, body, headers, self.settings)

    def _url(self, path: str) -> URL:
        # aiohttp parses a URL string on every request; each URL is parsed once instead.
        text = self.base_url + path
        url = self._urls.get(text)
        if url is None:
            url = self._urls[text] = URL(text)
        return url

    def _target(self, path: str) -> str:
        """The request target (path and query, percent-encoded) of base_url + path."""
        text = self.base_url + path
        target = self._targets.get(text)
        if target is None:
            target = self._targets[text] = URL(text).raw_path_qs
        return target

    def _encode(self, body: Mapping[str, Any]) -> bytes:
        try:
            return orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS, default=_jsonable)
        except TypeError as exc:
            raise ProviderError(
                f"{self.provider}: the request is not JSON: {exc} (check the options passed "
                f"in select_provider)", provider=self.provider, retryable=False) from None


def _jsonable(value: Any) -> Any:
    """SDK option objects (pydantic models such as google-genai's ThinkingConfig) as JSON."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json", by_alias=True, exclude_none=True)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _error_body(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode(errors="replace")


def _environment_proxy(base_url: str) -> str | None:
    """The HTTP(S)_PROXY the SDKs (httpx) would use for this API, unless NO_PROXY exempts it.

    Read once per session: aiohttp's own trust_env reads the environment on every request."""
    parts = urlsplit(base_url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy
