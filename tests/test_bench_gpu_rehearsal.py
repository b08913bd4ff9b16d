"""The GPU benchmark rehearsed on the CPU: a lent GPU gets a few minutes once in a while, so the
script it runs (tests/perf/bench_gpu.py, via gpu_check.sh) must not break in between. The same
code, at its smallest sizes, with wall-clock timing; its numbers mean nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
BENCH = Path(__file__).parent / "perf" / "bench_gpu.py"


def test_the_gpu_benchmark_runs_every_measurement_on_the_cpu(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    command = [sys.executable, "-u", str(BENCH), "--quick", "--device", "cpu", "--no-compile"]
    done = subprocess.run(
        [*command, "--summary", str(summary)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "CPU rehearsal: these numbers are not the GPU's" in done.stdout
    assert "failed" not in done.stdout
    tables = summary.read_text()
    for recipe in ("gpt2", "modern"):
        assert f"| {recipe}, eager |" in tables
        for precision in ("bf16", "fp32"):
            for batch in (1, 4):
                assert f"| {recipe}, {precision}, batch {batch} |" in tables
