"""Lenient JSON: what a model's answer text turns into."""

from __future__ import annotations

from typing import Any

import pytest

from dagengine.errors import OutputValidationError
from dagengine.parsing import looks_like_json, parse_answer, parse_json_lenient


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"category": "work", "confidence": 0.9}', {"category": "work", "confidence": 0.9}),
        ("  [1, 2, 3]\n", [1, 2, 3]),
        ("42", 42),
    ],
)
def test_strict_json_is_parsed_as_is(text: str, value: Any) -> None:
    assert parse_json_lenient(text) == value


@pytest.mark.parametrize(
    "text",
    [
        '```json\n{"category": "work"}\n```',
        '```\n{"category": "work"}\n```',
        'Here you go:\n```json\n{"category": "work"}\n```\nAnything else?',
        '```json\n{"category": "work"}',  # the closing fence was cut off
    ],
)
def test_code_fences_are_stripped(text: str) -> None:
    assert parse_json_lenient(text) == {"category": "work"}


@pytest.mark.parametrize(
    "text",
    [
        'Sure! Here is the analysis: {"category": "work"} Let me know if you need more.',
        'The result {"category": "work"} and then {"other": 1}',  # the first value wins
        'Note: see {"category": "work"}',
    ],
)
def test_json_inside_prose_is_found(text: str) -> None:
    assert parse_json_lenient(text) == {"category": "work"}


def test_array_inside_prose_is_found() -> None:
    assert parse_json_lenient('Topics: ["budget", "meeting"].') == ["budget", "meeting"]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"a": 1, "b": [1, 2,],}', {"a": 1, "b": [1, 2]}),  # trailing commas
        ("{category: 'work', confidence: 0.9}", {"category": "work", "confidence": 0.9}),
        ("{'flag': True, 'none': None}", {"flag": True, "none": None}),  # Python literals
        ('{"summary": "cut off mid-sent', {"summary": "cut off mid-sent"}),  # truncated
        ('{"a": 1 "b": 2}', {"a": 1, "b": 2}),  # a missing comma
        ('{"quote": "He said "hi" there"}', {"quote": 'He said "hi" there'}),
        ('{"a": 1, // a comment\n "b": 2}', {"a": 1, "b": 2}),
    ],
)
def test_small_damage_is_repaired(text: str, value: Any) -> None:
    assert parse_json_lenient(text) == value


@pytest.mark.parametrize(
    "text", ["Just a sentence.", "", "The email is about work [urgent] and budgets."]
)
def test_text_without_json_raises_from_parse_json_lenient(text: str) -> None:
    with pytest.raises(OutputValidationError, match="no JSON"):
        parse_json_lenient(text)


@pytest.mark.parametrize(
    "text",
    [
        '{"category": "work", <html><body>upstream hiccup</body></html>',
        '{"category": "work", @@@ garbage ### "b": }',
        "{{{ ]]] }}}",
        "{]",
        "{ this is not json }",
    ],
)
def test_clearly_broken_json_raises(text: str) -> None:
    with pytest.raises(OutputValidationError, match="could not parse JSON"):
        parse_json_lenient(text)


def test_error_message_quotes_the_start_of_the_text() -> None:
    text = "{ nonsense " + "x" * 500

    with pytest.raises(OutputValidationError) as caught:
        parse_json_lenient(text)

    assert "'{ nonsense xxx" in str(caught.value)
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', True),
        ('Answer: {"a": 1}', True),
        ("[1, 2]", True),
        ("{ starts with a brace }", True),
        ("No JSON here", False),
        ("prose with [brackets] and {braces}", False),
    ],
)
def test_looks_like_json(text: str, expected: bool) -> None:
    assert looks_like_json(text) is expected


@pytest.mark.parametrize(
    ("text", "data"),
    [
        ('{"category": "work"}', {"category": "work"}),
        ('```json\n{"category": "work",}\n```', {"category": "work"}),
        ("A plain answer.", "A plain answer."),
        ("prose with [brackets] and {braces}", "prose with [brackets] and {braces}"),
        ("42", "42"),  # no object or array: the text stays text
    ],
)
def test_parse_answer_gives_json_or_the_text(text: str, data: Any) -> None:
    assert parse_answer(text) == data


def test_parse_answer_raises_when_the_answer_meant_json_but_is_broken() -> None:
    with pytest.raises(OutputValidationError):
        parse_answer('{"category": "work", <html><body>upstream hiccup</body></html>')
