"""The `train` flow: train a GPT on an ingested dataset, track it in MLflow, register it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from gptforge.flows.home import mlflow_uri
from gptforge.flows.metric_sender import MetricSender, TrackingUnavailable
from gptforge.flows.mlflow_names import check_tracking_names
from gptforge.flows.models import DEFAULT_MODEL_NAME, register_checkpoint
from gptforge.flows.plots import plot_loss_curve
from gptforge.flows.progress import report
from gptforge.flows.tracking import (
    DEFAULT_EXPERIMENT,
    find_stage_run,
    flow_run_name,
    log_dataset,
    run_link,
    stage_run,
)
from gptforge.flows.train_settings import GPT_DEFAULTS, train_config
from gptforge.flows.triggers import emit_model_registered
from gptforge.model.checkpoint import CONFIG, TRAINER_STATE, read_trainer_state
from gptforge.model.config import (
    RECIPE_SETTINGS,
    Activation,
    ModernChange,
    Norm,
    PresetName,
    Recipe,
)
from gptforge.model.resume import schedule_change
from gptforge.model.train import (
    Callbacks,
    Checked,
    TrainResult,
    train,
    validate,
)
from gptforge.model.train_config import Device, Precision, TrainConfig
from gptforge.pipeline.atomic import write_text_atomic
from gptforge.pipeline.settings import defaults

INGEST_RUN_TAG = "gptforge.ingest_run_id"
RUN_FILE = "mlflow_run.json"
SEND_TIMEOUT_S = 60.0
MODEL_VERSION_TAG = "gptforge.model_version"
STEPS_TAG = "gptforge.registered_at_step"
D = defaults(TrainConfig)  # every training default comes from model/train_config.py


class MlflowCallbacks(Callbacks):
    """Metrics by step to the MLflow run, progress to the terminal, lines to Prefect's log."""

    def __init__(self, run_id: str, max_steps: int):
        self.client = MlflowClient()
        self.run_id = run_id
        self.max_steps = max_steps
        self.logger = get_run_logger()
        self.sender = MetricSender(self.client, run_id)
        self.replans = 0  # MLflow params never change: each re-plan is a param of its own

    def on_start(self, info: dict[str, Any]) -> None:
        self.max_steps = info["max_steps"]  # a time budget decides it only now
        # A resumed run keeps what its start recorded (a budget's re-planned step count is
        # in resolved.budget_replan; MLflow params never change).
        recorded = self.client.get_run(self.run_id).data.params
        self.client.log_batch(
            self.run_id,
            params=[
                mlflow.entities.Param(f"resolved.{k}", str(v))
                for k, v in info.items()
                if k != "start_step" and f"resolved.{k}" not in recorded
            ],
        )
        self.logger.info("training on %s in %s: %s", info["device"], info["precision"], info)

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.sender.send(step, metrics)
        report("train", step, self.max_steps, metrics)
        shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        self.logger.info("step %d/%d: %s", step, self.max_steps, shown)

    def on_checkpoint(self, step: int, path: Path) -> None:
        self.logger.info("checkpoint at step %d: %s", step, path)

    def on_replan(self, step: int, max_steps: int, plan: str) -> None:
        self.max_steps = max_steps
        self.replans += 1
        name = "resolved.budget_replan" + (f"_{self.replans}" if self.replans > 1 else "")
        self.client.log_param(self.run_id, name, plan.rsplit("; ", 1)[-1])
        self.logger.info("time budget: %s", plan)


# When a time budget's clock started, if before training: `gptforge train` counts its whole
# command against the budget (Prefect and MLflow start-up included). A flow run from the UI
# or a deployment starts the clock at training.
_budget_clock: float | None = None


def count_budget_from(monotonic: float | None) -> None:
    global _budget_clock
    _budget_clock = monotonic


@task(name="train-model", cache_policy=NO_CACHE)
def train_task(cfg: TrainConfig, run_id: str, checked: Checked) -> TrainResult:
    """The training loop itself; a crash leaves the last checkpoint for `resume`.

    Metrics go to MLflow in the background; if the server stays away, the run still ends
    here, locally, and `resume` delivers what is missing from the checkpoint's history."""
    callbacks = MlflowCallbacks(run_id, cfg.max_steps)
    try:
        result = train(cfg, callbacks, checked=checked, started=_budget_clock)
    finally:
        lost = callbacks.sender.close(timeout=SEND_TIMEOUT_S)
    if lost:
        raise TrackingUnavailable(
            f"MLflow stopped answering ({callbacks.sender.last_error}); training finished "
            f"locally: checkpoint {result.checkpoint}. Continue with --resume --out "
            f"{cfg.out_dir} to record it when MLflow is back"
        )
    return result


@task(name="register-model", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def register_task(result: TrainResult, name: str) -> str:
    """The best evaluation's weights + config (what generation needs) become a new
    registered model version."""
    return register_checkpoint(result.weights, name, result.dataset_digest)


@flow(name="train", flow_run_name=flow_run_name("train", "preset", "out"))
def train_flow(
    data: str,
    out: str | None = None,
    preset: PresetName | None = None,
    model_overrides: dict[str, Any] | None = None,
    recipe: Recipe = GPT_DEFAULTS["recipe"],
    modern_off: tuple[ModernChange, ...] = GPT_DEFAULTS["modern_off"],
    logit_cap: float = GPT_DEFAULTS["logit_cap"],
    norm: Norm = GPT_DEFAULTS["norm"],
    activation: Activation = GPT_DEFAULTS["activation"],
    max_steps: int = D["max_steps"],
    batch_size: int = D["batch_size"],
    grad_accum: int = D["grad_accum"],
    tokens_per_step: int | None = D["tokens_per_step"],
    learning_rate: float = D["learning_rate"],
    min_lr: float | None = D["min_lr"],
    warmup_steps: int | None = D["warmup_steps"],
    weight_decay: float = D["weight_decay"],
    beta1: float = D["beta1"],
    beta2: float = D["beta2"],
    grad_clip: float = D["grad_clip"],
    precision: Precision = D["precision"],
    device: Device = D["device"],
    compile: bool = D["compile"],
    eval_interval: int | None = D["eval_interval"],
    eval_tokens: int | None = D["eval_tokens"],
    early_stop_patience: int | None = D["early_stop_patience"],
    time_budget: float | None = D["time_budget"],
    log_interval: int | None = D["log_interval"],
    checkpoint_interval: int = D["checkpoint_interval"],
    keep_last: int = D["keep_last"],
    seed: int = D["seed"],
    resume: bool = D["resume"],
    init_from: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    model_name: str = DEFAULT_MODEL_NAME,
) -> dict[str, Any]:
    """Train a GPT from scratch (or continue one) on a dataset written by `ingest`.

    Every training setting is a field of `model.train_config.TrainConfig`, which holds its
    default, range and description (`gptforge train --help` lists them); a setting left
    `None` is derived there from the others.

    Args:
        data: dataset directory with manifest.json and shards/ (from the ingest flow).
        out: where checkpoints go; default: a new folder under GPTFORGE_HOME/checkpoints.
        preset: model size: tiny, small, mini, gpt2 or gpt2-medium; unset: tiny, or with
            time_budget the size the budget buys (see model/budget.py).
        model_overrides: model settings that replace the preset's, e.g. {"n_layer": 3}.
        recipe: gpt2 or modern (model.config.GPTConfig.recipe; docs/training.md).
        modern_off: modern's changes switched back to gpt2's way, for an ablation, e.g.
            ["muon"] (model.config.MODERN_CHANGES; docs/training.md).
        logit_cap: soft cap on the logits, cap * tanh(z / cap), e.g. nanochat's 15; 0: none.
        norm: layernorm (GPT-2's) or rmsnorm (parameter-free, as nanochat).
        activation: the MLP's, gelu (GPT-2's) or relu2 (ReLU², as modded-nanogpt).
        experiment: MLflow experiment.
        model_name: MLflow registered model that gets the new version.
    """
    settings = {
        k: v for k, v in locals().items() if (k in D or k in RECIPE_SETTINGS) and k != "init_from"
    }
    logger = get_run_logger()
    check_tracking_names(experiment, model_name)  # not only once the model is trained
    cfg = train_config(data, out, preset, model_overrides, init_from, **settings)
    checked = validate(cfg)
    if note := schedule_change(cfg, checked.resume_from):
        logger.warning(note)
    dataset, out_dir = checked.dataset, cfg.out_dir
    ingest_run = find_stage_run(experiment, "ingest", dataset.digest)
    earlier = previous_run(out_dir) if checked.resume_from else None
    run_name = "-".join(part for part in ("train", preset, out_dir.name) if part)
    with stage_run("train", experiment, run_name, earlier) as run_id:
        if earlier:
            replay_history(run_id, checked.resume_from)
        else:
            remember_run(out_dir, run_id)
            mlflow.log_params({"preset": preset or ""} | cfg.to_params())
            log_dataset(cfg.data_dir, dataset.digest, context="training")
        if ingest_run:
            mlflow.set_tag(INGEST_RUN_TAG, ingest_run)
        result = train_task(cfg, run_id, quote(checked))
        if result.history:
            mlflow.log_artifact(str(plot_loss_curve(result.history, out_dir / "loss_curve.png")))
        for file in (CONFIG, TRAINER_STATE):
            mlflow.log_artifact(str(result.checkpoint / file), artifact_path="checkpoint")
        version = registered_version(run_id, model_name, result.steps)
        if version is None:
            version = register_task(result, model_name)
            mlflow.set_tags({MODEL_VERSION_TAG: f"{model_name}/{version}", STEPS_TAG: result.steps})
        mlflow.log_metrics(final_metrics(result))
        link = run_link(run_id)
    summary = {
        "mlflow_run_id": run_id,
        "ingest_run_id": ingest_run,
        "model_name": model_name,
        "model_version": version,
        "model_uri": f"models:/{model_name}/{version}",
        "checkpoint": str(result.checkpoint),
        "steps": result.steps,
        "train_loss": result.train_loss,
        "val_loss": result.val_loss,
        "val_bpb": None if result.best is None else result.best["val_bpb"],
        "best_step": None if result.best is None else result.best["step"],
        "stopped_early": result.stopped_early,
        "budget_plan": result.budget_plan,
        "precision": result.precision,
        "device": result.device,
        "dataset_digest": result.dataset_digest,
    }
    create_table_artifact(_summary_rows(summary, link), key="training-summary")
    logger.info("registered %s; MLflow %s", summary["model_uri"], link)
    emit_model_registered(summary, cfg.data_dir.resolve(), experiment)  # the evaluation trigger
    return summary


def final_metrics(result: TrainResult) -> dict[str, float]:
    """What the run ends with: the last training loss, and the registered (best) weights'
    validation metrics under `best_*` with their step. Champion comparisons read these."""
    metrics = {"final_train_loss": result.train_loss}
    if result.best is not None:
        metrics |= {f"best_{k}": v for k, v in result.best.items() if k.startswith("val_")}
        metrics["best_step"] = result.best["step"]
    return metrics


def registered_version(run_id: str, name: str, steps: int) -> str | None:
    """The version this run already registered at exactly `steps` (a resume of a finished
    run whose tracking was cut short registers nothing twice)."""
    tags = MlflowClient().get_run(run_id).data.tags
    model, _, version = tags.get(MODEL_VERSION_TAG, "").partition("/")
    return version if model == name and tags.get(STEPS_TAG) == str(steps) else None


def remember_run(out: Path, run_id: str) -> None:
    """The MLflow run of a checkpoint directory, so that `resume` continues that run."""
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(
        out / RUN_FILE, json.dumps({"mlflow_run_id": run_id, "tracking_uri": mlflow_uri()}) + "\n"
    )


def previous_run(out: Path) -> str | None:
    """The run `remember_run` recorded, if it is in this tracking store."""
    try:
        saved = json.loads((out / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    if saved.get("tracking_uri") != mlflow_uri():
        return None
    try:
        MlflowClient(mlflow_uri()).get_run(saved["mlflow_run_id"])
    except Exception:  # noqa: BLE001 - deleted or unknown: a new run it is
        return None
    return saved["mlflow_run_id"]


def replay_history(run_id: str, checkpoint_dir: Path) -> None:
    """Deliver the checkpoint's metric history that the run does not have yet (a tracking
    server that went away), so the resumed run's curves have no hole."""
    client = MlflowClient()
    logged = client.get_metric_history(run_id, "train_loss")
    last = max((m.step for m in logged), default=0)
    sender = MetricSender(client, run_id)
    for entry in read_trainer_state(checkpoint_dir)["history"]:
        if entry["step"] > last:
            sender.send(entry["step"], {k: v for k, v in entry.items() if k != "step"})
    if sender.close(timeout=SEND_TIMEOUT_S):
        raise TrackingUnavailable(f"MLflow is not answering ({sender.last_error})")


def _summary_rows(summary: dict[str, Any], link: str) -> list[dict[str, Any]]:
    val = summary["val_loss"]
    rows = {
        "model": summary["model_uri"],
        "steps": summary["steps"],
        "final train loss": f"{summary['train_loss']:.4f}",
        "registered weights": "last step (no validation split)"
        if val is None
        else f"step {summary['best_step']}: val loss {val:.4f}, {summary['val_bpb']:.4f} bits/byte",
        "precision / device": f"{summary['precision']} / {summary['device']}",
        "checkpoint": summary["checkpoint"],
        "dataset digest": summary["dataset_digest"],
        "MLflow run": link,
    }
    return [{"what": key, "value": value} for key, value in rows.items()]
