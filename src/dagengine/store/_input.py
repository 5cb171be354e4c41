"""A run's input written to the store as the run reads it, for a list input: the first
call does not wait for every section to be encoded, hashed and written.

The run is claimed with its input hash PENDING. Each read section joins the current
stored chunk (SECTIONS_PER_ROW to a chunk, the same chunks sections_json makes), queued
before any result of it, so a committed result always has its section stored; at the end
the last chunk, the input hash and the section count are queued (close_run commits them).
A run that stops before that (its process killed) keeps PENDING: a resume then checks the
stored sections are where the new input begins (see Claim._check_matches).
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..types import Section
from ._codec import CANONICAL, SECTIONS_PER_ROW
from ._schema import Writer

PENDING = "pending"  # the input hash of a run whose input is still being written

_PUT_CHUNK = "INSERT OR REPLACE INTO sections VALUES (?, 'input', ?, ?)"
_SET_INPUT = "UPDATE runs SET input_hash = ?, section_count = ? WHERE process_id = ?"


class InputWriter:
    """Queues a run's input sections as they are read, and its hash once all are."""

    def __init__(self, process_id: str, writer: Writer) -> None:
        self._process_id = process_id
        self._writer = writer
        self._digest = hashlib.sha256()
        self._chunk = 0  # the stored chunk being filled
        self._pairs: list[list[Any]] = []  # its sections so far
        self.count = 0
        self.done = False

    def add(self, sections: list[Section]) -> None:
        pairs = self._pairs
        for section in sections:
            pairs.append([section.content, section.metadata])
            if len(pairs) == SECTIONS_PER_ROW:
                self._digest.update(self._put(pairs).encode())
                self._chunk += 1
                self._pairs = pairs = []
        self.count += len(sections)
        if pairs:  # the chunk so far: rewritten as it fills
            self._put(pairs)

    def finish(self) -> None:
        """Queue the input's hash and count (every section was added)."""
        if self.done:
            return
        if self._pairs:
            self._digest.update(CANONICAL.encode(self._pairs).encode())
        self._writer.enqueue(_SET_INPUT, self._process_id,
                             (self._digest.hexdigest(), self.count, self._process_id))
        self.done = True

    def _put(self, pairs: list[list[Any]]) -> str:
        text = CANONICAL.encode(pairs)
        self._writer.enqueue(_PUT_CHUNK, self._process_id, (self._process_id, self._chunk, text))
        return text
