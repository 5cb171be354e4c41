"""Who writes a run: this process claims it (taking over from an owner that is gone), checks
at every commit that it still holds it, renews its heartbeat, and releases it at the end."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import sqlite3
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import StoreError

if TYPE_CHECKING:
    from ..types import Section

_PENDING = "pending"  # _input.PENDING: an input hash not written yet
STALE_AFTER = 60.0  # a heartbeat older than this means the owner is gone

# The handles (StoredRun) of the runs this process has open, by owner token; a run whose
# handle was garbage-collected without close_run (its process() died) no longer counts as
# owned. Only membership is read here, so the type stays `object` (_runs imports this module).
LIVE: weakref.WeakValueDictionary[str, object] = weakref.WeakValueDictionary()
_HOST = socket.gethostname()


class RunInUseError(StoreError):
    """The run is being written by another live process (or another run in this one)."""


@dataclass(slots=True)
class Owned:
    """A run this store has claimed: its owner token, and why it can no longer be written."""

    token: str
    lost: StoreError | None = None
    inputs: Sequence[Section] | None = ()  # the sections the run was opened with (None:
    # written as they were read, see _input.py)


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
            if token is not None and owner_alive(token, owner_pid, host, heartbeat):
                raise RunInUseError(
                    f"run {pid!r} in {self.path} is already being written by pid {owner_pid} "
                    f"on {host} (last heartbeat {now - (heartbeat or now):.0f}s ago); wait for "
                    "that run to finish or stop it, then resume"
                )
            if self.restart:
                for table in ("results", "failed_attempts", "batch_items", "batches", "sections",
                              "runs"):
                    conn.execute(f"DELETE FROM {table} WHERE process_id = ?", (pid,))
            elif not self.resume:
                raise StoreError(
                    f"run {pid!r} exists in {self.path}; pass resume=True to continue it or "
                    "restart=True to start over"
                )
            else:
                if input_hash == _PENDING:  # its process stopped while writing its input
                    self._check_begins(conn)
                    input_hash, count = self.input_hash, self.section_count
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

    def _check_begins(self, conn: sqlite3.Connection) -> None:
        """A run whose input was still being written (see _input.py): the sections stored
        must be where this input begins; then this input is stored in their place."""
        pid = self.process_id
        stored = [pair for (text,) in conn.execute(
            "SELECT sections FROM sections WHERE process_id = ? AND kind = 'input' "
            "ORDER BY chunk", (pid,)) for pair in json.loads(text)]
        given = [pair for text in self.sections for pair in json.loads(text)]
        if given[:len(stored)] != stored:
            raise StoreError(
                f"run {pid!r} was started with different sections (its first {len(stored)} "
                f"stored sections are not where these {len(given)} begin); pass "
                f"restart=True to start run {pid!r} over, or use a new process_id")
        conn.execute("DELETE FROM sections WHERE process_id = ? AND kind = 'input'", (pid,))
        conn.executemany("INSERT INTO sections VALUES (?, 'input', ?, ?)",
                         [(pid, i, chunk) for i, chunk in enumerate(self.sections)])
        conn.execute("UPDATE runs SET input_hash = ?, section_count = ? WHERE process_id = ?",
                     (self.input_hash, self.section_count, pid))

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


def lost_runs(conn: sqlite3.Connection, owners: Mapping[str, Owned], runs: Iterable[str],
              path: Path) -> set[str]:
    """Runs another process has taken over since we claimed them (their rows are dropped)."""
    lost: set[str] = set()
    for run in runs:
        owned = owners.get(run)
        if owned is None:
            lost.add(run)
            continue
        row = conn.execute("SELECT owner_pid, owner_host, owner_token FROM runs "
                           "WHERE process_id = ?", (run,)).fetchone()
        if row is None or row[2] != owned.token:
            who = "nobody (it was deleted)" if row is None else f"pid {row[0]} on {row[1]}"
            owned.lost = StoreError(f"run {run!r} in {path} was taken over (now "
                                    f"owned by {who}); this process stopped writing to it")
            lost.add(run)
    return lost


def renew_heartbeats(conn: sqlite3.Connection, owners: Mapping[str, Owned]) -> None:
    now = time.time()
    conn.executemany(
        "UPDATE runs SET heartbeat = ?, updated_at = ? WHERE process_id = ? "
        "AND owner_token = ?", [(now, now, run, o.token) for run, o in owners.items()
                                if o.lost is None])


def outcome(failed: BaseException | None, lost: StoreError | None) -> tuple[str, str | None]:
    """The status and error a run ends with; one that lost results did not complete."""
    if failed is None:
        status, error = "completed", None
    elif isinstance(failed, (asyncio.CancelledError, KeyboardInterrupt)):
        status, error = "interrupted", "cancelled"
    else:
        status, error = "failed", f"{type(failed).__name__}: {failed}"
    if lost is not None and status == "completed":
        status, error = "failed", str(lost)
    return status, error


@dataclass(slots=True)
class Release:
    process_id: str
    token: str
    status: str
    error: str | None
    totals: str | None  # the run's CostSummary as JSON
    transformed: list[str]  # JSON chunks of the final section list, if transforms changed it

    def run(self, conn: sqlite3.Connection) -> None:
        """Inside BEGIN IMMEDIATE: record how the run ended and give up its claim."""
        process_id = self.process_id
        if self.transformed:
            conn.execute("DELETE FROM sections WHERE process_id = ? AND kind = 'transformed'",
                         (process_id,))
            conn.executemany("INSERT INTO sections VALUES (?, 'transformed', ?, ?)",
                             [(process_id, i, chunk) for i, chunk in enumerate(self.transformed)])
        conn.execute(
            "UPDATE runs SET status = ?, error = ?, totals = coalesce(?, totals), "
            "updated_at = ?, owner_token = NULL, owner_pid = NULL, owner_host = NULL, "
            "heartbeat = NULL WHERE process_id = ? AND owner_token = ?",
            (self.status, self.error, self.totals, time.time(), process_id, self.token))


def owner_alive(token: str, pid: int | None, host: str | None, heartbeat: float | None) -> bool:
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
