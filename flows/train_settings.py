"""From flow or CLI settings to a checked `TrainConfig`, importing neither Prefect nor MLflow,
so a bad setting is refused before either starts."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from gptforge.flows.home import gptforge_home
from gptforge.model.config import RECIPE_SETTINGS, GPTConfig
from gptforge.model.config import preset as model_preset
from gptforge.model.train_config import TrainConfig
from gptforge.pipeline.config import ConfigError
from gptforge.pipeline.settings import check_output, defaults

GPT_DEFAULTS = defaults(GPTConfig)


def train_config(
    data: str,
    out: str | None,
    preset: str | None = None,
    model_overrides: dict[str, Any] | None = None,
    init_from: str | None = None,
    **settings: Any,
) -> TrainConfig:
    """The validated TrainConfig: the model from its preset, overrides and the recipe's
    settings (RECIPE_SETTINGS, GPTConfig's defaults where not given), a fresh checkpoint
    directory when none is given; every other setting goes to TrainConfig as it is. The recipe
    is set after TrainConfig chose the model, so a time budget still sizes a modern one; a gpt2
    one stays `tiny` unless told otherwise."""
    for own in RECIPE_SETTINGS:
        if own in (model_overrides or {}):
            raise ConfigError("model_overrides", f"the {own} is a setting of its own: {own}")
    laid_over = {name: settings.pop(name) for name in RECIPE_SETTINGS if name in settings}
    if out is not None:
        check_output("out", out)  # '' is refused, not taken as "a new directory"
    if out is None and (settings.get("resume") or "RANK" in os.environ):
        raise ConfigError("out", "resume and torchrun need an explicit checkpoint directory")
    cfg = TrainConfig(  # checks every setting before the data is opened
        data_dir=Path(data),
        out_dir=Path(out or "."),
        model=None
        if preset is None and not model_overrides
        else model_preset(preset or "tiny", **(model_overrides or {})),
        init_from=Path(init_from) if init_from else None,
        **settings,
    )
    model = replace(cfg.model, **laid_over)
    if model != cfg.model:
        # gpt2 keeps the size it always had (`tiny`) when none is given, budget or not.
        sized = cfg.size_for_budget and model.recipe != "gpt2"
        cfg = replace(cfg, model=model, size_for_budget=sized)
    if out:
        return cfg
    from gptforge.model.data import Dataset  # torch: only once the settings are known to be good

    return replace(cfg, out_dir=new_out_dir(Dataset.open(cfg.data_dir).digest))


def new_out_dir(digest: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return gptforge_home() / "checkpoints" / f"{stamp}-{digest[:8]}"
