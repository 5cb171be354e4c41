"""Ctrl-C stops a run cleanly and keeps what finished."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

CHILD = textwrap.dedent("""
    import asyncio, sys
    sys.path.insert(0, {tests!r})
    from conftest import FakeProvider, SimplePlugin
    from dagengine import DagEngine, ProcessInterrupted

    provider = FakeProvider(latency=lambda r: 0.0 if r.metadata["section_index"] < 5 else 60.0)
    engine = DagEngine(SimplePlugin(["a"]), providers=[provider],
                       execution={{"concurrency": 10}})
    done = 0

    def on_section_complete(index, result):
        global done
        done += 1
        if done == 5:
            print("READY", flush=True)

    try:
        engine.run([f"s{{i}}" for i in range(20)], on_section_complete=on_section_complete)
    except ProcessInterrupted as stop:
        ok = [s for s in stop.result.sections if s.results.get("a") and s.results["a"].ok]
        print(f"KEPT {{len(ok)}} OF {{len(stop.result.sections)}}", flush=True)
        print(f"IN_FLIGHT {{provider.in_flight}}", flush=True)
        sys.exit(130)
""")


def test_ctrl_c_stops_cleanly_and_keeps_what_finished() -> None:
    tests = str(Path(__file__).resolve().parent)
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(tests=tests)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "READY"
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == 130, err
    assert "KEPT 5 OF 20" in out
    assert "IN_FLIGHT 0" in out
