#!/usr/bin/env bash
# The seed walkthrough: 100 emails, 100 concurrent requests, through the Portkey gateway.
# Runs on the local simulator unless ANTHROPIC_API_KEY is set. Extra flags go to the demo.
source "$(dirname "${BASH_SOURCE[0]}")/_setup.sh"
exec .venv/bin/dagengine demo "$@"
