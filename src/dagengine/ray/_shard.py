"""What the driver and the worker actors send each other about sections: plain data.

A shard is some sections of one level of the run (the section dimensions between two
global barriers), each with the results of earlier dimensions it reads; a batch is what a
worker streams back while it runs one: the results so far, and its counters.
"""

from __future__ import annotations

import collections
import copyreg
import dataclasses
import io
import pickle
from dataclasses import dataclass, field
from typing import Any

from ..errors import DagEngineError
from ..plugin import Attempt
from ..types import DimensionResult, Section

BATCH_SECONDS = 0.1  # a worker sends what it has at least this often while a shard runs


@dataclass(slots=True)
class ShardItem:
    """One section of a shard and the dimensions of the level it still needs."""

    key: int  # the driver's name for it within the shard
    index: int  # the section's index in the run (what prompts and hooks see)
    section: Section
    prior: dict[str, DimensionResult]  # results it already has that its dimensions read
    dimensions: tuple[str, ...]


@dataclass(slots=True)
class Shard:
    shard_id: int
    dimensions: tuple[str, ...]  # the level's section dimensions
    done: tuple[str, ...]  # the finished dimensions those read (section and global)
    items: list[ShardItem]
    total_sections: int
    preloaded: dict[tuple[str, int | None], DimensionResult] = field(default_factory=dict)


@dataclass(slots=True)
class Outcome:
    """One result of a shard; `error` is the exception behind a failed one."""

    dimension: str
    key: int
    result: DimensionResult
    restored: bool
    error: BaseException | None = None
    row: str | None = None  # the result as the store writes it, when the driver has one


@dataclass(slots=True)
class Batch:
    """What a worker has to tell since its last batch for one shard."""

    worker: str
    outcomes: list[Outcome] = field(default_factory=list)
    sent: dict[tuple[str, str], int] = field(default_factory=dict)  # requests (dim, provider)
    ended: dict[tuple[str, str], int] = field(default_factory=dict)
    retries: list[tuple[str, BaseException]] = field(default_factory=list)
    hook_errors: list[tuple[str, BaseException]] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    final: bool = False
    failure: BaseException | None = None  # what stopped the shard (continue_on_error=False)


def packed(batch: Batch) -> bytes | Batch:
    """`batch` as the worker yields it: one pickle, which the driver loads once; or, when
    something in it needs cloudpickle (a class made inside a function), itself.

    Ray's streaming generator deserialises each item it streams to see that it is ready,
    and awaiting the item deserialises it again: as bytes, the batch's results are
    unpickled once, not twice (about half the driver's CPU per call, measured)."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _BY_FIELDS
    try:
        pickler.dump(batch)
    except Exception:
        return batch
    return buffer.getvalue()


def packed_shard(shard: Shard) -> bytes | Shard:
    """`shard` as the driver sends it: one pickle by the C pickler (Ray would cloudpickle
    it, in Python: a tenth of the driver's CPU per call, measured); or, when something in
    it needs cloudpickle, itself. A class of the driver's `__main__` (in a section's
    metadata, say) pickles by name, which a worker cannot import: cloudpickle sends it."""
    try:
        data = pickle.dumps(shard, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return shard
    return shard if b"__main__" in data else data


def unpacked_shard(item: bytes | Shard) -> Shard:
    """What `packed_shard` made of a shard, as the shard again."""
    if isinstance(item, Shard):
        return item
    shard: Shard = pickle.loads(item)
    return shard


def _by_fields(obj: Any) -> tuple[Any, tuple[Any, ...]]:
    """A dataclass of slots as its class called with its fields: the driver then builds it
    in one call, not through the slots dataclass's __setstate__, which looks up its fields
    for each object (a fifth of a batch's unpickling, measured)."""
    cls = type(obj)
    return cls, tuple(getattr(obj, name) for name in _FIELDS[cls])


_FIELDS: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in (Outcome, Attempt)}
# Over copyreg's table as it stands when a batch is pickled (portable() adds to it).
_BY_FIELDS: collections.ChainMap[type, Any] = collections.ChainMap(
    dict.fromkeys(_FIELDS, _by_fields), copyreg.dispatch_table)


def unpacked(item: bytes | Batch) -> Batch:
    """What `packed` made of a batch, as the batch again."""
    if isinstance(item, Batch):
        return item
    batch: Batch = pickle.loads(item)
    return batch


class RemoteError(DagEngineError):
    """An error raised on a worker whose own type does not survive pickling; the message
    names that type."""


def portable(error: BaseException | None) -> Any:
    """`error`, made to travel to the driver as itself, else a RemoteError saying what it was.

    An exception whose __init__ takes other arguments than its args (dagengine's HookError,
    DimensionTimeoutError, ...) unpickles with a TypeError, which would lose the whole
    batch at the driver: its type is then pickled by its args and attributes instead."""
    if error is None:
        return None
    if _round_trips(error):
        return error
    copyreg.pickle(type(error), _reduce_error)
    if _round_trips(error):
        return error
    return RemoteError(f"{type(error).__name__}: {error}")


def _round_trips(error: BaseException) -> bool:
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return False
    return True


def _reduce_error(error: BaseException) -> tuple[Any, ...]:
    return _rebuilt_error, (type(error), error.args, dict(getattr(error, "__dict__", {})))


def _rebuilt_error(cls: type[BaseException], args: tuple[Any, ...],
                   state: dict[str, Any]) -> BaseException:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error
