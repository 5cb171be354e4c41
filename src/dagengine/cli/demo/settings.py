"""The walkthrough's settings: model and pricing, retries, the simulated API's limits."""

from __future__ import annotations

from typing import Literal

MODEL = "claude-3-5-haiku-20241022"
DIMENSION = "analyze_email"
PRICING = {"models": {MODEL: {"input_per_1m": 0.8, "output_per_1m": 4.0}}}
EXECUTION = {"max_retries": 3, "continue_on_error": True, "retry_delay": 1.0}
RETRY_ON = [429, 500, 502, 503, 504]
GATEWAY_CONFIG = {"retry": {"attempts": 5, "on_status_codes": RETRY_ON}}
PROGRESS_EVERY = 0.5  # seconds, as the walkthrough's onProgress throttle
PORTKEY_LOGS = "https://app.portkey.ai/logs"
RULE = "=" * 70

# The simulated API. Haiku-like latency; 3,000 requests/min refills 50 per second with a
# bucket of 50, so of 100 simultaneous requests about half get a 429 and the gateway's first
# retry, one second later, fits them all: ~3.5 s in all, the walkthrough's 3.67 s.
LATENCY_MEDIAN = 0.8
LATENCY_SIGMA = 0.35
REQUESTS_PER_MINUTE = 3000.0
# Batch mode (--mode batch): a simulated batch ends this many seconds after it was
# submitted (a real one takes minutes to hours); the engine gathers and polls quickly.
BATCH_DELAY = 3.0
BATCH = {"max_wait": 0.5, "poll_interval": 0.5}

# 727 draws exactly the walkthrough's mix for 100 emails: 38 work, 22 newsletter,
# 13 personal, 27 spam.
DEFAULT_SEED = 727

Backend = Literal["simulator", "anthropic"]
BACKENDS: tuple[Backend, ...] = ("simulator", "anthropic")
DISPLAY_CHOICES = ("bar", "multi", "simple", "none")
MODES = ("online", "batch")
