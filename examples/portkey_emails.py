"""The Portkey parallel-requests walkthrough: 100 emails, 100 concurrent requests.

    python examples/portkey_emails.py                 # local simulator + local Portkey gateway
    python examples/portkey_emails.py --no-gateway    # the engine retries the 429s itself
    ANTHROPIC_API_KEY=... PORTKEY_API_KEY=... python examples/portkey_emails.py

The same as `dagengine demo`; the plugin, the engine settings and the report are in
src/dagengine/cli/demo/ (plugin.py: EmailAnalyzer, run.py: run_demo).
"""

from __future__ import annotations

from dagengine.cli.demo import main

if __name__ == "__main__":
    raise SystemExit(main(prog="python examples/portkey_emails.py"))
