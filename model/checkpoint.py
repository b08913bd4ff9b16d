"""Checkpoint directories: weights + config to generate, optimizer + trainer state to resume.

    <out>/checkpoints/step_0000100/model.safetensors   weights (tied head stored once)
                                   config.json         GPTConfig, tokenizer name included
                                   optimizer.pt        optimizer (+ GradScaler) state, tensors only
                                   trainer_state.json  step, RNG states, dataset digest, settings
    <out>/checkpoints/latest                           name of the newest complete checkpoint
    <out>/best/                                        weights, config and trainer_state of the
                                                       evaluation with the lowest val_loss

A checkpoint is written under a temporary name and renamed when complete; `latest` is
replaced atomically after that, so a crash at any point leaves the previous one usable.
Nothing is ever unpickled: weights are safetensors, optimizer.pt loads with weights_only.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import shutil
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import psutil
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model as load_safetensors
from safetensors.torch import save_model
from torch import nn

from gptforge.model.config import GPTConfig
from gptforge.model.gpt import GPT
from gptforge.pipeline.atomic import exclusive, write_text_atomic
from gptforge.pipeline.errors import RunError, write_failure

CHECKPOINTS = "checkpoints"
LATEST = "latest"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
OPTIMIZER = "optimizer.pt"
TRAINER_STATE = "trainer_state.json"
BEST = "best"
TRAINER_STATE_KEYS = ("step", "history", "rng")


class CheckpointError(FileNotFoundError):
    """No checkpoint at a path, or a file of it that is missing, truncated or not what it
    should be; the message names the file."""


def writing(out_dir: Path) -> AbstractContextManager[None]:
    """Held while a run writes checkpoints to `out_dir` (`out_dir/.lock`). A second run there
    (a scheduled retrain firing while the last still trains) would interleave its checkpoints
    with the first's, prune them and move `latest` under it: it is refused at once."""
    busy = f"another training run is writing to {out_dir}; wait for it to end or choose another "
    busy += "out_dir"
    return exclusive(out_dir / ".lock", RunError(busy))


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
    _remove_abandoned(root)
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    optimizer_state = {
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler else None,
    }
    _write_directory(tmp, final, model, state | {"rng": _rng_state()}, optimizer_state)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_text_atomic(root / LATEST, final.name + "\n")
    _prune(root, keep_last)
    return final


def save_best(out_dir: Path, model: GPT, state: dict[str, Any]) -> Path:
    """Replace `<out>/best` with these weights: what a run registers is its best evaluation,
    not its last step. No optimizer state (it is for generating, not resuming), so it costs
    a third of a checkpoint. Written aside and swapped in; a crash leaves the old one."""
    out_dir = Path(out_dir)
    final, tmp = out_dir / BEST, out_dir / f".{BEST}.tmp-{os.getpid()}"
    old = out_dir / f".{BEST}.old-{os.getpid()}"
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    _write_directory(tmp, final, model, state)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def _write_directory(
    tmp: Path,
    final: Path,
    model: GPT,
    state: dict[str, Any],
    optimizer_state: dict[str, Any] | None = None,
) -> None:
    """Weights, config, trainer state (and optimizer state) into `tmp`, flushed to disk. A
    failed write (a full disk) removes `tmp` and is one line naming `final`."""
    try:
        tmp.mkdir(parents=True)
        save_model(model, str(tmp / WEIGHTS))
        model.config.save(tmp / CONFIG)
        if optimizer_state is not None:  # through a Python file: a full disk is an OSError
            with open(tmp / OPTIMIZER, "wb") as fh:
                torch.save(optimizer_state, fh)
        (tmp / TRAINER_STATE).write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
        for path in tmp.iterdir():
            _fsync(path)
    except (OSError, SafetensorError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise write_failure(final, exc) from exc
        raise RunError(f"cannot write {final}: {exc}") from exc


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
    model = GPT(check_checkpoint(directory))
    load_weights(model, directory)
    return model.to(device).eval()


def read_config(directory: Path) -> GPTConfig:
    """The checkpoint's model config; a missing, garbled or unknown one names the file."""
    path = Path(directory) / CONFIG
    try:
        return GPTConfig.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: not a model config ({_reason(exc)})") from exc


def check_checkpoint(directory: Path) -> GPTConfig:
    """The config of a checkpoint whose weights file fits it, read from the safetensors
    header alone (names, shapes, and that the file is as long as the header says): a
    truncated or foreign file is refused before a model is built or a run is opened."""
    config = read_config(directory)
    path = Path(directory) / WEIGHTS
    try:
        with safe_open(str(path), framework="pt") as weights:
            names = weights.keys()  # a safe_open handle is not iterable
            found = {name: tuple(weights.get_slice(name).get_shape()) for name in names}
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"{path}: not a complete safetensors file ({_reason(exc)})") from exc
    with torch.device("meta"):  # shapes only, no memory
        model = GPT(config)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    wrong = [n for n, shape in found.items() if expected.get(n) != shape]
    if wrong or len(found) != len(list(model.parameters())):
        what = f"{wrong[0]} is {found[wrong[0]]}" if wrong else f"{len(found)} tensors"
        raise CheckpointError(f"{path}: does not fit {CONFIG} ({what})")
    return config


def check_optimizer_state(directory: Path) -> None:
    """`optimizer.pt` opens as a complete tensors-only file (memory-mapped: nothing is read
    into memory yet), so a truncated one is refused before a resumed run opens."""
    path = Path(directory) / OPTIMIZER
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise CheckpointError(f"{path}: not a complete optimizer state ({_reason(exc)})") from exc


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
    state = read_trainer_state(directory)
    _set_rng_state(state.pop("rng"))
    return state


def read_trainer_state(directory: Path) -> dict[str, Any]:
    """What resume needs from `trainer_state.json`; a garbled or incomplete one names the file."""
    path = Path(directory) / TRAINER_STATE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: not a trainer state ({_reason(exc)})") from exc
    missing = [k for k in TRAINER_STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing or not isinstance(state["step"], int):
        key = (missing or ["step"])[0]
        raise CheckpointError(f"{path}: not a trainer state (no valid {key!r})")
    return state


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc).splitlines()[0] or type(exc).__name__


def _rng_state() -> dict[str, Any]:
    cuda = [base64.b64encode(s.numpy().tobytes()).decode() for s in torch.cuda.get_rng_state_all()]
    return {"cpu": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(), "cuda": cuda}


def _set_rng_state(rng: dict[str, Any]) -> None:
    def tensor(text: str) -> torch.Tensor:
        return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)

    torch.set_rng_state(tensor(rng["cpu"]))
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensor(s) for s in rng["cuda"]])


def _remove_abandoned(root: Path) -> None:
    """Temporary checkpoint directories of writers that are gone (a crash, a SIGKILL) or of
    this process (an earlier failed save): nothing will ever finish them."""
    for tmp in root.glob(".step_*.tmp-*"):
        pid = tmp.name.rpartition("-")[2]
        if not pid.isdigit() or int(pid) == os.getpid() or not psutil.pid_exists(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _prune(root: Path, keep_last: int) -> None:
    steps = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in steps[: max(0, len(steps) - keep_last)]:
        shutil.rmtree(old)
