"""The `pipeline` flow: ingest -> train -> generate as subflows, built to run on a schedule.

Re-ingestion is incremental; when the dataset digest equals the one the latest registered
version was trained on, training is skipped and the flow says so. A new version takes the
alias (e.g. `champion`) only when its validation loss is no worse than the holder's.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from gptforge.flows.generate import generate_flow
from gptforge.flows.home import apply_quiet_env, gptforge_home, mlflow_uri
from gptforge.flows.ingest import ingest_flow
from gptforge.flows.mlflow_names import check_tracking_names
from gptforge.flows.models import DEFAULT_MODEL_NAME, latest_version, resolve_model
from gptforge.flows.tracking import DEFAULT_EXPERIMENT, DIGEST_TAG, flow_run_name, stage_run
from gptforge.flows.train import train_flow
from gptforge.flows.train_settings import GPT_DEFAULTS
from gptforge.model.config import Activation, ModernChange, Norm, PresetName, Recipe
from gptforge.model.evaluate import evaluate_checkpoint

DEFAULT_PROMPTS = ["The", "def ", "In this document"]


@flow(name="pipeline", flow_run_name=flow_run_name("pipeline", "model_name"))
def pipeline_flow(
    sources: list[str],
    data: str | None = None,
    preset: PresetName | None = None,
    model_overrides: dict[str, Any] | None = None,
    recipe: Recipe = GPT_DEFAULTS["recipe"],
    modern_off: tuple[ModernChange, ...] = GPT_DEFAULTS["modern_off"],
    logit_cap: float = GPT_DEFAULTS["logit_cap"],
    norm: Norm = GPT_DEFAULTS["norm"],
    activation: Activation = GPT_DEFAULTS["activation"],
    max_steps: int = 200,
    batch_size: int = 8,
    precision: str = "auto",
    continue_training: bool = False,
    force_train: bool = False,
    model_name: str = DEFAULT_MODEL_NAME,
    promote_alias: str | None = "champion",
    eval_prompts: list[str] | None = None,
    eval_temperatures: list[float] | None = None,
    max_new_tokens: int = 48,
    experiment: str = DEFAULT_EXPERIMENT,
) -> dict[str, Any]:
    """Documents in, a registered GPT and its evaluation generations out.

    Args:
        sources: folders or files to (re-)ingest.
        data: dataset directory (default: GPTFORGE_HOME/datasets/<model_name>); keep it
            the same between runs so re-ingestion only extracts new or changed files.
        preset: model size: tiny, small, mini, gpt2 or gpt2-medium (unset: tiny).
        model_overrides: model settings that replace the preset's, e.g. {"n_layer": 3}.
        recipe: modern or gpt2 (docs/training.md); continuing a version needs its recipe.
        modern_off: modern's changes switched back to gpt2's way (an ablation).
        logit_cap: soft cap on the logits, cap * tanh(z / cap); 0: none.
        norm: layernorm (GPT-2's) or rmsnorm (parameter-free, as nanochat).
        activation: the MLP's, gelu (GPT-2's) or relu2 (ReLU², as modded-nanogpt).
        max_steps: optimizer steps per training run.
        batch_size: sequences per micro-batch.
        precision: auto, fp32, bf16 or fp16 (CUDA only).
        continue_training: start from the latest registered version's weights instead of
            from scratch (same model dimensions required).
        force_train: train even when the data did not change.
        model_name: MLflow registered model.
        promote_alias: alias moved to the new version when its validation loss is no worse
            than the current holder's (empty = never move an alias).
        eval_prompts: prompts of the evaluation generation job.
        eval_temperatures: temperatures the evaluation job sweeps.
        max_new_tokens: completion length of the evaluation job.
        experiment: MLflow experiment.
    """
    logger = get_run_logger()
    # before ingest: the default data path uses the model name
    check_tracking_names(experiment, model_name, promote_alias)
    data = data or str(gptforge_home() / "datasets" / model_name)
    # The stages' runs nest under this one (flows/tracking.py: stage_run).
    with stage_run("pipeline", experiment, run_name=f"pipeline-{model_name}") as pipeline_run:
        ingested = ingest_flow(sources=sources, out=data, experiment=experiment)
        digest = ingested["dataset_digest"]
        previous = latest_version(model_name)
        if previous and not force_train and _trained_on(model_name, previous) == digest:
            message = (
                f"dataset {digest[:12]} unchanged since {model_name}/{previous} was trained: "
                "training skipped"
            )
            logger.info(message)
            create_markdown_artifact(f"# Pipeline\n\n{message}.", key="pipeline-summary")
            return {
                "trained": False,
                "reason": message,
                "dataset_digest": digest,
                "ingest_run_id": ingested["mlflow_run_id"],
                "model_version": previous,
                "model_uri": f"models:/{model_name}/{previous}",
            }
        init_from = None
        if continue_training and previous:
            init_from = str(resolve_model(f"models:/{model_name}/{previous}").checkpoint)
        trained = train_flow(
            data=data,
            preset=preset,
            model_overrides=model_overrides,
            recipe=recipe,
            modern_off=modern_off,
            logit_cap=logit_cap,
            norm=norm,
            activation=activation,
            max_steps=max_steps,
            batch_size=batch_size,
            precision=precision,
            eval_interval=max(1, max_steps // 4),
            checkpoint_interval=max_steps,
            init_from=init_from,
            experiment=experiment,
            model_name=model_name,
        )
        version = trained["model_version"]
        _tag_version(model_name, version, digest)
        generated = generate_flow(
            model=trained["model_uri"],
            prompts=eval_prompts or DEFAULT_PROMPTS,
            temperature=eval_temperatures or [0.7, 1.0],
            max_new_tokens=max_new_tokens,
            experiment=experiment,
        )
        promoted = bool(promote_alias) and _promote(
            model_name, version, trained["val_loss"], promote_alias, data, digest
        )
        summary = {
            "trained": True,
            "pipeline_run_id": pipeline_run,
            "dataset_digest": digest,
            "ingest_run_id": ingested["mlflow_run_id"],
            "train_run_id": trained["mlflow_run_id"],
            "generate_run_id": generated["mlflow_run_id"],
            "model_version": version,
            "model_uri": trained["model_uri"],
            "val_loss": trained["val_loss"],
            "promoted": promoted,
            "alias": promote_alias,
            "records": generated["records"],
            "samples": generated["samples"],
        }
        create_markdown_artifact(_summary_markdown(summary), key="pipeline-summary")
        stages = ("ingest", "train", "generate")
        runs = [{"stage": stage, "MLflow run": summary[f"{stage}_run_id"]} for stage in stages]
        create_table_artifact(runs, key="pipeline-runs")
        return summary


def _trained_on(name: str, version: str) -> str | None:
    return MlflowClient().get_model_version(name, version).tags.get(DIGEST_TAG)


def _tag_version(name: str, version: str, digest: str) -> None:
    """The version remembers its dataset: what the next scheduled run compares against."""
    apply_quiet_env()
    mlflow.set_tracking_uri(mlflow_uri())
    MlflowClient().set_model_version_tag(name, version, DIGEST_TAG, digest)


def _promote(
    name: str, version: str, val_loss: float | None, alias: str, data: str, digest: str
) -> bool:
    """Move `alias` to `version` unless the holder's validation loss is lower on the same
    data. Losses on different datasets are not compared: a holder trained on other data is
    scored on this dataset's val split first, exactly as training scored the new version."""
    client = MlflowClient()
    try:
        holder = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        holder = None
    new_loss = math.inf if val_loss is None else val_loss
    if holder is not None:
        held = _holder_loss(holder, data, digest)
        if new_loss > held:
            get_run_logger().info(
                "%s stays on version %s: val loss %.4f beats %.4f on dataset %s",
                alias,
                holder.version,
                held,
                new_loss,
                digest[:12],
            )
            return False
    client.set_registered_model_alias(name, alias, version)
    get_run_logger().info("%s -> %s/%s (val loss %s)", alias, name, version, val_loss)
    return True


def _holder_loss(holder: ModelVersion, data: str, digest: str) -> float:
    """The alias holder's val loss on `data`: from its run when it was trained on this very
    dataset, else scored now (inf when it cannot be: no val split, or its model is gone)."""
    if holder.tags.get(DIGEST_TAG) == digest:
        metrics = MlflowClient().get_run(holder.run_id).data.metrics
        if "best_val_loss" in metrics:
            return metrics["best_val_loss"]
    weights = resolve_model(f"models:/{holder.name}/{holder.version}").checkpoint
    scored = evaluate_checkpoint(weights, Path(data))
    if scored is None:
        return math.inf
    get_run_logger().info(
        "version %s scored on dataset %s: val loss %.4f, %.4f bits/byte",
        holder.version,
        digest[:12],
        scored.val_loss,
        scored.val_bpb,
    )
    return scored.val_loss


def _summary_markdown(summary: dict[str, Any]) -> str:
    samples = "\n".join(f"- `{s[:200]!r}`" for s in summary["samples"])
    promoted = f"`{summary['alias']}` moved to it" if summary["promoted"] else "alias unchanged"
    return (
        f"# Pipeline\n\nTrained `{summary['model_uri']}` (val loss {summary['val_loss']}); "
        f"{promoted} (its stages' MLflow runs: the `pipeline-runs` table).\n\n"
        f"## Samples\n\n{samples}\n"
    )
