"""How results, responses and sections are written as JSON in the store, and read back."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

import pydantic_core

from ..types import CallInfo, DimensionResult, ProviderResponse, Section, TokenUsage

SECTIONS_PER_ROW = 1000


# Results whose stored JSON was made where they were (a Ray worker), by id, each held with
# its text so that its id stays its own: taken once by result_json, which then only writes.
MADE: dict[int, tuple[DimensionResult, str]] = {}


def result_json(result: DimensionResult) -> str:
    """A result as stored: JSON; values JSON cannot hold are stored as their str()."""
    if MADE:
        made = MADE.pop(id(result), None)
        if made is not None and made[0] is result:
            return made[1]
    return pydantic_core.to_json(
        {"data": result.data, "error": result.error, "metadata": result.metadata,
         "call": result.call}, fallback=str
    ).decode()


def result_from_json(text: str) -> DimensionResult:
    """A stored result, its `call` read back (or, for a row stored before results had one,
    rebuilt from the metadata keys), and metadata["tokens"] that call's TokenUsage again."""
    result = DimensionResult.model_validate_json(text)
    if result.call is None:
        result.call = CallInfo.from_metadata(result.metadata)
    if result.call is not None and "tokens" in result.metadata:
        result.metadata["tokens"] = result.call.tokens
    return result


def response_from_json(text: str) -> ProviderResponse:
    response = ProviderResponse.model_validate_json(text)
    _restore_tokens(response.metadata)
    return response


def _restore_tokens(metadata: dict[str, Any]) -> None:
    tokens = metadata.get("tokens")
    if isinstance(tokens, dict):
        metadata["tokens"] = TokenUsage.model_validate(tokens)


CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                             default=str)


def sections_json(sections: Sequence[Section]) -> list[str]:
    """Sections as stored and hashed: canonical JSON arrays of [content, metadata] pairs,
    SECTIONS_PER_ROW to a row, so equal sections always give equal text."""
    return [CANONICAL.encode([[s.content, s.metadata] for s in sections[i:i + SECTIONS_PER_ROW]])
            for i in range(0, len(sections), SECTIONS_PER_ROW)]


def input_hash(chunks: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk.encode())
    return digest.hexdigest()
