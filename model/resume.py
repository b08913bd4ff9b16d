"""Whether a checkpoint may be continued with these settings: resume (the same run, exactly)
or init_from (new run, same model shape), checked before anything is allocated or opened."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from gptforge.model import checkpoint
from gptforge.model.data import Dataset
from gptforge.model.train_config import TrainConfig, launched_processes
from gptforge.pipeline.config import ConfigError
from gptforge.pipeline.errors import RunError


def budget_as_planned(cfg: TrainConfig) -> TrainConfig:
    """A resumed time-budgeted run keeps the model, step count and what was derived from it
    (warmup, learning-rate floor, log cadence) as its start fixed them (they are in its
    checkpoint), so it continues exactly; nothing is measured again."""
    try:
        latest = checkpoint.resolve_checkpoint(cfg.out_dir)
        saved = checkpoint.read_trainer_state(latest)["settings"]
        model = checkpoint.read_config(latest)
    except (checkpoint.CheckpointError, KeyError) as exc:
        raise ConfigError("resume", f"nothing to resume: {exc}") from exc
    fixed = {name: saved[name] for name in cfg.derived if name in saved}
    return replace(
        cfg,
        model=model,
        size_for_budget=False,
        max_steps=int(saved["max_steps"]),
        derived=frozenset(cfg.derived - fixed.keys()),
        **fixed,
    )


SCHEDULE = ("max_steps", "warmup_steps", "learning_rate", "min_lr")


def schedule_change(cfg: TrainConfig, resume_from: Path | None) -> str | None:
    """What a resume changes in the learning-rate schedule, if anything. Warmup and the cosine
    decay are laid over max_steps, so extending a run (a larger max_steps) stretches the decay
    from the resumed step on: the result differs from a run started with the new settings."""
    if resume_from is None:
        return None
    state = checkpoint.read_trainer_state(resume_from)
    saved = state.get("settings", {})
    changed = [
        f"{name} {saved[name]} -> {getattr(cfg, name)}"
        for name in SCHEDULE
        if name in saved and saved[name] != getattr(cfg, name)
    ]
    if not changed:
        return None
    return (
        f"resuming at step {state['step']} with a different learning-rate schedule "
        f"({', '.join(changed)}): the steps from here follow the new one, so the result "
        "differs from a run started with these settings"
    )


def check_checkpoints(cfg: TrainConfig, dataset: Dataset) -> Path | None:
    """Resume needs a checkpoint that fits; a fresh run must not mix with an old one."""
    root = cfg.out_dir / checkpoint.CHECKPOINTS
    if cfg.init_from is not None:
        try:
            source = checkpoint.resolve_checkpoint(cfg.init_from)
        except checkpoint.CheckpointError as exc:
            raise ConfigError("init_from", str(exc)) from exc
        _check_same_model(source, cfg, "init_from")
    if not cfg.resume:
        if any(root.glob("step_*")):
            raise ConfigError(
                "out_dir",
                f"{cfg.out_dir} already holds checkpoints; pass resume=True to continue them "
                "or choose another out_dir",
            )
        return None
    try:
        latest = checkpoint.resolve_checkpoint(cfg.out_dir)
    except checkpoint.CheckpointError as exc:
        raise ConfigError("resume", f"nothing to resume: {exc}") from exc
    _check_same_model(latest, cfg, "resume")
    try:
        saved = checkpoint.read_trainer_state(latest)
        checkpoint.check_optimizer_state(latest)
    except checkpoint.CheckpointError as exc:
        raise ConfigError("resume", str(exc)) from exc
    if saved["step"] > cfg.max_steps:
        raise ConfigError("max_steps", f"the checkpoint is at step {saved['step']}, past max_steps")
    _check_same_run(latest, saved, cfg, dataset)
    return latest


RESUME_MUST_MATCH = ("seed", "batch_size", "grad_accum")


def _check_same_run(directory: Path, saved: dict, cfg: TrainConfig, dataset: Dataset) -> None:
    """An exact resume needs the batches the run would have drawn: same data, seed, batch
    shape, number of processes. Different data or batch settings are a new run from these
    weights: `init_from`."""
    if saved.get("dataset_digest") not in (None, dataset.digest):
        raise ConfigError(
            "resume",
            f"checkpoint {directory} was trained on dataset {saved['dataset_digest'][:12]}, "
            f"the data is {dataset.digest[:12]}; use init_from to continue on new data",
        )
    processes = launched_processes()
    if saved.get("world_size", processes) != processes:  # older checkpoints do not say
        raise RunError(
            f"checkpoint {directory} was trained by {saved['world_size']} processes, this run "
            f"has {processes}: a step's batch depends on the number, so an exact resume needs "
            f"the same (torchrun --nproc_per_node={saved['world_size']}); init_from starts a "
            "new run from its weights"
        )
    settings = saved.get("settings", {})
    for name in RESUME_MUST_MATCH:
        if name in settings and settings[name] != getattr(cfg, name):
            raise ConfigError(
                name,
                f"checkpoint {directory} was trained with {name}={settings[name]}, the "
                f"settings say {getattr(cfg, name)}; an exact resume needs the same value",
            )


def _check_same_model(directory: Path, cfg: TrainConfig, field_name: str) -> None:
    try:
        saved = checkpoint.check_checkpoint(directory)  # garbled or truncated files, named
    except checkpoint.CheckpointError as exc:
        raise ConfigError(field_name, str(exc)) from exc
    if saved.tokenizer != cfg.model.tokenizer:
        raise ConfigError(
            "tokenizer",
            f"checkpoint {directory} uses tokenizer {saved.tokenizer!r}, "
            f"the model settings {cfg.model.tokenizer!r}",
        )
    for key, value in saved.to_json().items():
        wanted = getattr(cfg.model, key)
        if key != "dropout" and wanted != value:
            raise ConfigError(
                field_name, f"checkpoint {directory} has {key}={value}, the settings say {wanted}"
            )
