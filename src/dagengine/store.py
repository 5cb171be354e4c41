"""Durable runs: a SQLite file that records every result as it completes.

`DagEngine(store="runs.db")` opens a `RunStore`. For each `process()` the engine opens a
run (`open_run`), reports every finished result (`StoredRun.record`), reads and fills the
response cache (`RunStore.cache`), and closes the run (`close_run`). A crash, Ctrl-C or
redeploy then costs at most the calls that were in flight: `process(..., process_id=ID,
resume=True)` takes the stored results as done and calls only for what is missing.

Durability. `record` serialises the result and queues it; the first row queued in an
event-loop iteration schedules a commit for the start of the next one, so everything
recorded in one iteration goes into one transaction (group commit). The scheduler only
frees a finished item's concurrency slot after `record`, and the commit runs before any
callback scheduled after it, so no new call starts before the results that freed its slot
are committed: calls in flight plus results not yet committed never exceed `concurrency`.
The file is in WAL mode with `synchronous=NORMAL`, so a commit is a write to the
operating system, not a disk flush: it is cheap enough for the event loop (a few
microseconds a row) and once it returns, killing the process, even with SIGKILL, cannot
lose it; only a power loss or kernel crash can lose the last commits. The flush to disk
happens in checkpoints, which a background thread runs so the event loop never waits for
a disk. (A writer thread was measured too: to keep the same bound it must acknowledge each
commit before the slot is freed, and that costs more than committing on the loop.)

Ownership. A run being written has an owner in its `runs` row (pid, host, a token and a
heartbeat renewed every few seconds). Opening a run another live owner holds raises
StoreError; an owner that is gone (its pid is dead on this host, or its heartbeat is older
than `STALE_AFTER` seconds) is taken over, so a SIGKILLed run can be resumed at once.
Claiming happens in a `BEGIN IMMEDIATE` transaction, and every commit checks the token
first, so two processes never both write one run. Processes writing different runs can
share a file: SQLite serialises their commits, each a short transaction.

Resume is exact for plugins whose transforms (`Dimension.transform`,
`transform_sections`) are deterministic: results are keyed by (dimension, section index)
exactly as the engine reports them, and section indexes after a global transform refer to
the transformed list. With `retry_failed=True` (the default) failed results are called
again, and so is everything that depends on them.

What is never stored: provider configurations and API keys (the store only sees requests,
which carry none, and responses). The cache is keyed by a SHA-256 of provider name, model,
options and input; its entries are shared by every run in the file.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pydantic_core

from .errors import StoreError
from .graph import Plan
from .types import (
    DimensionResult,
    ProcessResult,
    ProviderRequest,
    ProviderResponse,
    Section,
    TokenUsage,
)

log = logging.getLogger("dagengine")

SCHEMA_VERSION = 1
APPLICATION_ID = 0x64616731  # "dag1": lets `file(1)` and our own check recognise the file
HEARTBEAT_SECONDS = 5.0
STALE_AFTER = 60.0  # a heartbeat older than this means the owner is gone
GLOBAL_INDEX = -1  # section_index stored for a global dimension's result

_SCHEMA = f"""
CREATE TABLE schema_version (
    version     INTEGER NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  REAL NOT NULL
);
CREATE TABLE runs (
    process_id      TEXT PRIMARY KEY,
    plugin          TEXT NOT NULL,
    plan_signature  TEXT NOT NULL,
    input_hash      TEXT NOT NULL,
    section_count   INTEGER NOT NULL,
    status          TEXT NOT NULL,
    error           TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    totals          TEXT,
    owner_token     TEXT,
    owner_pid       INTEGER,
    owner_host      TEXT,
    heartbeat       REAL
);
CREATE TABLE sections (
    process_id  TEXT NOT NULL,
    kind        TEXT NOT NULL,
    chunk       INTEGER NOT NULL,
    sections    TEXT NOT NULL,
    PRIMARY KEY (process_id, kind, chunk)
) WITHOUT ROWID;
CREATE TABLE results (
    process_id     TEXT NOT NULL,
    dimension      TEXT NOT NULL,
    section_index  INTEGER NOT NULL,
    ok             INTEGER NOT NULL,
    result         TEXT NOT NULL,
    recorded_at    REAL NOT NULL,
    PRIMARY KEY (process_id, dimension, section_index)
) WITHOUT ROWID;
CREATE TABLE cache (
    id          INTEGER PRIMARY KEY,
    tag         INTEGER NOT NULL,
    key         TEXT NOT NULL,
    provider    TEXT NOT NULL,
    model       TEXT,
    response    TEXT NOT NULL,
    created_at  REAL NOT NULL
);
PRAGMA application_id = {APPLICATION_ID};
"""


_INSERT_RESULT = "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?)"
_INSERT_CACHE = "INSERT INTO cache VALUES (?, ?, ?, ?, ?, ?, ?)"
SECTIONS_PER_ROW = 1000
CHECKPOINT_ROWS = 2000  # rows committed between background checkpoints

T = TypeVar("T")
ResultKey = tuple[str, int | None]

# Runs this process has open, by owner token; a run whose handle was garbage-collected
# without close_run (its process() died) no longer counts as owned.
_LIVE: weakref.WeakValueDictionary[str, StoredRun] = weakref.WeakValueDictionary()
_HOST = socket.gethostname()


def open_store(target: str | os.PathLike[str] | RunStore | Any) -> Any:
    """A RunStore for a path; any other object (a store already) is returned as is."""
    if isinstance(target, (str, os.PathLike)):
        return RunStore(target)
    return target


# -- public data ---------------------------------------------------------------------------


@dataclass(slots=True)
class RunInfo:
    """One stored run, as `dagengine runs list` shows it."""

    process_id: str
    plugin: str
    status: str  # running | completed | failed | interrupted
    section_count: int
    results: int
    failed: int
    cost: float
    created_at: float
    updated_at: float
    error: str | None = None
    owner: str | None = None  # "pid@host" while a live process writes the run
    totals: dict[str, Any] | None = None
    plan: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class StoredRun:
    """An open run: what to take as done, and where the engine reports each new result."""

    process_id: str
    preloaded: dict[ResultKey, DimensionResult]
    resumed: bool
    _store: RunStore = field(repr=False)

    def record(self, dimension: str, section_index: int | None, result: DimensionResult) -> None:
        """Queue `result` for the group commit at the start of the next loop iteration."""
        self._store._add(_INSERT_RESULT, self.process_id, (
            self.process_id, dimension, GLOBAL_INDEX if section_index is None else section_index,
            int(result.error is None), result_json(result), time.time()))


class ResponseCache:
    """Provider responses by request, shared by every run in the store.

    The table has no index: it only grows at its end, which keeps writing it cheap. An
    in-memory map from the first 64 bits of each key to its row answers misses without
    reading the file and finds hits by rowid; it is loaded when the cache is opened for a
    run (about 100 bytes an entry) and this process keeps it up to date.
    """

    def __init__(self, store: RunStore, known: dict[int, int | None]) -> None:
        self._store = store
        self._known = known
        # Keys of requests just missed, by id(request): store() follows with the same request.
        self._missed: dict[int, tuple[ProviderRequest, str, int]] = {}

    async def lookup(self, provider_name: str, request: ProviderRequest) -> ProviderResponse | None:
        key, tag = _cache_key(provider_name, request)
        row_id = self._known.get(tag)
        if row_id is not None:
            row = self._store._read_one("SELECT key, response FROM cache WHERE id = ?",
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
        self._store._add(_INSERT_CACHE, None, (
            tag, key, provider_name, request.options.get("model"),
            response.model_dump_json(fallback=str), time.time()))


@dataclass(slots=True)
class _Owned:
    """A run this store has claimed: its owner token, and why it can no longer be written."""

    token: str
    lost: StoreError | None = None


# -- the store -----------------------------------------------------------------------------


class RunStore:
    """A dagengine run store: one SQLite file holding runs, their results and a cache.

    One connection serves the event loop (group commits, cache reads) and, under a lock,
    the worker threads that claim and load runs. Use a store from one event loop at a time.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._owned: dict[str, _Owned] = {}  # process_id -> claim, for runs open here
        self._pending: dict[tuple[str, str | None], list[tuple[Any, ...]]] = {}
        self._commit_scheduled = False
        self._write_error: StoreError | None = None
        self._last_beat = time.monotonic()
        self._beat_timer: asyncio.TimerHandle | None = None
        self._since_checkpoint = 0
        self._checkpointing = False
        self._known: dict[int, int | None] = {}  # cache key (first 64 bits) -> row id
        self._known_version: int | None = None  # PRAGMA data_version when _known was loaded
        self._conn = self._connect()
        try:
            self._check_or_create_schema(self._conn)
        except BaseException:
            self._conn.close()
            raise
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute("PRAGMA wal_autocheckpoint = 0")  # see _maybe_checkpoint

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r})"

    # -- engine integration ------------------------------------------------------------------

    async def open_run(
        self, process_id: str, *, sections: Sequence[Section], plan: Plan, plugin: Any,
        resume: bool = False, retry_failed: bool = True, restart: bool = False,
    ) -> StoredRun:
        """Claim `process_id`, check it against the stored run, and load what is done.

        A new id starts a run (also with resume=True). An existing id needs resume=True
        (continue it; the sections and dimension graph must match) or restart=True (drop
        its results and start over); otherwise StoreError.
        """
        chunks = sections_json(sections)
        claim = _Claim(
            process_id=process_id,
            plugin=str(getattr(plugin, "id", None) or type(plugin).__name__),
            signature=json.dumps(plan.signature(), sort_keys=True),
            input_hash=_input_hash(chunks), section_count=len(sections), sections=chunks,
            token=uuid.uuid4().hex, resume=resume, restart=restart, path=self.path)
        self._flush()  # a claim must not wait behind, nor mix with, queued rows
        stored = await asyncio.to_thread(self._transaction, claim.run)
        self._owned[process_id] = _Owned(claim.token)
        run = StoredRun(process_id, _reusable(stored, plan, retry_failed), claim.resumed, self)
        _LIVE[claim.token] = run
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
        return ResponseCache(self, self._known)

    async def close_run(self, process_id: str, result: ProcessResult | None,
                        failed: BaseException | None = None) -> None:
        """Commit everything queued, record the run's outcome and release it.

        Raises StoreError if some of the run's results could not be committed.
        """
        owned = self._owned.pop(process_id, None)
        if owned is None:
            return
        try:
            self._flush()
        finally:
            _LIVE.pop(owned.token, None)
            if not self._owned and self._beat_timer is not None:
                self._beat_timer.cancel()
                self._beat_timer = None
        if failed is None:
            status, error = "completed", None
        elif isinstance(failed, (asyncio.CancelledError, KeyboardInterrupt)):
            status, error = "interrupted", "cancelled"
        else:
            status, error = "failed", f"{type(failed).__name__}: {failed}"
        lost = owned.lost or self._write_error
        if lost is not None and status == "completed":
            status, error = "failed", str(lost)
        totals = None
        if result is not None and result.costs is not None:
            totals = result.costs.model_dump_json(fallback=str)
        transformed = sections_json(result.transformed_sections) if result else []

        def finish(conn: sqlite3.Connection) -> None:
            if transformed:
                conn.execute("DELETE FROM sections WHERE process_id = ? AND kind = 'transformed'",
                             (process_id,))
                conn.executemany("INSERT INTO sections VALUES (?, 'transformed', ?, ?)",
                                 [(process_id, i, chunk) for i, chunk in enumerate(transformed)])
            conn.execute(
                "UPDATE runs SET status = ?, error = ?, totals = coalesce(?, totals), "
                "updated_at = ?, owner_token = NULL, owner_pid = NULL, owner_host = NULL, "
                "heartbeat = NULL WHERE process_id = ? AND owner_token = ?",
                (status, error, totals, time.time(), process_id, owned.token))

        if owned.lost is None:
            await asyncio.to_thread(self._transaction, finish)
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
        rows = self._read_all(f"{_RUN_QUERY} ORDER BY r.created_at DESC", ())
        return [_run_info(row) for row in rows]

    def run(self, process_id: str) -> RunInfo:
        rows = self._read_all(f"{_RUN_QUERY} WHERE r.process_id = ?", (process_id,))
        if not rows:
            known = [r.process_id for r in self.runs()[:10]]
            raise StoreError(
                f"no run {process_id!r} in {self.path}"
                + (f"; runs: {', '.join(known)}" if known else "; the store has no runs")
            )
        return _run_info(rows[0])

    def results(self, process_id: str) -> dict[ResultKey, DimensionResult]:
        """Every stored result of a run by (dimension, section index or None for globals)."""
        rows = self._read_all(
            "SELECT dimension, section_index, result FROM results WHERE process_id = ?",
            (process_id,))
        return {(d, None if i == GLOBAL_INDEX else i): result_from_json(text)
                for d, i, text in rows}

    def sections(self, process_id: str, *, transformed: bool = False) -> list[Section]:
        """The run's input sections (or, if it transformed them, the final list)."""
        rows = self._read_all(
            "SELECT sections FROM sections WHERE process_id = ? AND kind = ? ORDER BY chunk",
            (process_id, "transformed" if transformed else "input"))
        return [Section(content=content, metadata=metadata)
                for (text,) in rows for content, metadata in json.loads(text)]

    # -- writing -----------------------------------------------------------------------------

    def _add(self, sql: str, run: str | None, row: tuple[Any, ...]) -> None:
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
        lost = self._check_ownership(conn, {run for _, run in pending if run is not None})
        count = 0
        for (sql, run), rows in pending.items():
            if run in lost:
                continue
            if sql is _INSERT_CACHE:  # append at the end, and remember where
                last = conn.execute("SELECT coalesce(max(id), 0) FROM cache").fetchone()[0]
                rows = [(last + i, *row) for i, row in enumerate(rows, 1)]
                self._known.update((row[1], row[0]) for row in rows)
            conn.executemany(sql, rows)
            count += len(rows)
        if beat:
            now = time.time()
            conn.executemany(
                "UPDATE runs SET heartbeat = ?, updated_at = ? WHERE process_id = ? "
                "AND owner_token = ?", [(now, now, run, o.token) for run, o in self._owned.items()
                                        if o.lost is None])
            self._last_beat = time.monotonic()
        return count

    def _check_ownership(self, conn: sqlite3.Connection, runs: Iterable[str]) -> set[str]:
        """Runs another process has taken over since we claimed them (their rows are dropped)."""
        lost: set[str] = set()
        for run in runs:
            owned = self._owned.get(run)
            if owned is None:
                lost.add(run)
                continue
            row = conn.execute("SELECT owner_pid, owner_host, owner_token FROM runs "
                               "WHERE process_id = ?", (run,)).fetchone()
            if row is None or row[2] != owned.token:
                who = "nobody (it was deleted)" if row is None else f"pid {row[0]} on {row[1]}"
                owned.lost = StoreError(f"run {run!r} in {self.path} was taken over (now "
                                        f"owned by {who}); this process stopped writing to it")
                lost.add(run)
        return lost

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

        def checkpoint() -> None:
            try:
                conn = sqlite3.connect(self.path, timeout=30.0)
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                finally:
                    conn.close()
            except sqlite3.Error as exc:  # the next checkpoint, or closing, catches up
                log.warning("checkpoint of %s failed: %s", self.path, exc)
            finally:
                self._checkpointing = False

        threading.Thread(target=checkpoint, name="dagengine-checkpoint", daemon=True).start()

    # -- plumbing ----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                                   check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the run store {self.path}: {exc}") from exc
        return conn

    def _check_or_create_schema(self, conn: sqlite3.Connection) -> None:
        try:
            tables = _tables(conn)
            if not tables:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if not _tables(conn):  # another process may have just created it
                        for statement in _SCHEMA.split(";"):
                            if statement.strip():
                                conn.execute(statement)
                        conn.execute("INSERT INTO schema_version VALUES (?, ?, ?)",
                                     (SCHEMA_VERSION, f"dagengine {_version()}", time.time()))
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                tables = _tables(conn)
            if "schema_version" not in tables:
                raise StoreError(
                    f"{self.path} is an SQLite database but not a dagengine run store "
                    f"(its tables: {', '.join(sorted(tables))}); pass a new file path as store="
                )
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            version = row[0] if row else None
            if not isinstance(version, int):
                raise StoreError(f"{self.path} is not a valid dagengine run store "
                                 "(its schema_version table is empty)")
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} uses run store schema version {version}, written by a newer "
                    f"dagengine; this dagengine ({_version()}) reads up to version "
                    f"{SCHEMA_VERSION}. Upgrade dagengine (pip install -U dagengine)."
                )
            conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"{self.path} is not a dagengine run store (SQLite says: {exc}); "
                "pass the path of a store or of a new file as store="
            ) from exc

    def _read_one(self, sql: str, params: tuple[Any, ...]) -> Any:
        with self._lock:
            return self._conn.execute(sql, params).fetchone()

    def _read_all(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read the run store {self.path}: {exc}") from exc


_RUN_QUERY = """
SELECT r.process_id, r.plugin, r.status, r.section_count, r.created_at, r.updated_at, r.error,
       r.totals, r.plan_signature, r.owner_token, r.owner_pid, r.owner_host, r.heartbeat,
       (SELECT count(*) FROM results x WHERE x.process_id = r.process_id),
       (SELECT count(*) FROM results x WHERE x.process_id = r.process_id AND x.ok = 0),
       (SELECT total(json_extract(x.result, '$.metadata.cost')) FROM results x
         WHERE x.process_id = r.process_id)
FROM runs r
"""


def _run_info(row: Sequence[Any]) -> RunInfo:
    (process_id, plugin, status, section_count, created, updated, error, totals, plan,
     token, pid, host, heartbeat, results, failed, cost) = row
    owner = None
    if token is not None:
        if _owner_alive(token, pid, host, heartbeat):
            owner = f"{pid}@{host}"
        elif status == "running":
            status = "interrupted"
    return RunInfo(process_id=process_id, plugin=plugin, status=status,
                   section_count=section_count, results=results, failed=failed,
                   cost=float(cost or 0.0), created_at=created, updated_at=updated, error=error,
                   owner=owner, totals=json.loads(totals) if totals else None,
                   plan=json.loads(plan))


# -- claiming a run --------------------------------------------------------------------------


@dataclass(slots=True)
class _Claim:
    process_id: str
    plugin: str
    signature: str
    input_hash: str
    section_count: int
    sections: list[str]  # JSON chunks, as sections_json() makes them
    token: str
    resume: bool
    restart: bool
    path: Path
    resumed: bool = False

    def run(self, conn: sqlite3.Connection) -> list[tuple[str, int, int, str]]:
        """Inside BEGIN IMMEDIATE: check and claim the run; its stored results if resumed."""
        pid = self.process_id
        row = conn.execute(
            "SELECT plugin, plan_signature, input_hash, section_count, owner_token, owner_pid, "
            "owner_host, heartbeat FROM runs WHERE process_id = ?", (pid,)).fetchone()
        now = time.time()
        if row is not None:
            plugin, signature, input_hash, count, token, owner_pid, host, heartbeat = row
            if token is not None and _owner_alive(token, owner_pid, host, heartbeat):
                raise StoreError(
                    f"run {pid!r} in {self.path} is already being written by pid {owner_pid} "
                    f"on {host} (last heartbeat {now - (heartbeat or now):.0f}s ago); wait for "
                    "that run to finish or stop it, then resume"
                )
            if self.restart:
                for table in ("results", "sections", "runs"):
                    conn.execute(f"DELETE FROM {table} WHERE process_id = ?", (pid,))
            elif not self.resume:
                raise StoreError(
                    f"run {pid!r} exists in {self.path}; pass resume=True to continue it or "
                    "restart=True to start over"
                )
            else:
                self._check_matches(plugin, signature, input_hash, count)
                self.resumed = True
                conn.execute(
                    "UPDATE runs SET status = 'running', error = NULL, updated_at = ?, "
                    "owner_token = ?, owner_pid = ?, owner_host = ?, heartbeat = ? "
                    "WHERE process_id = ?",
                    (now, self.token, os.getpid(), _HOST, now, pid))
                return conn.execute(
                    "SELECT dimension, section_index, ok, result FROM results "
                    "WHERE process_id = ?", (pid,)).fetchall()
        conn.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, 'running', NULL, ?, ?, NULL, ?, ?, ?, ?)",
            (pid, self.plugin, self.signature, self.input_hash, self.section_count, now, now,
             self.token, os.getpid(), _HOST, now))
        conn.executemany("INSERT INTO sections VALUES (?, 'input', ?, ?)",
                         [(pid, i, chunk) for i, chunk in enumerate(self.sections)])
        return []

    def _check_matches(self, plugin: str, signature: str, input_hash: str, count: int) -> None:
        pid = self.process_id
        fix = f"pass restart=True to start run {pid!r} over, or use a new process_id"
        if plugin != self.plugin:
            raise StoreError(f"run {pid!r} was started by plugin {plugin!r}, not "
                             f"{self.plugin!r}; {fix}")
        if signature != self.signature:
            change = _plan_difference(json.loads(signature), json.loads(self.signature))
            raise StoreError(f"run {pid!r} was started with a different dimension graph "
                             f"({change}); {fix}")
        if input_hash != self.input_hash:
            now = self.section_count
            what = (f"{count} sections then, {now} now" if count != now
                    else f"the same number ({now}) but different content or metadata")
            raise StoreError(f"run {pid!r} was started with different sections ({what}); {fix}")


def _plan_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    old_dims = {n: s for n, s in old["dimensions"]}
    new_dims = {n: s for n, s in new["dimensions"]}
    parts = []
    if added := [n for n in new_dims if n not in old_dims]:
        parts.append(f"added {', '.join(added)}")
    if removed := [n for n in old_dims if n not in new_dims]:
        parts.append(f"removed {', '.join(removed)}")
    if rescoped := [n for n in new_dims if n in old_dims and old_dims[n] != new_dims[n]]:
        parts.append(f"changed scope of {', '.join(rescoped)}")
    if rewired := [n for n in new_dims if n in old_dims and
                   sorted(old["dependencies"].get(n, [])) != sorted(new["dependencies"][n])]:
        parts.append(f"changed dependencies of {', '.join(rewired)}")
    return "; ".join(parts) or "dimension order changed"


def _reusable(rows: Iterable[tuple[str, int, int, str]], plan: Plan,
              retry_failed: bool) -> dict[ResultKey, DimensionResult]:
    """Stored results to take as done: with retry_failed, not the failed ones nor anything
    downstream of them (a dependent that saw a failed dependency must run again too)."""
    by_dim: dict[str, dict[int | None, tuple[bool, str]]] = {}
    for dimension, stored_index, ok, text in rows:
        if dimension in plan.dimensions:
            key = None if stored_index == GLOBAL_INDEX else stored_index
            by_dim.setdefault(dimension, {})[key] = (bool(ok), text)
    dropped: dict[str, set[int | None]] = {}  # dimension -> indexes not taken as done
    wiped: set[str] = set()  # dimensions none of whose stored results can be used
    reused: dict[ResultKey, DimensionResult] = {}
    for name in plan.order:
        stored = by_dim.get(name, {})
        deps = plan.dependencies[name]
        # A global dependency re-run, or a section dependency that lost any result, changes
        # every input of this dimension (globals see all sections; sections see the global).
        upstream_changed = any(
            d in wiped or (d in dropped and (plan.is_global(name) or plan.is_global(d)))
            for d in deps
        )
        if upstream_changed:
            wiped.add(name)
            dropped[name] = set(stored)
            continue
        for index, (ok, text) in stored.items():  # index: None for a global dimension
            if (retry_failed and not ok) or any(index in dropped.get(d, ()) for d in deps):
                dropped.setdefault(name, set()).add(index)
            else:
                reused[(name, index)] = result_from_json(text)
    return reused


def _owner_alive(token: str, pid: int | None, host: str | None, heartbeat: float | None) -> bool:
    if host == _HOST and pid == os.getpid():
        return token in _LIVE
    if heartbeat is None or time.time() - heartbeat > STALE_AFTER:
        return False
    if host == _HOST and pid is not None:
        return _pid_alive(pid)
    return True


def _pid_alive(pid: int) -> bool:
    if pid <= 0:  # os.kill(0, ...) would signal our own process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError as exc:
        return exc.errno != errno.ESRCH
    return True


# -- serialisation ---------------------------------------------------------------------------


def result_json(result: DimensionResult) -> str:
    """A result as stored: JSON; values JSON cannot hold are stored as their str()."""
    return pydantic_core.to_json(
        {"data": result.data, "error": result.error, "metadata": result.metadata}, fallback=str
    ).decode()


def result_from_json(text: str) -> DimensionResult:
    """A stored result, with metadata["tokens"] a TokenUsage again so costs add up."""
    result = DimensionResult.model_validate_json(text)
    _restore_tokens(result.metadata)
    return result


def response_from_json(text: str) -> ProviderResponse:
    response = ProviderResponse.model_validate_json(text)
    _restore_tokens(response.metadata)
    return response


def _restore_tokens(metadata: dict[str, Any]) -> None:
    tokens = metadata.get("tokens")
    if isinstance(tokens, dict):
        metadata["tokens"] = TokenUsage.model_validate(tokens)


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              default=str)


def sections_json(sections: Sequence[Section]) -> list[str]:
    """Sections as stored and hashed: canonical JSON arrays of [content, metadata] pairs,
    SECTIONS_PER_ROW to a row, so equal sections always give equal text."""
    return [_CANONICAL.encode([[s.content, s.metadata] for s in sections[i:i + SECTIONS_PER_ROW]])
            for i in range(0, len(sections), SECTIONS_PER_ROW)]


def cache_key(provider_name: str, request: ProviderRequest) -> str:
    """SHA-256 of provider, model, options and input: what determines the answer."""
    return _cache_key(provider_name, request)[0]


def _cache_key(provider_name: str, request: ProviderRequest) -> tuple[str, int]:
    """The key, and its first 64 bits as a signed integer (the cache table's rowid)."""
    options = request.options
    material = _CANONICAL.encode([provider_name, options.get("model"), options, request.input])
    digest = hashlib.sha256(material.encode()).digest()
    return digest.hex(), int.from_bytes(digest[:8], "big", signed=True)


def _input_hash(chunks: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk.encode())
    return digest.hexdigest()


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _version() -> str:
    from . import __version__

    return __version__


__all__ = [
    "SCHEMA_VERSION",
    "ResponseCache",
    "RunInfo",
    "RunStore",
    "StoredRun",
    "open_store",
]
