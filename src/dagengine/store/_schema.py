"""The store's file: its tables, the checks that a file is a store we can read, the
connection every RunStore opens on it, and the narrow Writer the cache and the runs use."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import StoreError

SCHEMA_VERSION = 3
APPLICATION_ID = 0x64616731  # "dag1": lets `file(1)` and our own check recognise the file
GLOBAL_INDEX = -1  # section_index stored for a global dimension's result


@dataclass(frozen=True, slots=True)
class Writer:
    """What the response cache and an open run may do with the store's file, and no more.

    `enqueue(sql, run, row)` queues a row for the next group commit (`run`: the process id
    whose ownership the commit checks first, None for the cache); `read_one(sql, params)`
    reads one row on the store's connection. The RunStore hands these out, so neither side
    needs the other's class.
    """

    enqueue: Callable[[str, str | None, tuple[Any, ...]], None]
    read_one: Callable[[str, tuple[Any, ...]], Any]

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

# What each version adds to the one before; a store is upgraded in place when it is opened.
# Version 2 keeps the provider requests of each call, for the run report's timeline,
# latencies and retries: when it began (before the rate limiter), was sent and ended. The
# request that produced a result is in the result's row; those that failed (a 429, a 5xx,
# an invalid answer...) are rows of their own, with their HTTP status and cause.
_MIGRATIONS: dict[int, str] = {
    2: """
ALTER TABLE results ADD COLUMN request_started_at REAL;
ALTER TABLE results ADD COLUMN request_sent_at REAL;
ALTER TABLE results ADD COLUMN request_ended_at REAL;
CREATE TABLE failed_attempts (
    process_id     TEXT NOT NULL,
    dimension      TEXT NOT NULL,
    section_index  INTEGER NOT NULL,
    attempt        INTEGER NOT NULL,
    provider       TEXT NOT NULL,
    model          TEXT,
    started_at     REAL NOT NULL,
    sent_at        REAL NOT NULL,
    ended_at       REAL NOT NULL,
    status         INTEGER,
    error          TEXT NOT NULL
);
""",
    # Version 3 keeps the provider batches of batch-mode runs (store/_batches.py): each
    # batch id and what each of its custom_ids stands for, committed before the run waits on
    # it, so a resumed run re-attaches to its batches instead of paying for them again.
    3: """
CREATE TABLE batches (
    process_id    TEXT NOT NULL,
    batch_id      TEXT NOT NULL,
    provider      TEXT NOT NULL,
    model         TEXT,
    submitted_at  REAL NOT NULL,
    state         TEXT NOT NULL,
    ended_at      REAL,
    PRIMARY KEY (process_id, batch_id)
) WITHOUT ROWID;
CREATE TABLE batch_items (
    process_id     TEXT NOT NULL,
    batch_id       TEXT NOT NULL,
    custom_id      TEXT NOT NULL,
    dimension      TEXT NOT NULL,
    section_index  INTEGER NOT NULL,
    attempt        INTEGER NOT NULL,
    position       INTEGER NOT NULL,
    PRIMARY KEY (process_id, batch_id, custom_id)
) WITHOUT ROWID;
""",
}


def open_connection(path: Path) -> sqlite3.Connection:
    """A connection to the store at `path`, creating the schema in a new file."""
    conn = _connect(path)
    try:
        _check_or_create_schema(conn, path)
    except BaseException:
        conn.close()
        raise
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")  # see RunStore._maybe_checkpoint
    return conn


def checkpoint(path: Path) -> None:
    """Copy the WAL into the database file, on a connection of its own: the store's
    connection, and its lock, stay free for the event loop meanwhile."""
    conn = sqlite3.connect(path, timeout=30.0)
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        conn.close()


def _connect(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30.0, isolation_level=None,
                               check_same_thread=False)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot open the run store {path}: {exc}") from exc
    return conn


def _check_or_create_schema(conn: sqlite3.Connection, path: Path) -> None:
    try:
        tables = _tables(conn)
        if not tables:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if not _tables(conn):  # another process may have just created it
                    _execute_script(conn, _SCHEMA)
                    for version in sorted(_MIGRATIONS):
                        _execute_script(conn, _MIGRATIONS[version])
                    conn.execute("INSERT INTO schema_version VALUES (?, ?, ?)",
                                 (SCHEMA_VERSION, f"dagengine {__version__}", time.time()))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            tables = _tables(conn)
        if "schema_version" not in tables:
            raise StoreError(
                f"{path} is an SQLite database but not a dagengine run store "
                f"(its tables: {', '.join(sorted(tables))}); pass a new file path as store="
            )
        version = _stored_version(conn, path)
        if version < SCHEMA_VERSION:
            _upgrade(conn, path, version)
        elif version > SCHEMA_VERSION:
            raise StoreError(
                f"{path} uses run store schema version {version}, written by a newer "
                f"dagengine; this dagengine ({__version__}) reads up to version "
                f"{SCHEMA_VERSION}. Upgrade dagengine (pip install -U dagengine)."
            )
        conn.execute("PRAGMA journal_mode = WAL")
    except sqlite3.DatabaseError as exc:
        raise StoreError(
            f"{path} is not a dagengine run store (SQLite says: {exc}); "
            "pass the path of a store or of a new file as store="
        ) from exc


def _stored_version(conn: sqlite3.Connection, path: Path) -> int:
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    version = row[0] if row else None
    if not isinstance(version, int):
        raise StoreError(f"{path} is not a valid dagengine run store "
                         "(its schema_version table is empty)")
    return version


def _upgrade(conn: sqlite3.Connection, path: Path, version: int) -> None:
    """Bring an older store up to SCHEMA_VERSION in one transaction; what it holds stays."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = _stored_version(conn, path)  # another process may have just upgraded it
            for target in range(current + 1, SCHEMA_VERSION + 1):
                _execute_script(conn, _MIGRATIONS[target])
                conn.execute("INSERT INTO schema_version VALUES (?, ?, ?)",
                             (target, f"dagengine {__version__} (upgraded)", time.time()))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise StoreError(
            f"{path} uses run store schema version {version}, which this dagengine upgrades "
            f"in place to {SCHEMA_VERSION}, but the upgrade failed (SQLite says: {exc}); "
            "make the file and its folder writable, then open it again"
        ) from exc


def _execute_script(conn: sqlite3.Connection, script: str) -> None:
    # Statement by statement: executescript() would commit the open transaction first.
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
