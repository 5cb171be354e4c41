#!/usr/bin/env bash
# Sourced by demo.sh and test.sh: make .venv with the project and its dev tools installed.
# Re-installs only when pyproject.toml changed since the last install. Says on stderr what
# it does, since the first time takes minutes; stdout stays the caller's.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python_bin="${PYTHON:-python3}"
if ! "$python_bin" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "dagengine needs Python >= 3.11 (found: $("$python_bin" --version 2>&1)); set PYTHON=..." >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "dagengine: creating .venv with $("$python_bin" --version 2>&1)..." >&2
  "$python_bin" -m venv .venv
fi
stamp=".venv/.dagengine-installed"
want="$(sha256sum pyproject.toml | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  if [ -f "$stamp" ]; then
    echo "dagengine: pyproject.toml changed: updating .venv..." >&2
  else
    echo "dagengine: installing dagengine and its test tools into .venv" \
         "(first time: about 2 minutes)..." >&2
  fi
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev,notebook,pandas,polars,parquet,ray,otel]"
  echo "$want" > "$stamp"
  echo "dagengine: .venv is ready" >&2
fi
export DAGENGINE_CACHE_DIR="${DAGENGINE_CACHE_DIR:-$root/.cache}"
# The test command opens the run report in headless Chromium (Debian's package).
if [ "$(basename "$0")" = "test.sh" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium for the run report's browser test..." >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
        >/dev/null; } || echo "could not install chromium: its browser test will be skipped" >&2
  else
    echo "chromium is not installed: the run report's browser test will be skipped" \
         "(install it: apt-get install chromium)" >&2
  fi
fi
