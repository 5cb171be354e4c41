"""The provider batches of a batch-mode run: each batch id and what its custom_ids stand for.

A batch is recorded in its own transaction the moment the provider has given its id, before
the engine waits on it (`BatchLedger.record` returns once it is committed): a run killed
while the batch runs, even with SIGKILL, finds it on resume and re-attaches to it instead of
submitting (and paying for) its requests again. What remains is the instant between the
provider's answer to the submission and the commit.

On resume, `BatchLedger.unanswered` lists the recorded items whose (dimension, section) has
no result in the store yet: their calls were waiting on those batches when the run stopped.
For each (dimension, section) it keeps the item submitted last (an answer re-asked after
failing validation is a later item of the same call).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import StoreError
from ._schema import GLOBAL_INDEX

T = TypeVar("T")

_INSERT_BATCH = "INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?, ?, ?, NULL)"
_INSERT_ITEM = "INSERT OR REPLACE INTO batch_items VALUES (?, ?, ?, ?, ?, ?, ?)"
_CUSTOM_IDS = ("SELECT custom_id FROM batch_items WHERE process_id = ? AND batch_id = ? "
               "ORDER BY position")
_UNANSWERED = """
SELECT b.batch_id, b.provider, b.model, b.submitted_at, i.custom_id, i.dimension,
       i.section_index, i.attempt
FROM batch_items i JOIN batches b ON b.process_id = i.process_id AND b.batch_id = i.batch_id
WHERE i.process_id = ? AND b.state != 'failed' AND NOT EXISTS (
    SELECT 1 FROM results r WHERE r.process_id = i.process_id AND r.dimension = i.dimension
    AND r.section_index = i.section_index)
ORDER BY b.submitted_at, i.attempt
"""


@dataclass(frozen=True, slots=True)
class BatchItem:
    """What one custom_id of a batch stands for: a call's attempt."""

    custom_id: str
    dimension: str
    section_index: int | None  # None for a global dimension
    attempt: int


@dataclass(slots=True)
class RecordedBatch:
    """A batch a run submitted, with the items whose answers it still needs."""

    batch_id: str
    provider: str
    model: str | None
    submitted_at: float
    items: list[BatchItem] = field(default_factory=list)
    custom_ids: list[str] = field(default_factory=list)
    """Every custom_id of the batch in the order submitted (providers may answer by
    position), those already answered included."""


@dataclass(frozen=True, slots=True)
class BatchLedger:
    """The batches of one open run, on the store's connection.

    `transaction(fn)` runs `fn(connection)` in one committed transaction after checking that
    this process still owns the run; `read_all(sql, params)` reads rows."""

    process_id: str
    transaction: Callable[[Callable[[sqlite3.Connection], Any]], Any]
    read_all: Callable[[str, tuple[Any, ...]], list[Any]]

    def record(self, batch_id: str, provider: str, model: str | None,
               items: Sequence[BatchItem]) -> None:
        """Commit the batch and its items; returns once they are on file."""
        pid = self.process_id

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(_INSERT_BATCH, (pid, batch_id, provider, model, time.time(),
                                         "in_progress"))
            conn.executemany(_INSERT_ITEM, [
                (pid, batch_id, item.custom_id, item.dimension,
                 GLOBAL_INDEX if item.section_index is None else item.section_index,
                 item.attempt, position) for position, item in enumerate(items)])

        self.transaction(write)

    def ended(self, batch_id: str, state: str) -> None:
        """The batch is done (`state`: ended, expired, cancelled, failed) and was read."""
        def write(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE batches SET state = ?, ended_at = ? WHERE process_id = ? "
                         "AND batch_id = ?", (state, time.time(), self.process_id, batch_id))

        # The answers are already with their calls: a failure here loses nothing a resume
        # needs (it re-reads the batch), so it must not fail the calls.
        with contextlib.suppress(StoreError):
            self.transaction(write)

    def unanswered(self) -> list[RecordedBatch]:
        """Recorded batches holding items whose (dimension, section) has no stored result,
        each such item once (the one submitted last), oldest batch first."""
        latest: dict[tuple[str, int], tuple[tuple[str, str, str | None, float], BatchItem]] = {}
        for (batch_id, provider, model, submitted, custom_id, dimension, index,
             attempt) in self.read_all(_UNANSWERED, (self.process_id,)):
            item = BatchItem(custom_id, dimension, None if index == GLOBAL_INDEX else index,
                             attempt)
            latest[(dimension, index)] = ((batch_id, provider, model, submitted), item)
        batches: dict[str, RecordedBatch] = {}
        for (batch_id, provider, model, submitted), item in latest.values():
            batch = batches.get(batch_id)
            if batch is None:
                batch = batches[batch_id] = RecordedBatch(batch_id, provider, model, submitted)
            batch.items.append(item)
        for batch in batches.values():
            batch.custom_ids = [cid for (cid,) in self.read_all(
                _CUSTOM_IDS, (self.process_id, batch.batch_id))]
        return sorted(batches.values(), key=lambda b: b.submitted_at)

    def states(self) -> dict[str, str]:
        """Every recorded batch of the run by id, with its state."""
        rows = self.read_all("SELECT batch_id, state FROM batches WHERE process_id = ?",
                             (self.process_id,))
        return dict(rows)
