"""Ingestion on Dask: a real `dask scheduler` and two real `dask worker` processes on
127.0.0.1, started here; the shards and manifest must be byte-identical to a local ingest,
also when a worker is killed while it extracts."""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dask_cluster import Cluster
from distributed import Client
from prefect.settings import PREFECT_API_URL

from gptforge.flows.cli import main
from gptforge.flows.ingest import ingest_flow
from gptforge.pipeline.config import IngestConfig
from gptforge.pipeline.errors import RunError
from gptforge.pipeline.ingest import ingest
from gptforge.pipeline.sample_corpus import build_sample
from gptforge.pipeline.settings import ConfigError

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(tmp_path, workers=2) as started:
        yield started


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The bundled sample corpus (text, code, a scanned PDF, images) and its local ingest."""
    root = tmp_path_factory.mktemp("dask")
    corpus = build_sample(root / "corpus")
    ingest(IngestConfig(sources=(corpus,), out=root / "local", workers=2))
    return corpus, root / "local"


def assert_same_dataset(out: Path, local: Path) -> None:
    assert (out / "manifest.json").read_bytes() == (local / "manifest.json").read_bytes()
    shards = sorted(p.name for p in (local / "shards").glob("*.bin"))
    assert shards and sorted(p.name for p in (out / "shards").glob("*.bin")) == shards
    for name in shards:
        assert (out / "shards" / name).read_bytes() == (local / "shards" / name).read_bytes()


def test_a_running_scheduler_writes_the_local_shards(prefect, cluster, sample, tmp_path) -> None:
    corpus, local = sample
    out = tmp_path / "dask"
    result = ingest_flow(
        sources=[str(corpus)], out=str(out), executor=cluster.address.replace("tcp", "dask")
    )
    assert_same_dataset(out, local)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["by_status"]["ok"] > 50
    assert result["dataset_digest"] == manifest["dataset_digest"]
    with Client(cluster.address) as client:  # both workers extracted, and closed their pools
        extracted = client.run(lambda: not sys.modules["gptforge.flows.dask_ingest"]._pools)
    assert list(extracted.values()) == [True, True]


def test_a_killed_workers_batches_run_again_elsewhere(prefect, cluster, sample, tmp_path) -> None:
    corpus, local = sample
    killed: list[tuple[str, int]] = []

    def kill_w1_while_it_extracts() -> None:
        with Client(cluster.address) as client:
            address = next(
                a for a, w in client.scheduler_info()["workers"].items() if w["name"] == "w1"
            )
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if busy := client.processing([address])[address]:
                    time.sleep(0.2)  # into the batch, past its start
                    cluster.kill("w1")
                    killed.append((address, len(busy)))
                    return
                time.sleep(0.02)

    killer = threading.Thread(target=kill_w1_while_it_extracts)
    killer.start()
    out = tmp_path / "dask"
    ingest_flow(sources=[str(corpus)], out=str(out), executor=f"dask://{cluster.address[6:]}")
    killer.join()

    assert killed and killed[0][1] >= 1, "w1 was never seen extracting"
    assert cluster.procs["w1"].returncode == -signal.SIGKILL
    assert_same_dataset(out, local)
    records = json.loads((out / "manifest.json").read_text())["files"]
    found = sorted(str(p) for p in corpus.rglob("*") if p.is_file())
    assert sorted(r["path"] for r in records) == found  # every file once


def test_cli_starts_a_local_cluster(prefect, sample, tmp_path, capsys, monkeypatch) -> None:
    corpus, local = sample
    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())  # the harness's server
    out = tmp_path / "cli"
    assert main(["ingest", str(corpus), "--out", str(out), "--executor", "dask"]) == 0
    assert f"manifest: {out / 'manifest.json'}" in capsys.readouterr().out
    assert_same_dataset(out, local)


def test_daemon_workers_are_refused_by_name(prefect, tmp_path) -> None:
    """A nanny's worker is a daemon process, which may not start extraction processes."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("hello")
    refused = r"Dask workers tcp://127\.0\.0\.1:\d+ run as daemon"
    with (
        Cluster(tmp_path, workers=1, nanny=True) as daemonic,
        pytest.raises(RunError, match=refused),
    ):
        ingest_flow(sources=[str(docs)], out=str(tmp_path / "o"), executor=daemonic.address)


def test_bad_executors_are_one_line(gptforge_home, tmp_path, capsys) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("hello")
    assert main(["ingest", str(docs), "--out", str(tmp_path / "o"), "--executor", "spark"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "gptforge ingest: invalid setting executor: expected local, dask or dask://HOST:PORT, "
        "got 'spark'\n"
    )
    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    argv = [
        "ingest",
        str(docs),
        "--out",
        str(tmp_path / "o"),
        "--executor",
        f"dask://127.0.0.1:{port}",
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"gptforge ingest: cannot reach the Dask scheduler at tcp://127.0.0.1:{port}"
    )
    assert err.count("\n") == 1
    with pytest.raises(ConfigError, match="executor: dask runs through the ingest flow"):
        ingest(IngestConfig(sources=(docs,), out=tmp_path / "lib", executor="dask"))
