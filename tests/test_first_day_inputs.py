"""First-day mistakes (issue 11): each is refused before any call with a typed error that
says what to fix, or, mid-run, reported without killing the run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from conftest import FakeProvider, SimplePlugin, http_error
from dagengine import (
    ConfigurationError,
    DagEngine,
    DagEngineError,
    Dimension,
    DimensionResult,
    Plugin,
    PromptContext,
    Section,
    ValidationError,
)
from dagengine.store import RunStore


def engine_for(plugin: Any, provider: FakeProvider, **execution: Any) -> DagEngine:
    return DagEngine(plugin=plugin, providers=[provider],
                     execution={"concurrency": 4, "retry_delay": 0.001, **execution})


# -- 1. the section list itself --------------------------------------------------------------


def test_run_refuses_a_bare_string_and_says_to_pass_a_list() -> None:
    provider = FakeProvider()
    with pytest.raises(ValidationError, match=r"a list of sections") as caught:
        engine_for(SimplePlugin(["a"]), provider).run("hello world")
    assert "['hello world']" in str(caught.value)
    assert provider.calls == []


@pytest.mark.parametrize("value", ["hello world", b"hello world", bytearray(b"hello"), None,
                                   Section(content="one"), {"content": "one"}],
                         ids=["str", "bytes", "bytearray", "None", "Section", "mapping"])
async def test_process_refuses_anything_but_a_list_of_sections(value: Any) -> None:
    provider = FakeProvider()
    with pytest.raises(ValidationError, match=r"^sections must be a list of sections") as caught:
        await engine_for(SimplePlugin(["a"]), provider).process(value)
    assert caught.value.field == "sections"
    assert provider.calls == []


def test_a_long_string_is_shown_shortened_in_the_error() -> None:
    with pytest.raises(ValidationError) as caught:
        engine_for(SimplePlugin(["a"]), FakeProvider()).run("word " * 100)
    assert len(str(caught.value)) < 300


async def test_a_generator_of_sections_still_works() -> None:
    provider = FakeProvider()
    result = await engine_for(SimplePlugin(["a"]), provider).process(s for s in ["x", "y"])
    assert [s.section.content for s in result.sections] == ["x", "y"]


# -- 2. each section -------------------------------------------------------------------------


@pytest.mark.parametrize(("sections", "index", "shown"), [
    ([None], 0, "got None"),
    ([1, 2], 0, "int"),
    (["fine", ["a"]], 1, "list"),
    ([{"text": "x"}], 0, "'content'"),
    ([b"bytes"], 0, "bytes"),
    ([{"content": "x", "metadata": "not a dict"}], 0, "metadata"),
], ids=["None", "int", "nested-list", "mapping-without-content", "bytes", "bad-metadata"])
async def test_a_bad_section_names_its_index_type_and_the_accepted_forms(
    sections: list[Any], index: int, shown: str
) -> None:
    provider = FakeProvider()
    with pytest.raises(ValidationError) as caught:
        await engine_for(SimplePlugin(["a"]), provider).process(sections)
    message = str(caught.value)
    assert message.startswith(f"sections[{index}]")
    assert shown in message
    if "metadata" not in message.split(" must ")[0]:
        assert "Section" in message and "str" in message and "'content'" in message
    assert provider.calls == []


async def test_sections_from_before_process_start_are_checked_the_same_way() -> None:
    class Replaces(SimplePlugin):
        def before_process_start(self, ctx: Any) -> Any:
            return {"sections": ["ok", 7]}

    provider = FakeProvider()
    with pytest.raises(ValidationError, match=r"before_process_start\(ctx\)\['sections'\]\[1\]"):
        await engine_for(Replaces(["a"]), provider).process(["x"])
    assert provider.calls == []


class TransformsBadly(SimplePlugin):
    def transform_sections(self, ctx: Any) -> Any:
        return "not a list"


async def test_transform_sections_returning_junk_is_reported_and_the_sections_kept() -> None:
    errors: list[BaseException] = []
    plugin = TransformsBadly(["a", Dimension("g", scope="global"), "b"],
                             {"g": ["a"], "b": ["g"]})
    result = await engine_for(plugin, FakeProvider()).process(
        ["x", "y"], on_error=lambda error, where: errors.append(error))
    assert [s.section.content for s in result.sections] == ["x", "y"]
    assert all(s.results["b"].ok for s in result.sections)
    assert len(errors) == 1 and isinstance(errors[0], ValidationError)
    assert "transform_sections(ctx) must be a list of sections" in str(errors[0])


async def test_transform_sections_returning_junk_stops_a_strict_run() -> None:
    plugin = TransformsBadly(["a", Dimension("g", scope="global"), "b"],
                             {"g": ["a"], "b": ["g"]})
    with pytest.raises(ValidationError, match=r"transform_sections\(ctx\)"):
        await engine_for(plugin, FakeProvider(), continue_on_error=False).process(["x"])


async def test_a_dimension_transform_returning_bad_items_names_the_dimension() -> None:
    errors: list[BaseException] = []
    plugin = SimplePlugin(["a", Dimension("g", scope="global", transform=lambda r, s: [None])],
                          {"g": ["a"]})
    result = await engine_for(plugin, FakeProvider()).process(
        ["x"], on_error=lambda error, where: errors.append(error))
    assert [s.section.content for s in result.sections] == ["x"]
    assert len(errors) == 1 and isinstance(errors[0], DagEngineError)
    assert "g.transform(result, sections)[0]" in str(errors[0])


# -- 3. Dimension(name, ...) ------------------------------------------------------------------


class Verdict(BaseModel):
    label: str


def test_dimension_takes_its_name_positionally_as_the_readme_shows() -> None:
    def keep(result: DimensionResult, sections: list[Section]) -> list[Section]:
        return sections

    glob = Dimension("summary", scope="global", transform=keep)
    assert (glob.name, glob.is_global, glob.transform) == ("summary", True, keep)
    typed = Dimension("verdict", output_schema=Verdict)
    assert (typed.name, typed.scope, typed.output_schema) == ("verdict", "section", Verdict)
    assert Dimension(name="kw", scope="global") == Dimension("kw", scope="global")


def test_a_bad_dimension_field_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match=r"Dimension\('d'\)\.scope"):
        Dimension("d", scope="globl")
    with pytest.raises(ValidationError, match=r"Dimension\.name"):
        Dimension()


async def test_a_positional_global_dimension_runs_once_over_all_sections() -> None:
    provider = FakeProvider()
    plugin = SimplePlugin(["a", Dimension("g", scope="global")], {"g": ["a"]})
    result = await engine_for(plugin, provider).process(["x", "y"])
    assert result.global_results["g"].ok
    assert [c.dimension for c in provider.calls].count("g") == 1


# -- 4. no dimensions ----------------------------------------------------------------------------


async def test_a_plugin_without_dimensions_is_refused_before_any_call() -> None:
    provider = FakeProvider()
    with pytest.raises(ConfigurationError, match=r"defines no dimensions"):
        await engine_for(SimplePlugin([]), provider).process(["x"])
    assert provider.calls == []


def test_dimensions_given_as_one_string_are_refused() -> None:
    with pytest.raises(ValidationError, match=r"plugin\.dimensions must be a list"):
        engine_for(SimplePlugin("summary"), FakeProvider()).run(["x"])  # type: ignore[arg-type]


# -- 5. no providers ---------------------------------------------------------------------------


@pytest.mark.parametrize("providers", [{}, [], ()], ids=["dict", "list", "tuple"])
def test_an_empty_providers_argument_is_refused(providers: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"at least one provider") as caught:
        DagEngine(SimplePlugin(["a"]), providers=providers)
    assert "providers={'anthropic': {'api_key': ...}}" in str(caught.value)


def test_providers_none_still_builds_an_engine_for_graph_work() -> None:
    engine = DagEngine(SimplePlugin(["a", "b"], {"b": ["a"]}))
    assert engine.get_available_providers() == []
    assert engine.get_graph_analytics()["max_depth"] >= 1


# -- 6. dimension_timeouts ---------------------------------------------------------------------


async def test_a_timeout_for_an_unknown_dimension_is_refused_before_any_call() -> None:
    provider = FakeProvider()
    engine = engine_for(SimplePlugin(["summary", "topics"]), provider,
                        dimension_timeouts={"sumary": 5})
    with pytest.raises(ValidationError) as caught:
        await engine.process(["x"])
    message = str(caught.value)
    assert "'sumary'" in message and "summary, topics" in message
    assert caught.value.field == "execution.dimension_timeouts"
    assert provider.calls == []


# -- 7. a plugin that never calls super().__init__ ----------------------------------------------


class NoSuper(Plugin):
    def __init__(self) -> None:  # no super().__init__(): sets what it needs itself
        self.dimensions = ["a"]

    def create_prompt(self, ctx: PromptContext) -> str:
        return f"a: {ctx.sections[0].content}"

    def select_provider(self, dimension: str, sections: Any = None, context: Any = None) -> Any:
        return {"provider": "fake", "options": {"model": "fake-model"}}


async def test_a_plugin_that_sets_its_dimensions_works_without_super_init() -> None:
    engine = engine_for(NoSuper(), FakeProvider())
    result = await engine.process(["x"])
    assert result.sections[0].results["a"].ok
    assert "NoSuper" in repr(engine) and "digraph" in engine.export_graph_dot()


def test_a_plugin_missing_what_super_init_sets_says_to_call_it() -> None:
    class Forgot(Plugin):
        def __init__(self) -> None:
            pass

    with pytest.raises(ConfigurationError, match=r"super\(\).__init__\(name"):
        DagEngine(Forgot(), providers=[FakeProvider()])
    assert "Forgot" in repr(Forgot())


# -- 8. transformed_sections ---------------------------------------------------------------------


async def test_transformed_sections_are_the_inputs_when_nothing_transformed() -> None:
    result = await engine_for(SimplePlugin(["a"]), FakeProvider()).process(
        ["x", {"content": "y", "metadata": {"k": 1}}])
    assert result.transformed_sections == [Section(content="x"),
                                           Section(content="y", metadata={"k": 1})]


async def test_transformed_sections_follow_before_process_start() -> None:
    class Replaces(SimplePlugin):
        def before_process_start(self, ctx: Any) -> Any:
            return {"sections": [s.content.upper() for s in ctx.sections]}

    result = await engine_for(Replaces(["a"]), FakeProvider()).process(["x"])
    assert [s.content for s in result.transformed_sections] == ["X"]


async def test_a_resumed_run_reports_the_same_final_sections(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    provider = FakeProvider()
    first = await DagEngine(SimplePlugin(["a"]), providers=[provider], store=path).process(
        ["x", "y"], process_id="p")
    again = await DagEngine(SimplePlugin(["a"]), providers=[provider], store=path).process(
        ["x", "y"], process_id="p", resume=True)
    assert again.transformed_sections == first.transformed_sections == [
        Section(content="x"), Section(content="y")]
    assert len(provider.calls) == 2
    # Untransformed runs store their sections once, as inputs only.
    assert RunStore(path).sections("p", transformed=True) == []


# -- 9. a failure before any model is known ------------------------------------------------------


async def test_a_call_failing_before_a_model_is_known_lists_no_unknown_model(
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider = FakeProvider(fail=lambda r, n: http_error(400))
    caplog.set_level(logging.WARNING, logger="dagengine")
    result = await engine_for(SimplePlugin(["a"]), provider).process(["x", "y"])
    assert all(not s.results["a"].ok for s in result.sections)
    costs = result.costs
    assert costs is not None
    assert costs.by_model == {} and costs.unpriced_models == []
    assert "no price known" not in caplog.text
    assert costs.by_dimension["a"].calls == 2 and costs.by_dimension["a"].models == []
    assert costs.by_provider["fake"].calls == 2


async def test_a_call_to_an_unconfigured_provider_lists_no_unknown_provider() -> None:
    class SecondSectionMisconfigured(SimplePlugin):  # preflight checks the first section only
        def select_provider(self, dimension: str, sections: Any = None, context: Any = None) -> Any:
            return "nope" if context["section_index"] == 1 else "fake"

    result = await engine_for(SecondSectionMisconfigured(["a"]), FakeProvider()).process(["x", "y"])
    costs = result.costs
    assert costs is not None and not result.sections[1].results["a"].ok
    assert "unknown" not in costs.by_model and "unknown" not in costs.by_provider
