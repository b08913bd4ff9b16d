#!/usr/bin/env bash
# The GPU check (issue 16) in one command, on a machine with an NVIDIA GPU: the device and the
# versions, the CUDA-marked tests (tests/test_cuda.py), the GPU benchmark
# (tests/perf/bench_gpu.py), then a summary table. At most 8 minutes: each step has a time
# limit, and a step that fails or runs out of time is reported while the others still run.
# Without a CUDA device it says so and exits 0 (CI has none).
#
#   bash tests/perf/gpu_check.sh                      # logs in a temporary folder (printed)
#   GPU_CHECK_LOGS=DIR bash tests/perf/gpu_check.sh   # logs in DIR: env.txt, pytest.log,
#                                                     # bench.log, bench_summary.md, summary.md
#
# Python: the checkout's .venv if its torch sees the GPU, else the machine's python3 (a GPU
# image with PyTorch, numpy, safetensors, psutil, tiktoken and pytest, which is all these
# need). When that one cannot import gptforge, this checkout is put on its PYTHONPATH (no
# install: the device machines have no package registry, and the image stays as it is).
# Exit status: 0 when the tests passed and the benchmark measured everything, else 1.
set -u
cd "$(dirname "$0")/../.."
START=$SECONDS
LIMIT=465 # seconds from the start by which the benchmark must end (the summary follows)

sees_gpu() {
    timeout 60 "$1" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null
}

PY=""
for candidate in .venv/bin/python python3; do
    if command -v "$candidate" >/dev/null && sees_gpu "$candidate"; then
        PY=$candidate
        break
    fi
done
if [ -z "$PY" ]; then
    echo "no CUDA device: nothing to check (no Python here whose torch sees a GPU; CI has none)"
    exit 0
fi

LOGS=${GPU_CHECK_LOGS:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1
echo "gpu_check: python $(command -v "$PY"), logs in $LOGS"
ROWS=()
row() { ROWS+=("| $1 | $2 | $3 |"); } # step, result, seconds

# 1. The device and the versions.
began=$SECONDS
{
    timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit \
        --format=csv || echo "nvidia-smi: not available"
    timeout 60 "$PY" -c '
import torch
p = torch.cuda.get_device_properties(0)
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {p.name}, "
      f"{p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}")'
} 2>&1 | tee "$LOGS/env.txt"
device=$(tail -1 "$LOGS/env.txt")
if ! timeout 60 "$PY" -c 'import gptforge.model.train, gptforge.model.generate' 2>/dev/null; then
    # The package as pyproject.toml's package-dir lays it out, linked to this checkout: no
    # build, no setuptools, nothing written into the image. PYTHONSAFEPATH keeps `python -c`
    # and `python -m` from putting the checkout's root first, whose gptforge/ holds only the
    # package's __init__.py and would hide these.
    SITE=$(mktemp -d /tmp/gptforge-site.XXXXXX)
    mkdir "$SITE/gptforge"
    cp gptforge/*.py "$SITE/gptforge/"
    for part in model pipeline flows; do ln -s "$PWD/$part" "$SITE/gptforge/$part"; done
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONSAFEPATH=1
    echo "gptforge was not importable: linked this checkout in $SITE (PYTHONPATH)" |
        tee -a "$LOGS/env.txt"
fi
missing=$(timeout 60 "$PY" -c '
import importlib.util as u
names = ["gptforge.model", "numpy", "safetensors", "psutil", "tiktoken", "pytest"]
print(" ".join(n for n in names if u.find_spec(n) is None))' 2>&1)
if [ -n "$missing" ]; then
    echo "missing Python packages: $missing" | tee -a "$LOGS/env.txt"
    row environment "missing: $missing" $((SECONDS - began))
else
    row environment "$device" $((SECONDS - began))
fi

# 2. The CUDA-marked tests (no other test needs a GPU).
began=$SECONDS
echo
echo "== CUDA tests: pytest -q -m cuda tests/test_cuda.py"
timeout -k 10 150 "$PY" -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda.py 2>&1 |
    tee "$LOGS/pytest.log"
status=${PIPESTATUS[0]}
outcome=$(grep -E '[0-9]+ (passed|failed|error|errors|skipped)' "$LOGS/pytest.log" | tail -1 | tr -d '=')
outcome=$(echo "${outcome:-no result}" | sed 's/^ *//; s/ *$//')
case $status in
0) row "CUDA tests" "$outcome" $((SECONDS - began)) ;;
124 | 137) row "CUDA tests" "timed out after 150 s ($outcome)" $((SECONDS - began)) ;;
*) row "CUDA tests" "FAILED: $outcome" $((SECONDS - began)) ;;
esac
failed=$((status != 0))

# 3. The benchmark, with what is left of the time.
began=$SECONDS
budget=$((LIMIT - (SECONDS - START)))
[ "$budget" -lt 60 ] && budget=60
echo
echo "== benchmark: bench_gpu.py (at most $budget s)"
rm -f "$LOGS/bench_summary.md"
timeout -k 15 "$budget" "$PY" -u tests/perf/bench_gpu.py --summary "$LOGS/bench_summary.md" 2>&1 |
    tee "$LOGS/bench.log"
status=${PIPESTATUS[0]}
case $status in
0) row benchmark "measured everything" $((SECONDS - began)) ;;
124 | 137) row benchmark "timed out after $budget s: partial" $((SECONDS - began)) ;;
*) row benchmark "exit $status (see bench.log)" $((SECONDS - began)) ;;
esac
[ "$status" -ne 0 ] && failed=1

# 4. The summary.
{
    echo
    echo "== gpu_check summary ($((SECONDS - START)) s)"
    echo
    echo "| step | result | seconds |"
    echo "|---|---|---:|"
    printf '%s\n' "${ROWS[@]}"
    echo
    if [ -s "$LOGS/bench_summary.md" ]; then
        cat "$LOGS/bench_summary.md"
    else
        echo "no benchmark summary (see $LOGS/bench.log)"
    fi
} | tee "$LOGS/summary.md"
exit "$failed"
