"""The `ingest` flow and CLI: real Prefect (test harness), real MLflow (temporary SQLite)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import pytest
from prefect.artifacts import Artifact
from prefect.events import Event, emit_event
from trees import write_tree

from gptforge.flows import ingest as ingest_module
from gptforge.flows.cli import main
from gptforge.flows.home import mlflow_uri
from gptforge.flows.ingest import REINGESTED_TAG, ingest_flow
from gptforge.flows.tracking import DIGEST_TAG, STAGE_TAG

pytestmark = pytest.mark.slow


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    return write_tree(
        tmp_path / "docs",
        {
            "guide.md": "How to use the tool. " * 30,
            "code/main.py": "print('hello world')\n" * 5,
            "broken.pdf": b"%PDF-1.4\n garbage that is not a PDF body",
            "fake.pdf": "<!DOCTYPE html><html><body>Sign in</body></html>",
            "dup.md": "How to use the tool. " * 30,
        },
    )


def test_flow_writes_dataset_artifact_and_mlflow_run(prefect, docs: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    result = ingest_flow(sources=[str(docs)], out=str(out), val_fraction=0.0)

    manifest = json.loads((out / "manifest.json").read_text())
    assert result["dataset_digest"] == manifest["dataset_digest"]
    assert result["counts"]["by_status"] == {"duplicate": 1, "error": 1, "ok": 2, "skipped": 1}
    assert result["tokens"]["train"] == manifest["splits"]["train"]["tokens"] > 0

    summary, problems = Artifact.get("ingest-summary"), Artifact.get("ingest-problems")
    assert summary is not None and manifest["dataset_digest"] in summary.data
    assert problems is not None and problems.type == "table" and "broken.pdf" in problems.data

    mlflow.set_tracking_uri(mlflow_uri())
    run = mlflow.get_run(result["mlflow_run_id"])
    assert mlflow_uri().startswith("sqlite:///") and str(mlflow_uri()).endswith("mlflow.db")
    assert run.data.tags[STAGE_TAG] == "ingest"
    assert run.data.tags[DIGEST_TAG] == manifest["dataset_digest"]
    assert run.data.params["val_fraction"] == "0.0"
    assert run.data.metrics["files_error"] == 1 and run.data.metrics["files_ok"] == 2
    assert run.data.metrics["train_tokens"] == manifest["splits"]["train"]["tokens"]
    (dataset_input,) = run.inputs.dataset_inputs
    assert manifest["dataset_digest"].startswith(dataset_input.dataset.digest)
    local = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="manifest.json"
    )
    assert json.loads(Path(local).read_text()) == manifest


def test_flow_rejects_bad_settings_before_reading_anything(prefect, docs: Path, tmp_path) -> None:
    with pytest.raises(ValueError, match=r"val_fraction: must be >= 0 and < 1"):
        ingest_flow(sources=[str(docs)], out=str(tmp_path / "x"), val_fraction=2.0)
    assert not (tmp_path / "x").exists()


def test_cli_prints_a_summary(prefect, docs: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli-data"
    assert main(["ingest", str(docs), "--out", str(out), "--val-fraction", "0"]) == 0
    printed = capsys.readouterr().out
    assert "files: 5 (1 duplicate, 1 error, 2 ok, 1 skipped)" in printed
    assert f"manifest: {out / 'manifest.json'}" in printed
    assert "broken.pdf" in printed and "MLflow run:" in printed


def test_cli_reports_invalid_settings_by_name(docs: Path, tmp_path: Path, capsys) -> None:
    assert main(["ingest", str(docs), "--out", str(tmp_path / "o"), "--workers", "0"]) == 2
    assert "invalid setting workers: must be >= 1 and <= 512, got 0" in capsys.readouterr().err


def test_a_reingest_says_whether_the_dataset_changed_and_records_a_no_op_once(
    prefect, docs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event a deployment trigger listens for: changed on the first ingest and after a
    new document, unchanged (no new MLflow run, a tag on the old one) in between. The events
    are Prefect's own, as built by `emit_event`; they are read here as emitted, because the
    process-wide events worker of a long test session may point at an earlier server."""
    emitted: list[Event] = []

    def recording(**kwargs: Any) -> Event | None:
        event = emit_event(**kwargs)
        emitted.append(event)
        return event

    monkeypatch.setattr(ingest_module, "emit_event", recording)
    monkeypatch.chdir(tmp_path)  # a relative --out: the event names the absolute directory
    out = tmp_path / "data"
    first = ingest_flow(sources=[str(docs)], out="data", val_fraction=0.0)
    again = ingest_flow(sources=[str(docs)], out="data", val_fraction=0.0)
    (docs / "new.txt").write_text("A new document about tokenizers. " * 50)
    grown = ingest_flow(sources=[str(docs)], out="data", val_fraction=0.0)
    assert (first["changed"], again["changed"], grown["changed"]) == (True, False, True)
    assert again["mlflow_run_id"] == first["mlflow_run_id"] != grown["mlflow_run_id"]
    mlflow.set_tracking_uri(mlflow_uri())
    assert REINGESTED_TAG in mlflow.get_run(first["mlflow_run_id"]).data.tags

    assert [e.event for e in emitted] == [
        "gptforge.dataset.changed",
        "gptforge.dataset.unchanged",
        "gptforge.dataset.changed",
    ]
    assert {e.resource.id for e in emitted} == {f"gptforge.dataset.{out}"}
    assert {e.payload["directory"] for e in emitted} == {str(out)}
    assert {e.payload["experiment"] for e in emitted} == {"gptforge"}
    assert emitted[2].payload["dataset_digest"] == grown["dataset_digest"]
    assert emitted[2].payload["mlflow_run_id"] == grown["mlflow_run_id"]
    assert emitted[1].payload["mlflow_run_id"] == first["mlflow_run_id"]
    assert emitted[2].related[0].id == f"mlflow.run.{grown['mlflow_run_id']}"
