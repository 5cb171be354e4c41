"""Structured output: a dimension's output_schema goes to each provider in its native form
(OpenAI response_format json_schema, an Anthropic forced tool, Gemini response_json_schema),
directly and through the real Portkey gateway; a re-ask quotes the schema and the error; and
results offer the validated model instance as `parsed`, also when they come from the store."""

from __future__ import annotations

import datetime
import json
import sqlite3
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import openai
import pytest
from pydantic import BaseModel, Field

from conftest import FakeProvider, SimplePlugin
from dagengine import (
    BaseProvider,
    DagEngine,
    Dimension,
    DimensionResult,
    ProviderError,
    ProviderRequest,
    ProviderResponse,
    TokenUsage,
)
from dagengine._structured import compact_schema, request_schema, strict_schema
from dagengine.gateway import LocalGateway
from dagengine.simulator import Simulator
from dagengine.simulator._schema import fit

KEY = "sk-test-structured-0123456789"
KINDS = ["anthropic", "openai", "gemini"]
MODELS = {"anthropic": "claude-3-5-haiku-20241022", "openai": "gpt-4o-mini",
          "gemini": "gemini-2.0-flash"}
EMAILS = ["Reminder: project meeting about the quarterly report deadline",
          "Team standup moved: sprint review with the client at 10"]
CATEGORIES = ["spam", "work", "personal", "newsletter"]


class EmailCategory(BaseModel):
    category: Literal["spam", "work", "personal", "newsletter"]
    confidence: float = Field(ge=0, le=1)
    summary: str


class Emails(SimplePlugin):
    def __init__(self, kind: str, schema: type[BaseModel] = EmailCategory,
                 **options: Any) -> None:
        super().__init__([Dimension(name="analyze_email", output_schema=schema)], provider=kind,
                         options={"model": MODELS[kind], "max_tokens": 300, **options})

    def create_prompt(self, ctx: Any) -> str:
        return f"Categorize this email.\n\nEmail: {ctx.sections[0].content}"


def engine_for(kind: str, sim: Simulator, plugin: Any = None, **config: Any) -> DagEngine:
    base_url = {"anthropic": sim.base_url, "openai": sim.openai_base_url,
                "gemini": sim.gemini_base_url}[kind]
    return DagEngine(plugin or Emails(kind),
                     providers={kind: {"api_key": KEY, "base_url": base_url, **config}},
                     execution={"concurrency": 1, "retry_delay": 0.01})


def native_schema(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """The schema a request carries in its provider's own structured-output form."""
    if kind == "anthropic":
        [tool] = body["tools"]
        assert body["tool_choice"] == {"type": "tool", "name": tool["name"]}
        schema: dict[str, Any] = tool["input_schema"]
    elif kind == "openai":
        assert body["response_format"]["type"] == "json_schema"
        schema = body["response_format"]["json_schema"]["schema"]
    else:
        config = body["generationConfig"]
        assert config["responseMimeType"] == "application/json"
        schema = config.get("responseJsonSchema") or config["responseSchema"]
    return schema


def last_user_text(kind: str, body: dict[str, Any]) -> str:
    if kind == "gemini":
        return str(body["contents"][-1]["parts"][0]["text"])
    content = body["messages"][-1]["content"]
    return content if isinstance(content, str) else "\n".join(b["text"] for b in content)


async def bodies(sim: Simulator) -> list[dict[str, Any]]:
    return [entry["body"] for entry in await sim.recent_requests()]


def assert_is_email_schema(schema: dict[str, Any]) -> None:
    assert schema["type"] == "object"
    assert schema["properties"]["category"]["enum"] == CATEGORIES
    assert {"category", "confidence", "summary"} <= set(schema["required"])


# -- the schema on the wire --------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_the_schema_goes_to_each_provider_in_its_native_form(
        kind: str, transport: str) -> None:
    async with Simulator() as sim:
        result = await engine_for(kind, sim, transport=transport).process(EMAILS)
        sent = await bodies(sim)
    assert len(sent) == len(EMAILS)
    for body in sent:
        assert_is_email_schema(native_schema(kind, body))
    for section in result.sections:
        res = section.results["analyze_email"]
        assert res.ok and res.metadata["attempts"] == 1
        assert isinstance(res.parsed, EmailCategory)
        assert res.data == res.parsed.model_dump(mode="json")
        assert res.data["category"] == "work"


async def test_openai_gets_a_strict_schema_when_every_field_is_required(transport: str) -> None:
    async with Simulator() as sim:
        await engine_for("openai", sim, transport=transport).process(EMAILS[:1])
        [body] = await bodies(sim)
    spec = body["response_format"]["json_schema"]
    assert spec["name"] == "EmailCategory" and spec["strict"] is True
    assert spec["schema"]["additionalProperties"] is False


class WithOptionalNote(BaseModel):
    category: Literal["spam", "work", "personal", "newsletter"]
    note: str | None = None


class WithDefaultCount(BaseModel):
    category: Literal["spam", "work", "personal", "newsletter"]
    count: int = 3


async def test_openai_strict_form_requires_a_nullable_field_that_defaults_to_none() -> None:
    async with Simulator() as sim:
        result = await engine_for("openai", sim, Emails("openai", WithOptionalNote)).process(
            EMAILS[:1])
        [body] = await bodies(sim)
    spec = body["response_format"]["json_schema"]
    # The simulator refuses a strict schema OpenAI would refuse, so the call succeeding matters.
    assert spec["strict"] is True and spec["schema"]["required"] == ["category", "note"]
    assert "default" not in spec["schema"]["properties"]["note"]
    assert isinstance(result.sections[0].results["analyze_email"].parsed, WithOptionalNote)


async def test_openai_schema_with_a_real_default_is_sent_as_is_without_strict() -> None:
    async with Simulator() as sim:
        result = await engine_for("openai", sim, Emails("openai", WithDefaultCount)).process(
            EMAILS[:1])
        [body] = await bodies(sim)
    spec = body["response_format"]["json_schema"]
    assert spec["strict"] is False
    assert spec["schema"] == request_schema(WithDefaultCount)
    res = result.sections[0].results["analyze_email"]
    assert isinstance(res.parsed, WithDefaultCount) and res.parsed.count == 3


async def test_the_simulator_refuses_a_strict_schema_openai_would_refuse() -> None:
    async with Simulator() as sim:
        client = openai.AsyncOpenAI(base_url=sim.openai_base_url, api_key=KEY, max_retries=0)
        async with client:
            with pytest.raises(openai.BadRequestError, match="additionalProperties"):
                await client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                    response_format={"type": "json_schema", "json_schema": {
                        "name": "x", "strict": True,
                        "schema": request_schema(WithDefaultCount)}})


# -- re-asking ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_a_reask_carries_the_validation_error_and_the_schema(
        kind: str, transport: str) -> None:
    async with Simulator(script=["schema"]) as sim:
        result = await engine_for(kind, sim, transport=transport).process(EMAILS[:1])
        first, second = await bodies(sim)
    res = result.sections[0].results["analyze_email"]
    assert res.ok and res.metadata["attempts"] == 2
    assert isinstance(res.parsed, EmailCategory)
    assert "rejected" not in last_user_text(kind, first)
    note = last_user_text(kind, second)
    assert "Your previous answer was rejected: answer does not match EmailCategory" in note
    assert "category: Field required" in note
    schema = request_schema(EmailCategory)
    assert schema is not None and compact_schema(schema) in note
    assert '"enum":["spam","work","personal","newsletter"]' in note
    # The re-ask asks natively too.
    assert_is_email_schema(native_schema(kind, second))


# -- the user's own options --------------------------------------------------------------------


async def test_the_users_own_response_format_wins_on_openai(transport: str) -> None:
    plugin = Emails("openai", response_format={"type": "json_object"})
    async with Simulator() as sim:
        result = await engine_for("openai", sim, plugin, transport=transport).process(EMAILS[:1])
        [body] = await bodies(sim)
    assert body["response_format"] == {"type": "json_object"}
    assert isinstance(result.sections[0].results["analyze_email"].parsed, EmailCategory)


async def test_the_users_own_forced_tool_wins_on_anthropic_and_its_input_is_the_answer(
        transport: str) -> None:
    schema = {"type": "object", "properties": {"category": {"type": "string", "enum": CATEGORIES},
                                               "confidence": {"type": "number"},
                                               "summary": {"type": "string"}},
              "required": ["category", "confidence", "summary"]}
    tools = [{"name": "record", "description": "Record it.", "input_schema": schema}]
    plugin = Emails("anthropic", tools=tools, tool_choice={"type": "tool", "name": "record"})
    async with Simulator() as sim:
        result = await engine_for("anthropic", sim, plugin, transport=transport).process(
            EMAILS[:1])
        [body] = await bodies(sim)
    assert body["tools"] == tools
    assert body["tool_choice"] == {"type": "tool", "name": "record"}
    res = result.sections[0].results["analyze_email"]
    assert res.ok and isinstance(res.parsed, EmailCategory)


async def test_the_users_own_response_mime_type_wins_on_gemini(transport: str) -> None:
    plugin = Emails("gemini", response_mime_type="application/json")
    async with Simulator() as sim:
        result = await engine_for("gemini", sim, plugin, transport=transport).process(EMAILS[:1])
        [body] = await bodies(sim)
    config = body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert "responseJsonSchema" not in config and "responseSchema" not in config
    assert isinstance(result.sections[0].results["analyze_email"].parsed, EmailCategory)


# -- through the Portkey gateway -----------------------------------------------------------


@pytest.mark.gateway
@pytest.mark.parametrize("kind", KINDS)
async def test_the_schema_reaches_each_provider_through_the_gateway(
        kind: str, transport: str, portkey_gateway: LocalGateway) -> None:
    async with Simulator() as sim:
        engine = engine_for(kind, sim, gateway="portkey", gateway_url=portkey_gateway.url,
                            transport=transport)
        result = await engine.process(EMAILS[:1])
        [body] = await bodies(sim)
    # The gateway writes Anthropic's tools and Gemini's responseSchema from what we sent.
    assert_is_email_schema(native_schema(kind, body))
    res = result.sections[0].results["analyze_email"]
    assert res.ok and isinstance(res.parsed, EmailCategory)
    assert res.data["category"] == "work"


# -- parsed --------------------------------------------------------------------------------


class Verdict(BaseModel):
    label: str
    score: float


def verdict_provider(**kwargs: Any) -> FakeProvider:
    return FakeProvider(answer=lambda r: '{"label": "ok", "score": 0.5}', **kwargs)


def fake_engine(plugin: Any, provider: BaseProvider, **kwargs: Any) -> DagEngine:
    return DagEngine(plugin, providers=[provider],
                     execution={"concurrency": 2, "retry_delay": 0.01}, **kwargs)


async def test_parsed_is_left_out_of_every_serialised_form() -> None:
    plugin = SimplePlugin([Dimension(name="a", output_schema=Verdict)])
    result = await fake_engine(plugin, verdict_provider()).process(["x"])
    res = result.sections[0].results["a"]
    assert res.parsed == Verdict(label="ok", score=0.5)
    assert res.to_dict() == {"data": {"label": "ok", "score": 0.5}, "error": None,
                             "metadata": res.to_dict()["metadata"]}
    assert "parsed" not in result.model_dump_json() and "parsed" not in json.dumps(
        result.to_dict())
    assert DimensionResult.model_validate(res.to_dict()).parsed is None


class Recorder(SimplePlugin):
    """Records the dependencies each prompt was built from."""

    def __init__(self, dimensions: list[Any], dependencies: dict[str, list[str]]) -> None:
        super().__init__(dimensions, dependencies)
        self.seen: dict[str, list[dict[str, DimensionResult]]] = {}

    def create_prompt(self, ctx: Any) -> str:
        self.seen.setdefault(ctx.dimension, []).append(dict(ctx.dependencies))
        return super().create_prompt(ctx)


def verdict_dims() -> list[Any]:
    return [Dimension(name="a", output_schema=Verdict), "b", Dimension(name="g", scope="global")]


async def test_dependencies_carry_parsed_to_later_dimensions() -> None:
    plugin = Recorder(verdict_dims(), {"b": ["a"], "g": ["a"]})
    await fake_engine(plugin, verdict_provider()).process(["x", "y"])
    assert [isinstance(d["a"].parsed, Verdict) for d in plugin.seen["b"]] == [True, True]
    [global_deps] = plugin.seen["g"]
    assert all(isinstance(r.parsed, Verdict) for r in global_deps["a"].data["sections"])


async def test_resumed_results_get_parsed_rebuilt_from_the_stored_data(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    failing_b = verdict_provider(
        fail=lambda r, n: ProviderError("b down", 400) if r.dimension == "b" else None)
    first = await fake_engine(Recorder(verdict_dims(), {"b": ["a"]}), failing_b,
                              store=path).process(["x"], process_id="p")
    assert not first.sections[0].results["b"].ok
    with sqlite3.connect(path) as conn:
        stored = [row[0] for row in conn.execute("SELECT result FROM results")]
    assert stored and not any("parsed" in text for text in stored)

    plugin = Recorder(verdict_dims(), {"b": ["a"]})
    provider = verdict_provider()
    second = await fake_engine(plugin, provider, store=path).process(
        ["x"], process_id="p", resume=True)
    assert {c.dimension for c in provider.calls} == {"b"}  # "a" came from the store
    assert second.sections[0].results["a"].parsed == Verdict(label="ok", score=0.5)
    assert isinstance(plugin.seen["b"][0]["a"].parsed, Verdict)


async def test_a_cache_hit_has_parsed(tmp_path: Path) -> None:
    plugin = SimplePlugin([Dimension(name="a", output_schema=Verdict)])
    provider = verdict_provider()
    engine = fake_engine(plugin, provider, store=tmp_path / "runs.db", cache=True)
    await engine.process(["x"], process_id="one")
    again = await engine.process(["x"], process_id="two")
    res = again.sections[0].results["a"]
    assert res.metadata["cached"] is True and len(provider.calls) == 1
    assert res.parsed == Verdict(label="ok", score=0.5)


async def test_an_after_provider_execute_change_is_what_parsed_holds() -> None:
    class Relabel(SimplePlugin):
        def after_provider_execute(self, ctx: Any) -> ProviderResponse:
            data = dict(ctx.response.data, label="changed")
            return ctx.response.model_copy(update={"data": data})

    result = await fake_engine(Relabel([Dimension(name="a", output_schema=Verdict)]),
                               verdict_provider()).process(["x"])
    assert result.sections[0].results["a"].parsed == Verdict(label="changed", score=0.5)


async def test_a_skip_with_a_fitting_result_has_parsed_and_a_plain_skip_has_none() -> None:
    from dagengine import SkipWithResult

    class Skipper(SimplePlugin):
        def should_skip_section_dimension(self, ctx: Any) -> Any:
            if ctx.section.content == "known":
                return SkipWithResult(result=DimensionResult(data={"label": "k", "score": 1}))
            return True

    result = await fake_engine(Skipper([Dimension(name="a", output_schema=Verdict)]),
                               verdict_provider()).process(["known", "other"])
    known, other = (s.results["a"] for s in result.sections)
    assert known.parsed == Verdict(label="k", score=1.0)
    assert other.parsed is None and other.data["skipped"] is True


class SeesRequests(BaseProvider):
    """A user's own provider: it may read request.output_schema, or ignore it."""

    name = "mine"

    def __init__(self) -> None:
        self.requests: list[ProviderRequest] = []

    async def execute(self, request: ProviderRequest) -> ProviderResponse:
        self.requests.append(request)
        return ProviderResponse(data='{"label": "ok", "score": 1}',
                                metadata={"model": "m", "tokens": TokenUsage.of(1, 1)})


async def test_a_custom_provider_gets_the_json_schema_and_may_ignore_it() -> None:
    provider = SeesRequests()
    plugin = SimplePlugin([Dimension(name="a", output_schema=Verdict), "plain"], provider="mine")
    result = await fake_engine(plugin, provider).process(["x"])
    schemas = {r.dimension: r.output_schema for r in provider.requests}
    assert schemas["a"] == Verdict.model_json_schema() and schemas["plain"] is None
    assert isinstance(result.sections[0].results["a"].parsed, Verdict)


async def test_before_provider_execute_can_drop_the_schema_from_the_request() -> None:
    class NoNative(SimplePlugin):
        def before_provider_execute(self, ctx: Any) -> ProviderRequest:
            return ctx.request.model_copy(update={"output_schema": None})

    async with Simulator() as sim:
        plugin = NoNative([Dimension(name="analyze_email", output_schema=EmailCategory)],
                          provider="openai", options={"model": "gpt-4o-mini"})
        plugin.create_prompt = Emails("openai").create_prompt  # type: ignore[method-assign]
        result = await engine_for("openai", sim, plugin).process(EMAILS[:1])
        [body] = await bodies(sim)
    assert "response_format" not in body
    assert isinstance(result.sections[0].results["analyze_email"].parsed, EmailCategory)


# -- the JSON schema helpers and the simulator's instances -------------------------------------


class Color(StrEnum):
    RED = "red"
    BLUE = "blue"


class Person(BaseModel):
    name: str = Field(description="full name")
    age: int = Field(ge=18, le=120)
    email: str | None = None


class Rich(BaseModel):
    title: str = Field(min_length=3, max_length=20)
    color: Color
    kind: Literal["a", "b"]
    fixed: Literal["only"]
    owner: Person = Field(description="who owns it")
    people: list[Person] = Field(min_length=2)
    tags: list[str]
    scores: dict[str, float]
    when: datetime.date
    ratio: float = Field(gt=0, lt=1)
    flag: bool
    maybe: Person | None = None


def test_request_schema_inlines_references_even_beside_a_description() -> None:
    schema = request_schema(Rich)
    assert schema is not None and "$defs" not in schema and "$ref" not in json.dumps(schema)
    assert schema["properties"]["owner"]["description"] == "who owns it"
    assert schema["properties"]["owner"]["properties"]["age"]["minimum"] == 18


class Scores(BaseModel):
    scores: dict[str, float]


class Named(BaseModel):
    name: str = Field(max_length=20)


def test_strict_schema_is_none_for_extra_keys_or_keywords_strict_mode_lacks() -> None:
    assert strict_schema(request_schema(Scores) or {}) is None
    assert strict_schema(request_schema(Named) or {}) is None
    strict = strict_schema(request_schema(Person) or {})
    assert strict is not None and strict["required"] == ["name", "age", "email"]


@pytest.mark.parametrize("inlined", [True, False])
def test_the_simulator_builds_a_valid_small_instance_of_a_rich_schema(inlined: bool) -> None:
    schema = request_schema(Rich) if inlined else Rich.model_json_schema()
    assert schema is not None
    value = fit(schema)
    instance = Rich.model_validate(value)
    assert len(instance.people) == 2 and instance.fixed == "only"
    assert fit(schema) == value  # deterministic
    assert "maybe" not in value  # optional parts are left out


def test_the_simulator_keeps_its_useful_answer_where_it_fits_the_schema() -> None:
    schema = request_schema(EmailCategory)
    assert schema is not None
    hint = {"category": "personal", "confidence": 0.7, "summary": "dinner", "extra": 1}
    assert fit(schema, hint) == {"category": "personal", "confidence": 0.7, "summary": "dinner"}
    assert fit(schema, {"category": "nonsense", "confidence": 7})["category"] == "spam"
    assert fit(schema, {"category": "nonsense", "confidence": 7})["confidence"] == 1
