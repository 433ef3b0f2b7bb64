#!/usr/bin/env bash
# Benchmark environments, all git-ignored and never part of rpctape's dependencies:
#   bash bench/setup.sh         bench/.venv with the peer proxy (mitmproxy) and py-spy, and
#                               bench/.venv-plain (below)
#   bash bench/setup.sh plain   only bench/.venv-plain: rpctape installed the way a user
#                               installs it without extras (`pip install .`: no hyperscan, no
#                               uvloop, not editable), reinstalled from this checkout each time
set -euo pipefail
cd "$(dirname "$0")"

plain() {
    if [ ! -x .venv-plain/bin/python ]; then
        python3 -m venv .venv-plain
    fi
    # Dependencies at the versions of the development set; then rpctape itself, fresh.
    .venv-plain/bin/pip install --quiet -c ../requirements/dev.lock ..
    .venv-plain/bin/pip install --quiet --no-deps --force-reinstall ..
    if .venv-plain/bin/python -c "import hyperscan" 2> /dev/null \
        || .venv-plain/bin/python -c "import uvloop" 2> /dev/null; then
        echo "bench/.venv-plain has hyperscan or uvloop: it is not a plain install" >&2
        exit 1
    fi
    .venv-plain/bin/rpctape version
}

if [ "${1:-}" = plain ]; then
    plain
    exit 0
fi
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# 11.0.2 is the newest mitmproxy release that installs on Python 3.11.
.venv/bin/pip install --quiet mitmproxy==11.0.2
# Optional: a sampling profiler for the relay (bench_relay.py --profile ...).
.venv/bin/pip install --quiet py-spy || echo "py-spy not installed (optional)"
.venv/bin/mitmdump --version
plain
