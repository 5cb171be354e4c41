"""Progress displays: bars redrawn in place on a terminal, plain lines anywhere else."""

from __future__ import annotations

import io
import os
import pty
from typing import Any

import pytest

from conftest import FakeProvider, SimplePlugin
from dagengine import ConfigurationError, DagEngine
from dagengine.display import BarDisplay, LineDisplay, format_line, make_display
from dagengine.graph import Plan
from dagengine.types import DimensionProgress, ProgressUpdate

ESC = "\x1b"
PLAN = Plan.build(["sentiment", "topics", "summary"], {"summary": ["sentiment", "topics"]})


def update(done: int, total: int = 6, **fields: Any) -> ProgressUpdate:
    per_dim = {
        "sentiment": DimensionProgress(completed=min(done, 2), total=2),
        "topics": DimensionProgress(completed=min(max(done - 2, 0), 2), total=2),
        "summary": DimensionProgress(completed=max(done - 4, 0), total=2),
    }
    return ProgressUpdate(completed=done, total=total, percent=100 * done / total,
                          cost=0.001 * done, eta_seconds=total - done,
                          requests_per_second=12.5, dimensions=per_dim, **fields)


def drive(display: Any, steps: int = 6) -> None:
    display.start(PLAN)
    for done in range(1, steps):
        display.update(update(done))
    display.stop(update(steps))


async def run_engine(progress_display: Any, sections: int = 30) -> None:
    engine = DagEngine(
        plugin=SimplePlugin(["sentiment", "topics", "summary"],
                            {"summary": ["sentiment", "topics"]}),
        providers=[FakeProvider()], execution={"concurrency": 10},
        progress_display=progress_display,
    )
    await engine.process([f"review {i}" for i in range(sections)])


# -- not a terminal ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bar", "multi", "simple"])
async def test_every_display_prints_plain_lines_without_escape_codes_when_not_a_terminal(
    kind: str,
) -> None:
    stream = io.StringIO()
    await run_engine({"display": kind, "stream": stream, "interval": 0})
    out = stream.getvalue()
    assert ESC not in out and "\r" not in out
    lines = out.splitlines()
    assert len(lines) > 2
    assert all(line.startswith("Progress: ") for line in lines)
    assert lines[-1].startswith("Progress: 90/90 (100%)")


def test_multi_off_a_terminal_names_each_dimension_on_its_line() -> None:
    stream = io.StringIO()
    drive(make_display({"display": "multi", "stream": stream, "interval": 0}))
    last = stream.getvalue().splitlines()[-1]
    assert last.endswith("| sentiment 2/2, topics 2/2, summary 2/2")


async def test_progress_goes_to_stderr_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    await run_engine("simple")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Progress: 90/90 (100%)" in captured.err
    assert ESC not in captured.err


@pytest.mark.parametrize("option", [None, False, "none"])
async def test_none_prints_nothing(option: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert make_display(option) is None
    await run_engine(option)
    assert capsys.readouterr() == ("", "")


# -- on a terminal -------------------------------------------------------------------------------


def test_bar_redraws_one_line_in_place_on_a_terminal() -> None:
    stream = io.StringIO()
    display = make_display({"display": "bar", "stream": stream, "terminal": True,
                            "interval": 0})
    assert isinstance(display, BarDisplay)
    drive(display)
    out = stream.getvalue()
    # Each redraw returns to the start of the line and erases it; one newline, at the end.
    assert out.count("\r\x1b[2K") >= 5
    assert out.count("\n") == 1 and out.rstrip(ESC + "[?25h").endswith("\n")
    final = out.rsplit("\r\x1b[2K", 1)[1]
    assert "6/6" in final and "100%" in final and "$0.0060" in final
    assert "ETA 0s" in final and "12.5 req/s" in final


def test_bar_shows_429s_and_waiting_calls_only_when_there_are_some(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "160")  # rich shortens columns that do not fit
    stream = io.StringIO()
    display = make_display({"display": "bar", "stream": stream, "terminal": True,
                            "interval": 0})
    assert display is not None
    display.start(PLAN)
    display.update(update(1))
    quiet = stream.getvalue()
    display.stop(update(2, rate_limited=7, waiting_for_capacity=3))
    assert "429s" not in quiet and "waiting" not in quiet
    assert "429s absorbed: 7 | waiting for capacity: 3" in stream.getvalue()


def test_multi_draws_one_bar_per_dimension_and_a_total() -> None:
    stream = io.StringIO()
    drive(make_display({"display": "multi", "stream": stream, "terminal": True,
                        "interval": 0}))
    final = stream.getvalue().rsplit("\x1b[1A\x1b[2K", 1)[1]
    rows = final.rstrip(ESC + "[?25h").strip("\n").split("\n")
    assert [row.split()[0] for row in rows] == ["sentiment", "topics", "summary", "total"]
    assert all("2/2" in row for row in rows[:3]) and "6/6" in rows[3]


def test_simple_rewrites_one_line_with_carriage_returns_on_a_terminal() -> None:
    stream = io.StringIO()
    display = make_display({"display": "simple", "stream": stream, "terminal": True,
                            "interval": 0})
    assert isinstance(display, LineDisplay)
    drive(display)
    out = stream.getvalue()
    assert ESC not in out
    assert out.count("\r") == 6 and out.count("\n") == 1 and out.endswith("\n")
    assert out.rsplit("\r", 1)[1].startswith("Progress: 6/6 (100%)")


def test_a_real_pseudo_terminal_is_detected_and_gets_the_bar() -> None:
    controller, terminal = pty.openpty()
    try:
        with os.fdopen(terminal, "w", encoding="utf-8", closefd=False) as stream:
            display = make_display({"display": "bar", "stream": stream, "interval": 0})
            assert isinstance(display, BarDisplay)
            drive(display, steps=3)
        out = _read_all(controller)
    finally:
        os.close(controller)
        os.close(terminal)
    assert out.count("\r\x1b[2K") >= 2  # redrawn in place
    assert "3/6" in out and "━" in out


def _read_all(fd: int) -> str:
    """What is waiting on `fd`, without blocking once it is drained."""
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def test_a_pipe_gets_plain_lines_even_when_asked_for_bars() -> None:
    read_end, write_end = os.pipe()
    try:
        with os.fdopen(write_end, "w", encoding="utf-8", closefd=False) as stream:
            display = make_display({"display": "bar", "stream": stream, "interval": 0})
            assert isinstance(display, LineDisplay)
            drive(display, steps=3)
        out = os.read(read_end, 65536).decode()
    finally:
        os.close(read_end)
        os.close(write_end)
    assert ESC not in out and out.count("\n") == 3


# -- throttling ----------------------------------------------------------------------------------


def test_due_is_false_right_after_an_update_and_true_before_the_first() -> None:
    display = make_display({"display": "simple", "stream": io.StringIO(), "interval": 60})
    assert display is not None
    display.start(PLAN)
    assert display.due()
    display.update(update(1))
    assert not display.due()


def test_interval_zero_redraws_on_every_update() -> None:
    display = make_display({"display": "simple", "stream": io.StringIO(), "interval": 0})
    assert display is not None
    display.start(PLAN)
    display.update(update(1))
    assert display.due()


async def test_a_large_run_draws_by_the_clock_not_per_item() -> None:
    stream = io.StringIO()
    await run_engine({"display": "bar", "stream": stream, "interval": 3600}, sections=2000)
    # The first completion and the final state: 6000 calls, two lines.
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[1].startswith("Progress: 6000/6000 (100%)")


# -- options and the plain line ----------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("option", "kind"), [
    ({}, BarDisplay), ({"display": "bar"}, BarDisplay), ({"display": "multi"}, BarDisplay),
    ({"display": "simple"}, LineDisplay),
])
def test_names_pick_their_display_on_a_terminal(option: dict[str, Any], kind: type) -> None:
    assert isinstance(make_display({**option, "stream": _Terminal()}), kind)


def test_true_means_one_bar_on_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    display = make_display(True)
    assert isinstance(display, BarDisplay) and not display.per_dimension
    assert display.console.file is terminal


def test_a_display_object_is_used_as_it_is() -> None:
    custom = LineDisplay(io.StringIO(), interval=1, terminal=False)
    assert make_display(custom) is custom


@pytest.mark.parametrize(("option", "message"), [
    ("fancy", "must be one of bar, multi, simple or 'none', got 'fancy'"),
    ({"display": "bar", "colour": "red"}, "unknown key(s) 'colour'"),
    ({"interval": -1}, "interval'] must be a number of seconds >= 0"),
    ({"stream": 42}, "must be a text stream, 'stdout' or 'stderr'"),
    (3, "progress_display must be True, False, None"),
])
def test_a_bad_option_says_what_is_allowed(option: Any, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        make_display(option)
    assert message in str(info.value)


def test_format_line_is_the_walkthrough_line_and_adds_trouble_only_when_there_is_some() -> None:
    assert format_line(update(3)) == "Progress: 3/6 (50%) | 12.5 req/s | $0.0030 | ETA: 3s"
    troubled = update(3, failed=1, rate_limited=4, waiting_for_capacity=2)
    assert format_line(troubled).endswith(
        "| 1 failed | 429s absorbed: 4 | waiting for capacity: 2")
