"""Portkey's own pools through `gateway_config`: a dagengine plugin run through the real
open-source gateway with `strategy: loadbalance` and `fallback` configs, against simulators
that count each API key's requests."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from conftest import SimplePlugin
from dagengine import DagEngine, ProcessResult
from dagengine.errors import ConfigurationError
from dagengine.gateway import LocalGateway
from dagengine.providers import build_provider
from dagengine.providers._sdk import SDKProvider
from dagengine.providers.portkey import DEFAULT_RETRY, portkey_headers, with_default_retry
from dagengine.simulator import BaseSimulator, Simulator, key_fingerprint

ENTRY_KEY = "sk-ant-entry-key-000000"  # the provider entry's own key: targets carry theirs
KEY_A = "sk-ant-pool-a-111111111"
KEY_B = "sk-ant-pool-b-222222222"
OPTIONS = {"model": "claude-3-5-haiku-20241022", "max_tokens": 100}


def through_gateway(gateway: LocalGateway, config: dict[str, Any], **extra: Any) -> DagEngine:
    plugin = SimplePlugin(["classify"], provider="anthropic", options=OPTIONS)
    provider = {"api_key": ENTRY_KEY, "gateway": "portkey", "gateway_url": gateway.url,
                "gateway_config": config, **extra}
    return DagEngine(plugin, providers={"anthropic": provider}, execution={"concurrency": 20})


def all_ok(result: ProcessResult) -> bool:
    return all(section.results["classify"].ok for section in result.sections)


def target(key: str, sim: BaseSimulator | None = None, **extra: Any) -> dict[str, Any]:
    host = {} if sim is None else {"custom_host": f"{sim.base_url}/v1"}
    return {"provider": "anthropic", "api_key": key, **host, **extra}


def by_key(stats: dict[str, Any], key: str) -> dict[str, Any]:
    counts: dict[str, Any] = stats["keys"].get(key_fingerprint(key), {"requests": 0})
    return counts


@pytest.mark.gateway
async def test_a_loadbalance_config_splits_the_calls_by_its_weights(
    portkey_gateway: LocalGateway,
) -> None:
    config = {"strategy": {"mode": "loadbalance"},
              "targets": [target(KEY_A, weight=3), target(KEY_B, weight=1)]}
    calls = 400
    async with Simulator() as sim:
        # base_url becomes the gateway's custom host, which every target then goes to.
        engine = through_gateway(portkey_gateway, config, base_url=sim.base_url)
        result = await engine.process([f"email {i}" for i in range(calls)])
        stats = await sim.stats()

    assert all_ok(result)
    a, b = by_key(stats, KEY_A)["requests"], by_key(stats, KEY_B)["requests"]
    assert a + b == calls == stats["requests"]
    # The gateway draws each call's target at random: A's count is Binomial(400, 3/4).
    sigma = math.sqrt(calls * 0.75 * 0.25)
    assert abs(a - 0.75 * calls) <= 4 * sigma, (a, b)
    assert by_key(stats, ENTRY_KEY)["requests"] == 0


@pytest.mark.gateway
@pytest.mark.parametrize("failure", ["error_429_rate", "error_503_rate"])
async def test_a_fallback_config_serves_from_the_second_target_when_the_first_fails(
    portkey_gateway: LocalGateway, failure: str
) -> None:
    async with Simulator(**{failure: 1.0}) as first, Simulator() as second:
        config = {"strategy": {"mode": "fallback", "on_status_codes": [429, 503]},
                  "targets": [target(KEY_A, first), target(KEY_B, second)]}
        result = await through_gateway(portkey_gateway, config).process(
            [f"email {i}" for i in range(20)])
        failed, served = await first.stats(), await second.stats()

    assert all_ok(result)
    status = "429" if failure == "error_429_rate" else "503"
    # One request each: no retry holds the fallback back (see with_default_retry).
    assert failed["responses_by_status"] == {status: 20}
    assert by_key(failed, KEY_A)["requests"] == 20
    assert served["responses_by_status"] == {"200": 20}
    assert by_key(served, KEY_B)["successes"] == 20


@pytest.mark.gateway
async def test_the_last_fallback_target_keeps_the_default_retry(
    portkey_gateway: LocalGateway,
) -> None:
    async with Simulator(error_429_rate=1.0) as first, Simulator(script=[429]) as last:
        config = {"strategy": {"mode": "fallback"},
                  "targets": [target(KEY_A, first), target(KEY_B, last)]}
        result = await through_gateway(portkey_gateway, config).process(["one email"])
        failed, served = await first.stats(), await last.stats()

    assert all_ok(result)
    assert failed["requests"] == 1
    assert served["responses_by_status"] == {"200": 1, "429": 1}  # retried by the gateway


def test_the_default_retry_goes_where_the_gateway_uses_it() -> None:
    leaf = {"provider": "anthropic", "api_key": KEY_A}
    retry = {"attempts": 1}

    assert with_default_retry({}) == {"retry": DEFAULT_RETRY}
    assert with_default_retry({"retry": retry, "targets": [leaf]}) == {
        "retry": retry, "targets": [leaf]}
    balanced = with_default_retry({"strategy": {"mode": "loadbalance"},
                                   "targets": [leaf, {**leaf, "retry": retry}]})
    assert [t["retry"] for t in balanced["targets"]] == [DEFAULT_RETRY, retry]
    assert "retry" not in balanced
    fallback = with_default_retry({"strategy": {"mode": "fallback"},
                                   "targets": [leaf, {"strategy": {"mode": "loadbalance"},
                                                      "targets": [leaf, leaf]}]})
    assert "retry" not in fallback and "retry" not in fallback["targets"][0]
    assert [t["retry"] for t in fallback["targets"][1]["targets"]] == [DEFAULT_RETRY] * 2


def test_the_sent_config_is_the_pool_with_the_default_retry_and_the_keys_stay_out_of_repr() -> None:
    config = {"strategy": {"mode": "fallback"}, "targets": [target(KEY_A), target(KEY_B)]}
    provider = build_provider("anthropic", {"api_key": ENTRY_KEY, "gateway": "portkey",
                                            "gateway_url": "http://127.0.0.1:1/v1",
                                            "gateway_config": config})
    assert isinstance(provider, SDKProvider)
    headers = portkey_headers("anthropic", provider.settings)

    sent = json.loads(headers["x-portkey-config"])
    assert sent["targets"] == [target(KEY_A), {**target(KEY_B), "retry": DEFAULT_RETRY}]
    assert "x-portkey-custom-host" not in headers
    assert KEY_A not in repr(provider) and KEY_B not in repr(provider)


@pytest.mark.parametrize("where", [{"base_url": "http://127.0.0.1:9/"},
                                   {"gateway_custom_host": "http://127.0.0.1:9/v1"}])
def test_targets_with_their_own_host_and_a_base_url_are_refused(where: dict[str, str]) -> None:
    config = {"strategy": {"mode": "loadbalance"},
              "targets": [{"strategy": {"mode": "fallback"},
                           "targets": [{**target(KEY_A), "custom_host": "http://127.0.0.1:8/v1"}]}]}

    with pytest.raises(ConfigurationError, match="name their own custom_host") as caught:
        build_provider("anthropic", {"api_key": ENTRY_KEY, "gateway": "portkey",
                                     "gateway_url": "http://127.0.0.1:1/v1",
                                     "gateway_config": config, **where})
    assert KEY_A not in str(caught.value) and ENTRY_KEY not in str(caught.value)
