"""RunStore: the connection to one store file, the group commit that writes results as
they arrive, the heartbeat of the runs it owns, and the reads behind `dagengine runs`."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..errors import StoreError
from ..graph import Plan
from ..types import DimensionResult, ProcessResult, Section
from ._batches import BatchLedger
from ._cache import INSERT_CACHE, ResponseCache
from ._calls import SELECT_CALLS, SELECT_FAILED, Attempt, CallRecord, all_attempts, attempt_from_row
from ._codec import input_hash, result_from_json, sections_json
from ._input import PENDING, InputWriter
from ._ownership import LIVE, Claim, Owned, Release, lost_runs, outcome, renew_heartbeats
from ._rows import StoredRows
from ._runs import RUN_QUERY, ResultKey, RunInfo, StoredRun, reusable, run_info
from ._schema import GLOBAL_INDEX, Writer, checkpoint, open_connection

log = logging.getLogger("dagengine")

HEARTBEAT_SECONDS = 5.0
CHECKPOINT_ROWS = 2000  # rows committed between background checkpoints

T = TypeVar("T")


def open_store(target: str | os.PathLike[str] | RunStore | Any) -> Any:
    """A RunStore for a path; any other object (a store already) is returned as is."""
    if isinstance(target, (str, os.PathLike)):
        return RunStore(target)
    return target


class RunStore:
    """A dagengine run store: one SQLite file holding runs, their results and a cache.

    One connection serves the event loop (group commits, cache reads) and, under a lock,
    the worker threads that claim and load runs. Use a store from one event loop at a time.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._owned: dict[str, Owned] = {}  # process_id -> claim, for runs open here
        self._pending: dict[tuple[str, str | None], list[tuple[Any, ...]]] = {}
        self._commit_scheduled = False
        self._write_error: StoreError | None = None
        self._last_beat = time.monotonic()
        self._beat_timer: asyncio.TimerHandle | None = None
        self._since_checkpoint = 0
        self._checkpointing = False
        self._known: dict[int, int | None] = {}  # cache key (first 64 bits) -> row id
        self._known_version: int | None = None  # PRAGMA data_version when _known was loaded
        self._conn = open_connection(self.path)

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r})"

    # -- engine integration ------------------------------------------------------------------

    async def open_run(
        self, process_id: str, *, sections: Sequence[Section], plan: Plan, plugin: Any,
        resume: bool = False, retry_failed: bool = True, restart: bool = False,
        streamed: bool = False,
    ) -> StoredRun:
        """Claim `process_id`, check it against the stored run, and load what is done.

        A new id starts a run (also with resume=True). An existing id needs resume=True
        (continue it; the sections and dimension graph must match) or restart=True (drop
        its results and start over); otherwise StoreError.

        `streamed` (a new run, not a resume, whose sections cannot be transformed): the
        sections are written as the run reads them, through the returned run's `input`
        (see _input.py); `sections` is then unused.
        """
        if streamed and resume:
            raise StoreError("a resumed run is opened with its whole input, not streamed")
        chunks = [] if streamed else sections_json(sections)
        claim = Claim(
            process_id=process_id,
            plugin=str(getattr(plugin, "id", None) or type(plugin).__name__),
            signature=json.dumps(plan.signature(), sort_keys=True),
            input_hash=PENDING if streamed else input_hash(chunks),
            section_count=0 if streamed else len(sections), sections=chunks,
            token=uuid.uuid4().hex, resume=resume, restart=restart, path=self.path)
        self._flush()  # a claim must not wait behind, nor mix with, queued rows
        stored = await asyncio.to_thread(self._transaction, claim.run)
        self._owned[process_id] = Owned(claim.token, inputs=None if streamed else sections)
        run = StoredRun(process_id, reusable(stored, plan, retry_failed), claim.resumed,
                        self._writer())
        if streamed:
            run.input = InputWriter(process_id, self._writer())
        LIVE[claim.token] = run
        self._arm_heartbeat()
        return run

    def cache(self, pricing: Any = None) -> ResponseCache:
        """The response cache. (`pricing` is unused: the caller prices what a hit saved.)"""
        version = self._read_one("PRAGMA data_version", ())[0]
        if version != self._known_version:  # another connection wrote: reload the keys
            rows = self._read_all("SELECT tag, id FROM cache", ())
            self._known.clear()  # in place: caches handed out earlier share this map
            self._known.update(rows)
            self._known_version = version
        return ResponseCache(self._writer(), self._known)

    def batch_ledger(self, process_id: str) -> BatchLedger:
        """Where batch mode records the provider batches of run `process_id` (open here)."""
        def owned_transaction(fn: Callable[[sqlite3.Connection], T]) -> T:
            def checked(conn: sqlite3.Connection) -> T:
                if process_id in lost_runs(conn, self._owned, (process_id,), self.path):
                    owned = self._owned.get(process_id)
                    raise (owned.lost if owned is not None and owned.lost is not None
                           else StoreError(f"run {process_id!r} is not open in {self.path}"))
                return fn(conn)

            return self._transaction(checked)

        return BatchLedger(process_id, owned_transaction, self._read_all)

    async def close_run(self, process_id: str, result: ProcessResult | None,
                        failed: BaseException | None = None) -> None:
        """Commit everything queued, record the run's outcome and release it.

        Raises StoreError if some of the run's results could not be committed.
        """
        owned = self._owned.get(process_id)
        if owned is None:
            return
        try:
            self._flush()  # while still owned: rows of the run queued since the last commit
        finally:
            self._owned.pop(process_id, None)
            LIVE.pop(owned.token, None)
            if not self._owned and self._beat_timer is not None:
                self._beat_timer.cancel()
                self._beat_timer = None
        lost = owned.lost or self._write_error
        status, error = outcome(failed, lost)
        totals = None
        if result is not None and result.costs is not None:
            totals = result.costs.model_dump_json(fallback=str)
        # A streamed input cannot be transformed (a run with a global dimension reads it all).
        transformed = (sections_json(result.transformed_sections)
                       if result and owned.inputs is not None
                       and _changed(result.transformed_sections, owned.inputs) else [])
        release = Release(process_id, owned.token, status, error, totals, transformed)
        if owned.lost is None:
            await asyncio.to_thread(self._transaction, release.run)
        if lost is not None:
            raise lost

    def flush(self) -> None:
        """Commit everything queued now (the engine's runs do this at every loop iteration)."""
        self._flush()
        if self._write_error is not None:
            raise self._write_error

    def close(self) -> None:
        """Commit what is queued and close the file."""
        with self._lock:
            self._flush()
            self._conn.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading (the `dagengine runs` commands) -------------------------------------------

    def runs(self) -> list[RunInfo]:
        """Every stored run, newest first."""
        rows = self._read_all(f"{RUN_QUERY} ORDER BY r.created_at DESC", ())
        return [run_info(row) for row in rows]

    def run(self, process_id: str) -> RunInfo:
        rows = self._read_all(f"{RUN_QUERY} WHERE r.process_id = ?", (process_id,))
        if not rows:
            known = [r.process_id for r in self.runs()[:10]]
            raise StoreError(
                f"no run {process_id!r} in {self.path}"
                + (f"; runs: {', '.join(known)}" if known else "; the store has no runs")
            )
        return run_info(rows[0])

    def results(self, process_id: str) -> dict[ResultKey, DimensionResult]:
        """Every stored result of a run by (dimension, section index or None for globals)."""
        rows = self._read_all(
            "SELECT dimension, section_index, result FROM results WHERE process_id = ?",
            (process_id,))
        return {(d, None if i == GLOBAL_INDEX else i): result_from_json(text)
                for d, i, text in rows}

    def result(self, process_id: str, dimension: str,
               section_index: int | None) -> DimensionResult | None:
        """One stored result (section_index None: a global dimension's), or None."""
        row = self._read_one(
            "SELECT result FROM results WHERE process_id = ? AND dimension = ? "
            "AND section_index = ?",
            (process_id, dimension, GLOBAL_INDEX if section_index is None else section_index))
        return None if row is None else result_from_json(row[0])

    def calls(self, process_id: str) -> list[CallRecord]:
        """Every stored result of a run as a CallRecord (what it cost, how it went, when),
        in the order they were recorded."""
        rows = self._read_all(SELECT_CALLS, (GLOBAL_INDEX, process_id))
        return [CallRecord._make(row) for row in rows]

    def failed_attempts(self, process_id: str) -> list[Attempt]:
        """The provider requests of a run that failed, in the order they ended."""
        return [attempt_from_row(row) for row in self._read_all(SELECT_FAILED, (process_id,))]

    def attempts(self, process_id: str) -> list[Attempt]:
        """Every provider request the run's calls made, in the order they ended (none for
        results written by a dagengine before store schema version 2)."""
        return all_attempts(self.calls(process_id), self.failed_attempts(process_id))

    def sections(self, process_id: str, *, transformed: bool = False) -> list[Section]:
        """The run's input sections (or, if it transformed them, the final list)."""
        rows = self._read_all(
            "SELECT sections FROM sections WHERE process_id = ? AND kind = ? ORDER BY chunk",
            (process_id, "transformed" if transformed else "input"))
        return [Section(content=content, metadata=metadata)
                for (text,) in rows for content, metadata in json.loads(text)]

    def rows(self, process_id: str) -> StoredRows:
        """The run's section rows, streamed in section order (close it, or use `with`)."""
        run = self.run(process_id)
        self.flush()  # what this connection queued must be visible to the reader
        dimensions = [name for name, scope in run.plan.get("dimensions", [])
                      if scope != "global"]
        return StoredRows(self.path, process_id, dimensions)

    # -- writing -----------------------------------------------------------------------------

    def _enqueue(self, sql: str, run: str | None, row: tuple[Any, ...]) -> None:
        """Queue a row for the next group commit; raise if the run can no longer be written.

        Called on the event loop's thread only, like _flush, so the queue needs no lock.
        """
        if run is not None:
            owned = self._owned.get(run)
            if owned is None:
                raise StoreError(f"run {run!r} is not open in {self.path}")
            if owned.lost is not None:
                raise owned.lost
        if self._write_error is not None:
            raise self._write_error
        rows = self._pending.get((sql, run))
        if rows is None:
            rows = self._pending[(sql, run)] = []
        rows.append(row)
        if not self._commit_scheduled:
            self._commit_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Commit every queued row in one transaction, after checking each run's ownership."""
        with self._lock:
            self._commit_scheduled = False
            pending, self._pending = self._pending, {}
            beat = bool(self._owned) and (
                time.monotonic() - self._last_beat >= HEARTBEAT_SECONDS)
            if not pending and not beat:
                return
            try:
                count = self._transaction(lambda conn: self._write(conn, pending, beat))
            except StoreError as exc:
                self._write_error = exc
                log.error("%s", exc)
                return
        self._maybe_checkpoint(count)

    def _write(self, conn: sqlite3.Connection, pending: Mapping[tuple[str, str | None],
               list[tuple[Any, ...]]], beat: bool) -> int:
        lost = lost_runs(conn, self._owned, {run for _, run in pending if run is not None},
                         self.path)
        count = 0
        for (sql, run), rows in pending.items():
            if run in lost:
                continue
            if sql is INSERT_CACHE:  # append at the end, and remember where
                last = conn.execute("SELECT coalesce(max(id), 0) FROM cache").fetchone()[0]
                rows = [(last + i, *row) for i, row in enumerate(rows, 1)]
                self._known.update((row[1], row[0]) for row in rows)
            conn.executemany(sql, rows)
            count += len(rows)
        if beat:
            renew_heartbeats(conn, self._owned)
            self._last_beat = time.monotonic()
        return count

    def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(connection)` in one BEGIN IMMEDIATE transaction; SQLite errors -> StoreError."""
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    value = fn(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreError(f"could not write to the run store {self.path}: "
                                 f"{type(exc).__name__}: {exc}") from exc
            return value

    def _arm_heartbeat(self) -> None:
        """Renew the heartbeat of open runs even when no result arrives for a while."""
        if self._beat_timer is not None:
            self._beat_timer.cancel()

        def beat() -> None:
            self._beat_timer = None
            if self._owned:
                self._flush()
                self._arm_heartbeat()

        self._beat_timer = asyncio.get_running_loop().call_later(HEARTBEAT_SECONDS, beat)

    def _maybe_checkpoint(self, rows: int) -> None:
        """Move the WAL into the database file (which fsyncs) in a thread, not on the loop."""
        self._since_checkpoint += rows
        if self._since_checkpoint < CHECKPOINT_ROWS or self._checkpointing:
            return
        self._since_checkpoint = 0
        self._checkpointing = True

        def run() -> None:
            try:
                checkpoint(self.path)
            except sqlite3.Error as exc:  # the next checkpoint, or closing, catches up
                log.warning("checkpoint of %s failed: %s", self.path, exc)
            finally:
                self._checkpointing = False

        threading.Thread(target=run, name="dagengine-checkpoint", daemon=True).start()

    # -- plumbing ----------------------------------------------------------------------------

    def _writer(self) -> Writer:
        # Made per handle, not kept: the store holding its own bound methods would be a
        # reference cycle, and the file would stay open until a garbage collection.
        return Writer(enqueue=self._enqueue, read_one=self._read_one)

    def _read_one(self, sql: str, params: tuple[Any, ...]) -> Any:
        with self._lock:
            return self._conn.execute(sql, params).fetchone()

    def _read_all(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read the run store {self.path}: {exc}") from exc


def _changed(final: Sequence[Section], inputs: Sequence[Section]) -> bool:
    """Whether a transform replaced the input list (which is stored once, as the inputs)."""
    return len(final) != len(inputs) or any(a is not b for a, b in zip(final, inputs,
                                                                        strict=True))
