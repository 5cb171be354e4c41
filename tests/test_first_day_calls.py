"""First-day mistakes in a plugin's hooks, empty answers, and the preflight before paying.

Hooks that return something unusable become that call's error (or the documented default),
never a raw pydantic traceback; an empty answer is a failure that is retried; and mistakes
every call of a dimension shares refuse the run before its first call.
"""

from __future__ import annotations

from typing import Any

import pytest

from conftest import FakeProvider, SimplePlugin
from dagengine import (
    ConfigurationError,
    DagEngine,
    DagEngineError,
    Dimension,
    EmptyResponseError,
    HookResultError,
    Plugin,
    PreflightError,
    ProviderRequest,
)
from dagengine.simulator import Simulator

KEY = "sk-test-first-day"


def engine_for(plugin: Any, provider: Any = None, **execution: Any) -> DagEngine:
    return DagEngine(plugin=plugin, providers=[provider or FakeProvider()],
                     execution={"concurrency": 4, "retry_delay": 0.001, **execution})


def collect(errors: list[tuple[BaseException, Any]]) -> Any:
    return lambda error, ctx: errors.append((error, ctx))


def assert_no_pydantic(text: str) -> None:
    assert "pydantic" not in text and "validation error" not in text.lower()


# -- create_prompt returning something that is not a prompt ------------------------------------


class Returns(SimplePlugin):
    """'a' renders normally; dependent 'b' returns `value` (preflight cannot render 'b')."""

    def __init__(self, value: Any) -> None:
        super().__init__(["a", "b"], {"b": ["a"]})
        self.value = value

    def create_prompt(self, ctx: Any) -> Any:
        return self.value if ctx.dimension == "b" else super().create_prompt(ctx)


@pytest.mark.parametrize(("value", "shown"), [
    (None, "returned None (a missing `return`?)"),
    (42, "returned int 42"),
    ({"text": "hi"}, "returned dict"),
    (["hi"], "item 0 is str 'hi', not a message dict"),
    ("   ", "returned an empty prompt"),
])
async def test_create_prompt_returning_a_non_prompt_is_that_sections_error(
        value: Any, shown: str) -> None:
    errors: list[tuple[BaseException, Any]] = []
    provider = FakeProvider()
    result = await engine_for(Returns(value), provider).process(
        ["x", "y"], on_error=collect(errors))
    for section in result.sections:
        assert section.results["a"].ok
        error = section.results["b"].error or ""
        assert "create_prompt for dimension 'b'" in error and shown in error
        assert "a str or a list of {'role': ..., 'content': ...} message dicts" in error
        assert_no_pydantic(error)
    assert {c.dimension for c in provider.calls} == {"a"}
    assert [ctx["dimension"] for _, ctx in errors] == ["b", "b"]
    assert all(isinstance(e, HookResultError) and e.hook == "create_prompt" for e, _ in errors)


async def test_create_prompt_returning_none_in_strict_mode_raises_a_typed_error() -> None:
    with pytest.raises(HookResultError, match=r"create_prompt for dimension 'b' returned None"):
        await engine_for(Returns(None), continue_on_error=False).process(["x"])


async def test_create_prompt_may_return_a_tuple_of_messages() -> None:
    provider = FakeProvider()
    result = await engine_for(Returns(({"role": "user", "content": "hi"},)),
                              provider).process(["x"])
    assert result.sections[0].results["b"].ok
    assert [c.input for c in provider.calls if c.dimension == "b"] == [
        [{"role": "user", "content": "hi"}]]


async def test_create_prompt_that_raises_in_a_helper_is_named_as_create_prompt() -> None:
    class Broken(SimplePlugin):
        def create_prompt(self, ctx: Any) -> str:
            if ctx.section_index == 1:
                return self.helper(ctx)
            return "ok"

        def helper(self, ctx: Any) -> str:
            raise KeyError("field")

    result = await engine_for(Broken(["a"])).process(["x", "y"])
    assert "create_prompt raised KeyError" in (result.sections[1].results["a"].error or "")


# -- before/after_provider_execute and select_provider returning junk --------------------------


class After(SimplePlugin):
    def __init__(self, value: Any) -> None:
        super().__init__(["a"])
        self.value = value

    def after_provider_execute(self, ctx: Any) -> Any:
        return self.value


@pytest.mark.parametrize(("junk", "said"), [
    (42, "after_provider_execute returned int 42"),
    ("done", "after_provider_execute returned str 'done'"),
    ({"metadata": "not a dict"}, "not a valid ProviderResponse (metadata:"),
    ({"label": "spam"}, "a dict with unknown key(s) 'label'"),
])
async def test_after_provider_execute_junk_is_reported_and_the_response_is_kept(
        junk: Any, said: str) -> None:
    errors: list[tuple[BaseException, Any]] = []
    result = await engine_for(After(junk)).process(["x"], on_error=collect(errors))
    res = result.sections[0].results["a"]
    assert res.ok and res.data == {"ok": True, "dimension": "a"}
    assert len(errors) == 1
    error, ctx = errors[0]
    assert isinstance(error, HookResultError) and ctx == {"hook": "after_provider_execute"}
    assert said in str(error) and "ProviderResponse" in str(error)
    assert_no_pydantic(str(error))


async def test_after_provider_execute_junk_in_strict_mode_raises_a_typed_error() -> None:
    with pytest.raises(HookResultError, match="after_provider_execute returned int 42"):
        await engine_for(After(42), continue_on_error=False).process(["x"])


async def test_after_provider_execute_dict_changes_only_the_fields_it_names() -> None:
    result = await engine_for(After({"data": {"label": "spam"}})).process(["x"])
    res = result.sections[0].results["a"]
    assert res.data == {"label": "spam"} and res.metadata["status_code"] == 200


class Before(SimplePlugin):
    def __init__(self, value: Any) -> None:
        super().__init__(["a"])
        self.value = value

    def before_provider_execute(self, ctx: Any) -> Any:
        return self.value


@pytest.mark.parametrize("junk", [7, "new prompt?", {"input": 5}, {"prompt": "x"}])
async def test_before_provider_execute_junk_is_reported_and_the_request_is_sent_unmodified(
        junk: Any) -> None:
    errors: list[tuple[BaseException, Any]] = []
    provider = FakeProvider()
    result = await engine_for(Before(junk), provider).process(["x"], on_error=collect(errors))
    assert result.sections[0].results["a"].ok
    assert [c.input for c in provider.calls] == ["a: x"]
    assert [type(e) for e, _ in errors] == [HookResultError]
    assert "before_provider_execute returned" in str(errors[0][0])
    assert "ProviderRequest" in str(errors[0][0])
    assert_no_pydantic(str(errors[0][0]))


async def test_before_provider_execute_dict_keeps_the_fields_it_does_not_name() -> None:
    provider = FakeProvider()
    result = await engine_for(Before({"options": {"model": "fake-model", "tag": "t"}}),
                              provider).process(["x", "y"])
    assert all(s.results["a"].ok for s in result.sections)
    assert [(c.input, c.options["tag"], c.section_index) for c in provider.calls] == [
        ("a: x", "t", 0), ("a: y", "t", 1)]


@pytest.mark.parametrize(("junk", "said"), [
    (42, "returned int 42"),
    (None, "returned None"),
    ({"name": "fake"}, "a dict that is not a provider selection (provider: Field required)"),
    ({"provider": "fake", "options": "gpt"}, "(options: Input should be a valid dictionary)"),
])
async def test_select_provider_junk_is_a_per_section_error_listing_the_accepted_forms(
        junk: Any, said: str) -> None:
    class Picks(SimplePlugin):
        def select_provider(self, dimension: str, sections: Any = None,
                            context: Any = None) -> Any:
            return junk if context["section_index"] == 1 else "fake"

    errors: list[tuple[BaseException, Any]] = []
    result = await engine_for(Picks(["a"])).process(["x", "y"], on_error=collect(errors))
    assert result.sections[0].results["a"].ok
    error = result.sections[1].results["a"].error or ""
    assert "select_provider for dimension 'a'" in error and said in error
    assert "a ProviderSelection, a dict like {'provider': 'anthropic'" in error
    assert "or a provider name" in error
    assert_no_pydantic(error)
    assert [type(e) for e, _ in errors] == [HookResultError]


# -- empty answers -----------------------------------------------------------------------------


def sim_engine(kind: str, sim: Simulator, plugin: Any = None, **execution: Any) -> DagEngine:
    base_url = {"anthropic": sim.base_url, "openai": sim.openai_base_url,
                "gemini": sim.gemini_base_url}[kind]
    model = {"anthropic": "claude-3-5-haiku-20241022", "openai": "gpt-4o-mini",
             "gemini": "gemini-2.0-flash"}[kind]
    plugin = plugin or SimplePlugin(["a"], provider=kind,
                                    options={"model": model, "max_tokens": 100})
    return DagEngine(plugin, providers={kind: {"api_key": KEY, "base_url": base_url}},
                     execution={"concurrency": 1, "retry_delay": 0.001, **execution})


@pytest.mark.parametrize("kind", ["anthropic", "openai", "gemini"])
async def test_the_simulator_answers_empty_text_on_request(kind: str) -> None:
    async with Simulator(script=["empty"]) as sim:
        engine = sim_engine(kind, sim, max_retries=0)
        provider = engine.registry.get(kind)
        response = await provider.execute(ProviderRequest(
            input="Classify: meeting at noon", options={"model": "m", "max_tokens": 50}))
        await provider.aclose()
        stats = await sim.stats()
    assert response.data == ""
    assert stats["empty_answers"] == 1 and stats["responses_by_status"] == {"200": 1}


@pytest.mark.parametrize("kind", ["anthropic", "openai", "gemini"])
async def test_an_empty_answer_is_retried_until_the_model_answers(kind: str) -> None:
    async with Simulator(script=["empty", "empty"]) as sim:
        result = await sim_engine(kind, sim, max_retries=3).process(["Reminder: meeting at 3"])
        stats = await sim.stats()
    res = result.sections[0].results["a"]
    assert res.ok and res.data not in ("", None)
    assert res.metadata["attempts"] == 3
    assert stats["requests"] == 3 and stats["empty_answers"] == 2


@pytest.mark.parametrize("schema", [False, True])
async def test_answers_that_stay_empty_end_in_an_error_saying_the_model_answered_nothing(
        schema: bool) -> None:
    from pydantic import BaseModel

    class Label(BaseModel):
        label: str

    dimension = Dimension(name="a", output_schema=Label) if schema else "a"
    plugin = SimplePlugin([dimension], provider="openai",
                          options={"model": "gpt-4o-mini", "max_tokens": 50})
    errors: list[BaseException] = []
    async with Simulator(empty_rate=1.0) as sim:
        result = await sim_engine("openai", sim, plugin, max_retries=2).process(
            ["x"], on_error=lambda e, ctx: errors.append(e))
        stats = await sim.stats()
    res = result.sections[0].results["a"]
    assert not res.ok and res.data is None
    assert res.error == ("openai answered with an empty response (finish_reason=stop) "
                         "(after 3 attempts)")
    assert stats["requests"] == 3
    assert [type(e) for e in errors] == [EmptyResponseError]
    # The empty answers were answered and billed: their input tokens count.
    assert res.metadata["tokens"].input_tokens == stats["input_tokens"] > 0


async def test_thirty_sections_with_a_fifth_of_answers_empty_all_get_data_or_a_clear_error(
        ) -> None:
    sections = [f"Email {i}: the quarterly report deadline moved to Friday" for i in range(30)]
    async with Simulator(empty_rate=0.2, seed=11) as sim:
        result = await sim_engine("openai", sim, concurrency=8, max_retries=3).process(sections)
        stats = await sim.stats()
    assert len(result.sections) == 30
    assert stats["empty_answers"] >= 4  # the fault really happened
    for section in result.sections:
        res = section.results["a"]
        if res.ok:
            assert res.data not in ("", None)
        else:
            assert "answered with an empty response" in (res.error or "")
    answered = sum(s.results["a"].ok for s in result.sections)
    assert answered >= 29  # 0.2**4 per section: at most a rare one runs out of attempts
    assert stats["requests"] == 30 + stats["empty_answers"]


async def test_an_empty_answer_from_any_provider_is_retried() -> None:
    answers = iter([None, " \n", {"ok": True}])
    provider = FakeProvider(answer=lambda r: next(answers))
    result = await engine_for(SimplePlugin(["a"]), provider).process(["x"])
    res = result.sections[0].results["a"]
    assert res.ok and res.data == {"ok": True} and res.metadata["attempts"] == 3


# -- preflight ---------------------------------------------------------------------------------


async def refused(plugin: Any, provider: Any = None, **kwargs: Any) -> PreflightError:
    provider = provider or FakeProvider()
    with pytest.raises(PreflightError) as info:
        await DagEngine(plugin, providers=[provider], **kwargs).process(["x", "y"])
    assert provider.calls == []
    return info.value


async def test_preflight_refuses_a_plugin_without_create_prompt() -> None:
    class NoPrompt(Plugin):
        def __init__(self) -> None:
            super().__init__("p")
            self.dimensions = ["summary"]

        def select_provider(self, dimension: str, sections: Any = None,
                            context: Any = None) -> Any:
            return "fake"

    error = await refused(NoPrompt())
    assert error.dimension == "summary"
    assert "NoPrompt does not implement create_prompt(ctx)" in str(error)


async def test_preflight_refuses_a_create_prompt_that_raises_or_returns_nothing() -> None:
    class Raises(SimplePlugin):
        def create_prompt(self, ctx: Any) -> str:
            return ctx.section.metadata["title"]  # type: ignore[no-any-return]

    error = await refused(Raises(["a", "b"]))
    assert error.dimension == "a" and "create_prompt raised KeyError: 'title'" in str(error)

    class Forgets(SimplePlugin):
        def create_prompt(self, ctx: Any) -> Any:
            prompt = f"summarise {ctx.section.content}"
            del prompt  # ... and no `return prompt`

    error = await refused(Forgets(["a"]))
    assert "dimension 'a'" in str(error) and "returned None (a missing `return`?)" in str(error)


async def test_preflight_refuses_an_unconfigured_provider_naming_the_dimension() -> None:
    class Typo(SimplePlugin):
        def select_provider(self, dimension: str, sections: Any = None,
                            context: Any = None) -> Any:
            return "fake" if dimension == "a" else "antropic"

    error = await refused(Typo(["a", "b"], {"b": ["a"]}))
    assert error.dimension == "b"
    assert "provider 'antropic' is not configured (configured: fake)" in str(error)
    assert isinstance(error, ConfigurationError) and isinstance(error, DagEngineError)


async def test_preflight_checks_fallbacks_too() -> None:
    plugin = SimplePlugin(["a"])
    plugin.select_provider = lambda *args: {  # type: ignore[method-assign]
        "provider": "fake", "fallbacks": [{"provider": "backup"}]}
    error = await refused(plugin)
    assert "provider 'backup' is not configured" in str(error)


async def test_preflight_refuses_a_builtin_provider_with_no_model() -> None:
    plugin = SimplePlugin(["a"], provider="openai", options={"max_tokens": 50})
    with pytest.raises(PreflightError, match=r"dimension 'a': openai: no model given"):
        await DagEngine(plugin, providers={"openai": {"api_key": KEY,
                                                      "base_url": "http://127.0.0.1:9"}},
                        ).process(["x"])


async def test_preflight_accepts_a_provider_default_model() -> None:
    async with Simulator() as sim:
        plugin = SimplePlugin(["a"], provider="openai", options={"max_tokens": 50})
        engine = DagEngine(plugin, providers={"openai": {
            "api_key": KEY, "base_url": sim.openai_base_url, "default_model": "gpt-4o-mini"}})
        result = await engine.process(["Reminder: meeting at noon"])
    assert result.sections[0].results["a"].ok
    assert result.sections[0].results["a"].metadata["model"] == "gpt-4o-mini"


async def test_an_empty_dimension_list_is_refused_before_any_call() -> None:
    provider = FakeProvider()
    with pytest.raises(ConfigurationError, match="defines no dimensions"):
        await DagEngine(SimplePlugin([]), providers=[provider]).process(["x", "y"])
    assert provider.calls == []


async def test_preflight_calls_create_prompt_and_select_provider_once_per_dimension() -> None:
    class Counts(SimplePlugin):
        def __init__(self) -> None:
            super().__init__(["a", "b", Dimension(name="g", scope="global")], {"b": ["a"]})
            self.prompts: list[tuple[str, int | None, dict[str, Any]]] = []
            self.selections: list[tuple[str, Any]] = []

        async def create_prompt(self, ctx: Any) -> str:  # an async hook
            self.prompts.append((ctx.dimension, ctx.section_index, dict(ctx.dependencies)))
            return super().create_prompt(ctx)

        def select_provider(self, dimension: str, sections: Any = None,
                            context: Any = None) -> Any:
            self.selections.append((dimension, context["section_index"]))
            return "fake"

    plugin = Counts()
    provider = FakeProvider()
    result = await engine_for(plugin, provider).process(["x", "y"])
    assert all(r.ok for s in result.sections for r in s.results.values())
    # The run: a and b for 2 sections, g once; preflight: a and g rendered once more (b
    # depends on a, so only its provider choice is checked).
    assert sorted(p[:2] for p in plugin.prompts) == sorted(
        [("a", 0), ("a", 0), ("a", 1), ("b", 0), ("b", 1), ("g", None), ("g", None)])
    assert all(deps == {} for name, _, deps in plugin.prompts if name != "b")
    assert sorted(plugin.selections, key=str) == sorted(
        [("a", 0), ("a", 0), ("a", 1), ("b", 0), ("b", 0), ("b", 1), ("g", None), ("g", None)],
        key=str)
    assert len(provider.calls) == 5


async def test_preflight_leaves_prompts_a_skip_hook_may_skip_alone() -> None:
    class Skips(SimplePlugin):
        def should_skip_section_dimension(self, ctx: Any) -> bool:
            return "title" not in ctx.section.metadata

        def create_prompt(self, ctx: Any) -> str:
            return f"{ctx.section.metadata['title']}"

    provider = FakeProvider()
    result = await engine_for(Skips(["a"]), provider).process(
        ["untitled", {"content": "x", "metadata": {"title": "T"}}])
    assert result.sections[0].results["a"].metadata["skipped"] is True
    assert result.sections[1].results["a"].ok
    assert [c.input for c in provider.calls] == ["T"]


async def test_preflight_does_not_check_a_model_a_before_hook_may_set() -> None:
    class SetsModel(SimplePlugin):
        def before_provider_execute(self, ctx: Any) -> Any:
            request: ProviderRequest = ctx.request
            return request.model_copy(update={"options": {"model": "gpt-4o-mini",
                                                          "max_tokens": 50}})

    async with Simulator() as sim:
        plugin = SetsModel(["a"], provider="openai", options={"max_tokens": 50})
        engine = DagEngine(plugin, providers={"openai": {"api_key": KEY,
                                                         "base_url": sim.openai_base_url}})
        result = await engine.process(["Reminder: meeting at noon"])
    assert result.sections[0].results["a"].ok


def test_preflight_refusal_comes_out_of_run_too() -> None:
    with pytest.raises(PreflightError, match="'nope' is not configured"):
        engine_for(SimplePlugin(["a"], provider="nope")).run(["x"])
