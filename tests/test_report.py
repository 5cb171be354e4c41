"""The run report: what the store records for it, the page rendered from a real simulator run
and opened in headless Chromium, old stores, ProcessResults, the CLI, and the size of the page
of a 100k-section run.

The screenshot and the page of the simulator run are written to tests/output/ (ignored by
git) for a person to look at.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import FakeProvider, SimplePlugin, http_error
from dagengine import DagEngine, Dimension, Plugin, PromptContext, StoreError
from dagengine.cli.runs import main as runs_main
from dagengine.report import render_report, report_data, write_report
from dagengine.simulator import Simulator
from dagengine.store import SCHEMA_VERSION, RunStore
from headless import chromium, chromium_binary

OUTPUT = Path(__file__).with_name("output")
MODEL = "claude-3-5-haiku-20241022"
FALLBACK_MODEL = "gpt-4o-mini"
SECTIONS = 40
FAILING = 7  # classify of this section is refused with a 400
FALLING_BACK = 9  # summarize of this section is refused, then answered by the fallback
WARM = 4  # sections of an earlier run: their calls come from the cache
# Outcomes of the main run's first requests (then 200s): 429s and a 5xx, all retried.
SCRIPT = [200, 200, 429, 200, 200, 200, 429, 429, 200, 500, 200, 200, 200, 429]


class Mailroom(Plugin):
    """classify each email, summarize it knowing its class, then one overview of all."""

    def __init__(self) -> None:
        super().__init__("mailroom", "Mailroom", "report test plugin")
        self.dimensions = ["classify", "summarize", Dimension(name="overview", scope="global")]

    def define_dependencies(self, ctx: Any) -> dict[str, list[str]]:
        return {"summarize": ["classify"], "overview": ["classify"]}

    def create_prompt(self, ctx: PromptContext) -> str:
        if ctx.is_global:
            return f"Give an overview of these {len(ctx.sections)} emails."
        if ctx.dimension == "classify":
            return ("Analyze this email quickly and categorize it.\n\nEmail: "
                    f"{ctx.sections[0].content}\n\nReturn ONLY valid JSON: "
                    '{"category": "spam" | "work" | "personal" | "newsletter", '
                    '"confidence": 0.95, "summary": "Brief one-line summary"}')
        return f"Summarize this email in one line: {ctx.sections[0].content}"

    def select_provider(self, dimension: str, sections: Any = None, context: Any = None) -> Any:
        index = (context or {}).get("section_index")
        options = {"model": MODEL, "max_tokens": 200}
        refused = {**options, "max_tokens": -1}  # the simulator answers 400 to this
        if dimension == "classify" and index == FAILING:
            return {"provider": "anthropic", "options": refused}
        if dimension == "summarize" and index == FALLING_BACK:
            return {"provider": "anthropic", "options": refused, "fallbacks": [
                {"provider": "openai", "options": {"model": FALLBACK_MODEL, "max_tokens": 100}}]}
        return {"provider": "anthropic", "options": options}


EMAILS = [f"Email {i}: " + ("You WON a free prize, click now!" if i % 4 == 0 else
                            "The team meeting moved to 3pm; please review the agenda.")
          for i in range(SECTIONS)]


@dataclass
class SimulatedRun:
    store: Path
    engine: DagEngine
    result: Any
    requests: int  # what the simulator received during the main run
    rate_limited: int
    server_errors: int


async def simulated_run(folder: Path) -> SimulatedRun:
    path = folder / "runs.db"
    async with Simulator(latency_median=0.03, latency_sigma=0.5, seed=5,
                         error_429_retry_after=0.05) as sim:
        providers = {"anthropic": {"api_key": "sim-key", "base_url": sim.base_url},
                     "openai": {"api_key": "sim-key", "base_url": sim.openai_base_url}}
        engine = DagEngine(Mailroom(), providers=providers, store=path, execution={
            "concurrency": 8, "retry_delay": 0.05, "max_retries": 4,
            "rate_limits": {"anthropic": {"requests_per_minute": 6000}}})
        await engine.process(EMAILS[:WARM], process_id="warm-up")
        await sim.reset()
        await sim.configure(script=SCRIPT)
        result = await engine.process(EMAILS, process_id="main")
        stats = await sim.stats()
    return SimulatedRun(path, engine, result, stats["requests"], stats["rate_limited"],
                        stats["server_errors"])


@pytest.fixture(scope="module")
def output() -> Path:
    OUTPUT.mkdir(exist_ok=True)
    return OUTPUT


def store_figures(path: Path, process_id: str) -> dict[str, Any]:
    """The run's totals read straight from the file, as a second reader would."""
    conn = sqlite3.connect(path)
    try:
        cost, results, failed = conn.execute(
            "SELECT total(json_extract(result, '$.metadata.cost')), count(*), "
            "total(ok = 0) FROM results WHERE process_id = ?", (process_id,)).fetchone()
        failures = [r for (r,) in conn.execute(
            "SELECT dimension || ':' || section_index FROM results "
            "WHERE process_id = ? AND ok = 0", (process_id,))]
        pairs = {tuple(r) for r in conn.execute(
            "SELECT dimension, json_extract(result, '$.metadata.model') FROM results "
            "WHERE process_id = ? AND request_sent_at IS NOT NULL", (process_id,))}
    finally:
        conn.close()
    return {"cost": cost, "results": results, "failed": int(failed), "failures": failures,
            "latency_groups": len(pairs)}


# What the page says, read in the browser: marks drawn per chart, the totals, the tables.
READ_PAGE = """(() => {
  const charts = {};
  for (const svg of document.querySelectorAll('svg.chart')) {
    const box = svg.getBoundingClientRect();
    charts[svg.dataset.chart] = {
      marks: svg.querySelectorAll('.mark').length, declared: Number(svg.dataset.marks),
      width: box.width, height: box.height,
      colors: [...svg.querySelectorAll('.mark')].map(m => m.getAttribute('fill')),
    };
  }
  const totals = {};
  for (const tile of document.querySelectorAll('[data-total]')) {
    totals[tile.dataset.total] = {value: tile.dataset.value,
                                  text: tile.querySelector('.value').textContent};
  }
  const rows = sel => [...document.querySelectorAll(sel)].map(
    tr => [...tr.cells].map(td => td.textContent));
  return {charts, totals, failures: rows('table.failures tr:not(:first-child)'),
          costTotal: rows('table.costs tr.total')[0], scripts: document.scripts.length,
          title: document.title};
})()"""


async def test_report_of_a_simulator_run_in_headless_chromium(tmp_path: Path,
                                                               output: Path) -> None:
    binary = chromium_binary()
    if binary is None:
        pytest.skip("chromium is not installed (scripts/test.sh installs it: apt-get install "
                    "chromium)")
    run = await simulated_run(tmp_path)
    page_path = run.engine.report(run.result, output / "report.html")
    expected = store_figures(run.store, "main")
    assert run.rate_limited == SCRIPT.count(429) and run.server_errors == 1

    async with chromium(tmp_path / "profile", binary) as page:
        for domain in ("Runtime", "Log", "Page", "Network"):
            await page.send(f"{domain}.enable")
        loaded = page.expect("Page.loadEventFired")
        await page.send("Page.navigate", url=page_path.resolve().as_uri())
        await loaded
        shown = await page.evaluate(READ_PAGE)
        await page.screenshot(output / "report.png", width=1280)
        assert page.errors() == []
        # Self-contained: the page itself is the only thing the browser fetched.
        assert page.requested() == [page_path.resolve().as_uri()]
    print(f"\nscreenshot: {output / 'report.png'}; page: {page_path} "
          f"({page_path.stat().st_size / 1024:.0f} KiB)")

    charts = shown["charts"]
    assert shown["scripts"] == 0
    expected_charts = {"timeline-requests", "timeline-in-flight", "timeline-completed", "dag",
                       "cost-by-dimension", "tokens-by-dimension", "cost-by-provider",
                       "cost-by-model", "attempt-causes", "waits-by-dimension",
                       "cache-by-dimension", "failures-by-cause"}
    latency = {name for name in charts if name.startswith("latency:")}
    assert set(charts) == expected_charts | latency
    assert len(latency) == expected["latency_groups"]  # one per dimension and model
    for name, chart in charts.items():
        assert chart["marks"] > 0 and chart["marks"] == chart["declared"], name
        assert chart["width"] > 200 and chart["height"] > 20, name  # laid out, visible
    assert charts["dag"]["marks"] == 3  # one node per dimension
    assert charts["cost-by-provider"]["marks"] == 2  # anthropic, and openai's fallback
    assert charts["cache-by-dimension"]["marks"] == 2  # classify and summarize of WARM
    assert charts["failures-by-cause"]["marks"] == 1
    assert "#f58518" in charts["timeline-requests"]["colors"]  # the 429s, over time

    totals = shown["totals"]
    assert float(totals["cost"]["value"]) == pytest.approx(expected["cost"], rel=1e-12)
    assert totals["cost"]["text"] == f"${expected['cost']:.4f}"
    assert shown["costTotal"][-1] == f"${expected['cost']:.4f}"
    assert int(totals["results"]["value"]) == expected["results"] == 2 * SECTIONS + 1
    assert int(totals["failed"]["value"]) == expected["failed"] == 1
    assert expected["failures"] == [f"classify:{FAILING}"]
    assert int(totals["requests"]["value"]) == run.requests  # every request was recorded
    assert int(totals["rate_limited"]["value"]) == run.rate_limited
    info = RunStore(run.store).run("main")  # what `dagengine runs show` says
    assert (info.results, info.failed) == (expected["results"], expected["failed"])
    [failure] = shown["failures"]
    assert "400" in failure[0] and "max_tokens" in failure[0]
    assert failure[1] == "1" and f"classify, section {FAILING}" in failure[3]

    # Retries, fallbacks and cache hits, as the scripted faults make them.
    data = report_data(run.store, process_id="main")
    assert {c.cause: (c.retried, c.final) for c in data.attempt_causes} == {
        "HTTP 429": (SCRIPT.count(429), 0), "HTTP 500": (1, 0), "HTTP 400": (1, 1)}
    assert (data.totals.retries, data.totals.fallbacks) == (SCRIPT.count(429) + 1, 1)
    assert data.fallback_routes == {"anthropic → openai": 1}
    assert {c.dimension: c.hits for c in data.cache} == {"classify": WARM, "summarize": WARM}
    assert data.totals.limiter_wait is not None and data.totals.backoff_wait is not None
    # At least each 429's retry-after (50 ms) and half the first backoff (retry_delay 50 ms).
    assert data.totals.backoff_wait >= 0.9 * (0.05 * SCRIPT.count(429) + 0.025)


async def test_the_store_records_every_provider_request(tmp_path: Path) -> None:
    failures = {(0, 1): http_error(429, 0.01), (0, 2): http_error(503), (1, 1): http_error(400)}
    provider = FakeProvider(fail=lambda r, n: failures.get((r.metadata["section_index"], n)))
    engine = DagEngine(SimplePlugin(["a"]), providers=[provider], store=tmp_path / "runs.db",
                       execution={"concurrency": 2, "retry_delay": 0.001})
    await engine.process(["zero", "one", "two"], process_id="p")
    attempts = RunStore(tmp_path / "runs.db").attempts("p")
    trail = sorted((a.section_index, a.attempt, a.status, a.error) for a in attempts)
    assert trail == [(0, 1, 429, "HTTP 429"), (0, 2, 503, "HTTP 503"), (0, 3, 200, None),
                     (1, 1, 400, "HTTP 400"), (2, 1, 200, None)]
    assert len(attempts) == len(provider.calls)
    for a, call in zip(sorted(attempts, key=lambda a: a.sent_at),
                       sorted(provider.calls, key=lambda c: c.start), strict=True):
        assert a.started_at <= a.sent_at <= a.ended_at
        assert a.ended_at - a.sent_at >= call.end - call.start  # the request inside its span
        assert (a.provider, a.model) == ("fake", "fake-model")


async def test_a_restarted_run_drops_the_requests_it_recorded(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    failing = FakeProvider(fail=lambda r, n: http_error(400))
    engine = DagEngine(SimplePlugin(["a"]), providers=[failing], store=path, cache=False)
    await engine.process(["x", "y"], process_id="p")
    assert [a.error for a in RunStore(path).attempts("p")] == ["HTTP 400", "HTTP 400"]
    engine = DagEngine(SimplePlugin(["a"]), providers=[FakeProvider()], store=path, cache=False)
    await engine.process(["x", "y"], process_id="p", restart=True)
    assert [a.error for a in RunStore(path).attempts("p")] == [None, None]


async def test_cache_hits_send_no_request_and_report_as_cache_hits(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    for pid in ("first", "second"):
        engine = DagEngine(SimplePlugin(["a"]), providers=[FakeProvider()], store=path)
        await engine.process(["x", "y"], process_id=pid)
    store = RunStore(path)
    assert len(store.attempts("first")) == 2 and store.attempts("second") == []
    data = report_data(store, process_id="second")
    assert (data.totals.cached, data.totals.requests) == (2, 0)
    assert data.timeline is not None and sum(data.timeline.answered) == 0


# -- old stores ----------------------------------------------------------------------------

# The tables of store schema version 1, as dagengine wrote them before the report existed.
V1_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL, created_by TEXT NOT NULL,
                             created_at REAL NOT NULL);
CREATE TABLE runs (process_id TEXT PRIMARY KEY, plugin TEXT NOT NULL,
    plan_signature TEXT NOT NULL, input_hash TEXT NOT NULL, section_count INTEGER NOT NULL,
    status TEXT NOT NULL, error TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    totals TEXT, owner_token TEXT, owner_pid INTEGER, owner_host TEXT, heartbeat REAL);
CREATE TABLE sections (process_id TEXT NOT NULL, kind TEXT NOT NULL, chunk INTEGER NOT NULL,
    sections TEXT NOT NULL, PRIMARY KEY (process_id, kind, chunk)) WITHOUT ROWID;
CREATE TABLE results (process_id TEXT NOT NULL, dimension TEXT NOT NULL,
    section_index INTEGER NOT NULL, ok INTEGER NOT NULL, result TEXT NOT NULL,
    recorded_at REAL NOT NULL, PRIMARY KEY (process_id, dimension, section_index))
    WITHOUT ROWID;
CREATE TABLE cache (id INTEGER PRIMARY KEY, tag INTEGER NOT NULL, key TEXT NOT NULL,
    provider TEXT NOT NULL, model TEXT, response TEXT NOT NULL, created_at REAL NOT NULL);
PRAGMA application_id = 1684104945;
PRAGMA journal_mode = WAL;
"""


def v1_store(path: Path) -> None:
    """A store as dagengine 0.1 with schema version 1 left it: one run of 3 sections x 1
    dimension, one failed."""
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    now = time.time() - 60
    conn.execute("INSERT INTO schema_version VALUES (1, 'dagengine 0.1.0', ?)", (now,))
    plan = json.dumps({"dimensions": [["a", "section"]], "dependencies": {"a": []}})
    conn.execute("INSERT INTO runs VALUES ('old', 'simple', ?, 'h', 3, 'completed', NULL, ?, ?, "
                 "NULL, NULL, NULL, NULL, NULL)", (plan, now, now + 2))
    for i in range(3):
        meta = {"model": "fake-model", "provider": "fake", "cost": 0.001 * (i + 1),
                "tokens": {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
                "cached": False, "attempts": 1 + i, "duration": 0.5 + i / 10}
        error = "fake: HTTP 400 (after 3 attempts)" if i == 2 else None
        conn.execute("INSERT INTO results VALUES ('old', 'a', ?, ?, ?, ?)", (
            i, int(error is None), json.dumps({"data": None if error else {"i": i},
                                               "error": error, "metadata": meta}),
            now + 0.5 + i / 2))
    conn.commit()
    conn.close()


async def test_a_version_1_store_is_upgraded_in_place_and_reports(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    v1_store(path)
    store = RunStore(path)
    versions = [v for (v,) in sqlite3.connect(path).execute(
        "SELECT version FROM schema_version ORDER BY version")]
    assert versions == list(range(1, SCHEMA_VERSION + 1))
    assert store.run("old").results == 3  # what it held is still there
    data = report_data(store)  # the newest (only) run
    assert data.process_id == "old"
    assert (data.totals.results, data.totals.failed) == (3, 1)
    assert data.totals.cost == pytest.approx(0.006)
    assert data.totals.requests is None  # not recorded then: said so, not shown as 0
    assert data.latency_of == "calls" and data.latencies[0].count == 2
    assert data.timeline is not None and data.timeline.unit == "calls"
    assert data.totals.retries == 0 + 1 + 2
    assert [g.cause for g in data.failures] == ["fake: HTTP 400"]
    page = render_report(store, process_id="old")
    assert "not recorded" in page and 'data-chart="timeline-requests"' in page
    # ... and the upgraded file takes new runs, requests included.
    engine = DagEngine(SimplePlugin(["a"]), providers=[FakeProvider()], store=store)
    await engine.process(["x"], process_id="new")
    assert len(store.attempts("new")) == 1


# -- a ProcessResult, the engine, the CLI --------------------------------------------------


async def test_report_of_a_process_result_shows_what_the_result_holds(tmp_path: Path) -> None:
    provider = FakeProvider(fail=lambda r, n: http_error(503) if n == 1 else None)
    engine = DagEngine(SimplePlugin(["a", Dimension(name="<g&>", scope="global")],
                                    {"<g&>": ["a"]}),
                       providers=[provider], execution={"retry_delay": 0.001}, pricing={
                           "models": {"fake-model": {"input_per_1m": 1.0, "output_per_1m": 2.0}}})
    result = await engine.process(["x", "y", "z"])
    graph = (await engine.plan()).signature()
    data = report_data(result, graph=graph)
    assert data.totals.cost == pytest.approx(result.costs.total_cost) and data.totals.cost > 0
    assert data.totals.retries == 4  # one per call: every first attempt got a 503
    assert data.timeline is None and data.totals.requests is None
    assert [(n.name, n.dependencies) for n in data.nodes] == [("a", []), ("<g&>", ["a"])]
    assert data.latency_of == "calls" and sum(lat.count for lat in data.latencies) == 4
    page = write_report(result, tmp_path / "report.html", graph=graph).read_text()
    assert "No timeline" in page and 'data-chart="dag"' in page
    assert "&lt;g&amp;&gt;" in page and "<g&>" not in page  # names are escaped
    assert f'data-total="cost" data-value="{result.costs.total_cost!r}"' in page
    assert_well_formed(page)


async def test_engine_report_finds_its_run_in_the_store(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    engine = DagEngine(SimplePlugin(["a"]), providers=[FakeProvider()], store=path)
    first = await engine.process(["x", "y"], process_id="first")
    await engine.process(["x", "y", "z"], process_id="second")  # newer, cached
    page = engine.report(first, tmp_path / "first.html").read_text()
    assert "<code>first</code>" in page and "from run store" in page


def test_runs_report_writes_the_newest_run_or_the_one_named(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "runs.db"
    for pid in ("one", "two"):
        engine = DagEngine(SimplePlugin(["a"]), providers=[FakeProvider()], store=path)
        engine.run(["x", "y"] if pid == "one" else ["x", "y", "z"], process_id=pid)
    out = tmp_path / "out" / "report.html"
    assert runs_main(["report", str(path), "-o", str(out)]) == 0
    assert "report of run two (3 results" in capsys.readouterr().out
    assert "<code>two</code>" in out.read_text()
    assert runs_main(["report", str(path), "one", "--out", str(out)]) == 0
    assert "<code>one</code>" in out.read_text()
    assert runs_main(["report", str(path), "missing", "-o", str(out)]) == 1
    assert "no run 'missing'" in capsys.readouterr().err
    assert runs_main(["report", str(tmp_path / "absent.db")]) == 1
    with pytest.raises(StoreError, match="no run store"):
        write_report(tmp_path / "absent.db", out)


def assert_well_formed(page: str) -> None:
    """Every chart is well-formed SVG (what a browser's HTML parser would silently repair)."""
    charts = re.findall(r"<svg\b.*?</svg>", page, flags=re.S)
    assert charts
    for svg in charts:
        ET.fromstring(svg)


# -- a page of 100k sections ---------------------------------------------------------------


RESULT = ('{"data": %s, "error": %s, "metadata": {"model": "%s", "provider": "anthropic", '
          '"cost": %r, "cached": false, "tokens": {"input_tokens": %d, "output_tokens": %d, '
          '"total_tokens": %d}, "attempts": %d, "duration": %r}}')


def synthesised_store(path: Path, sections: int) -> dict[str, float]:
    """A stored run of `sections` x 2 dimensions + 1 global, written row by row as the
    engine would (1 % of the calls 429 first, 0.5 % fail), without making the calls."""
    store = RunStore(path)
    store.close()
    plan = json.dumps({"dimensions": [["extract", "section"], ["score", "section"],
                                      ["digest", "global"]],
                       "dependencies": {"extract": [], "score": ["extract"],
                                        "digest": ["score"]}})
    start = time.time() - 3600
    results: list[tuple[Any, ...]] = []
    failed: list[tuple[Any, ...]] = []
    cost = 0.0

    def add(dimension: str, index: int, at: float, latency: float, error: str | None) -> None:
        nonlocal cost
        attempts = 1
        began = at - latency - 0.01
        if index % 100 == 3:
            attempts = 2
            failed.append(("big", dimension, index, 1, "anthropic", MODEL, began - 1.2,
                           began - 1.2, began - 1.1, 429, "HTTP 429"))
        call_cost = 0.0 if error else 0.00021
        cost += call_cost
        tokens = (0, 0, 0) if error else (120, 30, 150)
        text = RESULT % (json.dumps(None if error else {"score": index % 7}), json.dumps(error),
                         MODEL, call_cost, *tokens, attempts, latency + 0.01)
        sent = None if error else began + 0.01
        results.append(("big", dimension, index, int(error is None), text, at,
                        None if error else began, sent, None if error else at))

    for i in range(sections):
        t = start + 3000 * i / sections
        latency = 0.4 + (i * 7919 % 1000) / 1000
        error = (f"anthropic: HTTP 500 upstream overloaded (request req_{i:08x})"
                 if i % 200 == 11 else None)
        if error:
            failed.append(("big", "extract", i, 1, "anthropic", MODEL, t - 1, t - 1, t,
                           500, "HTTP 500"))
        add("extract", i, t, latency, error)
        add("score", i, t + 30 + latency, latency * 0.8, None)
    add("digest", -1, start + 3500, 12.0, None)
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO runs VALUES ('big', 'bulk', ?, 'h', ?, 'completed', NULL, ?, ?, "
                 "NULL, NULL, NULL, NULL, NULL)", (plan, sections, start, start + 3600))
    conn.executemany("INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", results)
    conn.executemany("INSERT INTO failed_attempts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     failed)
    conn.commit()
    conn.close()
    return {"cost": cost, "results": len(results)}


def test_the_page_of_a_100k_section_run_stays_under_5_mb(tmp_path: Path) -> None:
    path = tmp_path / "big.db"
    figures = synthesised_store(path, 100_000)
    with RunStore(path) as store:
        data = report_data(store, process_id="big")
        page = render_report(data)
    size = len(page.encode())
    print(f"\npage of 100,000 sections x 2 dimensions + 1 global: {size / 1024:.0f} KiB")
    assert size < 5 * 1024 * 1024
    assert data.totals.results == figures["results"] == 200_001
    assert data.totals.cost == pytest.approx(figures["cost"])
    assert data.totals.failed == 500 and len(data.failures) == 1  # ids do not split causes
    assert data.failures[0].count == 500 and len(data.failures[0].examples) == 10
    assert data.totals.rate_limited == 2 * 1000
    assert data.timeline is not None and data.timeline.buckets <= 120
    assert sum(lat.count for lat in data.latencies) == 200_001 - 500
    p99 = data.latencies[0].p99
    assert math.isclose(p99, sorted(0.4 + (i * 7919 % 1000) / 1000 for i in range(100_000)
                                    if i % 200 != 11)[int(0.99 * 99_499)], abs_tol=0.02)
    assert_well_formed(page)
