"""The three batch APIs on the wire: Anthropic Message Batches, OpenAI Files + Batches,
Gemini batch mode with inlined requests.

Each translates HTTP to and from `_batch.Batches`; the request bodies inside a batch are read
by the online dialects (`_wire`) and answered by the same machinery as online requests, so a
batch's answers and token usage equal an online run's. Paths and shapes are the ones the
official SDKs (anthropic, openai, google-genai) send and parse.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ._answers import answer
from ._batch import Batch, Batches, BatchRequest, Item, Phase, Result, shuffled
from ._core import Core
from ._wire import DIALECTS, BadRequest, Dialect, Prompt, Reply, _rfc3339

ANTHROPIC_MAX_REQUESTS = 100_000
ANTHROPIC_MAX_BYTES = 256_000_000  # "256 MB"; the decimal reading is the stricter one
OPENAI_MAX_REQUESTS = 50_000
OPENAI_MAX_BYTES = 200_000_000
GEMINI_MAX_BYTES = 20_000_000  # inlined requests; larger batches go through files upstream
# aiohttp's own cap on a request body; above every API's limit so that ours answer first.
CLIENT_MAX_SIZE = 260_000_000

_HEADERS = {"x-simulated": "true"}
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_OPENAI_ENDPOINT = "/v1/chat/completions"
_GEMINI_BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch"
_SERVER_ERROR = "Internal server error (simulated)"
_GEMINI = "/{version:v1|v1beta|v1alpha}"  # google-genai 3.6 uses v1, the REST docs v1beta
_GEMINI_BETA = "/{version:v1beta|v1alpha}"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class TooLarge(Exception):
    """A body over the API's byte limit."""


def batch_routes(core: Core) -> list[web.RouteDef]:
    anthropic, openai, gemini = _Anthropic(core), _OpenAI(core), _Gemini(core)
    # google-genai 3.6 calls /v1/batches and /v1/batches/{id}, OpenAI's own paths: the
    # caller's headers tell the two apart.
    shared_list = _by_caller(openai.guard(openai.list), gemini.guard(gemini.list))
    shared_get = _by_caller(openai.guard(openai.retrieve), gemini.guard(gemini.retrieve))
    return [
        web.post("/v1/messages/batches", anthropic.guard(anthropic.create)),
        web.get("/v1/messages/batches", anthropic.guard(anthropic.list)),
        web.get("/v1/messages/batches/{id}", anthropic.guard(anthropic.retrieve)),
        web.post("/v1/messages/batches/{id}/cancel", anthropic.guard(anthropic.cancel)),
        web.get("/v1/messages/batches/{id}/results", anthropic.guard(anthropic.results)),
        web.post("/v1/files", openai.guard(openai.upload)),
        web.get("/v1/files/{id}", openai.guard(openai.file)),
        web.delete("/v1/files/{id}", openai.guard(openai.delete_file)),
        web.get("/v1/files/{id}/content", openai.guard(openai.content)),
        web.post("/v1/batches", openai.guard(openai.create)),
        web.get("/v1/batches", shared_list),
        web.get("/v1/batches/{id}", shared_get),
        web.post("/v1/batches/{id}/cancel", openai.guard(openai.cancel)),
        web.post(f"{_GEMINI}/models/{{model}}:batchGenerateContent", gemini.guard(gemini.create)),
        web.get(f"{_GEMINI_BETA}/batches", gemini.guard(gemini.list)),
        web.get(f"{_GEMINI_BETA}/batches/{{id}}", gemini.guard(gemini.retrieve)),
        web.post(f"{_GEMINI}/batches/{{id}}:cancel", gemini.guard(gemini.cancel)),
    ]


def _by_caller(openai: Handler, gemini: Handler) -> Handler:
    async def dispatch(request: web.Request) -> web.StreamResponse:
        return await (gemini if _from_google_client(request) else openai)(request)

    return dispatch


def _from_google_client(request: web.Request) -> bool:
    headers = request.headers
    return "x-goog-api-key" in headers or "x-goog-api-client" in headers or "key" in request.query


def batch_stats(batches: Batches) -> dict[str, Any]:
    """The batch counters of /stats, each batch's status in its own API's words."""
    return batches.stats(time.monotonic(), _status)


def _status(batch: Batch, now: float) -> str:
    if batch.api == "openai":
        return _OpenAI.status(batch, now)
    if batch.api == "gemini":
        return _Gemini.state(batch, now)
    return batch.phase(now)


class _BatchApi(ABC):
    """What the three batch APIs share: the key check, counters, ids, limits and replies."""

    api: str

    def __init__(self, core: Core) -> None:
        self.core = core
        self.dialect: Dialect = DIALECTS[self.api]

    @property
    def batches(self) -> Batches:
        return self.core.batches

    def guard(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            self.batches.requests[self.api] += 1
            key = self.core.config.api_key
            if key is not None and self.dialect.api_key(request.headers, request.query) != key:
                return self.error(401, "invalid API key (simulated)")
            return await handler(request)

        return guarded

    @abstractmethod
    def error(self, status: int, message: str, **details: Any) -> web.Response:
        """An error in the API's own shape; `details` carry what only some shapes have."""

    def create_batch(
        self,
        batch_id: str,
        requests: list[BatchRequest],
        info: dict[str, Any] | None = None,
        failure: list[dict[str, Any]] | None = None,
    ) -> Batch:
        return self.batches.create(
            self.api,
            batch_id,
            requests,
            self.core.config,
            reply=self._online_reply,
            serial=self.core.next_serial,
            info=info,
            failure=failure,
        )

    def parse(self, body: Any, model: str | None, custom_id: str, **extra: Any) -> BatchRequest:
        try:
            prompt = self.dialect.parse(body, model)
        except BadRequest as exc:
            return BatchRequest(custom_id, None, str(exc), extra)
        return BatchRequest(custom_id, prompt, None, extra)

    def max_requests(self, default: int | None) -> int | None:
        configured = self.core.config.batch_max_requests
        return configured if configured is not None else default

    def max_bytes(self, default: int) -> int:
        configured = self.core.config.batch_max_bytes
        return configured if configured is not None else default

    async def read(self, request: web.Request, limit: int) -> bytes:
        if (request.content_length or 0) > limit:
            raise TooLarge
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise TooLarge from None
        if len(body) > limit:
            raise TooLarge
        return body

    def find(self, request: web.Request) -> Batch | None:
        return self.batches.get(self.api, request.match_info["id"])

    def logged(self, request: web.Request, body: Any) -> None:
        """Keep a batch's body in the recent requests (GET /requests), as online bodies are:
        tests compare what a client put in a batch with what it sends online. (OpenAI's
        requests are in the input file, which the Files API gives back.)"""
        self.core.stats.logged(self.api, request.path, body, request.headers)

    def _online_reply(self, prompt: Prompt) -> Reply:
        # The online endpoint's answer to the same request (see _server._ApiEndpoint.handle).
        return self.core.reply(prompt, answer(prompt.text, prompt.last_message, prompt.schema),
                               cache_writes=self.dialect.reports_cache_writes)

    def success(self, item: Item) -> dict[str, Any]:
        prompt, reply = item.request.prompt, item.reply
        assert prompt is not None and reply is not None
        return self.dialect.success(prompt, reply, item.serial)


# --- Anthropic Message Batches -------------------------------------------------------------


class _Anthropic(_BatchApi):
    api = "anthropic"

    async def create(self, request: web.Request) -> web.Response:
        limit = self.max_bytes(ANTHROPIC_MAX_BYTES)
        try:
            body = json.loads(await self.read(request, limit))
        except TooLarge:
            message = f"Request exceeds the maximum allowed number of bytes ({limit})."
            return self.error(413, message, kind="request_too_large")
        except ValueError as exc:
            return self.error(400, f"invalid request: the body is not JSON ({exc})")
        self.logged(request, body)
        try:
            requests = self._requests(body)
        except BadRequest as exc:
            return self.error(400, str(exc))
        batch = self.create_batch(f"msgbatch_sim{secrets.token_hex(10)}", requests)
        return _json(self.render(batch, batch.created, request, phase="in_progress"))

    def _requests(self, body: Any) -> list[BatchRequest]:
        if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
            raise BadRequest("requests: Field required (a list of {custom_id, params})")
        items: list[Any] = body["requests"]
        if not items:
            raise BadRequest("requests: List should have at least 1 item")
        most = self.max_requests(ANTHROPIC_MAX_REQUESTS)
        if most is not None and len(items) > most:
            raise BadRequest(f"requests: a batch holds at most {most} requests, got {len(items)}")
        seen: set[str] = set()
        requests = []
        for index, item in enumerate(items):
            custom_id = item.get("custom_id") if isinstance(item, dict) else None
            if not isinstance(custom_id, str) or not _CUSTOM_ID.match(custom_id):
                raise BadRequest(
                    f"requests.{index}.custom_id: must be 1 to 64 letters, digits, '-' or '_'"
                )
            if custom_id in seen:
                raise BadRequest(
                    f"requests.{index}.custom_id: {custom_id!r} is used more than once; "
                    "custom_id must be unique within a batch"
                )
            seen.add(custom_id)
            if not isinstance(item.get("params"), dict):
                raise BadRequest(f"requests.{index}.params: Field required (an object)")
            # Upstream validates params while processing: a bad one ends errored, not refused.
            requests.append(self.parse(item["params"], None, custom_id))
        return requests

    async def retrieve(self, request: web.Request) -> web.Response:
        batch = self.find(request)
        if batch is None:
            return self._not_found(request)
        self.batches.polls += 1
        return _json(self.render(batch, time.monotonic(), request))

    async def list(self, request: web.Request) -> web.Response:
        try:
            limit = _limit(request.query.get("limit"), 20, 1000)
        except BadRequest as exc:
            return self.error(400, f"limit: {exc}")
        batches = self.batches.newest_first(self.api)
        ids = [b.id for b in batches]
        after, before = request.query.get("after_id"), request.query.get("before_id")
        for cursor in (after, before):
            if cursor is not None and cursor not in ids:
                return self.error(404, f"no message batch {cursor!r} to page from (simulated)")
        if before is not None:
            end = ids.index(before)
            page = batches[max(0, end - limit) : end]
            has_more = end - limit > 0
        else:
            start = ids.index(after) + 1 if after is not None else 0
            page = batches[start : start + limit]
            has_more = start + limit < len(batches)
        now = time.monotonic()
        return _json(
            {
                "data": [self.render(b, now, request) for b in page],
                "has_more": has_more,
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
            }
        )

    async def cancel(self, request: web.Request) -> web.Response:
        batch = self.find(request)
        if batch is None:
            return self._not_found(request)
        now = time.monotonic()
        if batch.ended(now):
            return _json(self.render(batch, now, request))
        self.batches.cancel(batch, now)
        return _json(self.render(batch, now, request, phase="canceling"))

    async def results(self, request: web.Request) -> web.StreamResponse:
        batch = self.find(request)
        if batch is None:
            return self._not_found(request)
        now = time.monotonic()
        if not batch.ended(now):
            return self.error(
                404, f"message batch {batch.id} has not ended yet: its results are not ready"
            )
        lines = [
            {"custom_id": item.request.custom_id, "result": self._result(batch, item, now)}
            for item in shuffled(batch.items, self.core.config.seed, batch.id)
        ]
        return _jsonl(lines)

    def render(
        self, batch: Batch, now: float, request: web.Request, phase: Phase | None = None
    ) -> dict[str, Any]:
        phase = phase or batch.phase(now)
        ended = phase == "ended"
        # Upstream keeps every request `processing` until the whole batch has ended.
        counts = batch.counts(now) if ended else Counter({"processing": len(batch.items)})
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": phase,
            "request_counts": {
                name: counts[name]
                for name in ("processing", "succeeded", "errored", "canceled", "expired")
            },
            "created_at": _rfc3339(batch.created_wall),
            "expires_at": _rfc3339(batch.wall(batch.window_end)),
            "ended_at": _rfc3339(batch.wall(batch.ends_at)) if ended else None,
            "cancel_initiated_at": _when(batch, batch.cancel_at),
            "archived_at": None,
            "results_url": f"{_origin(request)}/v1/messages/batches/{batch.id}/results"
            if ended
            else None,
        }

    def _result(self, batch: Batch, item: Item, now: float) -> dict[str, Any]:
        result = batch.result(item, now)
        if result == "succeeded":
            return {"type": "succeeded", "message": self.success(item)}
        if result == "errored":
            invalid = item.request.invalid
            kind = "invalid_request_error" if invalid else "api_error"
            error = {"type": kind, "message": invalid or _SERVER_ERROR}
            return {"type": "errored", "error": {"type": "error", "error": error}}
        return {"type": result}

    def _not_found(self, request: web.Request) -> web.Response:
        return self.error(404, f"message batch {request.match_info['id']!r} not found (simulated)")

    def error(self, status: int, message: str, **details: Any) -> web.Response:
        kind = details.get("kind") or {
            400: "invalid_request_error",
            401: "authentication_error",
            404: "not_found_error",
        }.get(status, "api_error")
        return _json({"type": "error", "error": {"type": kind, "message": message}}, status)


# --- OpenAI Files + Batches ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _File:
    id: str
    filename: str
    purpose: str
    created_wall: float
    data: bytes | None = None  # None: the output or error file of `batch_id`, derived
    batch_id: str | None = None


_FILE_PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})


class _OpenAI(_BatchApi):
    api = "openai"

    async def upload(self, request: web.Request) -> web.Response:
        limit = self.max_bytes(OPENAI_MAX_BYTES)
        try:
            form = await request.post()
        except web.HTTPRequestEntityTooLarge:
            return self.error(400, "File is too large.")
        except ValueError as exc:
            return self.error(400, f"invalid multipart body: {exc}")
        purpose, upload = form.get("purpose"), form.get("file")
        if not isinstance(purpose, str) or purpose not in _FILE_PURPOSES:
            allowed = ", ".join(sorted(_FILE_PURPOSES))
            return self.error(400, f"'purpose' must be one of {allowed}", param="purpose")
        if not isinstance(upload, web.FileField):
            return self.error(400, "'file' is a required multipart file field", param="file")
        data = upload.file.read()
        if purpose == "batch" and not upload.filename.endswith(".jsonl"):
            return self.error(400, "Invalid file format for Batch API. Must be .jsonl")
        if purpose == "batch" and len(data) > limit:
            return self.error(400, "File is too large.")
        stored = _File(
            f"file-sim{secrets.token_hex(12)}", upload.filename, purpose, time.time(), data
        )
        self.batches.files[stored.id] = stored
        return _json(self._file_object(stored, data))

    async def file(self, request: web.Request) -> web.Response:
        found = self._file(request)
        if isinstance(found, web.Response):
            return found
        stored, data = found
        return _json(self._file_object(stored, data))

    async def content(self, request: web.Request) -> web.Response:
        found = self._file(request)
        if isinstance(found, web.Response):
            return found
        _, data = found
        headers = {**_HEADERS, "Content-Type": "application/octet-stream"}
        return web.Response(body=data, headers=headers)

    async def delete_file(self, request: web.Request) -> web.Response:
        found = self._file(request)
        if isinstance(found, web.Response):
            return found
        stored, _ = found
        del self.batches.files[stored.id]
        return _json({"id": stored.id, "object": "file", "deleted": True})

    async def create(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError as exc:
            return self.error(400, f"the body is not JSON ({exc})")
        if not isinstance(body, dict):
            return self.error(400, "the body must be a JSON object")
        if body.get("completion_window") != "24h":
            message = "Invalid value for 'completion_window': only '24h' is supported."
            return self.error(400, message, param="completion_window")
        endpoint = body.get("endpoint")
        if endpoint != _OPENAI_ENDPOINT:
            message = f"endpoint: only {_OPENAI_ENDPOINT} is simulated, got {endpoint!r}"
            return self.error(400, message, param="endpoint")
        file_id = body.get("input_file_id")
        stored = self.batches.files.get(file_id) if isinstance(file_id, str) else None
        if not isinstance(stored, _File) or stored.data is None or stored.purpose != "batch":
            message = f"No such File object: {file_id!r} (upload it with purpose 'batch')"
            return self.error(404, message, param="input_file_id")
        requests, failure = self._lines(stored.data)
        batch_id = f"batch_sim{secrets.token_hex(12)}"
        models = {r.prompt.model for r in requests if r.prompt is not None}
        info = {
            "input_file_id": file_id,
            "metadata": body.get("metadata"),
            "model": min(models) if models else None,
            "output_file_id": self._derived_file(batch_id, "output"),
            "error_file_id": self._derived_file(batch_id, "error"),
        }
        batch = self.create_batch(batch_id, requests, info, failure or None)
        return _json(self.render(batch, batch.created, status="validating"))

    def _lines(self, data: bytes) -> tuple[list[BatchRequest], list[dict[str, Any]]]:
        """The requests of an input file, or the reasons it fails validation upstream."""
        requests: list[BatchRequest] = []
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        models: set[str] = set()
        lines = [(n, line) for n, line in enumerate(data.splitlines(), 1) if line.strip()]
        most = self.max_requests(OPENAI_MAX_REQUESTS)
        if not lines:
            return [], [_batch_error("empty_file", "The input file is empty.")]
        if most is not None and len(lines) > most:
            message = f"The input file has {len(lines)} requests; a batch holds at most {most}."
            return [], [_batch_error("too_many_tasks", message)]
        for number, line in lines:
            try:
                task = json.loads(line)
            except ValueError:
                task = None
            if not isinstance(task, dict):
                message = "This line is not parseable as valid JSON."
                errors.append(_batch_error("invalid_json_line", message, number))
                continue
            problem = _task_problem(task, seen, models)
            if problem is not None:
                errors.append({**problem, "line": number})
                continue
            seen.add(task["custom_id"])
            if isinstance(task["body"].get("model"), str):
                models.add(task["body"]["model"])
            requests.append(self.parse(task["body"], None, task["custom_id"]))
        return requests, errors

    async def retrieve(self, request: web.Request) -> web.Response:
        batch = self.find(request)
        if batch is None:
            return self._not_found(request)
        self.batches.polls += 1
        return _json(self.render(batch, time.monotonic()))

    async def list(self, request: web.Request) -> web.Response:
        try:
            limit = _limit(request.query.get("limit"), 20, 100)
        except BadRequest as exc:
            return self.error(400, f"limit: {exc}", param="limit")
        batches = self.batches.newest_first(self.api)
        ids = [b.id for b in batches]
        after = request.query.get("after")
        if after is not None and after not in ids:
            return self.error(404, f"No such Batch object: {after!r}", param="after")
        start = ids.index(after) + 1 if after is not None else 0
        page = batches[start : start + limit]
        now = time.monotonic()
        return _json(
            {
                "object": "list",
                "data": [self.render(b, now) for b in page],
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": start + limit < len(batches),
            }
        )

    async def cancel(self, request: web.Request) -> web.Response:
        batch = self.find(request)
        if batch is None:
            return self._not_found(request)
        now = time.monotonic()
        if batch.ended(now):
            status = self.status(batch, now)
            return self.error(400, f"Cannot cancel a batch with status '{status}'.")
        self.batches.cancel(batch, now)
        return _json(self.render(batch, now, status="cancelling"))

    @staticmethod
    def status(batch: Batch, now: float) -> str:
        phase = batch.phase(now)
        if phase == "failed":
            return "failed"
        if phase != "ended":
            return "cancelling" if phase == "canceling" else "in_progress"
        if batch.cancel_at is not None:
            return "cancelled"
        return "expired" if batch.counts(now)["expired"] else "completed"

    def render(self, batch: Batch, now: float, status: str | None = None) -> dict[str, Any]:
        status = status or self.status(batch, now)
        ended = status in ("completed", "expired", "cancelled")
        counts = batch.counts(now) if status != "validating" else Counter[Result]()
        total = len(batch.items)
        succeeded = counts["succeeded"]
        failed = total - counts["processing"] - succeeded if status != "validating" else 0
        end = batch.wall(batch.ends_at)
        info = batch.info
        billed = [i for i in batch.items if ended and batch.result(i, now) == "succeeded"]
        input_tokens = sum(i.reply.input_tokens for i in billed if i.reply is not None)
        output_tokens = sum(i.reply.output_tokens for i in billed if i.reply is not None)
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": _OPENAI_ENDPOINT,
            "model": info.get("model"),
            "errors": {"object": "list", "data": batch.failure} if batch.failure else None,
            "input_file_id": info["input_file_id"],
            "completion_window": "24h",
            "status": status,
            "output_file_id": info["output_file_id"] if ended and succeeded else None,
            "error_file_id": info["error_file_id"] if ended and failed else None,
            "created_at": int(batch.created_wall),
            "in_progress_at": int(batch.created_wall)
            if status not in ("validating", "failed")
            else None,
            "expires_at": int(batch.wall(batch.window_end)),
            "finalizing_at": int(end) if ended else None,
            "completed_at": int(end) if status == "completed" else None,
            "failed_at": int(batch.created_wall) if status == "failed" else None,
            "expired_at": int(end) if status == "expired" else None,
            "cancelling_at": int(batch.wall(batch.cancel_at))
            if batch.cancel_at is not None
            else None,
            "cancelled_at": int(end) if status == "cancelled" else None,
            "request_counts": {"total": total, "completed": succeeded, "failed": failed},
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
            },
            "metadata": info.get("metadata"),
        }

    def _derived_file(self, batch_id: str, kind: str) -> str:
        file_id = f"file-sim{secrets.token_hex(12)}"
        name = f"{batch_id}_{kind}.jsonl"
        self.batches.files[file_id] = _File(file_id, name, "batch_output", 0.0, None, batch_id)
        return file_id

    def _file(self, request: web.Request) -> tuple[_File, bytes] | web.Response:
        """The stored file and its bytes; an output file exists once its batch has ended."""
        file_id = request.match_info["id"]
        stored = self.batches.files.get(file_id)
        if isinstance(stored, _File) and stored.data is not None:
            return stored, stored.data
        batch = self.batches.get(self.api, stored.batch_id or "") if stored else None
        now = time.monotonic()
        if stored is None or batch is None or not batch.ended(now):
            return self.error(404, f"No such File object: {file_id}", param="id")
        wanted_output = stored.id == batch.info["output_file_id"]
        lines = [
            self._line(batch, item, result)
            for item in shuffled(batch.items, self.core.config.seed, batch.id)
            if ((result := batch.result(item, now)) == "succeeded") == wanted_output
        ]
        ended = _File(stored.id, stored.filename, stored.purpose, batch.wall(batch.ends_at))
        return ended, b"".join(json.dumps(line).encode() + b"\n" for line in lines)

    def _line(self, batch: Batch, item: Item, result: Result) -> dict[str, Any]:
        line: dict[str, Any] = {
            "id": f"batch_req_sim{item.serial:020d}",
            "custom_id": item.request.custom_id,
            "response": None,
            "error": None,
        }
        request_id = f"req_sim{item.serial:020d}"
        if result == "succeeded":
            line["response"] = {
                "status_code": 200,
                "request_id": request_id,
                "body": self.success(item),
            }
        elif result == "errored":
            invalid = item.request.invalid
            status = 400 if invalid else 500
            body = self.dialect.error(status, invalid or _SERVER_ERROR, None)
            line["response"] = {"status_code": status, "request_id": request_id, "body": body}
        elif result == "canceled":
            message = "This request was not executed because the batch was cancelled."
            line["error"] = {"code": "batch_cancelled", "message": message}
        else:
            message = "This request could not be executed before the completion window expired."
            line["error"] = {"code": "batch_expired", "message": message}
        return line

    @staticmethod
    def _file_object(stored: _File, data: bytes) -> dict[str, Any]:
        return {
            "id": stored.id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(stored.created_wall),
            "filename": stored.filename,
            "purpose": stored.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }

    def _not_found(self, request: web.Request) -> web.Response:
        message = f"No such Batch object: {request.match_info['id']}"
        return self.error(404, message, param="batch_id")

    def error(self, status: int, message: str, **details: Any) -> web.Response:
        error = {
            "message": message,
            "type": "invalid_request_error",
            "param": details.get("param"),
            "code": "invalid_api_key" if status == 401 else None,
        }
        return _json({"error": error}, status)


def _task_problem(task: dict[str, Any], seen: set[str], models: set[str]) -> dict[str, Any] | None:
    for name in ("custom_id", "method", "url", "body"):
        if name not in task:
            message = f"Missing required parameter: '{name}'."
            return _batch_error("missing_required_parameter", message, param=name)
    custom_id = task["custom_id"]
    if not isinstance(custom_id, str) or not custom_id:
        return _batch_error("invalid_request", "custom_id must be a non-empty string.")
    if custom_id in seen:
        message = f"The custom_id {custom_id!r} is used more than once; each must be unique."
        return _batch_error("duplicate_custom_id", message, param="custom_id")
    if task["method"] != "POST":
        return _batch_error("invalid_request", "method must be 'POST'.", param="method")
    if task["url"] != _OPENAI_ENDPOINT:
        message = f"The url {task['url']!r} does not match the batch endpoint {_OPENAI_ENDPOINT}."
        return _batch_error("url_mismatch", message, param="url")
    body = task["body"]
    if not isinstance(body, dict):
        return _batch_error("invalid_request", "body must be a JSON object.", param="body")
    model = body.get("model")
    if isinstance(model, str) and models and model not in models:
        message = f"The model {model!r} differs from the other requests' {min(models)!r}; a "
        message += "batch uses one model."
        return _batch_error("model_mismatch", message, param="body.model")
    return None


def _batch_error(
    code: str, message: str, line: int | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


# --- Gemini batch mode (inlined requests) --------------------------------------------------


_GRPC_CODES = {"canceled": 1, "invalid": 3, "expired": 4, "server": 13}
_GEMINI_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
}


class _Gemini(_BatchApi):
    api = "gemini"

    async def create(self, request: web.Request) -> web.Response:
        limit = self.max_bytes(GEMINI_MAX_BYTES)
        try:
            body = json.loads(await self.read(request, limit))
        except TooLarge:
            return self.error(400, f"Request payload size exceeds the limit: {limit} bytes.")
        except ValueError as exc:
            return self.error(400, f"Invalid JSON payload received. {exc}")
        self.logged(request, body)
        model = "models/" + request.match_info["model"].removeprefix("models/")
        batch_id = f"batches/sim{secrets.token_hex(10)}"
        try:
            display_name, requests = self._requests(body, model, batch_id)
        except BadRequest as exc:
            return self.error(400, str(exc))
        info = {"model": model, "display_name": display_name}
        batch = self.create_batch(batch_id, requests, info)
        return _json(self.render(batch, batch.created, state="BATCH_STATE_PENDING"))

    def _requests(self, body: Any, model: str, batch_id: str) -> tuple[str, list[BatchRequest]]:
        batch = body.get("batch") if isinstance(body, dict) else None
        if not isinstance(batch, dict):
            raise BadRequest("batch: required (an object with inputConfig)")
        source = batch.get("inputConfig") or batch.get("input_config")
        if isinstance(source, dict) and ("fileName" in source or "file_name" in source):
            raise BadRequest(
                "inputConfig.fileName: file input is not simulated; send inlined requests"
            )
        inlined = source.get("requests") if isinstance(source, dict) else None
        items = inlined.get("requests") if isinstance(inlined, dict) else None
        if not isinstance(items, list) or not items:
            raise BadRequest("batch.inputConfig.requests.requests: a non-empty list is required")
        most = self.max_requests(None)
        if most is not None and len(items) > most:
            raise BadRequest(f"a batch holds at most {most} requests, got {len(items)}")
        requests = []
        for index, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("request"), dict):
                raise BadRequest(f"requests[{index}].request: required (a GenerateContentRequest)")
            metadata = item.get("metadata")
            metadata = metadata if isinstance(metadata, dict) else {}
            key = metadata.get("key")
            custom_id = str(key) if key is not None else f"{batch_id}#{index}"
            inner = item["request"]
            item_model = inner.get("model") if isinstance(inner.get("model"), str) else model
            requests.append(self.parse(inner, item_model, custom_id, metadata=metadata))
        display_name = batch.get("displayName") or batch.get("display_name") or batch_id
        return str(display_name), requests

    async def retrieve(self, request: web.Request) -> web.Response:
        batch = self.find(request)
        if batch is None:
            return self._not_found(request)
        self.batches.polls += 1
        return _json(self.render(batch, time.monotonic()))

    async def list(self, request: web.Request) -> web.Response:
        try:
            size = _limit(request.query.get("pageSize"), 50, 1000)
        except BadRequest as exc:
            return self.error(400, f"pageSize: {exc}")
        batches = self.batches.newest_first(self.api)
        ids = [b.id for b in batches]
        token = request.query.get("pageToken")
        if token and token not in ids:
            return self.error(400, f"pageToken {token!r} is not valid")
        start = ids.index(token) if token else 0
        page = batches[start : start + size]
        now = time.monotonic()
        data: dict[str, Any] = {"operations": [self.render(b, now) for b in page]}
        if start + size < len(batches):
            data["nextPageToken"] = ids[start + size]
        return _json(data)

    async def cancel(self, request: web.Request) -> web.Response:
        batch = self.find(request)
        if batch is None:
            return self._not_found(request)
        now = time.monotonic()
        if batch.ended(now):
            state = self.state(batch, now)
            return self.error(
                400, f"batch {batch.id} is already {state}", status_name="FAILED_PRECONDITION"
            )
        self.batches.cancel(batch, now)
        return _json({})

    def find(self, request: web.Request) -> Batch | None:
        return self.batches.get(self.api, "batches/" + request.match_info["id"])

    @staticmethod
    def state(batch: Batch, now: float) -> str:
        if not batch.ended(now):
            return "BATCH_STATE_RUNNING"
        if batch.cancel_at is not None:
            return "BATCH_STATE_CANCELLED"
        return "BATCH_STATE_EXPIRED" if batch.counts(now)["expired"] else "BATCH_STATE_SUCCEEDED"

    def render(self, batch: Batch, now: float, state: str | None = None) -> dict[str, Any]:
        """The batch as the long-running Operation whose metadata google-genai reads."""
        initial = state is not None
        state = state or self.state(batch, now)
        ended = not initial and batch.ended(now)
        counts = batch.counts(now) if not initial else Counter({"processing": len(batch.items)})
        pending = counts["processing"]
        metadata: dict[str, Any] = {
            "@type": _GEMINI_BATCH_TYPE,
            "name": batch.id,
            "model": batch.info["model"],
            "displayName": batch.info["display_name"],
            "createTime": _rfc3339(batch.created_wall),
            "updateTime": _rfc3339(batch.wall(min(now, batch.ends_at))),
            "batchStats": {
                "requestCount": str(len(batch.items)),
                "successfulRequestCount": str(counts["succeeded"]),
                "failedRequestCount": str(len(batch.items) - pending - counts["succeeded"]),
                "pendingRequestCount": str(pending),
            },
            "state": state,
        }
        if ended:
            metadata["endTime"] = _rfc3339(batch.wall(batch.ends_at))
            responses = [self._response(batch, item, now) for item in batch.items]
            metadata["output"] = {"inlinedResponses": {"inlinedResponses": responses}}
        return {"name": batch.id, "metadata": metadata, "done": ended}

    def _response(self, batch: Batch, item: Item, now: float) -> dict[str, Any]:
        # In request order, as upstream promises for inlined requests.
        result = batch.result(item, now)
        response: dict[str, Any] = {}
        if result == "succeeded":
            response["response"] = self.success(item)
        elif result == "errored":
            invalid = item.request.invalid
            code = _GRPC_CODES["invalid" if invalid else "server"]
            response["error"] = {"code": code, "message": invalid or _SERVER_ERROR}
        elif result == "canceled":
            message = "the batch was cancelled before this request ran (simulated)"
            response["error"] = {"code": _GRPC_CODES["canceled"], "message": message}
        else:
            message = "the batch expired before this request ran (simulated)"
            response["error"] = {"code": _GRPC_CODES["expired"], "message": message}
        if item.request.extra.get("metadata"):
            response["metadata"] = item.request.extra["metadata"]
        return response

    def _not_found(self, request: web.Request) -> web.Response:
        return self.error(404, f"batches/{request.match_info['id']} not found (simulated)")

    def error(self, status: int, message: str, **details: Any) -> web.Response:
        name = details.get("status_name") or _GEMINI_STATUSES.get(status, "INTERNAL")
        return _json({"error": {"code": status, "message": message, "status": name}}, status)


# --- helpers -------------------------------------------------------------------------------


def _limit(value: str | None, default: int, most: int) -> int:
    if value is None:
        return default
    if not value.isdigit() or not 1 <= int(value) <= most:
        raise BadRequest(f"must be an integer between 1 and {most}, got {value!r}")
    return int(value)


def _when(batch: Batch, monotonic: float | None) -> str | None:
    return None if monotonic is None else _rfc3339(batch.wall(monotonic))


def _origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _json(data: Any, status: int = 200) -> web.Response:
    body = json.dumps(data, separators=(",", ":")).encode()
    return web.Response(
        status=status, body=body, headers={**_HEADERS, "Content-Type": "application/json"}
    )


def _jsonl(lines: list[dict[str, Any]]) -> web.Response:
    body = b"".join(json.dumps(line, separators=(",", ":")).encode() + b"\n" for line in lines)
    headers = {**_HEADERS, "Content-Type": "application/binary"}
    return web.Response(body=body, headers=headers)
