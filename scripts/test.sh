#!/usr/bin/env bash
# Set up, then run the whole test suite (benchmarks under tests/perf/ are not collected).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
