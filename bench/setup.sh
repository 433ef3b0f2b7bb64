#!/usr/bin/env bash
# Create bench/.venv with the peer proxy the benchmark compares against (mitmproxy).
# It lives in its own venv, never in rpctape's dependencies; bench/.venv is git-ignored.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# 11.0.2 is the newest mitmproxy release that installs on Python 3.11.
.venv/bin/pip install --quiet mitmproxy==11.0.2
# Optional: a sampling profiler for the relay (bench_relay.py --profile ...).
.venv/bin/pip install --quiet py-spy || echo "py-spy not installed (optional)"
.venv/bin/mitmdump --version
