"""MLflow's rules for experiment and registered-model names (MLflow 3,
`mlflow/utils/validation.py`), checked without importing MLflow: a name MLflow would refuse
is refused before Prefect, MLflow or training start, not when the run is recorded."""

from __future__ import annotations

from gptforge.pipeline.settings import ConfigError

MAX_EXPERIMENT_NAME = 500  # MLflow's MAX_EXPERIMENT_NAME_LENGTH


def check_tracking_names(experiment: str, model_name: str | None = None) -> None:
    """The MLflow experiment and, when the command registers one, the model name."""
    if not experiment.strip():
        raise ConfigError("experiment", "is empty; give an MLflow experiment name")
    if len(experiment) > MAX_EXPERIMENT_NAME:
        raise ConfigError("experiment", f"is longer than MLflow's {MAX_EXPERIMENT_NAME} characters")
    if model_name is not None:
        check_model_name(model_name)


def check_model_name(name: str) -> None:
    """A registered model name: not blank, no '/' or ':' (they separate name, version and
    alias in `models:/` URIs), and not a name that reads as another path ('.', '..x')."""
    if not name.strip():
        raise ConfigError("model_name", "is empty; give an MLflow registered model name")
    if "/" in name or ":" in name:
        raise ConfigError("model_name", f"{name!r}: MLflow model names cannot contain '/' or ':'")
    if name == "." or name.startswith(".."):  # MLflow: it would resolve to another path
        raise ConfigError("model_name", f"{name!r}: MLflow refuses names that read as a path")
