"""Ingestion on Dask against local extraction, on the same CPUs, in one run.

Run:  .venv/bin/python tests/perf/bench_ingest_dask.py [--mb 10] [--pages 6] [--reps 3]

The corpus: a `textgen` tree (--mb of prose and Python-like code, ~110 files per MB) and
--pages scanned PNG pages (OCR'd). This script, the Prefect server and every process it
starts are pinned to the same CPUs (--cpus, default the first two). Sides, order alternated
every repetition, each a cold ingest (a fresh output directory, so an empty extraction cache)
through the `ingest` flow, timed around the flow call:

  local  executor=local, workers=2: the flow's thread task runner and one pool of 2
         extraction processes in this process (what `gptforge ingest` does by default);
  dask   executor=dask://...: a `dask scheduler` and 2 `dask worker --nthreads 1` processes
         started by this script before timing (a running cluster), each worker with its own
         pool of 1 extraction process.

Also the extraction phase alone (first to last batch, from the flow's progress reports), and
once, for information, executor=dask, which starts a local cluster inside the timed call.
Every run's shards must equal the first local run's, byte for byte. Prints every repetition,
medians and the dask/local ratios; asserts nothing. Prefect is the test harness's server.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_ocr_scaling import make_pages
from textgen import generate_tree

SIDES = ("local", "dask")


def shards(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "shards").glob("*.bin"))}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=float, default=10.0, help="text tree size (default 10)")
    parser.add_argument("--pages", type=int, default=6, help="scanned pages (default 6)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per side (default 3)")
    parser.add_argument("--cpus", default="0,1", help="CPUs every process runs on (default 0,1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="1 MB, 1 page, 1 rep: smoke test")
    args = parser.parse_args()
    if args.quick:
        args.mb, args.pages, args.reps = 1.0, 1, 1
    cpus = {int(c) for c in args.cpus.split(",")}
    os.sched_setaffinity(0, cpus)  # inherited by the server, the cluster, the extraction
    tmp = Path(tempfile.mkdtemp(prefix="bench-dask-"))
    os.environ |= {
        "GPTFORGE_HOME": str(tmp / "home"),
        "PREFECT_HOME": str(tmp / "home" / "prefect"),
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    (tmp / "home" / "prefect").mkdir(parents=True)
    # Imported here, not at the top: extraction and local-cluster processes re-run the
    # top-level imports of the __main__ script (tests/perf/README.md).
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from dask_cluster import Cluster
    from prefect.testing.utilities import prefect_test_harness

    from gptforge.flows.ingest import ingest_flow
    from gptforge.flows.progress import set_progress_sink

    extract_span: list[float] = []

    def sink(stage: str, done: int, total: int, info: dict) -> None:
        if stage == "extract" and done == 0:
            extract_span[:] = [time.perf_counter()]
        elif stage == "extract" and done == total:
            extract_span.append(time.perf_counter())

    set_progress_sink(sink)
    try:
        corpus = tmp / "corpus"
        files = generate_tree(corpus / "text", int(args.mb * 1e6), seed=args.seed)
        make_pages(corpus / "scans", args.pages, args.seed)
        mb = sum(p.stat().st_size for p in corpus.rglob("*") if p.is_file()) / 1e6
        with prefect_test_harness(server_startup_timeout=180), Cluster(tmp, 2, 1) as cluster:
            executors = {"local": "local", "dask": "dask://" + cluster.address.split("://")[1]}

            def run(side: str, name: str) -> tuple[float, float]:
                out = tmp / name
                start = time.perf_counter()
                ingest_flow(
                    sources=[str(corpus)], out=str(out), executor=executors[side], workers=2
                )
                seconds = time.perf_counter() - start
                if reference:
                    assert shards(out) == reference, f"{name}: shards differ from local-0"
                    shutil.rmtree(out)
                return seconds, extract_span[1] - extract_span[0]

            reference: dict[str, bytes] = {}
            # untimed warm-ups: this process's forkserver, the workers' imports and pools
            warm = {"local": run("local", "local-0")[0]}
            reference = shards(tmp / "local-0")
            warm["dask"] = run("dask", "warm-dask")[0]
            times: dict[str, list[tuple[float, float]]] = {side: [] for side in SIDES}
            for rep in range(args.reps):
                for side in SIDES if rep % 2 == 0 else SIDES[::-1]:
                    times[side].append(run(side, f"{side}-{rep + 1}"))
            executors["dask-local"] = "dask"
            local_cluster = run("dask-local", "dask-local")
    finally:
        set_progress_sink(None)
        shutil.rmtree(tmp, ignore_errors=True)

    flow = {side: statistics.median(t for t, _ in times[side]) for side in SIDES}
    extract = {side: statistics.median(e for _, e in times[side]) for side in SIDES}
    print(
        f"bench_ingest_dask: {len(files)} text files + {args.pages} scanned pages, {mb:.1f} MB; "
        f"CPUs {sorted(cpus)} of {os.cpu_count()}; {args.reps} reps, order alternated, "
        "cold cache each run; shards identical in every run"
    )
    print(f"  untimed warm-ups: local {warm['local']:.1f} s, dask {warm['dask']:.1f} s")
    print(f"  {'side':44s} {'flow s':>8s} {'extract s':>10s}")
    labels = {
        "local": "local: 2 extraction processes here",
        "dask": "dask: running scheduler, 2 workers x 1 thread",
    }
    for side in SIDES:
        print(f"  {labels[side]:44s} {flow[side]:8.2f} {extract[side]:10.2f}")
    print(
        f"  overhead dask/local: flow {flow['dask'] / flow['local']:.2f}x, "
        f"extraction {extract['dask'] / extract['local']:.2f}x"
    )
    print(
        f"  info: executor=dask (local cluster started inside the call): flow "
        f"{local_cluster[0]:.2f} s, extraction {local_cluster[1]:.2f} s"
    )
    print("  all repetitions (flow s / extract s):")
    for side in SIDES:
        print(f"    {side:6s} " + "  ".join(f"{t:.2f}/{e:.2f}" for t, e in times[side]))


if __name__ == "__main__":
    main()
