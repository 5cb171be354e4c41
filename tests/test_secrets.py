"""Keys inside a provider's `gateway_config` reach the gateway and nothing else.

Portkey configs carry keys (a target's `api_key` or `virtual_key`, headers, nested targets).
An error that echoes them (an upstream quoting the key it refused, a gateway quoting the
config it could not use) must not show them in the error, its repr or traceback, a log
record, a repr of the engine or provider, or the run store's file.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from conftest import SimplePlugin, loopback_server
from dagengine import ConfigurationError, DagEngine, ProviderError
from dagengine.gateway import LocalGateway, node_available
from dagengine.providers import build_provider
from dagengine.providers._settings import config_secrets, is_secret_field

PROVIDER_KEY = "sk-ant-provider-0123456789"
TARGET_KEY = "sk-target-key-SECRET-0001"
VIRTUAL_KEY = "vk-virtual-SECRET-0002"
NESTED_KEY = "sk-nested-target-SECRET-0003"
HEADER_TOKEN = "hdr-token-SECRET-0004"
AWS_SECRET = "aws-secret-SECRET-0005"
SECRETS = (TARGET_KEY, VIRTUAL_KEY, NESTED_KEY, HEADER_TOKEN, AWS_SECRET)

# Keys at several depths and in several spellings, beside fields that are not secret.
CONFIG: dict[str, Any] = {
    "retry": {"attempts": 1, "on_status_codes": [429]},
    "strategy": {"mode": "fallback"},
    "targets": [
        {"provider": "openai", "api_key": TARGET_KEY,
         "override_params": {"model": "gpt-x", "max_tokens": 64}},
        {"virtual_key": VIRTUAL_KEY,
         "forward_headers": ["x-trace"],
         "custom_headers": {"Authorization": f"Bearer {HEADER_TOKEN}"}},
        {"strategy": {"mode": "loadbalance"},
         "targets": [{"provider": "bedrock", "apiKey": NESTED_KEY,
                      "aws_secret_access_key": AWS_SECRET, "weight": 1}]},
    ],
}


def shown_anywhere(error: BaseException, *extra: object) -> list[str]:
    """Every place an error and the objects around it can be seen, as text."""
    return [str(error), repr(error), "".join(traceback.format_exception(error)),
            *map(repr, extra)]


def store_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())


def assert_no_secret(texts: list[str], data: bytes = b"") -> None:
    for secret in SECRETS:
        for text in texts:
            assert secret not in text, f"{secret} shown in:\n{text}"
        assert secret.encode() not in data


# -- which fields are secrets ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["api_key", "apiKey", "virtual_key", "x-api-key",
                                  "Authorization", "aws_secret_access_key", "aws_session_token",
                                  "client_secret", "password", "APIKEY", "secret"])
def test_key_like_fields_are_secrets(name: str) -> None:
    assert is_secret_field(name)


@pytest.mark.parametrize("name", ["max_tokens", "model", "provider", "weight", "custom_host",
                                  "override_params", "on_status_codes", "keys"])
def test_other_fields_are_not(name: str) -> None:
    assert not is_secret_field(name)


def test_every_secret_of_a_config_is_found_at_any_depth_and_in_a_json_string() -> None:
    assert set(config_secrets(CONFIG)) >= set(SECRETS)
    assert set(config_secrets(json.dumps(CONFIG))) >= set(SECRETS)
    assert config_secrets("pc-config-id-123") == ()  # a saved config's id is no secret
    assert "64" not in config_secrets(CONFIG) and "gpt-x" not in config_secrets(CONFIG)


def test_a_config_that_is_not_json_is_refused_without_quoting_it() -> None:
    config = {"targets": [{"api_key": TARGET_KEY, "weights": {1, 2}}]}
    with pytest.raises(ConfigurationError, match="only JSON values") as caught:
        build_provider("openai", {"api_key": PROVIDER_KEY, "gateway": "portkey",
                                  "gateway_url": "http://127.0.0.1:1/v1",
                                  "gateway_config": config})
    assert_no_secret(shown_anywhere(caught.value))


# -- a gateway that quotes the config it refused -------------------------------------------------


@pytest.fixture
async def quoting_gateway() -> Any:
    """Answers like a gateway that refuses the config and quotes it back, with the key it got."""

    async def refuse(request: web.Request) -> web.Response:
        quoted = f"{request.headers['x-portkey-config']} (auth {request.headers['Authorization']})"
        return web.json_response(
            {"error": {"message": f"Invalid config passed: {quoted}", "type": "invalid_config"}},
            status=400)

    async with loopback_server({"/v1/chat/completions": refuse}) as port:
        yield f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG):  # every logger: the SDKs' and aiohttp's too
        yield caplog


def log_texts(caplog: pytest.LogCaptureFixture) -> list[str]:
    texts = []
    for record in caplog.records:
        texts.append(record.getMessage())
        if record.exc_info:
            texts.append("".join(traceback.format_exception(*record.exc_info)))
    return texts


def engine_through(gateway_url: str, store: Path, **execution: Any) -> DagEngine:
    return DagEngine(
        SimplePlugin(["a"], provider="anthropic", options={"model": "claude-x"}),
        providers={"anthropic": {"api_key": PROVIDER_KEY, "gateway": "portkey",
                                 "gateway_url": gateway_url, "gateway_config": CONFIG}},
        execution={"max_retries": 0, **execution}, store=store)


async def test_a_quoted_config_is_redacted_in_the_raised_error_logs_reprs_and_store(
    quoting_gateway: str, tmp_path: Path, debug_logs: pytest.LogCaptureFixture,
) -> None:
    store = tmp_path / "runs.db"
    engine = engine_through(quoting_gateway, store, continue_on_error=False)
    provider = engine.registry.get("anthropic")

    with pytest.raises(ProviderError) as caught:
        await engine.process(["hello"], process_id="leaky")

    error = caught.value
    assert "Invalid config passed" in error.message and "[redacted]" in error.message
    assert '"mode":"fallback"' in error.message  # the rest of the quote is still there
    assert PROVIDER_KEY not in error.message
    engine.store.close()
    assert b"[redacted]" in store_bytes(store)  # the stored error is the redacted one
    assert_no_secret(
        shown_anywhere(error, engine, provider, provider.settings) + log_texts(debug_logs),
        store_bytes(store))


async def test_a_quoted_config_is_redacted_in_a_sections_error_result(
    quoting_gateway: str, tmp_path: Path, debug_logs: pytest.LogCaptureFixture,
) -> None:
    store = tmp_path / "runs.db"
    engine = engine_through(quoting_gateway, store)

    result = await engine.process(["hello", "again"])

    errors = [s.results["a"].error or "" for s in result.sections]
    assert all("Invalid config passed" in e and "[redacted]" in e for e in errors)
    engine.store.close()
    assert_no_secret([*errors, repr(result), *log_texts(debug_logs)], store_bytes(store))


async def test_a_key_where_a_long_message_is_cut_leaves_no_start_behind(tmp_path: Path) -> None:
    async def refuse(request: web.Request) -> web.Response:
        # Long enough that the shortened detail (300 characters) would end inside the key.
        message = "x" * 285 + TARGET_KEY + " and more"
        return web.json_response({"error": {"message": message}}, status=400)

    async with loopback_server({"/v1/chat/completions": refuse}) as port:
        engine = engine_through(f"http://127.0.0.1:{port}/v1", tmp_path / "runs.db")
        result = await engine.process(["hello"])

    error = result.sections[0].results["a"].error or ""
    assert error.endswith("...") and "[redacted]" in error
    assert TARGET_KEY[:8] not in error


async def test_the_gateway_still_gets_the_real_keys(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(json.loads(request.headers["x-portkey-config"]))
        return web.json_response({
            "id": "c", "object": "chat.completion", "created": 0, "model": "gpt-x",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": '{"ok": true}'}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1}})

    async with loopback_server({"/v1/chat/completions": record}) as port:
        engine = engine_through(f"http://127.0.0.1:{port}/v1", tmp_path / "runs.db")
        result = await engine.process(["hello"])

    assert result.sections[0].results["a"].data == {"ok": True}
    assert seen == [CONFIG]


# -- through the real Portkey gateway: the upstream quotes the target's key it refused -------------


@pytest.mark.gateway
@pytest.mark.skipif(not node_available(), reason="node is not on PATH")
async def test_a_targets_key_quoted_by_the_upstream_is_redacted_through_the_real_gateway(
    portkey_gateway: LocalGateway, tmp_path: Path, debug_logs: pytest.LogCaptureFixture,
) -> None:
    got: list[str] = []

    async def refuse_key(request: web.Request) -> web.Response:
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        got.append(key)
        return web.json_response(  # what OpenAI answers to a wrong key
            {"error": {"message": f"Incorrect API key provided: {key}.",
                       "type": "invalid_request_error", "code": "invalid_api_key"}},
            status=401)

    async with loopback_server({"/v1/chat/completions": refuse_key}) as port:
        config = {"retry": {"attempts": 1}, "strategy": {"mode": "fallback"},
                  "targets": [{"provider": "openai", "api_key": TARGET_KEY,
                               "custom_host": f"http://127.0.0.1:{port}/v1"}]}
        store = tmp_path / "runs.db"
        engine = DagEngine(
            SimplePlugin(["a"], provider="anthropic", options={"model": "gpt-x"}),
            providers={"anthropic": {"api_key": PROVIDER_KEY, "gateway": "portkey",
                                     "gateway_url": portkey_gateway.url,
                                     "gateway_config": config}},
            execution={"max_retries": 0, "continue_on_error": False}, store=store)
        with pytest.raises(ProviderError) as caught:
            await engine.process(["hello"])

    assert got == [TARGET_KEY]  # the gateway used the target's key
    assert caught.value.status_code == 401
    assert "Incorrect API key provided: [redacted]" in caught.value.message
    engine.store.close()
    assert_no_secret(shown_anywhere(caught.value, engine) + log_texts(debug_logs),
                     store_bytes(store))
