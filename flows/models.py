"""Registered models: log a checkpoint as a new version, and resolve any model reference
(`models:/name/3`, `models:/name@champion`, `models:/name/latest`, `runs:/<id>/model`, or a
local checkpoint directory) back to a checkpoint directory plus where it came from."""

from __future__ import annotations

import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from gptforge.flows.home import apply_quiet_env, gptforge_home, mlflow_uri
from gptforge.model.checkpoint import (
    CONFIG,
    WEIGHTS,
    CheckpointError,
    check_checkpoint,
    resolve_checkpoint,
)
from gptforge.model.sampling_config import JobConfig, SamplingConfig
from gptforge.pipeline.config import ConfigError
from gptforge.pipeline.settings import defaults

DEFAULT_MODEL_NAME = "gptforge"
MODEL_ARTIFACT = "model"
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
TRAIN_RUN_TAG = "gptforge.train_run_id"
JOB_PARAMS = defaults(JobConfig)  # what predict takes besides SamplingConfig's fields


@dataclass(frozen=True)
class ModelRef:
    """A checkpoint on local disk and the registry entry / run it belongs to."""

    checkpoint: Path
    uri: str
    name: str | None = None
    version: str | None = None
    run_id: str | None = None

    @property
    def label(self) -> str:
        if self.name and self.version:
            return f"{self.name}/{self.version}"
        return self.uri


def register_checkpoint(checkpoint: Path, name: str, dataset_digest: str) -> str:
    """Log `checkpoint`'s weights + config (what generation needs; no optimizer state) as the
    active run's model and register it; returns the new version."""
    apply_quiet_env()
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "checkpoint"
        staged.mkdir()
        for file in (WEIGHTS, CONFIG):
            shutil.copyfile(Path(checkpoint) / file, staged / file)
        with warnings.catch_warnings():
            # Advice we decline on purpose: an input example would load the model and
            # generate at every registration.
            warnings.filterwarnings("ignore", message=".*An input example was not provided")
            info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT,
                python_model=str(PYFUNC_CODE),
                artifacts={"checkpoint": str(staged)},
                pip_requirements=["torch==2.13.0", "safetensors", "tiktoken", "gptforge"],
                registered_model_name=name,
                signature=model_signature(),
                tags={"gptforge.dataset_digest": dataset_digest},
            )
    return str(info.registered_model_version)


def model_signature() -> ModelSignature:
    """Prompts in, completions out, and every sampling and job setting as a parameter whose
    default is `SamplingConfig`'s or `JobConfig`'s, so `mlflow models serve` and
    `predict(params=...)` take them by name. Scalar settings may also come per row, as
    optional input columns of the same names (empty cells: the params' value)."""
    kinds = {bool: "boolean", int: "long", float: "double", str: "string"}
    params, columns = [], [ColSpec("string", "prompt")]
    for name, value in (SamplingConfig().to_json() | JOB_PARAMS).items():
        if isinstance(value, list):
            item = kinds[type(value[0])] if value else "string"
            params.append(ParamSpec(name, item, value, shape=(-1,)))
        else:
            params.append(ParamSpec(name, kinds[type(value)], value))
            if name not in JOB_PARAMS:  # integer columns as doubles: a row may leave one out
                column = "double" if type(value) is int else kinds[type(value)]
                columns.append(ColSpec(column, name, required=False))
    return ModelSignature(
        inputs=Schema(columns),
        outputs=Schema([ColSpec("string", "completion")]),
        params=ParamSchema(params),
    )


def resolve_model(ref: str) -> ModelRef:
    """Where `ref` points, checked before anything is loaded; errors name the `model` field."""
    if "://" not in ref and ":/" not in ref:
        try:
            checkpoint = resolve_checkpoint(Path(ref))
            check_checkpoint(checkpoint)
        except CheckpointError as exc:
            raise ConfigError("model", str(exc)) from exc
        return ModelRef(checkpoint=checkpoint, uri=str(Path(ref).resolve()))
    apply_quiet_env()
    mlflow.set_tracking_uri(mlflow_uri())
    client = MlflowClient()
    name = version = run_id = None
    try:
        if ref.startswith("models:/"):
            name, version = _registry_entry(client, ref.removeprefix("models:/"))
            run_id = client.get_model_version(name, version).run_id
            uri = f"models:/{name}/{version}"
        elif ref.startswith("runs:/"):
            run_id = ref.removeprefix("runs:/").split("/", 1)[0]
            client.get_run(run_id)
            uri = ref
        else:
            raise ConfigError(
                "model", f"{ref!r}: use models:/NAME/VERSION, runs:/ID/model or a directory"
            )
        target = str(_cache_dir(uri))
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=target))
    except MlflowException as exc:
        raise ConfigError("model", f"{ref!r} does not exist: {exc.message}") from exc
    try:
        checkpoint = resolve_checkpoint(local / "artifacts" / "checkpoint")
        check_checkpoint(checkpoint)
    except CheckpointError as exc:
        raise ConfigError("model", f"{ref!r} is not a gptforge model: {exc}") from exc
    return ModelRef(checkpoint=checkpoint, uri=uri, name=name, version=version, run_id=run_id)


def latest_version(name: str) -> str | None:
    apply_quiet_env()
    mlflow.set_tracking_uri(mlflow_uri())
    versions = MlflowClient().search_model_versions(f"name='{name}'")
    return max((str(v.version) for v in versions), key=int, default=None)


def _registry_entry(client: MlflowClient, rest: str) -> tuple[str, str]:
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return name, str(client.get_model_version_by_alias(name, alias).version)
    name, _, version = rest.partition("/")
    if version in ("", "latest"):
        latest = latest_version(name)
        if latest is None:
            raise ConfigError("model", f"registered model {name!r} has no versions")
        return name, latest
    return name, version


def _cache_dir(uri: str) -> Path:
    """Downloads land under the home directory, one folder per immutable model URI."""
    safe = uri.replace(":/", "_").replace("/", "_").replace("@", "_")
    path = gptforge_home() / "models" / safe
    path.mkdir(parents=True, exist_ok=True)
    return path
