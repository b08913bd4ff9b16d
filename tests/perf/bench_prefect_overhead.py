"""What the Prefect `ingest` flow costs on top of calling the pipeline directly.

Run:  .venv/bin/python tests/perf/bench_prefect_overhead.py [--files 1000] [--reps 3]
                                                            [--mode ephemeral|harness|server]

1,000 small distinct text files (~600 bytes of prose each). Sides, rotated every repetition,
each with a fresh output directory (cold extraction cache):

  peer    `pipeline.ingest.ingest(IngestConfig(sources=[tree], out=...))`: no Prefect, no MLflow;
  flow    `flows.ingest.ingest_flow(sources=[tree], out=...)`: everything the CLI runs;
  info    direct + MLflow: the peer, then the flow's MLflow step called as a plain function
          (`record_ingest.fn`), to split the flow's extra time into MLflow and Prefect;
  info    the flow with Prefect's flow-run heartbeat thread off (PREFECT_FLOWS_HEARTBEAT_FREQUENCY
          = None through prefect.settings.temporary_settings; env vars cannot say None).

Also times an empty flow (heartbeat on and off) and a flow of no-op tasks (as many as the
ingest flow runs): Prefect's own fixed cost here. Prefect talks to a server on this machine
in every mode:

  ephemeral  (default) what the CLI gets with no PREFECT_API_URL: Prefect starts a temporary
             server subprocess on the first flow run of the process (PREFECT_HOME is a temp dir);
  harness    prefect.testing.utilities.prefect_test_harness(), as the test suite uses;
  server     a `prefect server start --host 127.0.0.1` started here, via PREFECT_API_URL.

One untimed warm-up flow run (server start, database and MLflow store creation) and one warm-up
direct ingest (forkserver start) come first; their times are printed, not in the medians. The
server runs on the same 2 cores, so the CPU it uses during a flow is part of the flow's cost.
MLflow writes to SQLite under a temporary GPTFORGE_HOME. Prints medians; asserts nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

SIDES = ("direct", "direct+mlflow", "flow", "flow-no-heartbeat")
FIXED = ("empty flow", "empty flow, no heartbeat", "no-op flow", "no-op flow, no heartbeat")
EXPERIMENT = "bench-prefect-overhead"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def started_server(home: Path) -> Iterator[float]:
    """`prefect server start` on a free port; yields its start-up time in seconds."""
    port = free_port()
    log = open(home / "server.log", "wb")  # noqa: SIM115 - closed below
    start = time.perf_counter()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("prefect")), "server", "start"]
        + ["--host", "127.0.0.1", "--port", str(port), "--no-ui", "--analytics-off"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.perf_counter() - start > 180:
                raise RuntimeError(f"prefect server did not start; see {home / 'server.log'}")
            time.sleep(0.25)
        os.environ["PREFECT_API_URL"] = url
        yield time.perf_counter() - start
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


@contextmanager
def prefect_mode(mode: str, home: Path) -> Iterator[str]:
    """Enter the chosen Prefect set-up; yields a line saying what it is."""
    if mode == "server":
        with started_server(home) as seconds:
            yield f"a `prefect server start` run here (started in {seconds:.1f} s, not timed)"
    elif mode == "harness":
        from prefect.testing.utilities import prefect_test_harness

        start = time.perf_counter()
        with prefect_test_harness(server_startup_timeout=180):
            seconds = time.perf_counter() - start
            yield f"prefect_test_harness() (server started in {seconds:.1f} s, not timed)"
    else:
        yield (
            "ephemeral: no PREFECT_API_URL, Prefect starts its temporary server subprocess on "
            "the first flow run (inside the warm-up)"
        )


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def server_pids() -> list[int]:
    """Descendant processes of this one that run the Prefect server (any mode)."""
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    mine = []
    for pid in parent:
        p = pid
        while p in parent and p not in (0, 1, os.getpid()):
            p = parent[p]
        if p != os.getpid() or pid == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        server = b"uvicorn" in cmdline or (b"prefect" in cmdline and b"server" in cmdline)
        if server and b"multiprocessing" not in cmdline:
            mine.append(pid)
    return mine


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


class Meter:
    """Wall time, this process's CPU (all threads) and the Prefect server's CPU for a call."""

    def __init__(self) -> None:
        self.pids = server_pids()
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}
        self.server: dict[str, list[float]] = {}

    def __call__(self, name: str, fn: Callable[[], object]) -> None:
        cpu, server = time.process_time(), cpu_seconds(self.pids)
        start = time.perf_counter()
        fn()
        self.wall.setdefault(name, []).append(time.perf_counter() - start)
        self.cpu.setdefault(name, []).append(time.process_time() - cpu)
        self.server.setdefault(name, []).append(cpu_seconds(self.pids) - server)

    def median(self, name: str, table: str = "wall") -> float:
        return statistics.median(getattr(self, table)[name])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=1000, help="small files (default 1000)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per side (default 3)")
    parser.add_argument("--mode", choices=("ephemeral", "harness", "server"), default="ephemeral")
    parser.add_argument("--log-level", default="WARNING", help="PREFECT_LOGGING_LEVEL")
    parser.add_argument("--quick", action="store_true", help="100 files, 1 rep: a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.files, args.reps = 100, 1

    tmp = Path(tempfile.mkdtemp(prefix="bench-prefect-"))
    try:
        run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path) -> None:
    # Settings first: Prefect and MLflow read them when imported.
    for name in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI"):
        os.environ.pop(name, None)
    os.environ["GPTFORGE_HOME"] = str(tmp / "gptforge-home")
    os.environ["PREFECT_HOME"] = str(tmp / "prefect-home")
    os.environ["PREFECT_LOGGING_LEVEL"] = args.log_level
    os.environ["PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"] = "ignore"
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    (tmp / "prefect-home").mkdir()

    from textgen import small_files

    from gptforge.flows.home import apply_quiet_env

    apply_quiet_env()
    tree = tmp / "tree"
    files = small_files(tree, args.files)
    kb = sum(len(f.text) for f in files) / 1e3

    with prefect_mode(args.mode, tmp / "prefect-home") as mode_line:
        from prefect import __version__ as prefect_version
        from prefect import flow, task
        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

        from gptforge.flows.ingest import ingest_flow, record_ingest
        from gptforge.pipeline.config import IngestConfig
        from gptforge.pipeline.ingest import BATCH_FILES, ingest

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # no "creating tables" lines
        n_tasks = 3 + -(-args.files // BATCH_FILES)  # plan, batches, assemble, MLflow

        @task(name="noop")
        def noop(i: int) -> int:
            return i

        @flow(name="bench-empty")
        def empty_flow() -> None:
            return None

        @flow(name="bench-noop-tasks")
        def noop_flow(n: int) -> None:
            for i in range(n):
                noop(i)

        outs = iter(range(10**6))

        def out() -> Path:
            return tmp / "outs" / f"out{next(outs)}"

        def direct() -> None:
            ingest(IngestConfig(sources=[tree], out=out()))

        def direct_mlflow() -> None:
            cfg = IngestConfig(sources=[tree], out=out())
            record_ingest.fn(cfg, ingest(cfg), EXPERIMENT)

        def run_flow() -> None:
            ingest_flow(sources=[str(tree)], out=str(out()), experiment=EXPERIMENT)

        def no_heartbeat(fn: Callable[[], object]) -> Callable[[], None]:
            def run() -> None:
                with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
                    fn()

            return run

        sides = {
            "direct": direct,
            "direct+mlflow": direct_mlflow,
            "flow": run_flow,
            "flow-no-heartbeat": no_heartbeat(run_flow),
        }
        warm_flow = timed(run_flow)
        warm_direct = timed(direct)
        warm_empty = timed(empty_flow)
        sides |= {
            "empty flow": empty_flow,
            "empty flow, no heartbeat": no_heartbeat(empty_flow),
            "no-op flow": lambda: noop_flow(n_tasks),
            "no-op flow, no heartbeat": no_heartbeat(lambda: noop_flow(n_tasks)),
        }
        meter = Meter()
        for rep in range(args.reps):
            order = SIDES[rep % len(SIDES) :] + SIDES[: rep % len(SIDES)]
            for side in order:
                meter(side, sides[side])
            for side in FIXED:
                meter(side, sides[side])
            shutil.rmtree(tmp / "outs")
        # The server records task runs every 5 s; stopping it mid-write prints tracebacks.
        time.sleep(6)

    med = {side: meter.median(side) for side in SIDES + FIXED}
    d, f, nh = med["direct"], med["flow"], med["flow-no-heartbeat"]
    mlflow_s = med["direct+mlflow"] - d
    version = ".".join(prefect_version.split(".")[:3])

    def row(label: str, seconds: float, note: str = "") -> None:
        print(f"    {label:50s} {seconds:6.2f} s  {note}".rstrip())

    print(f"bench_prefect_overhead: {args.files:,} small text files ({kb:,.0f} kB in all)")
    print(f"  Prefect {version}, {mode_line}")
    print(
        f"  PREFECT_LOGGING_LEVEL={args.log_level}; MLflow in SQLite under a temporary "
        "GPTFORGE_HOME; workers = cores"
    )
    print(f"  {args.reps} reps, side order rotated, fresh out dir each time; medians")
    print(
        f"  untimed warm-ups: first flow run {warm_flow:.2f} s, first direct ingest "
        f"{warm_direct:.2f} s, first empty flow {warm_empty:.2f} s"
    )
    print()
    row("peer: direct pipeline.ingest.ingest", d)
    row(f"ingest_flow ({n_tasks} task runs)", f)
    print(f"  ratio flow/direct: {f / d:.2f}x (target <= 1.25x); flow - direct = {f - d:+.2f} s")
    print()
    print("  where the difference goes (each measured on its own):")
    row("MLflow run: (direct + record_ingest.fn) - direct", mlflow_s)
    row("an empty Prefect flow run", med["empty flow"])
    row("  the same, heartbeat thread off", med["empty flow, no heartbeat"])
    row(f"a Prefect flow running {n_tasks} no-op tasks", med["no-op flow"])
    row("  the same, heartbeat thread off", med["no-op flow, no heartbeat"])
    row("ingest_flow, heartbeat thread off", nh, f"{nh / d:.2f}x direct")
    row(
        "  rest: that - direct - MLflow - no-op flow, no hb",
        nh - d - mlflow_s - med["no-op flow, no heartbeat"],
        "artifact, parameters, server load",
    )
    print()
    print("  CPU per run (medians): this process (all threads) / the Prefect server process")
    for side in ("direct", "flow", "flow-no-heartbeat", "no-op flow, no heartbeat"):
        print(
            f"    {side:26s} {meter.median(side, 'cpu'):5.2f} s / "
            f"{meter.median(side, 'server'):5.2f} s"
        )
    print("  (the extraction processes' CPU is in neither; the server shares the same cores)")
    print()
    print(f"  Prefect {version} starts a flow-run heartbeat thread (every 180 s by default) and")
    print("  joins it when the flow ends; the thread checks its stop flag only between")
    print("  time.sleep(1) calls (prefect/flow_engine.py:_send_heartbeats), so every flow run")
    print("  waits up to 1 s at the end, whatever its size: flow times step in whole seconds.")
    print()
    print("  what the flow does beyond the direct call: a Prefect flow run and task runs")
    print(f"  (plan, {n_tasks - 3} extract-batch, assemble, record-in-mlflow) reported to the")
    print("  server; the ingest-summary markdown artifact; an MLflow run in SQLite with params,")
    print("  metrics, tags, a dataset input and a copy of manifest.json as an artifact.")
    print()
    print("  all repetitions (wall s):")
    for side in SIDES + FIXED:
        print(f"    {side:26s} " + "  ".join(f"{t:6.2f}" for t in meter.wall[side]))


if __name__ == "__main__":
    main()
