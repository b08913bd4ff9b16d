"""The `train` flow: real Prefect (test harness), real MLflow (temporary SQLite) and registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pytest
import torch
from prefect.artifacts import Artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.events import Event, emit_event
from safetensors.torch import load_file

from gptforge.flows import triggers
from gptforge.flows.cli import main, parse_overrides
from gptforge.flows.home import mlflow_uri
from gptforge.flows.models import resolve_model
from gptforge.flows.tracking import DIGEST_TAG, STAGE_TAG
from gptforge.flows.train import INGEST_RUN_TAG, MODEL_VERSION_TAG, train_flow
from gptforge.flows.train_settings import train_config
from gptforge.model.checkpoint import load_model
from gptforge.pipeline.config import ConfigError
from gptforge.pipeline.manifest import load_manifest

pytestmark = pytest.mark.slow

MICRO = {"block_size": 32, "n_layer": 1, "n_head": 2, "n_embd": 32}


def test_flow_tracks_the_run_and_registers_a_loadable_model(
    prefect, token_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emitted: list[Event] = []  # read as emitted: the session's events worker may be stale

    def recording(**kwargs: Any) -> Event | None:
        emitted.append(emit_event(**kwargs))
        return emitted[-1]

    monkeypatch.setattr(triggers, "emit_event", recording)
    result = train_flow(
        data=str(token_data),
        out=str(tmp_path / "run"),
        model_overrides=MICRO,
        max_steps=4,
        batch_size=2,
        precision="fp32",
        eval_interval=2,
        model_name="flow-test",
    )
    digest = load_manifest(token_data)["dataset_digest"]
    mlflow.set_tracking_uri(mlflow_uri())
    run = mlflow.get_run(result["mlflow_run_id"])
    assert run.data.tags[STAGE_TAG] == "train"
    assert run.data.tags[DIGEST_TAG] == digest
    assert run.data.tags[MODEL_VERSION_TAG] == f"flow-test/{result['model_version']}"
    assert INGEST_RUN_TAG not in run.data.tags  # this dataset was ingested without the flow
    assert run.data.params["model.n_layer"] == "1" and run.data.params["max_steps"] == "4"
    assert run.data.params["resolved.precision"] == "fp32"
    (dataset_input,) = run.inputs.dataset_inputs
    assert digest.startswith(dataset_input.dataset.digest)
    client = mlflow.MlflowClient()
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [2, 4]
    assert run.data.metrics["best_val_loss"] == pytest.approx(result["val_loss"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"loss_curve.png", "checkpoint"} <= artifacts

    version = client.get_model_version("flow-test", result["model_version"])
    assert version.run_id == run.info.run_id
    ref = resolve_model(f"models:/flow-test/{result['model_version']}")
    assert (ref.name, ref.version, ref.run_id) == ("flow-test", "1", run.info.run_id)
    assert resolve_model("models:/flow-test/latest").version == "1"
    assert resolve_model(f"runs:/{run.info.run_id}/model").run_id == run.info.run_id
    registered, local = load_model(ref.checkpoint), load_model(Path(result["checkpoint"]))
    assert registered.config == local.config
    for name, tensor in local.state_dict().items():
        assert torch.equal(tensor, registered.state_dict()[name]), name
    assert set(load_file(str(ref.checkpoint / "model.safetensors"))) <= set(local.state_dict())

    summary = Artifact.get("training-summary")
    assert summary is not None and result["model_uri"] in summary.data
    progress = Artifact.get("train-progress")  # the Prefect UI's progress bar
    assert progress is not None and progress.type == "progress" and float(progress.data) == 100
    with get_client(sync_client=True) as client:
        (flow_run,) = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[progress.flow_run_id]))
        )
    assert flow_run.name == "train-run", "named like the MLflow run: stage and output folder"

    (event,) = emitted  # what the evaluation trigger of `serve --retrain-on-change` runs on
    assert event.event == "gptforge.model.registered"
    assert event.payload["model_uri"] == result["model_uri"] == "models:/flow-test/1"
    assert event.payload["experiment"] == "gptforge"
    assert event.payload["data"] == str(token_data.resolve())
    assert event.resource.id == "gptforge.model.flow-test/1"


def test_unknown_model_references_are_config_errors(prefect, tmp_path: Path) -> None:
    for ref, message in [
        ("models:/no-such-model/1", "does not exist"),
        (str(tmp_path / "nowhere"), "no checkpoint"),
        ("s3:/bucket/x", "use models:/"),
    ]:
        with pytest.raises(ConfigError, match=message) as err:
            resolve_model(ref)
        assert err.value.field == "model"


def test_cli_train_rejects_bad_settings_with_exit_code_2(
    token_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "data_dir" in capsys.readouterr().err
    assert main(["train", "--data", str(token_data), "--precision", "fp16"]) == 2
    assert "fp16 needs a CUDA device" in capsys.readouterr().err
    assert main(["train", "--data", str(token_data), "--model-overrides", "n_layer=0"]) == 2
    assert "n_layer" in capsys.readouterr().err
    assert parse_overrides(["n_layer=3", "dropout=0.1", "bias=false"]) == {
        "n_layer": 3,
        "dropout": 0.1,
        "bias": False,
    }


def test_a_tokens_per_step_target_sets_the_accumulation(token_data: Path, tmp_path: Path) -> None:
    settings = dict(data=str(token_data), out=str(tmp_path), model_overrides=MICRO)
    cfg = train_config(**settings, batch_size=4, tokens_per_step=4 * 32 * 3)
    assert cfg.grad_accum == 3 and cfg.tokens_per_step_for(1) == 384
    with pytest.raises(ConfigError, match="multiple of batch_size x block_size") as err:
        train_config(**settings, batch_size=4, tokens_per_step=100)
    assert err.value.field == "tokens_per_step"


def test_bad_train_settings_fail_before_an_mlflow_run_exists(
    prefect, token_data: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        train_flow(
            str(token_data),
            str(tmp_path / "o"),
            model_overrides=MICRO,
            precision="fp16",
            experiment="refused-early",
        )
    mlflow.set_tracking_uri(mlflow_uri())
    assert mlflow.get_experiment_by_name("refused-early") is None
