#!/usr/bin/env bash
# Set up, build the bundled sample corpus and run the main job on it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/gptforge sample sample/
.venv/bin/gptforge ingest sample/ --out data/sample
