"""MLflow's rules for experiment and registered-model names (MLflow 3,
`mlflow/utils/validation.py`), checked without importing MLflow: a name MLflow would refuse
is refused before Prefect, MLflow or training start, not when the run is recorded."""

from __future__ import annotations

import re

from gptforge.pipeline.settings import ConfigError

MAX_EXPERIMENT_NAME = 500  # MLflow's MAX_EXPERIMENT_NAME_LENGTH
MAX_ALIAS = 255  # MLflow's MAX_REGISTERED_MODEL_ALIAS_LENGTH
ALIAS = re.compile(r"[\w\-]*")
VERSION_ALIAS = re.compile(r"[vV]\d+")


def check_tracking_names(
    experiment: str, model_name: str | None = None, alias: str | None = None
) -> None:
    """The MLflow experiment and, when the command uses them, the model name and the alias it
    moves (empty: none)."""
    if not experiment.strip():
        raise ConfigError("experiment", "is empty; give an MLflow experiment name")
    if len(experiment) > MAX_EXPERIMENT_NAME:
        raise ConfigError("experiment", f"is longer than MLflow's {MAX_EXPERIMENT_NAME} characters")
    if model_name is not None:
        check_model_name(model_name)
    if alias:
        check_alias(alias)


def check_alias(alias: str) -> None:
    """A registered model alias: letters, digits, '_' and '-' only, and neither 'latest' nor
    a version's name ('v3'), which MLflow reserves."""
    if not ALIAS.fullmatch(alias):
        raise ConfigError(
            "promote_alias", f"{alias!r}: MLflow aliases hold letters, digits, '_' and '-' only"
        )
    if alias.lower() == "latest" or VERSION_ALIAS.fullmatch(alias):
        raise ConfigError("promote_alias", f"{alias!r} is reserved by MLflow")
    if len(alias) > MAX_ALIAS:
        raise ConfigError("promote_alias", f"is longer than MLflow's {MAX_ALIAS} characters")


def check_model_name(name: str) -> None:
    """A registered model name: not blank, no '/' or ':' (they separate name, version and
    alias in `models:/` URIs), and not a name that reads as another path ('.', '..x')."""
    if not name.strip():
        raise ConfigError("model_name", "is empty; give an MLflow registered model name")
    if "/" in name or ":" in name:
        raise ConfigError("model_name", f"{name!r}: MLflow model names cannot contain '/' or ':'")
    if name == "." or name.startswith(".."):  # MLflow: it would resolve to another path
        raise ConfigError("model_name", f"{name!r}: MLflow refuses names that read as a path")
