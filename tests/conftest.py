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
