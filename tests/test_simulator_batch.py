"""The simulator's batch APIs, through the official SDKs: Anthropic Message Batches, OpenAI
Files + Batches, Gemini batch mode with inlined requests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import anthropic
import openai
import pytest
from google import genai
from google.genai import types as genai_types

from dagengine.errors import ValidationError
from dagengine.simulator import BaseSimulator, Simulator, SimulatorConfig, SimulatorProcess
from dagengine.simulator._batch import Batches, BatchRequest
from dagengine.simulator._cli import build_parser, config_to_argv
from dagengine.simulator._wire import Prompt, Reply

T = TypeVar("T")

SECTIONS = [
    "Subject: Q3 review. The client meeting about the quarterly report moved to Thursday.",
    "CONGRATULATIONS WINNER! You won the lottery. Click here to claim your FREE prize now!",
    "Hi sweetie, Mom here. Are you coming to dinner this weekend for Dad's birthday?",
]
EMAIL_PROMPT = "Categorize this email as spam, work, personal or newsletter.\n\nEmail: {email}"


def anthropic_params(text: str, max_tokens: int = 200) -> dict[str, Any]:
    return {
        "model": "claude-sim",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": text}],
    }


def openai_body(text: str, model: str = "gpt-sim") -> dict[str, Any]:
    return {"model": model, "max_tokens": 200, "messages": [{"role": "user", "content": text}]}


def jsonl(tasks: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(task).encode() + b"\n" for task in tasks)


def openai_task(custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


async def poll(fetch: Callable[[], Awaitable[T]], done: Callable[[T], bool]) -> T:
    """Retrieve until `done`: a bounded loop, never a sleep (delays here are 0 or ~1 ms)."""
    for _ in range(2000):
        value = await fetch()
        if done(value):
            return value
    raise AssertionError(f"still not done after 2000 polls: {value!r}")


class Clients:
    """SDK clients pointed at a simulator; all closed when the test ends."""

    def __init__(self) -> None:
        self.opened: list[anthropic.AsyncAnthropic | openai.AsyncOpenAI | genai.Client] = []

    def claude(self, sim: BaseSimulator, api_key: str = "sim") -> anthropic.AsyncAnthropic:
        client = anthropic.AsyncAnthropic(base_url=sim.base_url, api_key=api_key, max_retries=0)
        self.opened.append(client)
        return client

    def gpt(self, sim: BaseSimulator, api_key: str = "sim") -> openai.AsyncOpenAI:
        client = openai.AsyncOpenAI(base_url=sim.openai_base_url, api_key=api_key, max_retries=0)
        self.opened.append(client)
        return client

    def gemini(self, sim: BaseSimulator, api_key: str = "sim") -> genai.Client:
        options = genai_types.HttpOptions(
            base_url=sim.gemini_base_url, retry_options=genai_types.HttpRetryOptions(attempts=1)
        )
        client = genai.Client(api_key=api_key, http_options=options)
        self.opened.append(client)
        return client

    async def close(self) -> None:
        for client in self.opened:
            await (client.aio.aclose() if isinstance(client, genai.Client) else client.close())


@pytest.fixture
async def sdk() -> AsyncIterator[Clients]:
    clients = Clients()
    yield clients
    await clients.close()


# --- Anthropic Message Batches -------------------------------------------------------------


async def anthropic_results(
    client: anthropic.AsyncAnthropic, batch_id: str
) -> dict[str, anthropic.types.messages.MessageBatchIndividualResponse]:
    return {line.custom_id: line async for line in await client.messages.batches.results(batch_id)}


async def test_anthropic_batch_answers_equal_the_online_answers(sdk: Clients) -> None:
    async with Simulator() as sim:
        claude = sdk.claude(sim)
        prompts = {f"s{i}-categorize": EMAIL_PROMPT.format(email=e) for i, e in enumerate(SECTIONS)}
        created = await claude.messages.batches.create(
            requests=[{"custom_id": c, "params": anthropic_params(p)} for c, p in prompts.items()]
        )
        assert created.processing_status == "in_progress" and created.results_url is None
        assert created.request_counts.processing == 3
        ended = await poll(
            lambda: claude.messages.batches.retrieve(created.id),
            lambda b: b.processing_status == "ended",
        )
        assert ended.request_counts.succeeded == 3 and ended.ended_at is not None
        assert ended.results_url == f"{sim.base_url}/v1/messages/batches/{created.id}/results"
        results = await anthropic_results(claude, created.id)
        assert set(results) == set(prompts)
        for custom_id, prompt in prompts.items():
            online = await claude.messages.create(**anthropic_params(prompt))
            result = results[custom_id].result
            assert isinstance(result, anthropic.types.messages.MessageBatchSucceededResult)
            assert result.message.content == online.content
            assert result.message.usage.input_tokens == online.usage.input_tokens
            assert result.message.usage.output_tokens == online.usage.output_tokens
        assert (
            json.loads(results["s1-categorize"].result.message.content[0].text)["category"]
            == "spam"
        )


async def test_anthropic_batch_stays_in_progress_until_its_delay_has_passed(sdk: Clients) -> None:
    async with Simulator(batch_delay=3600) as sim:
        claude = sdk.claude(sim)
        created = await claude.messages.batches.create(
            requests=[{"custom_id": "a", "params": anthropic_params("hi")}]
        )
        batch = await claude.messages.batches.retrieve(created.id)
        assert batch.processing_status == "in_progress" and batch.request_counts.processing == 1
        with pytest.raises(anthropic.AnthropicError, match="No `results_url`"):
            await claude.messages.batches.results(created.id)
        stats = await sim.stats()
        assert stats["batch_items_billed"] == 0
        assert stats["batches_by_status"]["anthropic"] == {"in_progress": 1}


async def test_anthropic_per_item_errors_end_errored_with_a_reason(sdk: Clients) -> None:
    async with Simulator(batch_error_rate=1.0) as sim:
        claude = sdk.claude(sim)
        bad = {"model": "claude-sim", "messages": [{"role": "user", "content": "no max_tokens"}]}
        created = await claude.messages.batches.create(
            requests=[
                {"custom_id": "ok-shape", "params": anthropic_params("hello")},
                {"custom_id": "bad-shape", "params": bad},
            ]
        )
        batch = await poll(
            lambda: claude.messages.batches.retrieve(created.id),
            lambda b: b.processing_status == "ended",
        )
        assert batch.request_counts.errored == 2
        results = await anthropic_results(claude, created.id)
        server, invalid = results["ok-shape"].result, results["bad-shape"].result
        assert isinstance(server, anthropic.types.messages.MessageBatchErroredResult)
        assert isinstance(invalid, anthropic.types.messages.MessageBatchErroredResult)
        assert server.error.error.type == "api_error"
        assert invalid.error.error.type == "invalid_request_error"
        assert "max_tokens" in invalid.error.error.message
        assert (await sim.stats())["batch_items_billed"] == 0


async def test_anthropic_cancelled_batch_ends_with_its_requests_canceled(sdk: Clients) -> None:
    async with Simulator(batch_delay=3600) as sim:
        claude = sdk.claude(sim)
        created = await claude.messages.batches.create(
            requests=[
                {"custom_id": f"c{i}", "params": anthropic_params(f"item {i}")} for i in range(3)
            ]
        )
        canceling = await claude.messages.batches.cancel(created.id)
        assert canceling.processing_status == "canceling"
        assert canceling.cancel_initiated_at is not None
        ended = await claude.messages.batches.retrieve(created.id)
        assert ended.processing_status == "ended" and ended.request_counts.canceled == 3
        results = await anthropic_results(claude, created.id)
        assert {r.result.type for r in results.values()} == {"canceled"}
        stats = await sim.stats()
        assert stats["batch_items_billed"] == 0
        assert stats["batch_items_by_result"]["canceled"] == 3


async def test_anthropic_batch_past_its_completion_window_ends_expired(sdk: Clients) -> None:
    async with Simulator(batch_delay=3600, batch_expire_after=0.001) as sim:
        claude = sdk.claude(sim)
        created = await claude.messages.batches.create(
            requests=[{"custom_id": "late", "params": anthropic_params("hello")}]
        )
        batch = await poll(
            lambda: claude.messages.batches.retrieve(created.id),
            lambda b: b.processing_status == "ended",
        )
        assert batch.request_counts.expired == 1
        assert (await anthropic_results(claude, created.id))["late"].result.type == "expired"


async def test_anthropic_list_pages_newest_first(sdk: Clients) -> None:
    async with Simulator() as sim:
        claude = sdk.claude(sim)
        ids = []
        for i in range(3):
            batch = await claude.messages.batches.create(
                requests=[{"custom_id": "x", "params": anthropic_params(f"n {i}")}]
            )
            ids.append(batch.id)
        page = await claude.messages.batches.list(limit=2)
        assert [b.id for b in page.data] == [ids[2], ids[1]] and page.has_more
        assert [b.id async for b in await claude.messages.batches.list(limit=2)] == ids[::-1]
        before = await claude.messages.batches.list(before_id=ids[1])
        assert [b.id for b in before.data] == [ids[2]] and not before.has_more


async def test_anthropic_refuses_batches_over_its_limits(sdk: Clients) -> None:
    async with Simulator() as sim:
        claude = sdk.claude(sim)
        small = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}
        too_many: Any = [{"custom_id": f"r{i}", "params": small} for i in range(100_001)]
        # Plain HTTP for the 100,001: the SDK deep-copies every request first (seconds of CPU).
        async with aiohttp.ClientSession() as http:
            url = f"{sim.base_url}/v1/messages/batches"
            async with http.post(url, json={"requests": too_many}) as response:
                assert response.status == 400
                error = (await response.json())["error"]
        assert error["type"] == "invalid_request_error"
        assert "at most 100000 requests" in error["message"]
        duplicated: Any = [too_many[0]] * 2
        with pytest.raises(anthropic.BadRequestError, match="used more than once"):
            await claude.messages.batches.create(requests=duplicated)
        await sim.configure(batch_max_requests=2)
        accepted = await claude.messages.batches.create(requests=too_many[:2])
        with pytest.raises(anthropic.BadRequestError, match="at most 2 requests"):
            await claude.messages.batches.create(requests=too_many[:3])
        await sim.configure(batch_max_bytes=10_000)
        big = [{"custom_id": "big", "params": anthropic_params("x" * 20_000)}]
        with pytest.raises(anthropic.APIStatusError) as too_large:
            await claude.messages.batches.create(requests=big)
        assert too_large.value.status_code == 413
        assert too_large.value.body["error"]["type"] == "request_too_large"
        assert (await sim.stats())["batches_created"] == 1
        assert accepted.request_counts.processing == 2


# --- OpenAI Files + Batches ----------------------------------------------------------------


async def openai_lines(client: openai.AsyncOpenAI, file_id: str | None) -> dict[str, Any]:
    assert file_id is not None
    content = await client.files.content(file_id)
    return {line["custom_id"]: line for line in map(json.loads, content.text.splitlines())}


async def openai_batch(client: openai.AsyncOpenAI, tasks: list[dict[str, Any]]) -> str:
    upload = await client.files.create(file=("requests.jsonl", jsonl(tasks)), purpose="batch")
    assert upload.purpose == "batch" and upload.bytes == len(jsonl(tasks))
    batch = await client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert batch.status == "validating" and batch.input_file_id == upload.id
    return batch.id


async def test_openai_batch_output_file_equals_the_online_answers(sdk: Clients) -> None:
    async with Simulator() as sim:
        gpt = sdk.gpt(sim)
        prompts = {f"s{i}": EMAIL_PROMPT.format(email=e) for i, e in enumerate(SECTIONS)}
        batch_id = await openai_batch(
            gpt, [openai_task(c, openai_body(p)) for c, p in prompts.items()]
        )
        batch = await poll(
            lambda: gpt.batches.retrieve(batch_id), lambda b: b.status == "completed"
        )
        assert batch.request_counts is not None and batch.request_counts.completed == 3
        assert batch.error_file_id is None and batch.completed_at is not None
        output = await openai_lines(gpt, batch.output_file_id)
        assert set(output) == set(prompts)
        for custom_id, prompt in prompts.items():
            online = await gpt.chat.completions.create(**openai_body(prompt))
            line = output[custom_id]
            assert line["response"]["status_code"] == 200 and line["error"] is None
            body = line["response"]["body"]
            assert body["choices"][0]["message"]["content"] == online.choices[0].message.content
            assert body["usage"]["prompt_tokens"] == online.usage.prompt_tokens
            assert body["usage"]["completion_tokens"] == online.usage.completion_tokens
        assert batch.usage is not None
        assert batch.usage.input_tokens == sum(
            o["response"]["body"]["usage"]["prompt_tokens"] for o in output.values()
        )
        output_file = await gpt.files.retrieve(batch.output_file_id)
        assert output_file.purpose == "batch_output"


async def test_openai_per_item_errors_go_to_the_error_file(sdk: Clients) -> None:
    async with Simulator(batch_error_rate=1.0) as sim:
        gpt = sdk.gpt(sim)
        no_messages = {"model": "gpt-sim"}
        tasks = [openai_task("fine", openai_body("hello")), openai_task("broken", no_messages)]
        batch_id = await openai_batch(gpt, tasks)
        batch = await poll(
            lambda: gpt.batches.retrieve(batch_id), lambda b: b.status == "completed"
        )
        assert batch.request_counts is not None
        assert (batch.request_counts.completed, batch.request_counts.failed) == (0, 2)
        assert batch.output_file_id is None
        errors = await openai_lines(gpt, batch.error_file_id)
        assert errors["fine"]["response"]["status_code"] == 500
        assert errors["broken"]["response"]["status_code"] == 400
        assert "messages" in errors["broken"]["response"]["body"]["error"]["message"]


async def test_openai_expired_requests_end_with_batch_expired(sdk: Clients) -> None:
    async with Simulator(batch_expire_rate=1.0) as sim:
        gpt = sdk.gpt(sim)
        batch_id = await openai_batch(gpt, [openai_task("a", openai_body("x"))])
        batch = await poll(lambda: gpt.batches.retrieve(batch_id), lambda b: b.status == "expired")
        assert batch.expired_at is not None and batch.output_file_id is None
        line = (await openai_lines(gpt, batch.error_file_id))["a"]
        assert line["response"] is None and line["error"]["code"] == "batch_expired"


async def test_openai_cancelled_batch_keeps_nothing_unfinished(sdk: Clients) -> None:
    async with Simulator(batch_delay=3600) as sim:
        gpt = sdk.gpt(sim)
        batch_id = await openai_batch(
            gpt, [openai_task(f"c{i}", openai_body(f"{i}")) for i in range(2)]
        )
        assert (await gpt.batches.retrieve(batch_id)).status == "in_progress"
        cancelling = await gpt.batches.cancel(batch_id)
        assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
        batch = await gpt.batches.retrieve(batch_id)
        assert batch.status == "cancelled" and batch.cancelled_at is not None
        errors = await openai_lines(gpt, batch.error_file_id)
        assert {line["error"]["code"] for line in errors.values()} == {"batch_cancelled"}
        with pytest.raises(openai.BadRequestError, match="Cannot cancel a batch with status"):
            await gpt.batches.cancel(batch_id)


async def test_openai_input_file_that_fails_validation_fails_the_batch(sdk: Clients) -> None:
    async with Simulator() as sim:
        gpt = sdk.gpt(sim)
        tasks = [
            openai_task("a", openai_body("one")),
            openai_task("a", openai_body("two")),
            openai_task("b", openai_body("three", model="other-model")),
            {**openai_task("c", openai_body("four")), "url": "/v1/embeddings"},
        ]
        batch_id = await openai_batch(gpt, tasks)
        batch = await gpt.batches.retrieve(batch_id)
        assert batch.status == "failed" and batch.failed_at is not None
        assert batch.errors is not None and batch.errors.data is not None
        found = {(e.code, e.line) for e in batch.errors.data}
        assert found == {("duplicate_custom_id", 2), ("model_mismatch", 3), ("url_mismatch", 4)}
        assert (await sim.stats())["batch_items_submitted"] == 0


async def test_openai_refuses_files_and_batches_over_its_limits(sdk: Clients) -> None:
    async with Simulator() as sim:
        gpt = sdk.gpt(sim)
        too_many = [openai_task(f"r{i}", openai_body("x")) for i in range(50_001)]
        batch = await gpt.batches.retrieve(await openai_batch(gpt, too_many))
        assert batch.status == "failed" and batch.errors is not None
        assert [e.code for e in batch.errors.data or []] == ["too_many_tasks"]
        with pytest.raises(openai.BadRequestError, match=r"Must be \.jsonl"):
            await gpt.files.create(file=("requests.txt", b"{}"), purpose="batch")
        await sim.configure(batch_max_bytes=1_000)
        with pytest.raises(openai.BadRequestError, match="File is too large"):
            await gpt.files.create(file=("big.jsonl", b"x" * 1_001), purpose="batch")
        with pytest.raises(openai.NotFoundError):
            await gpt.batches.create(
                input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
            )


async def test_openai_batches_list_pages_newest_first(sdk: Clients) -> None:
    async with Simulator() as sim:
        gpt = sdk.gpt(sim)
        ids = [await openai_batch(gpt, [openai_task("x", openai_body(f"{i}"))]) for i in range(3)]
        page = await gpt.batches.list(limit=2)
        assert [b.id for b in page.data] == [ids[2], ids[1]] and page.has_more
        assert [b.id async for b in await gpt.batches.list(limit=2)] == ids[::-1]


# --- Gemini batch mode ---------------------------------------------------------------------


def gemini_request(text: str, key: str | None = None) -> genai_types.InlinedRequest:
    config = genai_types.GenerateContentConfig(
        system_instruction="Be brief.", max_output_tokens=200
    )
    metadata = {"key": key} if key is not None else None
    return genai_types.InlinedRequest(contents=text, config=config, metadata=metadata)


async def gemini_done(client: genai.Client, name: str | None) -> genai_types.BatchJob:
    assert name is not None
    return await poll(lambda: client.aio.batches.get(name=name), lambda job: job.done)


async def test_gemini_batch_inlined_responses_equal_the_online_answers(sdk: Clients) -> None:
    async with Simulator() as sim:
        gemini = sdk.gemini(sim)
        prompts = [EMAIL_PROMPT.format(email=e) for e in SECTIONS]
        created = await gemini.aio.batches.create(
            model="gemini-sim",
            src=[gemini_request(p, key=f"s{i}") for i, p in enumerate(prompts)],
            config={"display_name": "emails"},
        )
        assert created.state == genai_types.JobState.JOB_STATE_PENDING
        assert created.name is not None and created.name.startswith("batches/")
        assert (created.display_name, created.model) == ("emails", "models/gemini-sim")
        job = await gemini_done(gemini, created.name)
        assert job.state == genai_types.JobState.JOB_STATE_SUCCEEDED and job.end_time is not None
        assert job.dest is not None and job.dest.inlined_responses is not None
        responses = job.dest.inlined_responses
        assert [r.metadata for r in responses] == [{"key": f"s{i}"} for i in range(3)]
        for prompt, inlined in zip(prompts, responses, strict=True):
            online = await gemini.aio.models.generate_content(
                model="gemini-sim", contents=prompt, config=gemini_request(prompt).config
            )
            assert inlined.response is not None and inlined.error is None
            assert inlined.response.text == online.text
            assert inlined.response.usage_metadata == online.usage_metadata


async def test_gemini_per_item_errors_carry_a_code_and_a_message(sdk: Clients) -> None:
    async with Simulator(batch_error_rate=1.0) as sim:
        gemini = sdk.gemini(sim)
        created = await gemini.aio.batches.create(model="gemini-sim", src=[gemini_request("hi")])
        job = await gemini_done(gemini, created.name)
        assert job.state == genai_types.JobState.JOB_STATE_SUCCEEDED
        [inlined] = job.dest.inlined_responses
        assert inlined.response is None and inlined.error is not None
        assert inlined.error.code == 13 and "simulated" in (inlined.error.message or "")


async def test_gemini_cancelled_and_expired_jobs_end_in_their_states(sdk: Clients) -> None:
    async with Simulator(batch_delay=3600) as sim:
        gemini = sdk.gemini(sim)
        created = await gemini.aio.batches.create(model="gemini-sim", src=[gemini_request("hi")])
        assert created.name is not None
        running = await gemini.aio.batches.get(name=created.name)
        assert running.state == genai_types.JobState.JOB_STATE_RUNNING and not running.done
        await gemini.aio.batches.cancel(name=created.name)
        job = await gemini_done(gemini, created.name)
        assert job.state == genai_types.JobState.JOB_STATE_CANCELLED
        assert job.dest.inlined_responses[0].error.code == 1
        with pytest.raises(genai.errors.ClientError, match="FAILED_PRECONDITION"):
            await gemini.aio.batches.cancel(name=created.name)
        await sim.configure(batch_expire_rate=1.0, batch_delay=0)
        expiring = await gemini.aio.batches.create(model="gemini-sim", src=[gemini_request("x")])
        expired = await gemini_done(gemini, expiring.name)
        assert expired.state == genai_types.JobState.JOB_STATE_EXPIRED
        assert expired.dest.inlined_responses[0].error.code == 4


async def test_gemini_list_pages_and_the_v1beta_paths_work(sdk: Clients) -> None:
    async with Simulator() as sim:
        gemini = sdk.gemini(sim)
        names = []
        for i in range(3):
            job = await gemini.aio.batches.create(model="gemini-sim", src=[gemini_request(f"{i}")])
            names.append(job.name)
        pager = await gemini.aio.batches.list(config={"page_size": 2})
        assert [job.name for job in pager.page] == names[:0:-1]
        assert [job.name async for job in pager] == names[::-1]
        async with aiohttp.ClientSession(headers={"x-goog-api-key": "sim"}) as http:
            url = f"{sim.base_url}/v1beta/{names[0]}"
            async with http.get(url) as response:
                assert response.status == 200
                assert (await response.json())["metadata"]["state"] == "BATCH_STATE_SUCCEEDED"


async def test_gemini_refuses_inlined_requests_over_its_size_limit(sdk: Clients) -> None:
    async with Simulator(batch_max_bytes=5_000) as sim:
        with pytest.raises(genai.errors.ClientError, match="exceeds the limit: 5000 bytes"):
            await sdk.gemini(sim).aio.batches.create(
                model="gemini-sim", src=[gemini_request("x" * 6_000)]
            )


# --- shared behaviour ----------------------------------------------------------------------


async def test_batch_endpoints_check_the_api_key(sdk: Clients) -> None:
    async with Simulator(api_key="right") as sim:
        with pytest.raises(anthropic.AuthenticationError):
            await sdk.claude(sim, api_key="wrong").messages.batches.list()
        with pytest.raises(openai.AuthenticationError):
            await sdk.gpt(sim, api_key="wrong").batches.list()
        with pytest.raises(genai.errors.ClientError) as gemini_error:
            await sdk.gemini(sim, api_key="wrong").aio.batches.list()
        assert gemini_error.value.code == 401
        assert (await sdk.gpt(sim, api_key="right").batches.list()).data == []


async def test_stats_count_batches_items_and_billing_per_custom_id(sdk: Clients) -> None:
    async with Simulator(batch_error_rate=0.5, seed=7) as sim:
        claude = sdk.claude(sim)
        requests: Any = [
            {"custom_id": f"s{i}-dim", "params": anthropic_params(f"section {i}")}
            for i in range(20)
        ]
        first = await claude.messages.batches.create(requests=requests)
        done = await poll(
            lambda: claude.messages.batches.retrieve(first.id),
            lambda b: b.processing_status == "ended",
        )
        failed = [r.custom_id for r in (await anthropic_results(claude, first.id)).values()
                  if r.result.type == "errored"]  # fmt: skip
        assert 0 < len(failed) < 20 and done.request_counts.errored == len(failed)
        # Resubmitting what failed, as an engine retries, until every section is billed once.
        rounds = 0
        while failed:
            rounds += 1
            again = await claude.messages.batches.create(
                requests=[r for r in requests if r["custom_id"] in failed]
            )
            results = await anthropic_results(claude, again.id)
            failed = [c for c, r in results.items() if r.result.type == "errored"]
            assert rounds < 20
        stats = await sim.stats()
        assert stats["batches_created"] == 1 + rounds
        assert stats["batch_items_billed"] == 20
        assert stats["batch_billed_by_custom_id"] == {f"s{i}-dim": 1 for i in range(20)}
        assert stats["batches_by_status"] == {
            "anthropic": {"ended": 1 + rounds}, "openai": {}, "gemini": {}
        }  # fmt: skip
        assert stats["batch_items_submitted"] == 20 + stats["batch_items_by_result"]["errored"]
        assert stats["batch_models"]["claude-sim"]["items_billed"] == 20
        assert stats["batch_input_tokens"] == stats["batch_models"]["claude-sim"]["input_tokens"]
        assert stats["requests"] == 0  # batch traffic is counted apart from online requests
        assert stats["batch_requests"]["anthropic"] >= 2 + 2 * rounds
        await sim.reset()
        assert (await sim.stats())["batches_created"] == 0


async def test_per_item_errors_follow_the_seed(sdk: Clients) -> None:
    outcomes = []
    for _ in range(2):
        async with Simulator(batch_error_rate=0.5, seed=3) as sim:
            claude = sdk.claude(sim)
            batch = await claude.messages.batches.create(
                requests=[
                    {"custom_id": f"r{i}", "params": anthropic_params(f"{i}")} for i in range(10)
                ]
            )
            results = await anthropic_results(claude, batch.id)
            outcomes.append({c: r.result.type for c, r in results.items()})
    assert outcomes[0] == outcomes[1] and set(outcomes[0].values()) == {"succeeded", "errored"}


async def test_simulator_process_serves_batches_with_the_configured_delay(sdk: Clients) -> None:
    async with SimulatorProcess(batch_delay=3600) as sim:
        claude = sdk.claude(sim)
        created = await claude.messages.batches.create(
            requests=[{"custom_id": "a", "params": anthropic_params("hi")}]
        )
        assert (
            await claude.messages.batches.retrieve(created.id)
        ).processing_status == "in_progress"
        assert (await sim.stats())["batches_by_status"]["anthropic"] == {"in_progress": 1}


# --- the batch model: timing, cancellation and expiry at chosen instants --------------------


def _batch_of(config: SimulatorConfig, count: int) -> tuple[Batches, Any]:
    batches = Batches()
    serials = iter(range(1, 1000))
    requests = [
        BatchRequest(f"r{i}", Prompt("m", f"prompt {i}", f"prompt {i}", 1, None))
        for i in range(count)
    ]
    batch = batches.create(
        "anthropic", "b1", requests, config,
        reply=lambda p: Reply("{}", 1, 1, False), serial=lambda: next(serials),
    )  # fmt: skip
    return batches, batch


def test_requests_end_one_by_one_at_the_per_item_rate() -> None:
    _, batch = _batch_of(SimulatorConfig(batch_delay=10, batch_item_seconds=5), 3)
    t0 = batch.created
    assert batch.ends_at == pytest.approx(t0 + 25)
    assert [batch.result(i, t0 + 15.5) for i in batch.items] == [
        "succeeded",
        "processing",
        "processing",
    ]
    assert batch.phase(t0 + 24) == "in_progress" and batch.phase(t0 + 25) == "ended"


def test_cancel_keeps_what_finished_and_cancels_the_rest() -> None:
    batches, batch = _batch_of(SimulatorConfig(batch_item_seconds=10, batch_cancel_seconds=3), 3)
    t0 = batch.created
    batches.cancel(batch, t0 + 15)
    assert batch.phase(t0 + 16) == "canceling"
    assert [batch.result(i, t0 + 16) for i in batch.items] == [
        "succeeded",
        "processing",
        "processing",
    ]
    assert [batch.result(i, t0 + 18) for i in batch.items] == ["succeeded", "canceled", "canceled"]
    assert batch.ended(t0 + 18)


def test_the_completion_window_expires_what_is_not_done_by_then() -> None:
    _, batch = _batch_of(SimulatorConfig(batch_item_seconds=10, batch_expire_after=25), 3)
    t0 = batch.created
    assert batch.ends_at == pytest.approx(t0 + 25)
    assert [batch.result(i, t0 + 26) for i in batch.items] == ["succeeded", "succeeded", "expired"]


# --- configuration --------------------------------------------------------------------------


def test_batch_flags_reproduce_the_batch_config_and_are_documented() -> None:
    config = SimulatorConfig(
        batch_delay=30, batch_item_seconds=0.5, batch_error_rate=0.1, batch_expire_rate=0.2,
        batch_expire_after=600, batch_cancel_seconds=2, batch_max_requests=10,
        batch_max_bytes=4096,
    )  # fmt: skip
    argv = config_to_argv(config)
    args = vars(build_parser().parse_args(argv))
    del args["port"], args["watch_stdin"]
    assert SimulatorConfig(**args) == config
    help_text = build_parser().format_help()
    for flag in ("--batch-delay", "--batch-item-seconds", "--batch-error-rate",
                 "--batch-expire-rate", "--batch-expire-after", "--batch-cancel-seconds",
                 "--batch-max-requests", "--batch-max-bytes"):  # fmt: skip
        assert flag in help_text


def test_batch_config_errors_say_what_is_allowed() -> None:
    with pytest.raises(ValidationError, match=r"simulator\.batch_delay must be between 0"):
        SimulatorConfig(batch_delay=-1)
    with pytest.raises(ValidationError, match="simulator batch rates must be at most 1 in total"):
        SimulatorConfig(batch_error_rate=0.6, batch_expire_rate=0.6)
    with pytest.raises(ValidationError, match="batch_max_requests must be a positive integer"):
        SimulatorConfig(batch_max_requests=0)
