"""The built-in providers' batch APIs (`provider.batch_api()`) through the official SDKs,
against the simulator as a real server on 127.0.0.1: Anthropic Message Batches, OpenAI
Files + Batches, Gemini batch mode with inlined requests.

Every batch is polled in a bounded loop (short pauses, against a simulator whose batches take
a few milliseconds), never waited on by a sleep of its own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from dagengine._structured import request_schema
from dagengine.errors import ProviderError
from dagengine.providers import build_provider
from dagengine.providers._batch import (
    BatchAPI,
    BatchLimits,
    BatchOutcome,
    BatchRequest,
    BatchStatus,
)
from dagengine.providers._sdk import SDKProvider
from dagengine.simulator import Simulator
from dagengine.types import ProviderRequest, ProviderResponse, TokenUsage

# google-genai subclasses aiohttp.ClientSession, which aiohttp warns about on first use.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Inheritance class AiohttpClientSession:DeprecationWarning"
)

KEY = "sk-test-batch-0123456789-SECRET-provider-key"
KINDS = ("anthropic", "openai", "gemini")
MODELS = {"anthropic": "claude-3-5-haiku-20241022", "openai": "gpt-4o-mini",
          "gemini": "gemini-2.0-flash"}
EMAILS = [
    "Team meeting tomorrow at 10 to review the Q3 budget and project deadline.",
    "CONGRATULATIONS WINNER! You won the lottery. Click here to claim your FREE prize now!",
    "Hi sweetie, Mom here. Are you coming to dinner this weekend for Dad's birthday?",
    "This week's newsletter: ten articles on gardening, and our unsubscribe link.",
]
PROMPT = (
    "Analyze this email quickly and categorize it.\n\nEmail: {email}\n\n"
    "Return ONLY valid JSON (no markdown):\n"
    '{{"category": "spam" | "work" | "personal" | "newsletter", "confidence": 0.95, '
    '"summary": "Brief one-line summary"}}'
)
DELAY = 0.02  # seconds a simulated batch takes: enough to be seen in progress


class EmailCategory(BaseModel):
    category: Literal["spam", "work", "personal", "newsletter"]
    confidence: float = Field(ge=0, le=1)
    summary: str


@pytest.fixture(autouse=True)
def _no_keys_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY",
                "ANTHROPIC_BASE_URL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(api_key=KEY, batch_delay=DELAY, cache_read_tokens=5,
                         cache_write_tokens=3, cache_min_tokens=1) as simulator:
        yield simulator


def base_url(sim: Simulator, kind: str) -> str:
    return {"anthropic": sim.base_url, "openai": sim.openai_base_url,
            "gemini": sim.gemini_base_url}[kind]


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., SDKProvider]]:
    """Providers from config dicts, closed when the test ends."""
    built: list[SDKProvider] = []

    def build(kind: str, sim: Simulator, **config: Any) -> SDKProvider:
        provider = build_provider(kind, {"api_key": KEY, "base_url": base_url(sim, kind),
                                         **config})
        assert isinstance(provider, SDKProvider)
        built.append(provider)
        return provider

    yield build
    for provider in built:
        await provider.aclose()


def batch_api(provider: SDKProvider) -> BatchAPI:
    api = provider.batch_api()
    assert api is not None
    return api


def email_request(kind: str, email: str, **options: Any) -> ProviderRequest:
    return ProviderRequest(input=PROMPT.format(email=email), dimension="analyze_email",
                           options={"model": MODELS[kind], "max_tokens": 200, **options})


def schema_request(kind: str, email: str) -> ProviderRequest:
    return ProviderRequest(input=f"Categorize this email.\n\nEmail: {email}",
                           dimension="categorize", output_schema=request_schema(EmailCategory),
                           options={"model": MODELS[kind], "max_tokens": 300})


def requests_for(kind: str) -> list[BatchRequest]:
    """One plain request per email, and one asking for the EmailCategory schema."""
    plain = [BatchRequest(f"s{i}-analyze_email", email_request(kind, email))
             for i, email in enumerate(EMAILS)]
    return [*plain, BatchRequest("s0-categorize", schema_request(kind, EMAILS[0]))]


async def done(api: BatchAPI, batch_id: str) -> BatchStatus:
    """Poll until the batch is done: a bounded loop with short pauses."""
    for _ in range(5000):
        status = await api.status(batch_id)
        if status.done:
            return status
        await asyncio.sleep(0.002)
    raise AssertionError(f"batch {batch_id} still not done after 5000 polls: {status!r}")


async def outcomes(api: BatchAPI, batch_id: str, custom_ids: list[str]) -> list[BatchOutcome]:
    return [outcome async for outcome in api.results(batch_id, custom_ids)]


def by_id(found: list[BatchOutcome]) -> dict[str, BatchOutcome]:
    return {outcome.custom_id: outcome for outcome in found}


def error_of(outcome: BatchOutcome) -> ProviderError:
    assert outcome.response is None and outcome.error is not None, outcome
    return outcome.error


def response_of(outcome: BatchOutcome) -> ProviderResponse:
    assert outcome.error is None and outcome.response is not None, outcome
    return outcome.response


# --- every provider: submit, poll, read back ------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_batch_answers_map_back_by_custom_id_as_the_online_answers(
    kind: str, sim: Simulator, make: Any
) -> None:
    provider = make(kind, sim)
    api = batch_api(provider)
    requests = requests_for(kind)
    online = {item.custom_id: await provider.execute(item.request) for item in requests}
    await sim.configure(batch_delay=1.0)  # long enough to see it in progress, on a busy box

    batch_id = await api.submit(requests)
    first = await api.status(batch_id)
    assert first.state == "in_progress" and not first.done
    assert (first.processing, first.succeeded) == (len(requests), 0)
    status = await done(api, batch_id)
    assert status.state == "ended"
    assert status.succeeded == len(requests) and status.errored == 0
    found = await outcomes(api, batch_id, [item.custom_id for item in requests])

    assert sorted(o.custom_id for o in found) == sorted(online)
    for custom_id, outcome in by_id(found).items():
        answer, expected = response_of(outcome), online[custom_id]
        assert answer.data == expected.data, custom_id
        tokens = answer.metadata["tokens"]
        assert isinstance(tokens, TokenUsage) and tokens.output_tokens > 0
        assert tokens == expected.metadata["tokens"]
        for key in ("model", "provider", "status_code", "finish_reason"):
            assert answer.metadata[key] == expected.metadata[key], (custom_id, key)
        assert answer.metadata["model"] == MODELS[kind]
        assert answer.metadata["batch_id"] == batch_id
    categorized = response_of(by_id(found)["s0-categorize"]).data
    assert EmailCategory.model_validate(categorized).category == "work"
    assert response_of(by_id(found)["s1-analyze_email"]).data["category"] == "spam"


@pytest.mark.parametrize("kind", KINDS)
async def test_batch_tokens_include_the_cache_tokens(kind: str, sim: Simulator,
                                                     make: Any) -> None:
    api = batch_api(make(kind, sim))
    batch_id = await api.submit(requests_for(kind)[:1])
    await done(api, batch_id)
    [outcome] = await outcomes(api, batch_id, ["s0-analyze_email"])
    tokens = response_of(outcome).metadata["tokens"]
    assert tokens.cache_read_tokens == 5
    # Only Anthropic reports what a request wrote to the cache.
    assert tokens.cache_write_tokens == (3 if kind == "anthropic" else 0)
    assert tokens.input_tokens > tokens.cache_read_tokens + tokens.cache_write_tokens


@pytest.mark.parametrize("kind", KINDS)
async def test_per_item_server_errors_come_back_retryable_with_their_status(
    kind: str, sim: Simulator, make: Any
) -> None:
    await sim.configure(batch_error_rate=1.0)
    api = batch_api(make(kind, sim))
    requests = requests_for(kind)
    batch_id = await api.submit(requests)
    status = await done(api, batch_id)
    assert status.state == "ended" and status.errored == len(requests)
    found = await outcomes(api, batch_id, [item.custom_id for item in requests])
    assert len(found) == len(requests)
    for outcome in found:
        error = error_of(outcome)
        assert error.status_code == 500 and error.retryable
        assert error.provider == kind and "simulated" in error.message
        assert KEY not in error.message


@pytest.mark.parametrize("kind", KINDS)
async def test_an_invalid_item_errors_alone_and_is_not_retried(kind: str, sim: Simulator,
                                                                make: Any) -> None:
    api = batch_api(make(kind, sim))
    good = BatchRequest("good", email_request(kind, EMAILS[0]))
    bad = email_request(kind, EMAILS[1], max_tokens=-5)  # the API refuses it, not the SDK
    batch_id = await api.submit([good, BatchRequest("bad", bad)])
    status = await done(api, batch_id)
    assert (status.succeeded, status.errored) == (1, 1)
    found = by_id(await outcomes(api, batch_id, ["good", "bad"]))
    assert response_of(found["good"]).data["category"] == "work"
    error = error_of(found["bad"])
    assert error.status_code == 400 and not error.retryable
    assert "must be a positive integer" in error.message


@pytest.mark.parametrize("kind", KINDS)
async def test_expired_batch_gives_each_unfinished_item_a_retryable_expired_error(
    kind: str, sim: Simulator, make: Any
) -> None:
    await sim.configure(batch_delay=0.05, batch_expire_after=0.01)
    api = batch_api(make(kind, sim))
    requests = requests_for(kind)
    batch_id = await api.submit(requests)
    status = await done(api, batch_id)
    assert status.state == "expired" and (status.succeeded, status.processing) == (0, 0)
    # Only Anthropic counts expired requests apart; OpenAI and Gemini count them failed.
    assert status.expired + status.errored == len(requests)
    assert status.expired == (len(requests) if kind == "anthropic" else 0)
    found = await outcomes(api, batch_id, [item.custom_id for item in requests])
    assert sorted(o.custom_id for o in found) == sorted(i.custom_id for i in requests)
    for outcome in found:
        error = error_of(outcome)
        assert error.retryable and "expired" in error.message


@pytest.mark.parametrize("kind", KINDS)
async def test_cancelled_batch_gives_each_unfinished_item_a_retryable_cancelled_error(
    kind: str, sim: Simulator, make: Any
) -> None:
    await sim.configure(batch_delay=600.0)
    api = batch_api(make(kind, sim))
    requests = requests_for(kind)
    batch_id = await api.submit(requests)
    assert (await api.status(batch_id)).state == "in_progress"
    await api.cancel(batch_id)
    status = await done(api, batch_id)
    assert status.state == "cancelled" and (status.succeeded, status.processing) == (0, 0)
    assert status.cancelled + status.errored == len(requests)
    assert status.cancelled == (len(requests) if kind == "anthropic" else 0)
    found = await outcomes(api, batch_id, [item.custom_id for item in requests])
    assert len(found) == len(requests)
    for outcome in found:
        error = error_of(outcome)
        assert error.retryable and "cancelled" in error.message


@pytest.mark.parametrize("kind", KINDS)
async def test_cancelling_a_batch_that_has_ended_leaves_its_results(
    kind: str, sim: Simulator, make: Any
) -> None:
    api = batch_api(make(kind, sim))
    batch_id = await api.submit([BatchRequest("s0", email_request(kind, EMAILS[0]))])
    await done(api, batch_id)
    await api.cancel(batch_id)
    assert (await api.status(batch_id)).state == "ended"
    [outcome] = await outcomes(api, batch_id, ["s0"])
    assert response_of(outcome).data["category"] == "work"
    with pytest.raises(ProviderError) as caught:
        await api.cancel(batch_id[:-3] + "zzz")  # no such batch: that is an error
    assert caught.value.status_code == 404


@pytest.mark.parametrize("kind", KINDS)
async def test_every_custom_id_comes_back_once_even_when_the_provider_has_none(
    kind: str, sim: Simulator, make: Any
) -> None:
    api = batch_api(make(kind, sim))
    batch_id = await api.submit([BatchRequest("asked", email_request(kind, EMAILS[2]))])
    await done(api, batch_id)
    found = await outcomes(api, batch_id, ["asked", "never-submitted"])
    assert [o.custom_id for o in found] == ["asked", "never-submitted"]
    assert response_of(found[0]).data["category"] == "personal"
    error = error_of(found[1])
    assert error.retryable and "missing" in error.message


@pytest.mark.parametrize("kind", KINDS)
async def test_stats_count_the_batch_and_bill_each_item_once(kind: str, sim: Simulator,
                                                             make: Any) -> None:
    api = batch_api(make(kind, sim))
    requests = requests_for(kind)
    batch_id = await api.submit(requests)
    await done(api, batch_id)
    await outcomes(api, batch_id, [item.custom_id for item in requests])
    stats = await sim.stats()
    assert stats["batches_created"] == 1
    assert stats["batch_items_billed"] == len(requests)
    assert stats["requests"] == 0  # nothing went to the online endpoints


@pytest.mark.parametrize("kind", KINDS)
async def test_batches_refuse_more_than_the_provider_limits_before_sending(
    kind: str, sim: Simulator, make: Any
) -> None:
    api = batch_api(make(kind, sim))
    requests = requests_for(kind)
    api.limits = BatchLimits(max_requests=2, max_bytes=10**6)
    with pytest.raises(ProviderError, match="at most 2 requests") as caught:
        await api.submit(requests)
    assert not caught.value.retryable
    size = sum(api.request_bytes(item) for item in requests)
    api.limits = BatchLimits(max_requests=100, max_bytes=size - 1)
    with pytest.raises(ProviderError, match=f"over the {size - 1:,} bytes"):
        await api.submit(requests)
    assert (await sim.stats())["batches_created"] == 0
    api.limits = BatchLimits(max_requests=len(requests), max_bytes=size)
    await api.submit(requests)  # exactly at both limits
    assert (await sim.stats())["batches_created"] == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_a_request_that_cannot_be_sent_refuses_the_batch_with_a_provider_error(
    kind: str, sim: Simulator, make: Any
) -> None:
    api = batch_api(make(kind, sim))
    odd = BatchRequest("odd", email_request(kind, EMAILS[0], temperature=object()))
    with pytest.raises(ProviderError) as caught:
        await api.submit([BatchRequest("fine", email_request(kind, EMAILS[1])), odd])
    assert not caught.value.retryable
    expected = "options not accepted" if kind == "gemini" else "a request is not JSON"
    assert expected in str(caught.value)
    with pytest.raises(ProviderError, match=expected):  # found while gathering, alone
        api.request_bytes(odd)
    no_model = BatchRequest("no-model", ProviderRequest(input="hi"))
    with pytest.raises(ProviderError, match="no model given"):
        await api.submit([no_model])
    with pytest.raises(ProviderError, match="no model given"):
        api.request_bytes(no_model)
    assert (await sim.stats())["batches_created"] == 0


async def test_anthropic_refuses_a_custom_id_its_api_would_refuse(sim: Simulator,
                                                                  make: Any) -> None:
    api = batch_api(make("anthropic", sim))
    fine = [BatchRequest(custom_id, email_request("anthropic", EMAILS[0]))
            for custom_id in ("s0-analyze_email", "x" * 64)]
    for custom_id in ("s0:analyze", "x" * 65, ""):
        with pytest.raises(ProviderError, match="does not fit") as caught:
            await api.submit([*fine, BatchRequest(custom_id, fine[0].request)])
        assert not caught.value.retryable
        with pytest.raises(ProviderError, match="does not fit"):
            api.request_bytes(BatchRequest(custom_id, fine[0].request))
    await api.submit(fine)
    assert (await sim.stats())["batches_created"] == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_request_bytes_measure_what_the_batch_sends(kind: str, sim: Simulator,
                                                          make: Any) -> None:
    api = batch_api(make(kind, sim))
    short, long = (BatchRequest("r", email_request(kind, text)) for text in ("a", "a" * 5000))
    assert api.request_bytes(long) - api.request_bytes(short) >= 4999
    assert api.request_bytes(short) > len(short.request.input)


@pytest.mark.parametrize("kind", KINDS)
async def test_batch_errors_and_reprs_never_show_the_api_key(kind: str, sim: Simulator,
                                                             make: Any) -> None:
    wrong = "sk-wrong-0123456789-SECRET-other-key"
    api = batch_api(make(kind, sim, api_key=wrong))
    with pytest.raises(ProviderError) as caught:
        await api.submit(requests_for(kind)[:1])
    assert caught.value.status_code == 401 and not caught.value.retryable
    for text in (str(caught.value), repr(caught.value), repr(api)):
        assert wrong not in text and KEY not in text


@pytest.mark.parametrize("kind", KINDS)
async def test_the_batch_client_is_made_once_and_closed_with_the_provider(
    kind: str, sim: Simulator, make: Any
) -> None:
    provider = make(kind, sim)
    api = batch_api(provider)
    assert provider.batch_api() is api
    batch_id = await api.submit(requests_for(kind)[:1])
    client = api.backend.open_client  # type: ignore[attr-defined]
    assert client is not None
    await api.status(batch_id)
    assert api.backend.open_client is client  # type: ignore[attr-defined]
    await provider.aclose()
    assert api.backend.open_client is None  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_batch_submitted_by_another_provider_object_reads_the_same(
    kind: str, sim: Simulator, make: Any
) -> None:
    """A resumed run re-attaches to a batch its predecessor submitted."""
    requests = requests_for(kind)
    custom_ids = [item.custom_id for item in requests]
    first = batch_api(make(kind, sim))
    batch_id = await first.submit(requests)
    await done(first, batch_id)
    expected = by_id(await outcomes(first, batch_id, custom_ids))
    later = batch_api(make(kind, sim))

    assert (await later.status(batch_id)).state == "ended"
    again = by_id(await outcomes(later, batch_id, custom_ids))
    for custom_id in custom_ids:
        assert response_of(again[custom_id]).data == response_of(expected[custom_id]).data
        assert (response_of(again[custom_id]).metadata["tokens"]
                == response_of(expected[custom_id]).metadata["tokens"])
    assert (await sim.stats())["batches_created"] == 1


@pytest.mark.parametrize("kind", ["openai", "gemini"])
async def test_a_batch_runs_one_model(kind: str, sim: Simulator, make: Any) -> None:
    api = batch_api(make(kind, sim))
    other = email_request(kind, EMAILS[1], model=MODELS[kind] + "-other")
    with pytest.raises(ProviderError, match="a batch runs one model") as caught:
        await api.submit([BatchRequest("a", email_request(kind, EMAILS[0])),
                          BatchRequest("b", other)])
    assert not caught.value.retryable


async def test_gemini_maps_inlined_responses_to_custom_ids_by_position(
    sim: Simulator, make: Any
) -> None:
    from google import genai
    from google.genai import types as genai_types

    options = genai_types.HttpOptions(base_url=sim.gemini_base_url,
                                      retry_options=genai_types.HttpRetryOptions(attempts=1))
    client = genai.Client(api_key=KEY, http_options=options)
    try:  # a batch whose requests carry no key: only their order maps them back
        job = await client.aio.batches.create(model=MODELS["gemini"], src=[
            genai_types.InlinedRequest(contents=PROMPT.format(email=email))
            for email in EMAILS])
    finally:
        await client.aio.aclose()
    assert job.name is not None
    api = batch_api(make("gemini", sim))
    await done(api, job.name)
    custom_ids = ["work", "spam", "personal", "newsletter"]
    found = await outcomes(api, job.name, custom_ids)
    assert [o.custom_id for o in found] == custom_ids
    assert [response_of(o).data["category"] for o in found] == custom_ids


async def test_openai_failed_batch_fails_every_item_with_the_reasons(
    sim: Simulator, make: Any
) -> None:
    import openai

    line = {"custom_id": "x", "method": "POST", "url": "/v1/embeddings", "body": {}}
    async with openai.AsyncOpenAI(api_key=KEY, base_url=sim.openai_base_url) as client:
        uploaded = await client.files.create(
            file=("bad.jsonl", json.dumps(line).encode() + b"\n"), purpose="batch")
        batch = await client.batches.create(input_file_id=uploaded.id,
                                            endpoint="/v1/chat/completions",
                                            completion_window="24h")
    api = batch_api(make("openai", sim))
    status = await done(api, batch.id)
    assert status.state == "failed" and status.error is not None
    assert "does not match the batch endpoint" in status.error
    [outcome] = await outcomes(api, batch.id, ["x"])
    error = error_of(outcome)
    assert not error.retryable and "does not match the batch endpoint" in error.message


async def test_a_provider_behind_a_gateway_has_no_batch_api(sim: Simulator) -> None:
    provider = build_provider("anthropic", {"api_key": KEY, "gateway": "portkey",
                                            "gateway_url": sim.base_url})
    assert provider.batch_api() is None


# --- the batch body is the online body -----------------------------------------------------


def options_for(kind: str) -> dict[str, Any]:
    return {"temperature": 0.2, "stop": ["\n\nEND"], "system": "You sort email."}


async def online_and_batch_bodies(
    kind: str, sim: Simulator, make: Any, request: ProviderRequest
) -> tuple[dict[str, Any], Any]:
    provider = make(kind, sim)
    await provider.execute(request)
    [online] = await sim.recent_requests()
    api = batch_api(provider)
    batch_id = await api.submit([BatchRequest("only", request)])
    return online["body"], (batch_id, api, (await sim.recent_requests())[1:])


@pytest.mark.parametrize("schema", [False, True], ids=["plain", "output_schema"])
async def test_anthropic_batch_params_are_the_online_body(sim: Simulator, make: Any,
                                                          schema: bool) -> None:
    request = (schema_request if schema else email_request)("anthropic", EMAILS[0])
    request = request.model_copy(update={"options": {**request.options,
                                                     **options_for("anthropic")}})
    online, (_, _, logged) = await online_and_batch_bodies("anthropic", sim, make, request)
    [created] = logged
    assert created["path"] == "/v1/messages/batches"
    assert created["body"]["requests"] == [{"custom_id": "only", "params": online}]
    assert online["system"] == "You sort email." and online["stop_sequences"] == ["\n\nEND"]
    assert ("tools" in online) is schema


@pytest.mark.parametrize("schema", [False, True], ids=["plain", "output_schema"])
async def test_openai_batch_lines_are_the_online_body(sim: Simulator, make: Any,
                                                      schema: bool) -> None:
    import openai

    request = (schema_request if schema else email_request)("openai", EMAILS[0])
    request = request.model_copy(update={"options": {**request.options,
                                                     **options_for("openai")}})
    online, (batch_id, _, _) = await online_and_batch_bodies("openai", sim, make, request)
    async with openai.AsyncOpenAI(api_key=KEY, base_url=sim.openai_base_url) as client:
        batch = await client.batches.retrieve(batch_id)
        content = await client.files.content(batch.input_file_id)
    [line] = [json.loads(text) for text in content.text.splitlines()]
    assert line == {"custom_id": "only", "method": "POST", "url": "/v1/chat/completions",
                    "body": online}
    assert ("response_format" in online) is schema


@pytest.mark.parametrize("schema", [False, True], ids=["plain", "output_schema"])
async def test_gemini_inlined_requests_are_the_online_body(sim: Simulator, make: Any,
                                                           schema: bool) -> None:
    request = (schema_request if schema else email_request)("gemini", EMAILS[0])
    request = request.model_copy(update={"options": {**request.options,
                                                     **options_for("gemini")}})
    online, (_, _, logged) = await online_and_batch_bodies("gemini", sim, make, request)
    [created] = logged
    assert created["path"].endswith(f"/models/{MODELS['gemini']}:batchGenerateContent")
    [inlined] = created["body"]["batch"]["inputConfig"]["requests"]["requests"]
    assert inlined["request"] == online
    assert inlined["metadata"] == {"key": "only"}
    assert ("responseJsonSchema" in online["generationConfig"]) is schema
