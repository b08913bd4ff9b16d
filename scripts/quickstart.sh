#!/usr/bin/env bash
# Set up, build the bundled sample corpus and run the whole pipeline on it:
# ingest -> train a small GPT -> register it -> generate samples.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/gptforge sample sample/
.venv/bin/gptforge run sample/ --data data/sample --max-steps "${GPTFORGE_QUICKSTART_STEPS:-150}"
