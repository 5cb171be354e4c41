"""`dagengine runs list | show | export | report`: read a run store without running anything.

    dagengine runs list [STORE]
    dagengine runs show STORE PROCESS_ID [--failures N]
    dagengine runs export STORE [PROCESS_ID] [--format jsonl|csv|parquet|full] [-o FILE]
    dagengine runs report STORE [PROCESS_ID] [-o FILE.html]

`list` without STORE reads the default store. `export` writes one row per section, the
columns of `ProcessResult.to_pandas()` (see dagengine._table), streaming from the file;
`--format full` writes every result whole (data, error, metadata) as JSON Lines, then the
global results. Output is plain text, never with terminal escape codes, so it pipes and
diffs cleanly.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .._table import Column, Layout, LayoutBuilder, cell_text
from ..errors import DagEngineError, StoreError
from ..store import RunInfo, RunStore, default_store_path
from ..types import DimensionResult, TokenUsage

FORMATS = ("jsonl", "csv", "parquet", "full")
SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv",
            ".parquet": "parquet", ".pq": "parquet"}
PARQUET_BATCH = 10_000  # rows per Parquet row group: what the export holds at once


def main(argv: Sequence[str] | None = None) -> int:
    """Run a `dagengine runs` command; returns the exit status (0 ok, 1 error, 2 usage)."""
    parser = _parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse has printed the usage
        return exc.code if isinstance(exc.code, int) else 2
    try:
        with _open(args.store) as store:
            if args.command == "list":
                _list(store, sys.stdout)
            elif args.command == "show":
                _show(store, args.process_id, args.failures, sys.stdout)
            elif args.command == "report":
                _report(store, args.process_id, args.out)
            else:
                _export(store, args.process_id, _format(args.format, args.out), args.out)
    except DagEngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `dagengine runs export ... | head`
        return 0
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dagengine runs",
                                     description="Inspect the runs in a dagengine run store.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    listing = commands.add_parser("list", help="every run in the store, newest first")
    listing.add_argument("store", type=Path, nargs="?",
                         help="the store file (DagEngine(store=...)); default: the default "
                         "store")
    show = commands.add_parser("show", help="progress, failures and costs of one run")
    show.add_argument("store", type=Path)
    show.add_argument("process_id")
    show.add_argument("--failures", type=int, default=10, metavar="N",
                      help="list at most N failed results (default 10)")
    export = commands.add_parser(
        "export", help="one run, a row per section: JSON Lines, CSV or Parquet")
    export.add_argument("store", type=Path)
    export.add_argument("process_id", nargs="?", help="the run (default: the newest)")
    export.add_argument("--format", choices=FORMATS,
                        help="jsonl (default), csv, parquet (needs dagengine[parquet]), or full "
                        "(every result whole, then the global results); default from -o's "
                        "suffix")
    export.add_argument("-o", "--out", type=Path,
                        help="write to FILE instead of standard output")
    report = commands.add_parser(
        "report", help="one run as a self-contained HTML page of charts (opens offline)")
    report.add_argument("store", type=Path)
    report.add_argument("process_id", nargs="?", default=None,
                        help="the run to report (default: the newest in the store)")
    report.add_argument("-o", "--out", type=Path, default=Path("report.html"),
                        help="the page to write (default: report.html)")
    return parser


def _open(path: Path | None) -> RunStore:
    if path is None:
        path = default_store_path()
        if path is None:
            raise StoreError("the default store is off (DAGENGINE_STORE=off): name a store file")
        print(f"default store: {path}", file=sys.stderr)
    if not path.is_file():
        raise StoreError(f"no run store at {path}")
    return RunStore(path)


def _format(chosen: str | None, out: Path | None) -> str:
    if chosen is not None:
        return chosen
    return SUFFIXES.get(out.suffix.lower(), "jsonl") if out is not None else "jsonl"


# -- list ----------------------------------------------------------------------------------


def _list(store: RunStore, out: TextIO) -> None:
    runs = store.runs()
    if not runs:
        out.write(f"{store.path}: no runs\n")
        return
    rows = [["PROCESS_ID", "STATUS", "PLUGIN", "SECTIONS", "RESULTS", "FAILED", "COST",
             "UPDATED"]]
    rows += [[run.process_id, _status(run), run.plugin, str(run.section_count),
              str(run.results), str(run.failed), _money(run.cost), _when(run.updated_at)]
             for run in runs]
    out.write(_table(rows, right={3, 4, 5, 6}))


# -- show ----------------------------------------------------------------------------------


@dataclass
class _DimensionTally:
    scope: str
    total: int
    done: int = 0
    failed: int = 0
    skipped: int = 0
    cost: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cached: int = 0
    saved: float = 0.0

    def add(self, result: DimensionResult) -> None:
        meta = result.metadata
        self.done += 1
        self.failed += result.error is not None
        self.skipped += bool(meta.get("skipped"))
        if meta.get("cached"):
            self.cached += 1
            self.saved += float(meta.get("saved_cost") or 0.0)
            return
        self.cost += float(meta.get("cost") or 0.0)
        tokens = meta.get("tokens")
        if isinstance(tokens, TokenUsage):
            self.input_tokens += tokens.input_tokens
            self.output_tokens += tokens.output_tokens


def _show(store: RunStore, process_id: str, max_failures: int, out: TextIO) -> None:
    run = store.run(process_id)
    results = store.results(process_id)
    tallies = _tallies(run, results)
    out.write(f"run        {run.process_id}\n")
    out.write(f"plugin     {run.plugin}\n")
    out.write(f"status     {_status(run)}\n")
    if run.error:
        out.write(f"error      {run.error}\n")
    out.write(f"created    {_when(run.created_at)}\n")
    out.write(f"updated    {_when(run.updated_at)}\n")
    out.write(f"sections   {run.section_count}\n\n")

    rows = [["DIMENSION", "SCOPE", "DONE", "FAILED", "SKIPPED", "TOKENS", "COST", "CACHED",
             "SAVED"]]
    total = _DimensionTally("", 0)
    for name, t in tallies.items():
        rows.append([name, t.scope, _progress(t.done, t.total), str(t.failed), str(t.skipped),
                     str(t.input_tokens + t.output_tokens), _money(t.cost), str(t.cached),
                     _money(t.saved)])
        for attr in ("total", "done", "failed", "skipped", "cost", "input_tokens",
                     "output_tokens", "cached", "saved"):
            setattr(total, attr, getattr(total, attr) + getattr(t, attr))
    rows.append(["total", "", _progress(total.done, total.total), str(total.failed),
                 str(total.skipped), str(total.input_tokens + total.output_tokens),
                 _money(total.cost), str(total.cached), _money(total.saved)])
    out.write(_table(rows, right={2, 3, 4, 5, 6, 7, 8}))
    out.write(f"\ncost {_money(total.cost)} for {total.input_tokens} input + "
              f"{total.output_tokens} output tokens; the cache saved {_money(total.saved)} "
              f"over {total.cached} calls\n")

    failures = sorted(((d, i, r) for (d, i), r in results.items() if r.error is not None),
                      key=lambda f: (-1 if f[1] is None else f[1], f[0]))
    if failures:
        out.write(f"\nfailures ({len(failures)}):\n")
        for dimension, index, result in failures[:max_failures]:
            where = "global" if index is None else f"section {index}"
            out.write(f"  {dimension} [{where}]: {_one_line(result.error or '')}\n")
        if len(failures) > max_failures:
            out.write(f"  ... and {len(failures) - max_failures} more "
                      f"(--failures N shows more, `export` has them all)\n")


def _tallies(run: RunInfo, results: dict[tuple[str, int | None], DimensionResult],
             ) -> dict[str, _DimensionTally]:
    tallies = {name: _DimensionTally(scope, 1 if scope == "global" else run.section_count)
               for name, scope in run.plan.get("dimensions", [])}
    for (dimension, _), result in results.items():
        tally = tallies.setdefault(dimension, _DimensionTally("?", 0))
        tally.add(result)
    for tally in tallies.values():  # a transform may have changed the section count
        tally.total = max(tally.total, tally.done)
    return tallies


# -- export --------------------------------------------------------------------------------


def _export(store: RunStore, process_id: str | None, form: str, out_path: Path | None) -> None:
    if process_id is None:
        runs = store.runs()
        if not runs:
            raise StoreError(f"{store.path} has no runs to export")
        process_id = runs[0].process_id
        print(f"exporting run {process_id}, the newest of {len(runs)} "
              "(name a PROCESS_ID to choose)", file=sys.stderr)
    if form == "parquet":
        if out_path is None:
            raise StoreError("--format parquet writes a file: add -o FILE.parquet")
        count = _write_parquet(store, process_id, out_path)
    elif out_path is None:
        _write_text(store, process_id, form, sys.stdout)
        return
    else:
        with out_path.open("w", encoding="utf-8", newline="") as out:
            count = _write_text(store, process_id, form, out)
    noun = "lines" if form == "full" else "rows"
    print(f"wrote {count} {noun} to {out_path}")


def _write_text(store: RunStore, process_id: str, form: str, out: TextIO) -> int:
    """Rows (or, for `full`, lines) written."""
    count = 0
    if form == "full":
        for line in _export_lines(store, process_id):
            out.write(line + "\n")
            count += 1
        return count
    with store.rows(process_id) as rows:
        layout = _layout(rows)
        if form == "csv":
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(layout.names)
            for row in rows:
                writer.writerow([cell_text(v) for v in layout.values(*row)])
                count += 1
            return count
        for row in rows:
            out.write(json.dumps(layout.record(*row), ensure_ascii=False, default=str) + "\n")
            count += 1
    return count


def _write_parquet(store: RunStore, process_id: str, out_path: Path) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        from ..errors import MissingExtraError

        raise MissingExtraError("pyarrow", "parquet") from exc
    count = 0
    with store.rows(process_id) as rows:
        layout = _layout(rows)
        types = {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(),
                 "str": pa.string()}
        schema = pa.schema([(c.name, types[c.kind]) for c in layout.columns])
        with pq.ParquetWriter(out_path, schema) as writer:
            batch: list[list[Any]] = []
            for row in rows:
                batch.append(layout.values(*row))
                if len(batch) >= PARQUET_BATCH:
                    writer.write_table(_arrow_table(pa, schema, layout.columns, batch))
                    count += len(batch)
                    batch = []
            if batch or not count:
                writer.write_table(_arrow_table(pa, schema, layout.columns, batch))
                count += len(batch)
    return count


def _arrow_table(pa: Any, schema: Any, columns: list[Column], rows: list[list[Any]]) -> Any:
    arrays = []
    for i, column in enumerate(columns):
        values = [row[i] for row in rows]
        if column.kind == "str":  # mixed and nested values are written as JSON text
            values = [v if v is None or isinstance(v, str) else cell_text(v) for v in values]
        elif column.kind == "float":
            values = [None if v is None else float(v) for v in values]
        arrays.append(pa.array(values, type=schema.field(i).type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _layout(rows: Any) -> Layout:
    """The columns, from a first pass over the stored rows."""
    builder = LayoutBuilder(rows.dimensions)
    for _, section, results in rows:
        builder.add(section, results)
    return builder.layout()


def _export_lines(store: RunStore, process_id: str) -> Iterator[str]:
    """One object per section index {"index", "section", "results"}, then one per global
    dimension {"global", "result"}. Indexes past a transform refer to the transformed list,
    given as "transformed_section" when the run finished."""
    run = store.run(process_id)
    order = [name for name, _ in run.plan.get("dimensions", [])]
    rank = {name: i for i, name in enumerate(order)}
    inputs = store.sections(process_id)
    transformed = store.sections(process_id, transformed=True)
    by_index: dict[int, dict[str, DimensionResult]] = {}
    globals_: dict[str, DimensionResult] = {}
    for (dimension, index), result in store.results(process_id).items():
        if index is None:
            globals_[dimension] = result
        else:
            by_index.setdefault(index, {})[dimension] = result
    count = max([len(inputs), len(transformed), *(i + 1 for i in by_index)], default=0)
    for index in range(count):
        results = by_index.get(index, {})
        line: dict[str, Any] = {
            "index": index,
            "section": inputs[index].to_dict() if index < len(inputs) else None,
            "results": {d: results[d].to_dict()
                        for d in sorted(results, key=lambda d: rank.get(d, len(rank)))},
        }
        if index < len(transformed):
            line["transformed_section"] = transformed[index].to_dict()
        yield json.dumps(line, ensure_ascii=False)
    for dimension in sorted(globals_, key=lambda d: rank.get(d, len(rank))):
        yield json.dumps({"global": dimension, "result": globals_[dimension].to_dict()},
                         ensure_ascii=False)


# -- report --------------------------------------------------------------------------------


def _report(store: RunStore, process_id: str | None, out_path: Path) -> None:
    from ..report import report_data, write_report

    data = report_data(store, process_id=process_id)
    path = write_report(data, out_path)
    print(f"wrote the report of run {data.process_id} ({data.totals.results} results, "
          f"{data.totals.failed} failed, {_money(data.totals.cost)}) to {path} "
          f"({path.stat().st_size / 1024:.0f} KiB)")


# -- formatting ----------------------------------------------------------------------------


def _status(run: RunInfo) -> str:
    if run.owner is not None:
        return f"{run.status} (pid {run.owner})"
    return run.status


def _progress(done: int, total: int) -> str:
    percent = 100.0 * done / total if total else 100.0
    return f"{done}/{total} {percent:3.0f}%"


def _money(value: float) -> str:
    return f"${value:.4f}"


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _one_line(text: str, limit: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _table(rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
                 for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


__all__ = ["main"]


if __name__ == "__main__":
    sys.exit(main())
