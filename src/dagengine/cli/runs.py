"""`dagengine runs list | show | export`: read a run store without running anything.

    dagengine runs list STORE
    dagengine runs show STORE PROCESS_ID [--failures N]
    dagengine runs export STORE PROCESS_ID [--out FILE]

Output is plain text (export: JSON Lines), never with terminal escape codes, so it pipes
and diffs cleanly.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ..errors import StoreError
from ..store import RunInfo, RunStore
from ..types import DimensionResult, TokenUsage


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
            else:
                _export(store, args.process_id, args.out)
    except StoreError as exc:
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
    listing.add_argument("store", type=Path, help="the store file (DagEngine(store=...))")
    show = commands.add_parser("show", help="progress, failures and costs of one run")
    show.add_argument("store", type=Path)
    show.add_argument("process_id")
    show.add_argument("--failures", type=int, default=10, metavar="N",
                      help="list at most N failed results (default 10)")
    export = commands.add_parser("export", help="one run as JSON Lines: sections, then globals")
    export.add_argument("store", type=Path)
    export.add_argument("process_id")
    export.add_argument("--out", type=Path, help="write to FILE instead of standard output")
    return parser


def _open(path: Path) -> RunStore:
    if not path.is_file():
        raise StoreError(f"no run store at {path}")
    return RunStore(path)


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


def _export(store: RunStore, process_id: str, out_path: Path | None) -> None:
    lines = _export_lines(store, process_id)
    if out_path is None:
        for line in lines:
            sys.stdout.write(line + "\n")
        return
    count = 0
    with out_path.open("w", encoding="utf-8") as out:
        for line in lines:
            out.write(line + "\n")
            count += 1
    print(f"wrote {count} lines to {out_path}")


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
