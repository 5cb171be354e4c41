"""The default store: where it lives, and the process_id a run gets when none is given.

`DagEngine(...)` without `store=` records its runs in `$DAGENGINE_STORE` (a path; `off` for
none), else `$XDG_CACHE_HOME/dagengine/runs.db`, else `~/.cache/dagengine/runs.db`. A
default store that cannot be opened (a read-only home, a file that is not a store) is
warned about and the run goes on without one: the default must never stop a script that
ran before it existed. A path named by `DAGENGINE_STORE` is the user's choice, so errors
opening it raise.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import StoreError
from ..types import Section
from ._codec import CANONICAL, sections_json
from ._store import RunStore

log = logging.getLogger("dagengine")

ENV_VAR = "DAGENGINE_STORE"
OFF = frozenset({"off", "false", "no", "none", "0"})
FILE_NAME = "runs.db"
LARGE_BYTES = 1 << 30  # a default store past this size is reported when opened


def default_store_path() -> Path | None:
    """Where the default store is, or None when DAGENGINE_STORE turns it off."""
    named = os.environ.get(ENV_VAR, "").strip()
    if named:
        return None if named.lower() in OFF else Path(named).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME", "").strip()
    # The XDG spec says a relative value is invalid and must be ignored.
    base = Path(cache_home) if os.path.isabs(cache_home) else Path.home() / ".cache"
    return base / "dagengine" / FILE_NAME


def open_default_store() -> RunStore | None:
    """The default store, opened (and created), or None if it is off or unusable."""
    path = default_store_path()
    if path is None:
        return None
    named = bool(os.environ.get(ENV_VAR, "").strip())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        store = RunStore(path)
    except (OSError, StoreError) as exc:
        if named:
            raise StoreError(f"{ENV_VAR}={path} cannot be used as the run store: {exc}; "
                             f"set {ENV_VAR} to a writable file path, or {ENV_VAR}=off") from exc
        log.warning("the default run store %s cannot be used (%s); this run is not recorded "
                    "and its calls are not cached. Set %s to a writable file path, or %s=off "
                    "to silence this", path, exc, ENV_VAR, ENV_VAR)
        return None
    _warn_if_large(path)
    return store


def _warn_if_large(path: Path) -> None:
    size = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    if size > LARGE_BYTES:
        log.warning("the default run store %s holds %.1f GB of runs and cached responses; "
                    "delete the file when no run is using it to start afresh (or set %s to "
                    "another path, or off)", path, size / 1e9, ENV_VAR)


ID_SECTIONS = 1000  # the sections a default process id hashes (then only their number)


def default_process_id(plugin: Any, sections: Sequence[Section],
                       count: int | None = None) -> str:
    """`<plugin id>-<digest>`: the same plugin (class, id, dimensions) over the same sections
    gets the same id in every process, so a re-run finds the run before it.

    The digest takes the first ID_SECTIONS sections and, past those, the number of sections
    (`count`, if `sections` holds only the first ones), so a big run's id is known before
    its input is read. Two inputs that differ only further on share an id: a run replaces
    the other, and a resume is refused (its input hash is checked in full)."""
    ident = str(getattr(plugin, "id", None) or type(plugin).__name__)
    dimensions = [[_name(d), str(getattr(d, "scope", "section"))]
                  for d in getattr(plugin, "dimensions", [])]
    digest = hashlib.sha256()
    digest.update(CANONICAL.encode([f"{type(plugin).__module__}.{type(plugin).__qualname__}",
                                    ident, dimensions]).encode())
    for chunk in sections_json(sections[:ID_SECTIONS]):
        digest.update(chunk.encode())
    total = len(sections) if count is None else count
    if total > ID_SECTIONS:
        digest.update(f"|{total}".encode())
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", ident).strip("-")[:40] or "run"
    return f"{slug}-{digest.hexdigest()[:16]}"


def _name(dimension: Any) -> str:
    return dimension if isinstance(dimension, str) else str(getattr(dimension, "name", dimension))
