"""One run in the store: how it is listed, claimed by one process at a time, and which of
its stored results a resume takes as done."""

from __future__ import annotations

import errno
import json
import os
import socket
import sqlite3
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import StoreError
from ..graph import Plan
from ..types import DimensionResult
from ._codec import result_from_json, result_json
from ._schema import GLOBAL_INDEX

if TYPE_CHECKING:
    from ._store import RunStore

STALE_AFTER = 60.0  # a heartbeat older than this means the owner is gone

_INSERT_RESULT = "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?)"

ResultKey = tuple[str, int | None]

# Runs this process has open, by owner token; a run whose handle was garbage-collected
# without close_run (its process() died) no longer counts as owned.
LIVE: weakref.WeakValueDictionary[str, StoredRun] = weakref.WeakValueDictionary()
_HOST = socket.gethostname()


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


@dataclass(slots=True)
class Owned:
    """A run this store has claimed: its owner token, and why it can no longer be written."""

    token: str
    lost: StoreError | None = None


RUN_QUERY = """
SELECT r.process_id, r.plugin, r.status, r.section_count, r.created_at, r.updated_at, r.error,
       r.totals, r.plan_signature, r.owner_token, r.owner_pid, r.owner_host, r.heartbeat,
       (SELECT count(*) FROM results x WHERE x.process_id = r.process_id),
       (SELECT count(*) FROM results x WHERE x.process_id = r.process_id AND x.ok = 0),
       (SELECT total(json_extract(x.result, '$.metadata.cost')) FROM results x
         WHERE x.process_id = r.process_id)
FROM runs r
"""


def run_info(row: Sequence[Any]) -> RunInfo:
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
class Claim:
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


def reusable(rows: Iterable[tuple[str, int, int, str]], plan: Plan,
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
        return token in LIVE
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
