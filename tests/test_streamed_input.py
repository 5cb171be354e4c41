"""Issue 14: with a store, a new run of a list writes its input as it reads it, so the first
call does not wait for the whole input to be converted, hashed and stored; the input hash is
complete once the run closes, and a resume (which reads its input whole) checks it."""

from __future__ import annotations

import gc
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from conftest import SimplePlugin
from dagengine import DagEngine, DimensionResult, ProviderRequest, Section
from dagengine.errors import StoreError
from dagengine.store import RunStore, default_process_id
from dagengine.store._codec import input_hash, sections_json
from dagengine.testing import FunctionProvider


def provider(answer: Any = None) -> FunctionProvider:
    return FunctionProvider(answer or (lambda request: {"ok": True}), name="fake", model="m")


def stored_input(path: Path) -> tuple[str, int, int]:
    with sqlite3.connect(path) as conn:
        hash_, count = conn.execute("SELECT input_hash, section_count FROM runs").fetchone()
        stored = sum(len(__import__("json").loads(text)) for (text,) in conn.execute(
            "SELECT sections FROM sections WHERE kind = 'input'"))
    return hash_, count, stored


def test_the_first_call_goes_out_before_the_input_is_stored(tmp_path: Path) -> None:
    path, texts = tmp_path / "runs.db", [f"s{i}" for i in range(5000)]
    seen: list[tuple[str, int, int]] = []

    def answer(request: ProviderRequest) -> dict[str, Any]:
        if not seen:
            seen.append(stored_input(path))
        return {"ok": True}

    result = DagEngine(SimplePlugin(["a"]), providers=[provider(answer)], store=path).run(
        texts, process_id="p")
    assert len(result.sections) == 5000
    hash_, count, stored = seen[0]
    # At the first call: the run is claimed, its input hash not known yet, and only what
    # was read so far is stored.
    assert hash_ == "pending" and count == 0 and stored < 5000
    # Once the run closed: the whole input and the hash of all of it, as a resume checks.
    sections = [Section(content=t) for t in texts]
    assert stored_input(path) == (input_hash(sections_json(sections)), 5000, 5000)
    assert RunStore(path).sections("p") == sections


def test_a_resume_finds_the_run_by_its_default_id_and_checks_the_whole_input(
        tmp_path: Path) -> None:
    path, texts = tmp_path / "runs.db", [f"s{i}" for i in range(1500)]
    DagEngine(SimplePlugin(["a"]), providers=[provider()], store=path).run(texts)
    again = provider()
    result = DagEngine(SimplePlugin(["a"]), providers=[again], store=path).run(
        texts, resume=True)
    assert again.calls == [] and len(result.sections) == 1500
    # The default id hashes the first 1,000 sections and the count: a change further on
    # finds the same run, whose stored input hash refuses it.
    changed = [*texts[:-1], "other"]
    assert (default_process_id(SimplePlugin(["a"]), [Section(content=t) for t in changed])
            == default_process_id(SimplePlugin(["a"]), [Section(content=t) for t in texts]))
    with pytest.raises(StoreError, match="different sections"):
        DagEngine(SimplePlugin(["a"]), providers=[provider()], store=path).run(
            changed, resume=True)


async def killed_while_reading(path: Path, texts: list[str], read: int, done: int) -> None:
    """What a process killed mid-run leaves: the input stored up to `read`, `done` results,
    no input hash; its handle dropped without close_run (so it no longer counts as owned)."""
    plugin = SimplePlugin(["a"])
    store = RunStore(path)
    plan = await DagEngine(plugin, providers=[provider()], store=False).plan()
    stored = await store.open_run("p", sections=[], plan=plan, plugin=plugin, streamed=True)
    assert stored.input is not None
    stored.input.add([Section(content=t) for t in texts[:read]])
    for index in range(done):
        stored.record("a", index, DimensionResult(data={"ok": index}))
    store.flush()
    del stored
    gc.collect()


async def test_a_resume_of_a_run_killed_while_writing_its_input(tmp_path: Path) -> None:
    path, texts = tmp_path / "runs.db", [f"s{i}" for i in range(30)]
    await killed_while_reading(path, texts, read=12, done=10)
    assert stored_input(path) == ("pending", 0, 12)
    with pytest.raises(StoreError, match="different sections"):
        await DagEngine(SimplePlugin(["a"]), providers=[provider()], store=path).process(
            ["x", *texts[1:]], process_id="p", resume=True)
    again = provider()
    result = await DagEngine(SimplePlugin(["a"]), providers=[again], store=path).process(
        texts, process_id="p", resume=True)
    assert sorted(c.section_index for c in again.calls) == list(range(10, 30))
    assert [s.results["a"].data for s in result.sections][:10] == [
        {"ok": i} for i in range(10)]
    sections = [Section(content=t) for t in texts]
    assert stored_input(path) == (input_hash(sections_json(sections)), 30, 30)
