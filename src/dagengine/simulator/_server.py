"""The aiohttp application and the in-process Simulator."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import struct
from http import HTTPStatus
from typing import Any

from aiohttp import web

from ..errors import ValidationError
from ._answers import SCHEMA_VIOLATION, answer
from ._base import HOST, BaseSimulator, merged_config
from ._batch_wire import CLIENT_MAX_SIZE, batch_routes, batch_stats
from ._config import ScriptStep, SimulatorConfig
from ._core import Core
from ._keys import key_fingerprint
from ._wire import DIALECTS, BadRequest, Dialect, Prompt, Reply

MALFORMED_BODY = b'{"id": "sim", "content": [<html><body>upstream hiccup (simulated)</body></html>'
_HEADERS = {"Content-Type": "application/json", "x-simulated": "true"}
_SHUTDOWN_GRACE = 0.25  # seconds in-flight requests get when the simulator stops
_DROPPED = 499  # the status of a response never sent because the connection was dropped


def build_app(core: Core) -> web.Application:
    app = web.Application(client_max_size=CLIENT_MAX_SIZE)  # batches run to 256 MB
    routes = app.router
    anthropic, openai, gemini = (_ApiEndpoint(core, DIALECTS[n]).handle for n in DIALECTS)
    routes.add_post("/v1/messages", anthropic)
    routes.add_post("/v1/chat/completions", openai)
    routes.add_post("/chat/completions", openai)
    # google-genai posts to /v1/... by default; the REST docs and gateways use /v1beta.
    routes.add_post("/{version:v1|v1beta|v1alpha}/models/{model}:generateContent", gemini)
    routes.add_routes(batch_routes(core))
    routes.add_routes(_control_routes(core))
    return app


class _ApiEndpoint:
    """The POST handler of one API: parse, decide (via Core), then answer in its dialect."""

    def __init__(self, core: Core, dialect: Dialect) -> None:
        self.core = core
        self.dialect = dialect

    async def handle(self, request: web.Request) -> web.StreamResponse:
        api_key = self.dialect.api_key(request.headers, request.query)
        caller = key_fingerprint(api_key)
        counts = self.core.stats.key(caller)
        counts.requests += 1
        response = await self._respond(request, api_key, caller)
        if response.status != _DROPPED:
            counts.statuses[response.status] += 1
        return response

    async def _respond(
        self, request: web.Request, api_key: str | None, caller: str
    ) -> web.StreamResponse:
        core, dialect = self.core, self.dialect
        core.stats.received(dialect.name)
        if not core.accepts(api_key):
            return self._error(401, "invalid API key (simulated)")
        try:
            body = json.loads(await request.read())
            core.stats.logged(dialect.name, request.path, body, request.headers)
            prompt = dialect.parse(body, request.match_info.get("model"))
        except (ValueError, BadRequest) as exc:
            return self._error(400, f"invalid request: {exc}")
        core.stats.parsed(prompt.model, prompt.text)
        reply = core.reply(prompt, answer(prompt.text, prompt.last_message, prompt.schema),
                           cache_writes=dialect.reports_cache_writes)
        # Admission charges input + max_tokens, as Anthropic does.
        step, retry_after = core.decide(
            reply.input_tokens + (prompt.max_tokens or reply.output_tokens), prompt.text,
            api_key=api_key,
        )
        if isinstance(step, str):
            core.stats.faults[step] += 1
        if core.config.rate_limit_headers:
            headers = dialect.limit_headers(core.limits_for(api_key).states())
        else:
            headers = {}
            if retry_after is not None:
                # Such servers say only when to come back, in whole seconds (RFC 9110).
                retry_after = float(max(1, math.ceil(retry_after)))
        if step == "reset":
            return _drop_connection(request)
        if step == "hang":
            # Held until the client gives up (aiohttp then cancels this handler) or
            # hang_seconds pass, so a hung request never outlives its bound.
            await _work(core, core.config.hang_seconds, prompt, reply, caller)
            return _drop_connection(request)
        if _takes_latency(step) and (seconds := core.latency(prompt.text)) > 0:
            headers["x-simulated-latency-ms"] = f"{seconds * 1000:.3f}"
            await _work(core, seconds, prompt, reply, caller)
        if isinstance(step, int) and step != 200:
            return self._error(step, _message(step, retry_after), retry_after, headers)
        return self._answer(prompt, reply, step, headers, caller)

    def _answer(
        self,
        prompt: Prompt,
        reply: Reply,
        step: ScriptStep,
        headers: dict[str, str],
        caller: str,
    ) -> web.Response:
        """A 200: the answer, or on purpose a wrong-schema, empty, malformed or truncated one."""
        if step == "malformed":
            return self._send(200, MALFORMED_BODY, headers)
        if step == "schema":
            reply = self.core.reply(prompt, SCHEMA_VIOLATION,
                                    cache_writes=self.dialect.reports_cache_writes)
        elif step == "empty":
            reply = self.core.reply(prompt, "", cache_writes=self.dialect.reports_cache_writes)
        body = _encode(self.dialect.success(prompt, reply, self.core.next_serial()))
        if step == "truncated":
            return self._send(200, body[: len(body) // 2], headers)
        self.core.stats.answered(prompt.model, reply, caller)
        return self._send(200, body, headers)

    def _error(
        self,
        status: int,
        message: str,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        headers = headers if headers is not None else {}
        if retry_after is not None:
            headers["retry-after"] = str(max(1, math.ceil(retry_after)))
            if self.core.config.rate_limit_headers:  # else it would tell the exact wait
                headers["retry-after-ms"] = str(math.ceil(retry_after * 1000))
        body = _encode(self.dialect.error(status, message, retry_after))
        return self._send(status, body, headers)

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> web.Response:
        self.core.stats.statuses[status] += 1
        headers.update(_HEADERS)
        return web.Response(status=status, body=body, headers=headers)


def _takes_latency(step: ScriptStep) -> bool:
    # Refusals (4xx, 429 included) come back at once, as real APIs do; anything the
    # "model" worked on (answers, bad bodies, 5xx, timeouts) takes the configured latency.
    return not isinstance(step, int) or step == 200 or step == 408 or step >= 500


async def _work(core: Core, seconds: float, prompt: Prompt, reply: Reply, caller: str) -> None:
    """Wait while the "model" works on the request. A client that closes the connection
    meanwhile (a hedged request's loser, a timeout) cancels this handler, since
    handler_cancellation is on: it is counted, and billed for its input as providers do."""
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        core.stats.cancelled(prompt.model, reply, caller)
        raise


def _message(status: int, retry_after: float | None) -> str:
    if status == 429:
        return f"rate limit exceeded (simulated); retry after {retry_after or 0:.3f}s"
    phrase = "Overloaded" if status == 529 else HTTPStatus(status).phrase
    return f"{phrase} (simulated)"


def _drop_connection(request: web.Request) -> web.Response:
    """Close the TCP connection with a RST and no response at all."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Zero linger turns close() into an immediate RST instead of an orderly FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    # aiohttp discards a response whose transport is already closed.
    return web.Response(status=_DROPPED)


def _control_routes(core: Core) -> list[web.RouteDef]:
    async def stats(_: web.Request) -> web.Response:
        return _json(200, _stats_json(core))

    async def recent_requests(_: web.Request) -> web.Response:
        return _json(200, {"simulated": True, "requests": list(core.stats.recent)})

    async def config(_: web.Request) -> web.Response:
        return _json(200, core.config.to_json())

    async def configure(request: web.Request) -> web.Response:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValidationError("POST /config body", "a JSON object of changes", changes)
            return _json(200, core.configure(changes).to_json())
        except (ValueError, TypeError) as exc:
            return _json(400, {"error": str(exc)})

    async def reset(_: web.Request) -> web.Response:
        core.reset()
        return _json(200, {"reset": True})

    async def root(_: web.Request) -> web.Response:
        return _json(200, {"service": "dagengine simulator", "simulated": True})

    return [
        web.get("/stats", stats),
        web.get("/requests", recent_requests),
        web.get("/config", config),
        web.post("/config", configure),
        web.post("/reset", reset),
        web.get("/", root),
    ]


def _stats_json(core: Core) -> dict[str, Any]:
    return core.stats.to_json() | batch_stats(core.batches)


def _encode(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _json(status: int, data: Any) -> web.Response:
    return web.Response(status=status, body=_encode(data), headers=_HEADERS)


class Simulator(BaseSimulator):
    """The simulator served from the current event loop.

    `Simulator(latency=0.01, requests_per_minute=600, seed=1)` or
    `Simulator(config=SimulatorConfig(...), port=0)`; keyword options override `config`.
    """

    def __init__(
        self, config: SimulatorConfig | None = None, *, port: int = 0, **options: Any
    ) -> None:
        super().__init__(port)
        self._core = Core(merged_config(config, options))
        self._runner: web.AppRunner | None = None

    @property
    def config(self) -> SimulatorConfig:
        return self._core.config

    async def start(self) -> None:
        if self._runner is not None:
            return
        runner = web.AppRunner(
            build_app(self._core),
            access_log=None,
            handler_cancellation=True,  # a client that gives up frees its handler at once
            shutdown_timeout=_SHUTDOWN_GRACE,
        )
        await runner.setup()
        # A deep backlog: benchmarks open hundreds of connections at once.
        site = web.TCPSite(runner, HOST, self._requested_port, backlog=4096)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = runner.addresses[0][1]

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self._port = None

    async def stats(self) -> dict[str, Any]:
        return _stats_json(self._core)

    async def recent_requests(self) -> list[dict[str, Any]]:
        return list(self._core.stats.recent)

    async def configure(self, **changes: Any) -> SimulatorConfig:
        return self._core.configure(changes)

    async def reset(self) -> None:
        self._core.reset()
