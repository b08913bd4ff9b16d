"""Start-up cost of a gptforge command: a fresh process until its flow's first task runs.

Run:  .venv/bin/python -u tests/perf/bench_embedded_startup.py [--reps 3] [--load]
                                                                [--modes MODE ...] [--idle-s 30]

Every run launches a fresh `python child.py MODE` (a script written to a temp dir) holding a
one-task flow. The parent takes `time.time()` just before `Popen`; the child prints
`time.time()` when its imports are done, when the task's body starts and when the flow has
returned. Measured per run: imports, *first task* (launch -> task body running), *total*
(launch -> process exit, so whatever the process does on the way out counts) and the CPU of
the child and the processes it reaped (`RUSAGE_CHILDREN`: it includes Prefect's temporary
server, not the embedded server, which outlives the child). Modes, rotated every repetition:

  direct                  the same script, imports included, calling the task's `.fn()`:
                          no Prefect run at all; the floor (interpreter + imports);
  prefect-ephemeral       the flow with no PREFECT_API_URL: Prefect starts its temporary server
                          subprocess in the process; PREFECT_HOME a fresh temp dir every run
                          (cold: the database is created and migrated);
  prefect-ephemeral-warm  the same, reusing one PREFECT_HOME whose database already exists
                          (created by an untimed first run);
  embedded-cold           the flow inside `flows.embedded.orchestrator()`, what the CLI does,
                          with a fresh GPTFORGE_HOME: the child starts the home's Prefect server
                          (migrations included) and leases it; the parent stops it afterwards
                          with `flows.servers.down(home)`, untimed;
  embedded-warm           the same with one GPTFORGE_HOME whose server is already running
                          (started by an untimed first run, stopped with `down` at the end).

Both Prefect set-ups get PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=600 /
GPTFORGE_SERVER_START_TIMEOUT_S's default (600 s), so a loaded machine is slow, not failing.
Children get HOME = a temp dir (nothing touches ~/.prefect or ~/.gptforge), DO_NOT_TRACK=true,
PREFECT_SERVER_ANALYTICS_ENABLED=false, PREFECT_LOGGING_LEVEL=WARNING, and no PREFECT_*,
GPTFORGE_* or MLFLOW_* variable from this shell. While the script runs, the embedded-warm
server sits idle beside every other mode, as it would on a user's machine.

Server CPU: the embedded-warm server's CPU (its whole process group: watchdog + server) while
each embedded-warm command runs; the embedded-cold server's CPU from its start to `down`; and,
once, the idle embedded-warm server's CPU over `--idle-s` seconds (percent of one core): a
resident server is not free. `--load` runs two `sh -c 'while :; do :; done'` busy loops for
the whole measurement (killed by PID at the end) to show the cost on a busy machine.
Prints medians, ratios and every repetition; asserts nothing. On the shared 2-core VM one
repetition of all five modes took ~1.7 min, plus ~50 s of untimed set-up and the idle window
(`--reps 1`: ~3 min in all); expect several times that with --load.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODES = ("direct", "prefect-ephemeral", "prefect-ephemeral-warm", "embedded-cold", "embedded-warm")
REFERENCES = ("embedded-warm", "prefect-ephemeral")
CHILD = """\
import sys
import time

mode = sys.argv[1]
from prefect import flow, task

from gptforge.flows.embedded import orchestrator

print(f"IMPORTED {time.time():.6f}", flush=True)


@task(name="first")
def first() -> int:
    print(f"FIRST_TASK {time.time():.6f}", flush=True)
    return 1


@flow(name="bench-embedded-startup")
def tiny() -> int:
    return first()


if mode == "direct":
    first.fn()
elif mode.startswith("embedded"):
    with orchestrator():
        tiny()
else:
    tiny()
print(f"FLOW_END {time.time():.6f}", flush=True)
"""


@dataclass
class Run:
    imports: float
    first_task: float
    flow_end: float
    total: float
    cpu: float
    server_cpu: float | None = None


@dataclass
class Results:
    runs: dict[str, list[Run]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)

    def values(self, mode: str, attr: str) -> list[float]:
        return [v for r in self.runs.get(mode, []) if (v := getattr(r, attr)) is not None]

    def median(self, mode: str, attr: str) -> float | None:
        values = self.values(mode, attr)
        return statistics.median(values) if values else None


def group_cpu(pgid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each live process in process group `pgid`."""
    import psutil

    from gptforge.flows.servers import group_members

    cpu = {}
    for pid in group_members(pgid):
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        cpu[pid] = times.user + times.system
    return cpu


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def server_pgid(home: Path) -> int | None:
    from gptforge.flows.servers import read_state

    info = read_state(home).get("prefect")
    return info["pid"] if info else None


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.script = tmp / "child.py"
        self.script.write_text(CHILD)
        self.work = tmp / "work"
        self.work.mkdir()
        (tmp / "home").mkdir()
        self.base_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PREFECT_", "GPTFORGE_", "MLFLOW_"))
        }
        self.base_env |= {
            "HOME": str(tmp / "home"),
            "DO_NOT_TRACK": "true",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        self.warm_prefect_home = tmp / "prefect-ephemeral-warm"
        self.warm_home = tmp / "embedded-warm"
        self.embedded_homes: list[Path] = []
        self.counter = 0

    def env(self, mode: str) -> dict[str, str]:
        env = dict(self.base_env)
        self.counter += 1
        if mode == "direct":
            env["PREFECT_HOME"] = str(self.tmp / "prefect-direct")
        elif mode.startswith("prefect-ephemeral"):
            warm = mode == "prefect-ephemeral-warm"
            home = self.warm_prefect_home if warm else self.tmp / f"prefect-{self.counter}"
            env["PREFECT_HOME"] = str(home)
            env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "600"
        else:
            warm = mode == "embedded-warm"
            home = self.warm_home if warm else self.tmp / f"gptforge-{self.counter}"
            if home not in self.embedded_homes:
                self.embedded_homes.append(home)
            env["GPTFORGE_HOME"] = str(home)
            env["PREFECT_HOME"] = str(home / "prefect")  # what flows.home.use_home() sets
        return env

    def launch(self, mode: str) -> Run | None:
        """One fresh child process; None (and its output printed) when it fails."""
        env = self.env(mode)
        home = Path(env["GPTFORGE_HOME"]) if "GPTFORGE_HOME" in env else None
        pgid = server_pgid(home) if mode == "embedded-warm" and home else None
        server_before = group_cpu(pgid) if pgid else {}
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.time()
        proc = subprocess.Popen(
            [sys.executable, str(self.script), mode],
            cwd=self.work,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            out, err = proc.communicate(timeout=self.args.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        end = time.time()
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_cpu = None
        if pgid:
            server_cpu = cpu_delta(server_before, group_cpu(pgid))
        elif mode == "embedded-cold" and home and (cold_pgid := server_pgid(home)):
            server_cpu = sum(group_cpu(cold_pgid).values())  # since its start, before `down`
        if mode == "embedded-cold" and home:
            from gptforge.flows.servers import down

            down(home)
            shutil.rmtree(home, ignore_errors=True)
        if mode == "prefect-ephemeral":
            shutil.rmtree(env["PREFECT_HOME"], ignore_errors=True)
        stamps = {}
        for line in out.splitlines():
            key, _, value = line.partition(" ")
            if key in ("IMPORTED", "FIRST_TASK", "FLOW_END"):
                stamps[key] = float(value)
        if proc.returncode != 0 or len(stamps) < 3:
            self.report_failure(mode, proc.returncode, out, err)
            return None
        cpu = (children_after.ru_utime - children_before.ru_utime) + (
            children_after.ru_stime - children_before.ru_stime
        )
        return Run(
            imports=stamps["IMPORTED"] - start,
            first_task=stamps["FIRST_TASK"] - start,
            flow_end=stamps["FLOW_END"] - start,
            total=end - start,
            cpu=cpu,
            server_cpu=server_cpu,
        )

    @staticmethod
    def report_failure(mode: str, rc: int, out: str, err: str) -> None:
        print(f"  !! {mode}: exit {rc}; last output:", flush=True)
        for line in (out + err).splitlines()[-25:]:
            print(f"     {line}")

    def stop_servers(self) -> None:
        from gptforge.flows.servers import down

        for home in self.embedded_homes:
            try:
                down(home)
            except Exception as exc:  # noqa: BLE001 - clean up the others anyway
                print(f"  could not stop the server of {home}: {exc}")

    def idle_cpu(self, seconds: float) -> tuple[float, int] | None:
        """Percent of one core the idle embedded-warm server group used over `seconds`."""
        pgid = server_pgid(self.warm_home)
        if not pgid:
            return None
        time.sleep(5)  # let it finish writing the last runs' events
        before = group_cpu(pgid)
        start = time.monotonic()
        time.sleep(seconds)
        after = group_cpu(pgid)
        return 100 * cpu_delta(before, after) / (time.monotonic() - start), len(after)


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=3, help="repetitions per mode (default 3)")
    parser.add_argument("--load", action="store_true", help="two busy loops while measuring")
    parser.add_argument(
        "--modes", nargs="+", choices=MODES, default=list(MODES), help="a subset (default all)"
    )
    parser.add_argument(
        "--idle-s", type=float, default=30.0, help="idle server CPU window (default 30; 0: skip)"
    )
    parser.add_argument(
        "--timeout", type=float, default=1200.0, help="seconds per child process (default 1200)"
    )
    parser.add_argument("--quick", action="store_true", help="1 rep, 10 s idle: a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.reps, args.idle_s = 1, min(args.idle_s, 10.0)
    args.modes = [m for m in MODES if m in args.modes]
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))

    tmp = Path(tempfile.mkdtemp(prefix="bench-embedded-"))
    hogs: list[subprocess.Popen] = []
    bench = Bench(args, tmp)
    try:
        if args.load:
            hogs = [subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(2)]
        run(args, bench, hogs)
    finally:
        bench.stop_servers()
        for hog in hogs:
            hog.kill()
            hog.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, bench: Bench, hogs: list[subprocess.Popen]) -> None:
    prefect_version = importlib.metadata.version("prefect")  # importing it would touch ~
    load = f"{len(hogs)} busy loops (sh, PIDs {[h.pid for h in hogs]})" if hogs else "none"
    load_avg = os.getloadavg()
    print(f"bench_embedded_startup: Prefect {prefect_version}, Python {platform.python_version()}")
    print(f"  CPU: {cpu_model()} ({os.cpu_count()} logical cores); extra load: {load}")
    print(f"  load average at start: {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f}")
    print(f"  modes: {', '.join(args.modes)}; {args.reps} reps, order rotated", flush=True)

    setup = []
    for mode, what in (
        ("prefect-ephemeral-warm", "first prefect-ephemeral-warm run (creates its database)"),
        ("embedded-warm", "first embedded-warm run (starts the server, creates its database)"),
    ):
        if mode in args.modes:
            first = bench.launch(mode)
            line = f"{what}: {first.total:.1f} s" if first else f"{what}: FAILED"
            setup.append(line)
            print(f"  untimed: {line}", flush=True)

    results = Results()
    modes = args.modes
    for rep in range(args.reps):
        order = modes[rep % len(modes) :] + modes[: rep % len(modes)]
        for mode in order:
            result = bench.launch(mode)
            if result is None:
                results.failures[mode] = results.failures.get(mode, 0) + 1
                continue
            results.runs.setdefault(mode, []).append(result)
            print(
                f"  rep {rep + 1} {mode:24s} first task {result.first_task:6.2f} s, "
                f"total {result.total:6.2f} s",
                flush=True,
            )

    idle = None
    if "embedded-warm" in modes and args.idle_s > 0:
        idle = bench.idle_cpu(args.idle_s)
    load_avg = os.getloadavg()
    report(args, results, idle, load_avg)


def fmt(value: float | None, width: int = 6, unit: str = "") -> str:
    return f"{value:{width}.2f}{unit}" if value is not None else f"{'-':>{width + len(unit)}}"


def ratio(value: float | None, ref: float | None) -> str:
    return f"{value / ref:6.2f}x" if value is not None and ref else f"{'-':>7}"


def report(
    args: argparse.Namespace,
    results: Results,
    idle: tuple[float, int] | None,
    load_avg: tuple[float, float, float],
) -> None:
    modes = args.modes
    med = {m: {a: results.median(m, a) for a in Run.__dataclass_fields__} for m in modes}
    floor = med.get("direct", {}).get("first_task")
    refs = [r for r in REFERENCES if r in modes]
    ref_head = "".join(f"  vs {r}" for r in refs)
    print()
    print(f"  load average at end: {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f}")
    print("  medians, seconds from launch (time.time() just before Popen), fresh process each:")
    print("    first task: until the task's body starts; over direct: minus direct's first task")
    print("    total: until the process has exited; CPU: the child and the processes it reaped")
    print()
    for attr, label, tail in (
        ("first_task", "first task", "     imports  over direct"),
        ("total", "total", "         CPU"),
    ):
        print(f"    {label:>31s}{ref_head}{tail}")
        for mode in modes:
            value = med[mode][attr]
            cells = "".join(f"  {ratio(value, med[r][attr]):>{len(r) + 3}s}" for r in refs)
            if attr == "first_task":
                over = value - floor if value is not None and floor is not None else None
                extra = f"  {fmt(med[mode]['imports'], 8)} s {fmt(over, 10)} s"
            else:
                extra = f"  {fmt(med[mode]['cpu'], 8)} s"
            print(f"    {mode:22s} {fmt(value, 6)} s{cells}{extra}")
        print()

    print("  Prefect server CPU (its process group):")
    warm = med.get("embedded-warm", {}).get("server_cpu")
    cold = med.get("embedded-cold", {}).get("server_cpu")
    if warm is not None:
        print(f"    embedded-warm, while one command runs (median): {warm:.2f} s")
    if cold is not None:
        print(f"    embedded-cold, from its start to `down` (median): {cold:.2f} s")
        command = med["embedded-cold"]["cpu"]
        ephemeral = med.get("prefect-ephemeral", {}).get("cpu")
        print(
            f"      + the command's own CPU: {command + cold:.2f} s in all"
            + (f" (prefect-ephemeral, server included: {ephemeral:.2f} s)" if ephemeral else "")
        )
    if idle is not None:
        percent, processes = idle
        print(
            f"    embedded server idle, over {args.idle_s:.0f} s: {percent:.1f}% of one core "
            f"({processes} processes: watchdog + server)"
        )
    if warm is None and cold is None and idle is None:
        print("    (no embedded mode measured)")
    print()
    if results.failures:
        failed = ", ".join(f"{m} x{n}" for m, n in results.failures.items())
        print(f"  FAILED runs (not in the medians): {failed}")
        print()
    print("  all repetitions: first task / total (s)")
    for mode in modes:
        runs = results.runs.get(mode, [])
        cells = "  ".join(f"{r.first_task:6.2f}/{r.total:6.2f}" for r in runs)
        print(f"    {mode:24s} {cells}")


if __name__ == "__main__":
    main()
