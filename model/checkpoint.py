"""Checkpoint directories: weights + config to generate, optimizer + trainer state to resume.

    <out>/checkpoints/step_0000100/model.safetensors   weights (tied head stored once)
                                   config.json         GPTConfig, tokenizer name included
                                   optimizer.pt        optimizer (+ GradScaler) state, tensors only
                                   trainer_state.json  step, RNG states, dataset digest, settings
    <out>/checkpoints/latest                           name of the newest complete checkpoint

A checkpoint is written under a temporary name and renamed when complete; `latest` is
replaced atomically after that, so a crash at any point leaves the previous one usable.
Nothing is ever unpickled: weights are safetensors, optimizer.pt loads with weights_only.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model as load_safetensors
from safetensors.torch import save_model
from torch import nn

from model.config import GPTConfig
from model.gpt import GPT

CHECKPOINTS = "checkpoints"
LATEST = "latest"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
OPTIMIZER = "optimizer.pt"
TRAINER_STATE = "trainer_state.json"


class CheckpointError(FileNotFoundError):
    pass


def save_checkpoint(
    out_dir: Path,
    model: GPT,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    state: dict[str, Any],
    keep_last: int,
) -> Path:
    """Write step `state["step"]` atomically, point `latest` at it, prune all but `keep_last`."""
    root = Path(out_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{state['step']:07d}"
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(model, str(tmp / WEIGHTS))
    model.config.save(tmp / CONFIG)
    torch.save(
        {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler else None},
        tmp / OPTIMIZER,
    )
    full_state = state | {"rng": _rng_state()}
    (tmp / TRAINER_STATE).write_text(json.dumps(full_state, indent=1) + "\n", encoding="utf-8")
    for path in tmp.iterdir():
        _fsync(path)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _write_atomic(root / LATEST, final.name + "\n")
    _prune(root, keep_last)
    return final


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint directory itself, or a training output directory (its latest checkpoint)."""
    path = Path(path)
    if (path / WEIGHTS).is_file() and (path / CONFIG).is_file():
        return path
    latest = path / CHECKPOINTS / LATEST
    if latest.is_file():
        chosen = path / CHECKPOINTS / latest.read_text(encoding="utf-8").strip()
        if (chosen / WEIGHTS).is_file():
            return chosen
    raise CheckpointError(
        f"{path}: no checkpoint (expected {WEIGHTS} + {CONFIG}, or {CHECKPOINTS}/{LATEST})"
    )


def load_model(path: Path, device: torch.device | str = "cpu") -> GPT:
    """The GPT from a checkpoint, in eval mode: all that generation needs."""
    directory = resolve_checkpoint(path)
    model = GPT(GPTConfig.load(directory / CONFIG))
    load_weights(model, directory)
    return model.to(device).eval()


def load_weights(model: nn.Module, directory: Path) -> None:
    missing, unexpected = load_safetensors(model, str(Path(directory) / WEIGHTS), strict=True)
    if missing or unexpected:
        raise CheckpointError(f"{directory}: weights do not fit the model: {missing}{unexpected}")


def load_training_state(
    directory: Path,
    model: GPT,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
) -> dict[str, Any]:
    """Restore weights, optimizer, scaler and RNG from `directory`; returns the trainer state."""
    load_weights(model, directory)
    saved = torch.load(directory / OPTIMIZER, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    if scaler is not None and saved["scaler"]:
        scaler.load_state_dict(saved["scaler"])
    state = json.loads((directory / TRAINER_STATE).read_text(encoding="utf-8"))
    _set_rng_state(state.pop("rng"))
    return state


def read_trainer_state(directory: Path) -> dict[str, Any]:
    return json.loads((Path(directory) / TRAINER_STATE).read_text(encoding="utf-8"))


def _rng_state() -> dict[str, Any]:
    cuda = [base64.b64encode(s.numpy().tobytes()).decode() for s in torch.cuda.get_rng_state_all()]
    return {"cpu": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(), "cuda": cuda}


def _set_rng_state(rng: dict[str, Any]) -> None:
    def tensor(text: str) -> torch.Tensor:
        return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)

    torch.set_rng_state(tensor(rng["cpu"]))
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensor(s) for s in rng["cuda"]])


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    _fsync(tmp)
    os.replace(tmp, path)


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _prune(root: Path, keep_last: int) -> None:
    steps = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in steps[: max(0, len(steps) - keep_last)]:
        shutil.rmtree(old)
