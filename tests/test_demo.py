"""`dagengine demo`: the walkthrough's report, every figure checked against the run itself.

The runs use the local simulator with its latency scaled down; the rate limit is the demo's
own, so 100 simultaneous requests still get 429s.
"""

from __future__ import annotations

import asyncio
import io
import re
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path

import pytest

from dagengine.cli.demo import GATEWAY_CONFIG, DemoOptions, DemoRun, generate_emails, main, run_demo
from dagengine.cli.demo.backends import _open_setup
from dagengine.cli.demo.report import _print_logs, _Report
from dagengine.gateway import LocalGateway, node_available

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "portkey_emails.py"
FAST = 0.1  # latency scale: a 0.08 s median instead of 0.8 s

# The walkthrough's sections, in its order.
SECTIONS = [
    "🚀 PORTKEY: PARALLEL REQUEST HANDLING DEMO",
    "📊 Test Configuration:",
    "   Total Emails: 100",
    "   Parallel Requests: 100 concurrent",
    "📧 Generating test emails...",
    "   Email types:",
    "⚡ Processing 100 emails with 100 parallel requests...",
    "📊 Progress: ",
    "✅ Completed in ",
    "📊 Throughput: ",
    "📊 RESULTS",
    "⚡ Performance:",
    "   Duration: ",
    "   Emails Processed: 100",
    "   Throughput: ",
    "   Avg Time per Email: ",
    "✅ Success Rate:",
    "📂 Categories Detected:",
    "💰 COST ANALYSIS",
    "📊 Cost Breakdown:",
    "   Total Cost: $",
    "   Cost per Email: $",
    "   Cost per 1K emails: $",
    "   Cost per 1M emails: $",
    "Token Usage:",
    "   Total Tokens: ",
    "   Input Tokens: ",
    "   Output Tokens: ",
    "   Avg Tokens/Email: ",
    "🎯 KEY TAKEAWAYS",
    "✓ Processed 100 emails in parallel",
]


def demo(*, gateway: bool = True, gateway_url: str | None = None) -> DemoRun:
    options = DemoOptions(latency_scale=FAST, gateway=gateway, gateway_url=gateway_url)
    return asyncio.run(run_demo(options, out=io.StringIO()))


@pytest.fixture(scope="module")
def gateway_run(portkey_gateway: LocalGateway) -> DemoRun:
    return demo(gateway_url=portkey_gateway.url)


@pytest.fixture(scope="module")
def direct_run() -> DemoRun:
    return demo(gateway=False)


def lines(run: DemoRun) -> list[str]:
    return run.report.splitlines()


def line_after(run: DemoRun, prefix: str) -> str:
    """The rest of the first report line that starts with `prefix`."""
    for line in lines(run):
        if line.startswith(prefix):
            return line[len(prefix):]
    raise AssertionError(f"no line starts with {prefix!r} in:\n{run.report}")


def block(run: DemoRun, header: str) -> list[str]:
    """The indented lines under `header`, up to the next blank line."""
    report = lines(run)
    start = report.index(header) + 1
    end = report.index("", start)
    return report[start:end]


# -- through the local Portkey gateway --------------------------------------------------------


def test_report_has_every_section_of_the_walkthrough_in_order(gateway_run: DemoRun) -> None:
    report = lines(gateway_run)
    position = 0
    for section in SECTIONS:
        found = next((i for i in range(position, len(report))
                      if report[i].startswith(section)), None)
        assert found is not None, f"{section!r} missing after line {position}:\n" + \
            gateway_run.report
        position = found + 1


def test_every_email_succeeds_although_the_simulator_rate_limits(gateway_run: DemoRun) -> None:
    stats = gateway_run.simulator_stats
    assert stats is not None and stats["rate_limited"] > 0
    results = [s.results["analyze_email"] for s in gateway_run.result.sections]
    assert len(results) == 100 and all(r.ok and r.data for r in results)
    assert line_after(gateway_run, "   Successful: ") == "100/100 (100.0%)"
    assert "✓ 100.0% success rate" in lines(gateway_run)


def test_gateway_retries_are_reported_from_the_simulators_own_counts(
    gateway_run: DemoRun,
) -> None:
    stats = gateway_run.simulator_stats
    assert stats is not None
    upstream, refused = stats["requests"], stats["rate_limited"]
    # The engine sent one request per email; the gateway sent the rest.
    attempts = [s.results["analyze_email"].metadata["attempts"]
                for s in gateway_run.result.sections]
    assert attempts == [1] * 100
    assert upstream - 100 == refused > 0
    assert gateway_run.engine_rate_limited == 0
    assert (f"✓ Automatic retry handling on failures ({refused} 429s retried by the gateway, "
            f"none reached the engine)") in lines(gateway_run)
    assert (f"🔁 Gateway retries absorbed: {refused} (429s answered upstream: {refused}, "
            f"upstream requests: {upstream} for 100 calls)") in lines(gateway_run)


def test_printed_categories_equal_the_answers_and_the_generated_types(
    gateway_run: DemoRun,
) -> None:
    answered = Counter(s.results["analyze_email"].data["category"]
                       for s in gateway_run.result.sections)
    printed = {name: int(n) for name, n in (
        re.fullmatch(r"   (\w+): (\d+) \(\d+\.\d%\)", line).groups()  # type: ignore[union-attr]
        for line in block(gateway_run, "📂 Categories Detected:"))}
    assert printed == dict(answered)
    written = Counter(e.metadata["type"] for e in gateway_run.emails)
    assert answered == written  # the simulator's classifier reads the emails right
    for section in gateway_run.result.sections:
        assert section.results["analyze_email"].data["category"] == section.section.metadata[
            "type"]
    types = block(gateway_run, "   Email types:")
    assert types == [f"     - {kind}: {written[kind]} ({written[kind]}%)"
                     for kind in ("work", "newsletter", "personal", "spam")]


def test_printed_tokens_and_costs_equal_the_process_result_and_the_simulator(
    gateway_run: DemoRun,
) -> None:
    costs = gateway_run.result.costs
    stats = gateway_run.simulator_stats
    assert costs is not None and stats is not None
    assert costs.input_tokens == stats["input_tokens"] > 0
    assert costs.output_tokens == stats["output_tokens"] > 0
    expected_cost = (costs.input_tokens * 0.8 + costs.output_tokens * 4.0) / 1_000_000
    assert costs.total_cost == pytest.approx(expected_cost)
    per_email = costs.total_cost / 100
    assert line_after(gateway_run, "   Total Cost: $") == f"{costs.total_cost:.4f}"
    assert line_after(gateway_run, "   Cost per Email: $") == f"{per_email:.6f}"
    assert line_after(gateway_run, "   Cost per 1K emails: $") == f"{per_email * 1e3:,.2f}"
    assert line_after(gateway_run, "   Cost per 1M emails: $") == f"{per_email * 1e6:,.2f}"
    assert line_after(gateway_run, "   Total Tokens: ") == f"{costs.total_tokens:,}"
    assert line_after(gateway_run, "   Input Tokens: ") == f"{costs.input_tokens:,}"
    assert line_after(gateway_run, "   Output Tokens: ") == f"{costs.output_tokens:,}"
    assert line_after(gateway_run, "   Avg Tokens/Email: ") == str(round(costs.total_tokens
                                                                        / 100))


def test_timing_figures_come_from_the_measured_duration(gateway_run: DemoRun) -> None:
    duration = gateway_run.duration
    assert line_after(gateway_run, "   Duration: ") == f"{duration:.2f}s"
    assert line_after(gateway_run, "   Throughput: ") == f"{100 / duration:.1f} emails/second"
    assert line_after(gateway_run, "   Avg Time per Email: ") == f"{round(duration * 10)}ms"
    assert gateway_run.completed_after is not None
    assert gateway_run.completed_after <= duration
    # The gateway's first retry comes a second after the 429.
    assert duration > 1.0


def test_progress_lines_follow_the_walkthrough_format_and_end_complete(
    gateway_run: DemoRun,
) -> None:
    progress = [line for line in lines(gateway_run) if line.startswith("📊 Progress: ")]
    pattern = r"📊 Progress: \d+/100 \(\d+%\) \| \d+\.\d req/s \| \$\d+\.\d{4} \| ETA: \d+s"
    assert progress and all(re.fullmatch(pattern, line) for line in progress)
    assert progress[-1].startswith("📊 Progress: 100/100 (100%)")
    costs = gateway_run.result.costs
    assert costs is not None and f"${costs.total_cost:.4f}" in progress[-1]


def test_output_says_which_backend_answered_and_labels_simulated_figures(
    gateway_run: DemoRun,
) -> None:
    report = lines(gateway_run)
    assert "   Backend: local LLM simulator (simulated figures)" in report
    assert line_after(gateway_run, "   Gateway: ").startswith("Portkey with smart retries")
    assert line_after(gateway_run, "   Retry Strategy: ").startswith("Up to 5 attempts")
    assert sum(line.lstrip().startswith("🧪 Simulated") for line in report) == 2
    assert "https://app.portkey.ai/logs" not in gateway_run.report  # hosted gateway only


def test_captured_output_has_no_escape_codes(gateway_run: DemoRun) -> None:
    assert "\x1b" not in gateway_run.report and "\r" not in gateway_run.report


# -- without a gateway ---------------------------------------------------------------------------


def test_without_a_gateway_the_engine_retries_the_429s_itself(direct_run: DemoRun) -> None:
    # It learns the limit from the first answers' headers, often before the burst allowance
    # runs out: the 429s it does get (none, often) it retries, and the report counts them.
    stats = direct_run.simulator_stats
    assert stats is not None
    assert direct_run.successes == 100
    retries = direct_run.attempts - 100
    assert retries == stats["rate_limited"]
    assert (f"🔁 Engine retries: {retries} (429s answered upstream: {stats['rate_limited']}, "
            f"upstream requests: {stats['requests']} for 100 calls)") in lines(direct_run)
    assert line_after(direct_run, "   Gateway: ").startswith("none (--no-gateway)")
    assert "Local Portkey gateway log:" not in direct_run.report
    assert "\x1b" not in direct_run.report


def test_without_a_gateway_the_progress_line_shows_the_429s_absorbed(
    direct_run: DemoRun,
) -> None:
    progress = [line for line in lines(direct_run) if line.startswith("📊 Progress: ")]
    absorbed = [line for line in progress if "| 429s absorbed: " in line]
    assert bool(absorbed) == (direct_run.engine_rate_limited > 0)
    if absorbed:
        assert absorbed[-1].endswith(f"| 429s absorbed: {direct_run.engine_rate_limited}")


# -- the demo's own gateway, from the command line ---------------------------------------------


@pytest.mark.gateway
@pytest.mark.skipif(not node_available(), reason="node is not on PATH")
def test_example_script_starts_its_own_gateway_and_prints_the_walkthrough() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--latency-scale", str(FAST)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "\x1b" not in out and "\x1b" not in done.stderr
    assert "   Successful: 100/100 (100.0%)" in out
    assert re.search(r"🔁 Gateway retries absorbed: [1-9]\d*", out)
    log = out.split("📊 Local Portkey gateway log:\n   ", 1)[1].split("\n", 1)[0]
    assert Path(log).is_file()


# -- the emails and the options ----------------------------------------------------------------


def test_default_seed_draws_the_walkthroughs_mix_of_emails() -> None:
    emails = generate_emails(100)
    assert Counter(e.metadata["type"] for e in emails) == {
        "work": 38, "newsletter": 22, "personal": 13, "spam": 27}


def test_emails_are_varied_and_reproducible() -> None:
    emails = generate_emails(200, seed=5)
    assert len({e.content for e in emails}) >= 190
    assert len({e.metadata["subject"] for e in emails}) >= 60
    assert [e.content for e in emails] == [e.content for e in generate_emails(200, seed=5)]
    assert [e.content for e in emails] != [e.content for e in generate_emails(200, seed=6)]


def test_an_api_key_selects_the_anthropic_backend_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert DemoOptions().chosen_backend == "simulator"
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    assert DemoOptions().chosen_backend == "anthropic"
    assert DemoOptions(backend="simulator").chosen_backend == "simulator"


def test_anthropic_backend_without_a_key_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert main(["--backend", "anthropic"]) == 2
    assert "--backend anthropic needs the ANTHROPIC_API_KEY" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--emails", "0"], ["--display", "fancy"],
                                  ["--latency-scale", "-1"], ["--backend", "openai"],
                                  ["--concurrency", "20000"]])
def test_bad_flags_exit_with_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "error:" in capsys.readouterr().err


async def test_with_both_keys_the_demo_goes_through_the_hosted_gateway(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.setenv("PORTKEY_API_KEY", "pk-test")
    async with _open_setup(DemoOptions()) as setup:  # starts nothing: no network either
        assert setup.backend == "anthropic" and setup.gateway == "hosted"
        assert setup.provider == {"api_key": "sk-ant-test", "gateway": "portkey",
                                  "gateway_config": GATEWAY_CONFIG}
        assert setup.simulator is None
        report = _Report(io.StringIO())
        _print_logs(report, setup)
    assert report.text == "📊 View detailed logs in Portkey:\n   https://app.portkey.ai/logs\n\n"


async def test_the_real_api_without_a_gateway_is_retried_by_the_engine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    async with _open_setup(DemoOptions(gateway=False)) as setup:
        assert setup.provider == {"api_key": "sk-ant-test"} and setup.gateway is None
        assert setup.backend_line == "Anthropic API (real calls, real cost)"
        assert setup.retry_line.startswith("Up to 3 retries per email in the engine")


# -- saying what it does before it takes its seconds -------------------------------------------

SDK_MODULES = ("anthropic", "openai", "google.genai")


def test_the_demo_prints_its_banner_before_importing_an_sdk() -> None:
    # -X importtime writes each import to stderr as it finishes (a package after its
    # modules); with both streams on one pipe, unbuffered, the order of the lines is the
    # order of the events.
    done = subprocess.run(
        [sys.executable, "-u", "-X", "importtime", "-m", "dagengine", "demo", "--emails", "3",
         "--latency-scale", str(FAST), "--no-gateway"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stdout
    lines = done.stdout.splitlines()
    banner = next(i for i, line in enumerate(lines) if "PARALLEL REQUEST HANDLING DEMO" in line)
    starting = lines.index("🔧 Starting the local LLM simulator...")
    imported = [i for i, line in enumerate(lines) if line.startswith("import time:")
                and _is_sdk(line.rsplit("|", 1)[1].strip())]
    assert imported, "the run imported no SDK at all?"
    assert banner < starting < min(imported)


def _is_sdk(module: str) -> bool:
    return any(module == sdk or module.startswith(sdk + ".") for sdk in SDK_MODULES)


def test_starting_line_names_what_the_set_up_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    from dagengine.cli.demo.backends import _starting_line

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert _starting_line(DemoOptions(gateway=False)) == "🔧 Starting the local LLM simulator..."
    assert _starting_line(DemoOptions(gateway_url="http://127.0.0.1:1/v1")) == \
        "🔧 Starting the local LLM simulator..."
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.setenv("PORTKEY_API_KEY", "pk-test")
    assert _starting_line(DemoOptions()) is None  # the real API through the hosted gateway
    if node_available():
        monkeypatch.delenv("PORTKEY_API_KEY")
        assert (_starting_line(DemoOptions()) or "").startswith(
            "🔧 Starting the local Portkey gateway")


FAKE_PYTHON = """#!/bin/sh
# Stands in for python3 and the venv's python: records what it is asked to do.
echo "$*" >> "$FAKE_PYTHON_LOG"
case "$1" in
  --version) echo "Python 3.11.99" ;;
  -m) if [ "$2" = venv ]; then mkdir -p "$3/bin" && cp "$0" "$3/bin/python"; fi ;;
esac
exit 0
"""


def test_the_set_up_script_says_what_it_does_and_is_quiet_when_there_is_nothing_to_do(
    tmp_path: Path,
) -> None:
    root = Path(__file__).resolve().parent.parent
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "_setup.sh").write_text((root / "scripts" / "_setup.sh").read_text())
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    fake = tmp_path / "python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    log = tmp_path / "calls.log"
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(fake), "FAKE_PYTHON_LOG": str(log),
           "HOME": str(tmp_path)}

    def setup() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-c", "source scripts/_setup.sh"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=60, check=True)

    first = setup()
    assert first.stdout == ""  # stdout is the demo's and the tests'
    assert first.stderr.splitlines() == [
        "dagengine: creating .venv with Python 3.11.99...",
        "dagengine: installing dagengine and its test tools into .venv (first time: about "
        "2 minutes)...",
        "dagengine: .venv is ready",
    ]
    installed = re.search(r"-m pip install --quiet --disable-pip-version-check -e \.\[([\w,]+)\]",
                          log.read_text())
    assert installed is not None
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert sorted(installed.group(1).split(",")) == sorted(extras)  # every extra, so CI tests it

    assert setup().stderr == ""  # installed and unchanged: nothing to do, nothing said

    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'y'\n")
    assert setup().stderr.splitlines()[0] == "dagengine: pyproject.toml changed: updating .venv..."
