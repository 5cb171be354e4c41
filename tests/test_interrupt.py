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


UNCAUGHT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from conftest import FakeProvider, SimplePlugin
    from dagengine import DagEngine

    provider = FakeProvider(latency=lambda r: 0.0 if r.metadata["section_index"] < 2 else 60.0)
    engine = DagEngine(SimplePlugin(["a"]), providers=[provider])
    done = 0

    def on_section_complete(index, result):
        global done
        done += 1
        if done == 2:
            print("READY", flush=True)

    engine.run([f"s{{i}}" for i in range(5)], on_section_complete=on_section_complete)
""")


def test_an_uncaught_process_interrupted_ends_a_script_with_status_130() -> None:
    tests = str(Path(__file__).resolve().parent)
    child = subprocess.Popen([sys.executable, "-c", UNCAUGHT.format(tests=tests)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "READY"
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == 130, err
    assert "dagengine.errors.ProcessInterrupted: interrupted" in err  # the traceback, as usual


HOOK_RAISES = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from conftest import FakeProvider, SimplePlugin
    from dagengine import DagEngine

    class Stops(SimplePlugin):
        def create_prompt(self, ctx):
            raise KeyboardInterrupt  # as a Ctrl-C landing inside a hook would

    DagEngine(Stops(["a"]), providers=[FakeProvider()]).run(["x"])
""")


def test_a_keyboard_interrupt_inside_a_hook_also_ends_the_script_with_130(
    tmp_path: Path,
) -> None:
    script = tmp_path / "script.py"
    script.write_text(HOOK_RAISES.format(tests=str(Path(__file__).resolve().parent)))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 130, done.stderr
    assert "ProcessInterrupted" in done.stderr


def test_other_uncaught_errors_still_end_with_1_after_a_caught_interrupt(
    tmp_path: Path,
) -> None:
    script = tmp_path / "script.py"
    script.write_text(HOOK_RAISES.format(tests=str(Path(__file__).resolve().parent))
                      .replace("DagEngine(Stops", "try:\n    DagEngine(Stops")
                      + "except KeyboardInterrupt:\n    pass\nraise ValueError('later')\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1, done.stderr
    assert "ValueError: later" in done.stderr


def test_an_interactive_session_goes_on_after_an_uncaught_interrupt(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(HOOK_RAISES.format(tests=str(Path(__file__).resolve().parent)))
    done = subprocess.run([sys.executable, "-i", str(script)], input="print('STILL HERE')\n",
                          capture_output=True, text=True, timeout=60)
    assert "STILL HERE" in done.stdout, done.stderr
    assert done.returncode == 0
