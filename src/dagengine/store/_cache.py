"""The response cache: provider responses by a hash of what determines them."""

from __future__ import annotations

import hashlib
import time

from ..types import ProviderRequest, ProviderResponse
from ._codec import CANONICAL, response_from_json
from ._schema import Writer

INSERT_CACHE = "INSERT INTO cache VALUES (?, ?, ?, ?, ?, ?, ?)"


class ResponseCache:
    """Provider responses by request, shared by every run in the store.

    The table has no index: it only grows at its end, which keeps writing it cheap. An
    in-memory map from the first 64 bits of each key to its row answers misses without
    reading the file and finds hits by rowid; it is loaded when the cache is opened for a
    run (about 100 bytes an entry) and this process keeps it up to date.
    """

    def __init__(self, writer: Writer, known: dict[int, int | None]) -> None:
        self._writer = writer
        self._known = known
        # Keys of requests just missed, by id(request): store() follows with the same request.
        self._missed: dict[int, tuple[ProviderRequest, str, int]] = {}

    async def lookup(self, provider_name: str, request: ProviderRequest) -> ProviderResponse | None:
        key, tag = _cache_key(provider_name, request)
        row_id = self._known.get(tag)
        if row_id is not None:
            row = self._writer.read_one("SELECT key, response FROM cache WHERE id = ?",
                                        (row_id,))
            if row is not None and row[0] == key:
                return response_from_json(row[1])
        if len(self._missed) >= 10_000:  # calls that failed never reach store()
            self._missed.clear()
        self._missed[id(request)] = (request, key, tag)
        return None

    async def store(self, provider_name: str, request: ProviderRequest,
                    response: ProviderResponse) -> None:
        missed = self._missed.pop(id(request), None)
        if missed is not None and missed[0] is request:
            _, key, tag = missed
        else:
            key, tag = _cache_key(provider_name, request)
        if tag in self._known:  # another call stored it meanwhile
            return
        self._known[tag] = None  # its row id is known once committed (see RunStore._write)
        self._writer.enqueue(INSERT_CACHE, None, (
            tag, key, provider_name, request.options.get("model"),
            response.model_dump_json(fallback=str), time.time()))


def cache_key(provider_name: str, request: ProviderRequest) -> str:
    """SHA-256 of provider, model, options, input and output schema: what determines the
    answer."""
    return _cache_key(provider_name, request)[0]


def _cache_key(provider_name: str, request: ProviderRequest) -> tuple[str, int]:
    """The key, and its first 64 bits as a signed integer (the cache table's rowid)."""
    options = request.options
    parts = [provider_name, options.get("model"), options, request.input]
    if request.output_schema is not None:  # only then, so that other keys stay as they were
        parts.append(request.output_schema)
    material = CANONICAL.encode(parts)
    digest = hashlib.sha256(material.encode()).digest()
    return digest.hex(), int.from_bytes(digest[:8], "big", signed=True)
