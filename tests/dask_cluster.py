"""A real Dask cluster for tests and benchmarks: `dask scheduler` and `dask worker` processes
on 127.0.0.1, each in its own process group, so that a worker's extraction processes die with
it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from distributed import Client

DASK = Path(sys.executable).parent / "dask"


class Cluster:
    """A scheduler (its address read from its scheduler file: no port guessed) and workers
    `w0`, `w1`, ... of `threads` threads each, by default without a nanny (a killed worker
    stays dead; with one, it is a daemon process, as Dask makes it). Logs in `tmp`. A context
    manager: every process is killed on the way out."""

    def __init__(self, tmp: Path, workers: int = 2, threads: int = 1, nanny: bool = False):
        self.tmp, self.workers, self.threads, self.nanny = tmp, workers, threads, nanny
        self.file = tmp / "scheduler.json"
        self.procs: dict[str, subprocess.Popen] = {}
        self.address = ""

    def __enter__(self) -> Cluster:
        try:
            self._start("scheduler", ["scheduler", "--scheduler-file", str(self.file)])
            for i in range(self.workers):
                worker = ["worker", "--scheduler-file", str(self.file), "--name", f"w{i}"]
                worker += [
                    "--nthreads",
                    str(self.threads),
                    "--nanny" if self.nanny else "--no-nanny",
                ]
                self._start(f"w{i}", worker)
            self.address = self._wait_for_address()
            with Client(self.address, timeout=30) as client:
                client.wait_for_workers(self.workers, timeout=60)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start(self, name: str, args: list[str]) -> None:
        common = ["--host", "127.0.0.1", "--no-dashboard"]
        with open(self.tmp / f"{name}.log", "wb") as log:
            self.procs[name] = subprocess.Popen(
                [str(DASK), *args, *common], stdout=log, stderr=log, start_new_session=True
            )

    def _wait_for_address(self) -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                return json.loads(self.file.read_text())["address"]
            except (OSError, ValueError):  # not written yet, or half written
                time.sleep(0.1)
        raise TimeoutError((self.tmp / "scheduler.log").read_text())

    def kill(self, name: str) -> None:
        """SIGKILL a worker and its extraction processes (its process group)."""
        os.killpg(self.procs[name].pid, signal.SIGKILL)
        self.procs[name].wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
