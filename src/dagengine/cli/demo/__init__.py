"""`dagengine demo`: the Portkey parallel-requests walkthrough, end to end.

100 emails, 100 concurrent requests, through the Portkey gateway with retries on 429/5xx,
live progress with throughput, cost and ETA, then the results and cost report, printed in
the walkthrough's own format. Every figure comes from the run's ProcessResult, its timing
and, on the simulator, the simulator's own /stats.

Backends:

* default: the local LLM simulator (in a child process, so it never shares our event loop),
  with Haiku-like latency and a rate limit that 100 simultaneous requests do exceed, behind
  the open-source Portkey gateway on 127.0.0.1 when Node.js is there (else the engine
  retries the 429s itself, and the report says so);
* `--backend anthropic` (chosen by default when ANTHROPIC_API_KEY is set): the real
  Anthropic API, through the hosted Portkey gateway when PORTKEY_API_KEY is set, else
  through a local gateway.

`run_demo()` returns the ProcessResult, the simulator's counts and the report text together,
so the report can be checked against the run that produced it.
"""

from __future__ import annotations

from .emails import EMAIL_TYPES, generate_emails
from .options import DemoOptions, DemoRun
from .plugin import EmailAnalyzer
from .run import build_parser, main, run_demo
from .settings import GATEWAY_CONFIG

__all__ = [
    "EMAIL_TYPES",
    "GATEWAY_CONFIG",
    "DemoOptions",
    "DemoRun",
    "EmailAnalyzer",
    "build_parser",
    "generate_emails",
    "main",
    "run_demo",
]
