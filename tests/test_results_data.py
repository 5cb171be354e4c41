"""Results as data: `ProcessResult.to_pandas()` / `to_polars()` and `dagengine runs export`,
one row per section with the same columns everywhere."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from conftest import FakeProvider, SimplePlugin, http_error
from dagengine import (
    DagEngine,
    Dimension,
    MissingExtraError,
    ProcessResult,
    ProviderRequest,
    Section,
)
from dagengine.cli.runs import main as runs_main
from dagengine.store import RunStore

ROOT = Path(__file__).resolve().parent.parent
PRICING = {"models": {"fake-model": {"input_per_1m": 1.0, "output_per_1m": 2.0}}}
CALL_COST = (10 * 1.0 + 5 * 2.0) / 1e6  # FakeProvider's 10 + 5 tokens at PRICING

COLUMNS = [
    "section.index", "section.content", "section.metadata.index", "section.lang",
    "sentiment.label", "sentiment.score", "sentiment.data.error", "sentiment.error",
    "sentiment.cost",
    "summary", "summary.error", "summary.cost",
]


def answer(request: ProviderRequest) -> Any:
    if request.dimension == "sentiment":
        index = request.metadata["section_index"]
        # A data field named like an engine column goes under `.data.`
        return {"label": "positive" if index % 2 else "negative", "score": index,
                "error": None}
    if request.dimension == "overview":
        return {"sections": request.metadata["total_sections"]}
    return f"summary of {request.metadata['section_index']}"


def fails(request: ProviderRequest, attempt: int) -> Any:
    if request.dimension == "summary" and request.metadata["section_index"] == 2:
        return http_error(400)
    return None


SECTIONS = [Section(content=f"review {i}", metadata={"lang": "en" if i else "de", "index": i})
            for i in range(4)]


async def analysed(store: Any = False) -> ProcessResult:
    plugin = SimplePlugin(["sentiment", "summary", Dimension(name="overview", scope="global")],
                          {"summary": ["sentiment"], "overview": ["sentiment"]})
    engine = DagEngine(plugin, providers=[FakeProvider(answer=answer, fail=fails)],
                       execution={"concurrency": 4, "max_retries": 0}, pricing=PRICING,
                       store=store)
    return await engine.process(SECTIONS, process_id="reviews" if store else None)


def plain(value: Any) -> Any:
    """pandas shows a missing value as NaN or None; compare them as None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def expected_rows() -> list[dict[str, Any]]:
    rows = []
    for i in range(4):
        failed = i == 2
        rows.append({
            "section.index": i, "section.content": f"review {i}",
            "section.metadata.index": i, "section.lang": "en" if i else "de",
            "sentiment.label": "positive" if i % 2 else "negative", "sentiment.score": i,
            "sentiment.data.error": None, "sentiment.error": None,
            "sentiment.cost": pytest.approx(CALL_COST),
            "summary": None if failed else f"summary of {i}",
            "summary.error": "fake: HTTP 400" if failed else None,
            "summary.cost": 0.0 if failed else pytest.approx(CALL_COST),
        })
    return rows


# -- DataFrames --------------------------------------------------------------------------------


async def test_to_pandas_has_a_row_per_section_and_a_column_per_dimension_field() -> None:
    frame = (await analysed()).to_pandas()
    assert list(frame.columns) == COLUMNS
    rows = [{k: plain(v) for k, v in row.items()} for row in frame.to_dict("records")]
    assert rows == expected_rows()


async def test_to_polars_has_the_same_columns_and_values() -> None:
    frame = (await analysed()).to_polars()
    assert frame.columns == COLUMNS
    assert frame.to_dicts() == expected_rows()
    assert str(frame.schema["sentiment.score"]) == "Int64"


async def test_global_results_are_not_rows() -> None:
    result = await analysed()
    assert result.global_results["overview"].data == {"sections": 4}
    assert not any(c.startswith("overview") for c in result.to_pandas().columns)


async def test_data_of_mixed_shapes_keeps_every_value() -> None:
    shapes = {0: {"a": 1}, 1: "plain text", 2: {"b": [1, 2]}, 3: None}
    plugin = SimplePlugin(["d"])
    provider = FakeProvider(answer=lambda r: shapes[r.metadata["section_index"]])
    result = await DagEngine(plugin, providers=[provider], store=False).process(
        [f"s{i}" for i in range(4)])
    frame = result.to_pandas()
    assert list(frame.columns) == ["section.index", "section.content", "d", "d.a", "d.b",
                                   "d.error", "d.cost"]
    assert [plain(v) for v in frame["d"]] == [None, "plain text", None, None]
    assert [plain(v) for v in frame["d.a"]] == [1, None, None, None]
    assert frame["d.b"][2] == [1, 2]


def test_without_pandas_the_error_names_the_extra_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` now raises ImportError
    monkeypatch.setitem(sys.modules, "polars", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'dagengine\[pandas\]'"):
        ProcessResult().to_pandas()
    with pytest.raises(MissingExtraError, match=r"pip install 'dagengine\[polars\]'"):
        ProcessResult().to_polars()


# -- dagengine runs export ---------------------------------------------------------------------


def export(*argv: str) -> subprocess.CompletedProcess[str]:
    """The real command line, in its own process."""
    return subprocess.run([sys.executable, "-m", "dagengine", "runs", "export", *argv],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.fixture
async def stored(tmp_path: Path) -> tuple[Path, ProcessResult]:
    path = tmp_path / "runs.db"
    result = await analysed(store=path)
    return path, result


def test_export_jsonl_rows_are_the_rows_of_to_pandas(
        stored: tuple[Path, ProcessResult]) -> None:
    path, result = stored
    done = export(str(path), "reviews")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [list(row) for row in rows] == [COLUMNS] * 4
    assert rows == expected_rows()
    frame = result.to_pandas()
    assert rows == [{k: plain(v) for k, v in row.items()} for row in frame.to_dict("records")]


def test_export_csv_has_the_same_header_and_cells(stored: tuple[Path, ProcessResult],
                                                  tmp_path: Path) -> None:
    path, _ = stored
    out = tmp_path / "reviews.csv"
    done = export(str(path), "reviews", "-o", str(out))  # the format follows the suffix
    assert done.returncode == 0, done.stderr
    assert f"wrote 4 rows to {out}" in done.stdout
    with out.open(newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == COLUMNS
    assert rows[3][:8] == ["2", "review 2", "2", "en", "negative", "2", "", ""]
    assert rows[3][9:11] == ["", "fake: HTTP 400"]


def test_export_parquet_reads_back_with_typed_columns(stored: tuple[Path, ProcessResult],
                                                      tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path, _ = stored
    out = tmp_path / "reviews.out"
    done = export(str(path), "reviews", "--format", "parquet", "-o", str(out))
    assert done.returncode == 0, done.stderr
    table = pq.read_table(out)
    assert table.column_names == COLUMNS
    assert str(table.schema.field("sentiment.score").type) == "int64"
    assert str(table.schema.field("sentiment.cost").type) == "double"
    assert table.to_pylist() == expected_rows()


def test_export_without_a_run_takes_the_newest(stored: tuple[Path, ProcessResult]) -> None:
    path, _ = stored
    done = export(str(path))
    assert done.returncode == 0, done.stderr
    assert "exporting run reviews, the newest of 1" in done.stderr
    assert len(done.stdout.splitlines()) == 4


def test_export_parquet_to_standard_output_is_refused(
        stored: tuple[Path, ProcessResult]) -> None:
    path, _ = stored
    done = export(str(path), "reviews", "--format", "parquet")
    assert done.returncode == 1
    assert "--format parquet writes a file: add -o FILE.parquet" in done.stderr


def test_export_parquet_without_pyarrow_names_the_extra(
        stored: tuple[Path, ProcessResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = stored
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    out = tmp_path / "x.parquet"
    assert runs_main(["export", str(path), "reviews", "-o", str(out)]) == 1
    assert "pip install 'dagengine[parquet]'" in capsys.readouterr().err


async def test_export_streams_the_run_instead_of_loading_it(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    plugin = SimplePlugin(["a", "b"])
    provider = FakeProvider(answer=lambda r: {"text": "x" * 500, "n": 1})
    await DagEngine(plugin, providers=[provider], execution={"concurrency": 50},
                    store=path).process([f"section {i}" for i in range(1000)], process_id="big")
    with RunStore(path) as store:
        loading = peak_bytes(lambda: store.results("big"))
    exporting = peak_bytes(lambda: runs_main(["export", str(path), "big",
                                              "-o", str(tmp_path / "big.jsonl")]))
    # Loading 2000 results holds them all; the export holds a row (and SQLite's cache).
    assert exporting < loading / 4, (exporting, loading)
    assert sum(1 for _ in (tmp_path / "big.jsonl").open()) == 1000


def peak_bytes(work: Any) -> int:
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
