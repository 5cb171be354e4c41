"""Typed hook answers: RetryDecision and FallbackDecision, and the from_value() of the types
hooks answer with (today's dict forms and None accepted, junk refused naming the hook)."""

from __future__ import annotations

from typing import Any

import pytest

import dagengine
from conftest import FakeProvider, SimplePlugin, http_error
from dagengine import (
    DagEngine,
    FallbackDecision,
    HookError,
    HookResultError,
    ProviderRequest,
    ProviderResponse,
    ProviderSelection,
    RetryDecision,
)


def engine_for(plugin: Any, *providers: FakeProvider, **execution: Any) -> DagEngine:
    return DagEngine(plugin=plugin, providers=list(providers),
                     execution={"concurrency": 4, "retry_delay": 0.001, **execution})


def test_the_decisions_and_call_information_are_public() -> None:
    assert {"CallInfo", "FallbackDecision", "RetryDecision"} <= set(dagengine.__all__)


# -- RetryDecision / FallbackDecision.from_value ------------------------------------------------


def test_a_retry_decision_comes_from_none_a_dict_or_itself() -> None:
    assert RetryDecision.from_value(None) == RetryDecision()
    decision = RetryDecision(should_retry=False)
    assert RetryDecision.from_value(decision) is decision

    switched = RetryDecision.from_value({"delay": 2, "modified_provider": "backup",
                                         "modified_request": {"input": "again"}})

    assert switched.should_retry and switched.delay == 2.0
    assert switched.modified_provider == ProviderSelection(provider="backup")
    assert switched.changed_request("old", {"model": "m"}) == ("again", {"model": "m"})


@pytest.mark.parametrize(("answer", "names"), [
    (True, "bool True"),
    ({"should_retyr": False}, "'should_retyr'"),
    ({"should_retry": "no"}, "should_retry=str 'no'"),
    ({"delay": -1}, "delay=int -1"),
    ({"modified_provider": 42}, "int 42"),
    ({"modified_request": {"options": "fast"}}, "options are str 'fast'"),
])
def test_a_retry_decision_refuses_junk_naming_the_hook(answer: Any, names: str) -> None:
    with pytest.raises(HookResultError) as caught:
        RetryDecision.from_value(answer)

    assert caught.value.hook == "handle_retry" and names in str(caught.value)
    assert str(caught.value).startswith("handle_retry")


def test_a_fallback_decision_delay_left_out_is_the_fallbacks_own_and_none_is_none() -> None:
    assert FallbackDecision.from_value(None).wait(0.5) == 0.5
    assert FallbackDecision.from_value({"should_fallback": True}).wait(0.5) == 0.5
    assert FallbackDecision.from_value({"delay": None}).wait(0.5) is None
    assert FallbackDecision(delay=1.0).wait(0.5) == 1.0
    assert not FallbackDecision.from_value({"should_fallback": False}).should_fallback

    with pytest.raises(HookResultError, match="handle_provider_fallback returned list"):
        FallbackDecision.from_value(["backup"])


def test_a_modified_request_dict_changes_only_what_it_names() -> None:
    decision = FallbackDecision.from_value({"modified_request": {"options": {"model": "b"}}})
    whole = RetryDecision.from_value({"modified_request": ProviderRequest(
        input="new", options={"model": "c"})})

    assert decision.changed_request("keep", {"model": "a"}) == ("keep", {"model": "b"})
    assert whole.changed_request("keep", {"model": "a"}) == ("new", {"model": "c"})


# -- the selection, request and response types ------------------------------------------------


def test_a_selection_comes_from_a_name_a_dict_or_itself() -> None:
    assert ProviderSelection.from_value("fake") == ProviderSelection(provider="fake")
    assert ProviderSelection.from_value({"provider": "fake", "options": {"model": "m"}}) == \
        ProviderSelection(provider="fake", options={"model": "m"})

    with pytest.raises(HookResultError, match="select_provider for dimension 'a' returned int"):
        ProviderSelection.from_value(3, dimension="a")


def test_a_request_or_response_dict_changes_only_the_fields_it_names() -> None:
    request = ProviderRequest(input="hi", options={"model": "m"}, dimension="a")
    response = ProviderResponse(data="x", metadata={"model": "m"})

    assert ProviderRequest.from_value({"options": {}}, request) == request.model_copy(
        update={"options": {}})
    assert ProviderResponse.from_value({"data": "y"}, response).metadata == {"model": "m"}
    with pytest.raises(HookResultError, match="unknown key"):
        ProviderResponse.from_value({"answer": "y"}, response)


# -- the hooks answering them -----------------------------------------------------------------


async def test_handle_retry_may_answer_a_retry_decision() -> None:
    provider = FakeProvider(fail=lambda r, n: http_error(500) if n == 1 else None,
                            answer=lambda r: r.input)

    class Plugin(SimplePlugin):
        def handle_retry(self, ctx: Any) -> RetryDecision:
            return RetryDecision(delay=0.0, modified_request="changed")

    result = await engine_for(Plugin(["a"]), provider).process(["x"])

    assert result.sections[0].results["a"].data == "changed"


async def test_handle_retry_junk_is_reported_and_the_retry_goes_as_planned() -> None:
    provider = FakeProvider(fail=lambda r, n: http_error(500) if n == 1 else None)
    errors: list[tuple[BaseException, Any]] = []

    class Plugin(SimplePlugin):
        def handle_retry(self, ctx: Any) -> Any:
            return "yes please"

    result = await engine_for(Plugin(["a"]), provider).process(
        ["x"], on_error=lambda error, where: errors.append((error, where)))

    assert result.sections[0].results["a"].ok and len(provider.calls) == 2
    assert [where for _, where in errors] == [{"hook": "handle_retry"}]
    assert isinstance(errors[0][0], HookResultError)


async def test_handle_retry_junk_stops_a_strict_run_with_the_typed_error() -> None:
    provider = FakeProvider(fail=lambda r, n: http_error(500) if n == 1 else None)

    class Plugin(SimplePlugin):
        def handle_retry(self, ctx: Any) -> Any:
            return {"modified_provider": 42}

    with pytest.raises(HookResultError, match="modified_provider"):
        await engine_for(Plugin(["a"]), provider, continue_on_error=False).process(["x"])


async def test_handle_provider_fallback_may_answer_a_fallback_decision() -> None:
    primary = FakeProvider(name="primary", fail=lambda r, n: http_error(500))
    backup = FakeProvider(name="backup", answer=lambda r: r.options)

    class Plugin(SimplePlugin):
        def select_provider(self, *args: Any) -> Any:
            return {"provider": "primary", "fallbacks": [{"provider": "backup"}]}

        def handle_provider_fallback(self, ctx: Any) -> FallbackDecision:
            assert ctx.extra == {"failed_provider": "primary"}
            return FallbackDecision(modified_request={"options": {"model": "spare"}})

    result = await engine_for(Plugin(["a"]), primary, backup, max_retries=0).process(["x"])

    assert result.sections[0].results["a"].data == {"model": "spare"}


async def test_a_raising_handle_retry_is_a_hook_error_in_a_strict_run() -> None:
    provider = FakeProvider(fail=lambda r, n: http_error(500))

    class Plugin(SimplePlugin):
        def handle_retry(self, ctx: Any) -> Any:
            raise RuntimeError("boom")

    with pytest.raises(HookError, match="handle_retry raised RuntimeError"):
        await engine_for(Plugin(["a"]), provider, continue_on_error=False).process(["x"])
