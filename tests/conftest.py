"""Shared fixtures: an isolated gptforge home (temporary SQLite MLflow) and a Prefect harness."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("PREFECT_API_URL", None)


@pytest.fixture(scope="session")
def gptforge_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test run gets its own home: MLflow's SQLite store and artifacts live there."""
    home = tmp_path_factory.mktemp("gptforge-home")
    os.environ["GPTFORGE_HOME"] = str(home)
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    yield home
    from gptforge.flows.servers import down

    down(home)  # the embedded Prefect server that CLI tests started, if any


@pytest.fixture(scope="session")
def prefect(gptforge_home: Path):
    """A real, temporary Prefect server and database for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def token_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real dataset: this project's own docs and sources, ingested to shards."""
    from gptforge.pipeline.config import IngestConfig
    from gptforge.pipeline.ingest import ingest

    repo = Path(__file__).resolve().parent.parent
    out = tmp_path_factory.mktemp("token-data")
    sources = (repo / "docs", repo / "pipeline", repo / "model")
    ingest(IngestConfig(sources=sources, out=out, val_fraction=0.2, workers=1))
    return out


# The bad-input tests' data (tests/test_bad_input.py, tests/test_bad_checkpoints.py): six
# small documents, their dataset, and a two-step training run of the micro model.
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    docs = tmp_path_factory.mktemp("corpus")
    for i in range(6):
        words = [WORDS[(i * 7 + j * j) % len(WORDS)] for j in range(600)]
        (docs / f"doc{i}.txt").write_text(" ".join(words) + "\n")
    return docs


@pytest.fixture(scope="module")
def dataset(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dataset")
    from gptforge.pipeline.config import IngestConfig
    from gptforge.pipeline.ingest import ingest

    ingest(IngestConfig(sources=(corpus,), out=out, val_fraction=0.3, workers=1))
    return out


@pytest.fixture(scope="module")
def trained(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A training output directory with a two-step checkpoint (resume, init_from, generate)."""
    from train_helpers import micro_config

    from gptforge.model.train import train

    out = tmp_path_factory.mktemp("trained")
    train(micro_config(dataset, out, max_steps=2, checkpoint_interval=2, eval_interval=2))
    return out


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads and lose much to them on a busy shared machine
    (a module asks for it with `pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
