"""One run in the store: how it is listed, where its new results are recorded, and which of
its stored results a resume takes as done."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import StoreError
from ..graph import Plan
from ..types import DimensionResult
from ._calls import INSERT_FAILED, Timing, failed_row
from ._codec import result_from_json, result_json
from ._input import InputWriter
from ._ownership import owner_alive
from ._schema import GLOBAL_INDEX, Writer

_INSERT_RESULT = "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"

ResultKey = tuple[str, int | None]


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
    """An open run: what to take as done, and where the engine reports each new result.

    `record` is what the scheduler calls with each finished result; `record.attempt` is
    what the caller calls where each provider request of a call ends.
    """

    process_id: str
    preloaded: dict[ResultKey, DimensionResult]
    resumed: bool
    _writer: Writer = field(repr=False)
    # Timing of the request that answered a call, until its result is recorded with it.
    _answered: dict[ResultKey, Timing] = field(default_factory=dict, repr=False)
    # Where the run's sections go as they are read (open_run(streamed=True)), else None.
    input: InputWriter | None = field(default=None, repr=False)

    @property
    def record(self) -> RunRecorder:
        return RunRecorder(self)


class RunRecorder:
    """Queues a run's results and provider attempts for the group commit at the start of
    the next loop iteration.

    It holds its run, as a bound method would: the run counts as owned by this process
    while the engine holds its recorder (see _ownership.LIVE).
    """

    __slots__ = ("_run",)

    def __init__(self, run: StoredRun) -> None:
        self._run = run

    def __call__(self, dimension: str, section_index: int | None,
                 result: DimensionResult) -> None:
        run = self._run
        timing = run._answered.pop((dimension, section_index), _NO_REQUEST)
        run._writer.enqueue(_INSERT_RESULT, run.process_id, (
            run.process_id, dimension, GLOBAL_INDEX if section_index is None else section_index,
            int(result.error is None), result_json(result), time.time(), *timing))

    def attempt(self, dimension: str, section_index: int | None, attempt: int, provider: str,
                model: str | None, started_at: float, sent_at: float, ended_at: float,
                status: int | None, error: BaseException | None) -> None:
        """One provider request of a call ended (`error` None: answered and accepted)."""
        run = self._run
        if error is None:  # the call's result follows: its row takes the timing
            run._answered[(dimension, section_index)] = (started_at, sent_at, ended_at)
            return
        row = failed_row(run.process_id, dimension, section_index, attempt, provider, model,
                         (started_at, sent_at, ended_at), status, error)
        # The result's own record raises the same error where it can fail the run; an
        # attempt may end while a cancelled run unwinds, where raising would hide why.
        with contextlib.suppress(StoreError):
            run._writer.enqueue(INSERT_FAILED, run.process_id, row)


_NO_REQUEST = (None, None, None)


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
        if owner_alive(token, pid, host, heartbeat):
            owner = f"{pid}@{host}"
        elif status == "running":
            status = "interrupted"
    return RunInfo(process_id=process_id, plugin=plugin, status=status,
                   section_count=section_count, results=results, failed=failed,
                   cost=float(cost or 0.0), created_at=created, updated_at=updated, error=error,
                   owner=owner, totals=json.loads(totals) if totals else None,
                   plan=json.loads(plan))


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
