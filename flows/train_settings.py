"""From flow or CLI settings to a checked `TrainConfig`, importing neither Prefect nor MLflow,
so a bad setting is refused before either starts."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from flows.home import gptforge_home
from model.config import preset as model_preset
from model.train_config import TrainConfig
from pipeline.config import ConfigError


def train_config(
    data_dir: str,
    out_dir: str | None,
    preset: str = "tiny",
    model_overrides: dict[str, Any] | None = None,
    init_from: str | None = None,
    **settings: Any,
) -> TrainConfig:
    """The validated TrainConfig: the model from its preset and overrides, a fresh checkpoint
    directory when none is given; every other setting goes to TrainConfig as it is."""
    if out_dir is None and (settings.get("resume") or "RANK" in os.environ):
        raise ConfigError("out_dir", "resume and torchrun need an explicit out_dir")
    cfg = TrainConfig(  # checks every setting before the data is opened
        data_dir=Path(data_dir),
        out_dir=Path(out_dir or "."),
        model=model_preset(preset, **(model_overrides or {})),
        init_from=Path(init_from) if init_from else None,
        **settings,
    )
    if out_dir:
        return cfg
    from model.data import Dataset  # torch: only once the settings are known to be good

    return replace(cfg, out_dir=new_out_dir(Dataset.open(cfg.data_dir).digest))


def new_out_dir(digest: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return gptforge_home() / "checkpoints" / f"{stamp}-{digest[:8]}"
