"""The run report: one self-contained HTML page of a run (charts as inline SVG, no script,
no network), from a run store or from a ProcessResult.

    dagengine runs report runs.db [RUN] -o report.html
    engine.report(result, "report.html")
    dagengine.report.write_report("runs.db", "report.html", process_id=...)

It shows requests completed, in flight and answered 429 over time; latency distributions per
dimension and model; cost and tokens by dimension, provider, model and mode; retries,
fallbacks, rate-limit waits and cache hits; failures by cause with the sections they hit;
and the DAG with each dimension's totals. Every figure is an aggregate (time buckets,
histogram bins), so a page of a 100k-section run is a few hundred kilobytes.

Layering: reads the store and the data types only; the engine calls it, never the reverse.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, StoreError
from ..store import RunStore
from ..types import ProcessResult
from ._data import ReportData, find_stored_run, from_result, from_store
from ._html import render

Source = ProcessResult | RunStore | str | os.PathLike[str]


def report_data(source: Source, *, process_id: str | None = None,
                graph: Mapping[str, Any] | None = None, store: Any = None,
                title: str | None = None) -> ReportData:
    """What the report of `source` shows, as data.

    `source`: a ProcessResult, a RunStore, or the path of a store file. For a store,
    `process_id` picks the run (default: the newest). For a ProcessResult, `store` (if the
    run was stored there) gives the richer stored figures, and `graph` (a Plan.signature())
    the DAG's edges.
    """
    if isinstance(source, ProcessResult):
        if isinstance(store, RunStore):
            stored = find_stored_run(store, source)
            if stored is not None:
                return from_store(store, stored)
        return from_result(source, graph=graph, title=title)
    if isinstance(source, RunStore):
        return from_store(source, process_id)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise StoreError(f"no run store at {path}")
        with RunStore(path) as opened:
            return from_store(opened, process_id)
    raise ConfigurationError(
        "a run report is made from a ProcessResult, a RunStore or the path of a store file, "
        f"got {type(source).__name__}")


def render_report(source: Source | ReportData, **options: Any) -> str:
    """The report of `source` as one HTML document (options as for report_data)."""
    from .._version import __version__

    data = source if isinstance(source, ReportData) else report_data(source, **options)
    return render(data, __version__)


def write_report(source: Source | ReportData, path: str | os.PathLike[str],
                 **options: Any) -> Path:
    """Write the report of `source` to `path` (options as for report_data); returns it."""
    target = Path(path)
    text = render_report(source, **options)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot write the run report to {target}: {exc}") from exc
    return target


__all__ = ["ReportData", "render_report", "report_data", "write_report"]
