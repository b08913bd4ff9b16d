"""The `ingest` flow vs calling `pipeline.ingest.ingest` directly, on 1,000 small text files.

Run: .venv/bin/python tests/perf/prefect_overhead.py [--files 1000] [--reps 3]
Prefect runs against one temporary server (prefect_test_harness) started before timing, so
the numbers exclude server start-up; the flow's time includes its tasks, the summary artifact
and the MLflow run (SQLite under a temporary GPTFORGE_HOME). Prints medians and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["GPTFORGE_HOME"] = str(Path(tmp) / "home")
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        from flows.home import apply_quiet_env

        apply_quiet_env()
        from prefect.testing.utilities import prefect_test_harness

        from flows.ingest import ingest_flow
        from pipeline.config import IngestConfig
        from pipeline.ingest import ingest

        tree = Path(tmp) / "tree"
        for i in range(args.files):
            path = tree / f"d{i // 100:02d}" / f"f{i:04d}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"Small file number {i}. " * 20)
        with prefect_test_harness(server_startup_timeout=120):
            ingest_flow(sources=[str(tree)], out=str(Path(tmp) / "warmup"))
            flow_times, direct_times = [], []
            for rep in range(args.reps):
                start = time.perf_counter()
                ingest_flow(sources=[str(tree)], out=str(Path(tmp) / f"flow{rep}"))
                flow_times.append(time.perf_counter() - start)
                start = time.perf_counter()
                ingest(IngestConfig(sources=[tree], out=Path(tmp) / f"direct{rep}"))
                direct_times.append(time.perf_counter() - start)
    flow_t, direct_t = statistics.median(flow_times), statistics.median(direct_times)
    print(f"{args.files} small files, {args.reps} reps, alternating, cold cache each time")
    print(f"  direct pipeline.ingest.ingest: {direct_t:.2f} s")
    print(f"  ingest flow (tasks + artifact + MLflow run): {flow_t:.2f} s")
    print(f"  ratio flow/direct: {flow_t / direct_t:.2f}x (target <= 1.25x)")


if __name__ == "__main__":
    main()
