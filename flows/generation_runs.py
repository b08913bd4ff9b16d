"""A generation job's MLflow record for comparing settings: one child run per sampling setting
(its settings as params, plain metric names such as `distinct_2`), holding that setting's
output traces and their code scores, so the compare view and the Evaluation runs tab put
settings side by side."""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from gptforge.flows.models import ModelRef
from gptforge.flows.traces import flush, log_traces
from gptforge.flows.tracking import STAGE_TAG
from gptforge.model.diversity import diversity
from gptforge.model.generation_job import setting_label
from gptforge.model.sampling_config import SamplingConfig
from gptforge.model.scores import output_scores, setting_scores

SETTING_STAGE = "generate-setting"
SETTING_TAG = "gptforge.setting"


def record_scores(record: dict[str, Any]) -> dict[str, Any]:
    """A generation record's code scores (`mean_logprob` from decoding, when it has one)."""
    return output_scores(
        record["completion_token_ids"], record["finish_reason"], record.get("mean_logprob")
    )


def log_setting_runs(
    records: list[dict[str, Any]],
    grid: list[SamplingConfig],
    seconds: list[float],
    ref: ModelRef,
    traces: bool = True,
) -> dict[str, dict[str, float]]:
    """Under the active (job) run, a child run per grid point with its metrics and, with
    `traces`, a trace per output; returns each setting's metrics by label."""
    model_id = logged_model_id(ref)
    experiment_id = mlflow.active_run().info.experiment_id
    by_setting = {}
    for index, settings in enumerate(grid):
        rows = [r for r in records if r["setting_index"] == index]
        scores = [record_scores(r) for r in rows]
        label = setting_label(settings)
        tokens = [r["completion_token_ids"] for r in rows]
        count = sum(map(len, tokens))
        metrics = {
            "outputs": len(rows),
            "mean_completion_tokens": count / max(1, len(rows)),
            "tokens_per_s": count / max(seconds[index], 1e-9),
            **diversity(tokens),
            **setting_scores(scores),
        }
        by_setting[label] = metrics
        with mlflow.start_run(experiment_id=experiment_id, run_name=label, nested=True) as run:
            mlflow.log_params({**settings.to_json(), "setting": label, "setting_index": index})
            mlflow.set_tags({STAGE_TAG: SETTING_STAGE, SETTING_TAG: label})
            mlflow.log_metrics(metrics)
            if traces:
                log_traces(rows, scores, run.info.run_id, model_id)
    if traces:
        flush()
    return by_setting


def logged_model_id(ref: ModelRef) -> str | None:
    """The MLflow 3 logged model behind a registered version, which traces link to (the
    version's page lists them); None for a directory or a run reference."""
    if not (ref.name and ref.version):
        return None
    try:
        return MlflowClient().get_model_version(ref.name, ref.version).model_id
    except MlflowException:
        return None
