"""The examples run as a user would run them, and print what they claim."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_email_analyzer_example_categorises_every_email() -> None:
    out = run_example("email_analyzer.py")
    assert "categories: {'work': 2, 'spam': 1, 'personal': 1, 'newsletter': 1}" in out


def test_review_pipeline_example_runs_the_dag_with_its_transformation() -> None:
    out = run_example("review_pipeline.py")
    assert '"sentiment" -> "summary";' in out
    assert "overview: 2 reviews need a reply" in out
    assert out.count("reply drafted for") == 2 and out.count("no reply needed") == 2
    assert "reply      2 calls" in out and "summary    4 calls" in out
