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

Attempts. Besides each call's result, the store keeps one row per provider request a call
made (table `attempts`: began, sent, ended, HTTP status, cause of failure), queued by
`StoredRun.record.attempt` through the same group commit; `dagengine runs report` draws the
run's timeline, latencies and retries from it. Stores of schema version 1 are upgraded in
place when opened (the table is added; runs they hold report without it).

Batches. A batch-mode run records each provider batch it submits (table `batches`) and
what each of its custom_ids stands for (table `batch_items`: dimension, section, attempt),
committed before the engine waits on the batch (`RunStore.batch_ledger`, store/_batches.py);
a resumed run re-attaches to the batches whose calls have no result yet. Stores of schema
version 2 are upgraded in place (the tables are added).

What is never stored: provider configurations and API keys (the store only sees requests,
which carry none, responses, and error messages, from which the built-in providers remove
every key they hold, those inside `gateway_config` included). The cache is keyed by a
SHA-256 of provider name, model, options and input; its entries are shared by every run in
the file.
"""

from ._cache import ResponseCache
from ._calls import Attempt, CallRecord, all_attempts
from ._default import default_process_id, default_store_path, open_default_store
from ._ownership import RunInUseError
from ._runs import RunInfo, RunRecorder, StoredRun
from ._schema import SCHEMA_VERSION
from ._store import RunStore, open_store

__all__ = [
    "SCHEMA_VERSION",
    "Attempt",
    "CallRecord",
    "ResponseCache",
    "RunInUseError",
    "RunInfo",
    "RunRecorder",
    "RunStore",
    "StoredRun",
    "all_attempts",
    "default_process_id",
    "default_store_path",
    "open_default_store",
    "open_store",
]
