#!/usr/bin/env bash
# Install everything gptforge needs into ./.venv (idempotent; a second run takes seconds).
# System packages (tesseract-ocr, chromium, postgresql) via apt-get when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: tesseract for OCR, chromium for the real-browser UI test, PostgreSQL.
missing=()
command -v tesseract >/dev/null 2>&1 || missing+=(tesseract-ocr)
[ -x /usr/bin/chromium ] || missing+=(chromium)
# PostgreSQL's server binaries (Debian keeps them off PATH) for tests/test_postgres.py.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1 \
    || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]} (apt-get)"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)

# torch first and exactly so: the local CPU wheel, never the multi-GB CUDA resolution.
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    echo "setup: installing torch (CPU wheel)"
    "${PIP[@]}" "torch==2.13.0"
fi
stamp=.venv/.gptforge-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
    echo "setup: installing gptforge and its dependencies"
    "${PIP[@]}" -c constraints.txt -e ".[dev]"
    touch "$stamp"
fi
