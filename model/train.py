"""The training loop: AdamW + cosine (gpt2 recipe) or Muon + warmup-stable-decay (modern),
clipping, mixed precision, accumulation, DDP.

It reports through `Callbacks` (flows/ turns them into MLflow metrics and a progress bar)
and is exactly resumable: the batch, learning rate and RNG at step N depend only on N.
"""

from __future__ import annotations

import math
import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gptforge.model import budget, checkpoint
from gptforge.model.data import Dataset, TokenWindows
from gptforge.model.distributed import (
    World,
    barrier,
    init_world,
    mean_across,
    means_across,
    no_sync_unless,
    shutdown,
    wants_cuda,
    wrap,
)
from gptforge.model.evaluate import evaluate as evaluate_windows
from gptforge.model.gpt import GPT
from gptforge.model.interrupt import StopRequest, TrainingInterrupted, stop_on_signals
from gptforge.model.memory import check_training_memory
from gptforge.model.optim import lr_at, make_optimizer, set_lr
from gptforge.model.precision import autocast, grad_scaler, resolve_precision
from gptforge.model.resume import budget_as_planned, check_checkpoints
from gptforge.model.throughput import peak_flops
from gptforge.model.train_config import TrainConfig
from gptforge.pipeline.config import ConfigError


class Callbacks:
    """Hooks the loop calls on the main process; override what you need."""

    def on_start(self, info: dict[str, Any]) -> None: ...

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None: ...

    def on_checkpoint(self, step: int, path: Path) -> None: ...

    def on_replan(self, step: int, max_steps: int, plan: str) -> None:
        """A time-budgeted run fixed its step count again from its own steps (at the end of
        warmup; a warmup-stable-decay run once more before its decay)."""


@dataclass
class TrainResult:
    """How a run ended. `checkpoint` is the last one (what `resume` continues); `weights` is
    what to register: the best evaluation's (`<out>/best`), or the last step's when the data
    has no val split. `best` holds that evaluation's step and val metrics."""

    checkpoint: Path
    weights: Path
    steps: int
    train_loss: float
    best: dict[str, float] | None
    precision: str
    device: str
    dataset_digest: str
    stopped_early: bool = False
    budget_plan: str = ""
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def val_loss(self) -> float | None:
        return None if self.best is None else self.best["val_loss"]


@dataclass
class Checked:
    """What `validate` found usable: the resolved precision, the data and where to resume."""

    precision: str
    dataset: Dataset
    train: TokenWindows
    val: TokenWindows | None
    resume_from: Path | None
    cfg: TrainConfig  # the settings as given, or as the resumed run's time budget fixed them


@dataclass
class Setup(Checked):
    """`Checked`, plus the process group and device: everything built before the first step."""

    world: World
    device: torch.device
    plan: str = ""  # how a time budget was spent (steps, model), for the log
    eval_s: float = 0.0  # one evaluation's seconds (measured, then the run's last), to re-plan
    interval_from_speed: bool = False  # the budget chose the evaluation interval


def validate(cfg: TrainConfig) -> Checked:
    """Every check that can fail, with no process group and no compute: device, precision,
    data, tokenizer, windows that fit the context, checkpoints. Callers run it before they
    open a tracking run."""
    if cfg.resume and cfg.time_budget is not None:
        cfg = budget_as_planned(cfg)
    cuda = wants_cuda(cfg.device)
    if cuda and not torch.cuda.is_available():
        raise ConfigError("device", "cuda requested but no CUDA device is available")
    device = torch.device("cuda" if cuda else "cpu")
    precision = resolve_precision(cfg.precision, device)
    check_training_memory(cfg, precision, device)  # before anything is allocated
    dataset = Dataset.open(cfg.data_dir)
    if dataset.tokenizer != cfg.model.tokenizer:
        raise ConfigError(
            "tokenizer",
            f"the data was tokenized with {dataset.tokenizer!r}, the model uses "
            f"{cfg.model.tokenizer!r}",
        )
    train, val = windows_for(cfg, dataset)
    return Checked(precision, dataset, train, val, check_checkpoints(cfg, dataset), cfg)


def windows_for(cfg: TrainConfig, dataset: Dataset) -> tuple[TokenWindows, TokenWindows | None]:
    """The training windows, and the validation ones when the val split fills one."""
    train = TokenWindows(dataset, "train", cfg.model.block_size)
    val = None
    if dataset.tokens["val"] > cfg.model.block_size:
        val = TokenWindows(dataset, "val", cfg.model.block_size)
    return train, val


def prepare(cfg: TrainConfig, checked: Checked | None = None) -> Setup:
    """`validate` (unless the caller did), then join the process group torchrun describes."""
    checked = checked or validate(cfg)
    world, device = init_world(cfg.device)
    return Setup(**vars(checked), world=world, device=device)


def train(
    cfg: TrainConfig,
    callbacks: Callbacks | None = None,
    stop: StopRequest | None = None,
    checked: Checked | None = None,
    started: float | None = None,
) -> TrainResult:
    """Train to `cfg.max_steps`, checkpointing as configured; safe to call under torchrun.

    The first Ctrl-C or SIGTERM (or `stop.set()`) ends the current step, writes a checkpoint
    and raises `TrainingInterrupted`; `resume` continues from there as if never stopped.
    `checked` is `validate(cfg)` when the caller ran it already (the data is opened once).
    `started` (`time.monotonic()`) is when a time budget's clock started, if before this
    call: a command counts its own start-up against the budget.
    """
    started = time.monotonic() if started is None else started
    callbacks = callbacks or Callbacks()
    setup = prepare(cfg, checked)
    try:
        lock = checkpoint.writing(cfg.out_dir) if setup.world.is_main else nullcontext()
        with lock, stop_on_signals(stop or StopRequest()) as request:
            cfg = setup.cfg
            if cfg.time_budget is not None and setup.resume_from is None:
                cfg, setup = plan_budget(cfg, setup, started)
            return _train(cfg, setup, callbacks, request, started)
    finally:
        shutdown(setup.world)


def train_step(
    runnable: nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: list[tuple[Tensor, Tensor]],
    precision: str,
    device: torch.device,
    scaler: torch.amp.GradScaler | None = None,
    grad_clip: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """One optimizer step accumulated over `micro_batches`: the mean loss and the gradient norm
    before clipping (0 = no clipping). A function of its own so benchmarks time exactly this."""
    step_loss = torch.zeros((), device=device)
    last = len(micro_batches) - 1
    for micro, (x, y) in enumerate(micro_batches):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with no_sync_unless(micro == last, runnable):
            with autocast(precision, device):
                _, loss = runnable(x, y)
            loss = loss / len(micro_batches)
            (scaler.scale(loss) if scaler else loss).backward()
        step_loss += loss.detach()
    if scaler:
        scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(
        runnable.parameters(), grad_clip if grad_clip > 0 else math.inf
    )
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return step_loss, grad_norm


def plan_budget(cfg: TrainConfig, setup: Setup, started: float) -> tuple[TrainConfig, Setup]:
    """Measure this machine on the model (first choosing the model, with size_for_budget),
    then fix max_steps so training, evaluations and the final checkpoint fit the budget."""
    world, device, precision = setup.world, setup.device, setup.precision
    scaler = grad_scaler(precision, device)

    def step(model: nn.Module, optimizer: torch.optim.Optimizer, micro: list) -> None:
        train_step(model, optimizer, micro, precision, device, scaler, cfg.grad_clip)

    def measured(cfg: TrainConfig, setup: Setup) -> budget.Speed:
        torch.manual_seed(cfg.seed)
        speed = budget.measure(cfg, GPT(cfg.model).to(device), setup.train, setup.val, step, device)
        return budget.Speed(*means_across([speed.step_s, speed.eval_s], world, device))

    def remaining() -> float:
        (seconds,) = means_across([cfg.time_budget - (time.monotonic() - started)], world, device)
        return seconds

    speed = measured(cfg, setup)
    reason = ""
    if cfg.size_for_budget:
        split_tokens = (setup.dataset.tokens["train"], setup.dataset.tokens["val"])
        plan = budget.sized(cfg, split_tokens, remaining(), speed)
        cfg, reason = plan.cfg, plan.reason
        check_training_memory(cfg, precision, device)
        train_windows, val_windows = windows_for(cfg, setup.dataset)
        setup = replace(setup, train=train_windows, val=val_windows, cfg=cfg)
        speed = measured(cfg, setup)
    setup.interval_from_speed = "eval_interval" in cfg.derived and setup.val is not None
    interval = budget.eval_interval_for(speed) if setup.interval_from_speed else cfg.eval_interval
    steps = budget.steps_for(remaining(), speed, interval)
    if cfg.size_for_budget:
        steps = min(steps, budget.epoch_capped_steps(cfg, setup.dataset.tokens["train"]))
    planned = cfg.for_steps(steps, eval_interval=interval)
    setup.eval_s = speed.eval_s
    setup.plan = (
        f"{steps} steps of {speed.step_s:.3g} s, evaluations of {speed.eval_s:.3g} s every "
        f"{interval} steps, in {cfg.time_budget:g} s" + (f"; model: {reason}" if reason else "")
    )
    return planned, setup


def _train(
    cfg: TrainConfig, setup: Setup, callbacks: Callbacks, stop: StopRequest, started: float
) -> TrainResult:
    world, device, precision = setup.world, setup.device, setup.precision
    torch.manual_seed(cfg.seed + world.rank)
    model = GPT(cfg.model).to(device)
    if cfg.init_from is not None:
        checkpoint.load_weights(model, checkpoint.resolve_checkpoint(cfg.init_from))
    optimizer = make_optimizer(model, cfg, device)
    scaler = grad_scaler(precision, device)
    step, history = 0, []
    if setup.resume_from is not None:
        state = checkpoint.load_training_state(setup.resume_from, model, optimizer, scaler)
        step, history = state["step"], state["history"]
    runnable: nn.Module = torch.compile(model) if cfg.compile else model
    runnable = wrap(runnable, world, device)
    flops_peak = peak_flops(device, precision)
    if world.is_main:
        callbacks.on_start(
            {
                "device": str(device),
                "precision": precision,
                "processes": world.size,
                "parameters": model.num_params(),
                "tokens_per_step": cfg.tokens_per_step_for(world.size),
                "dataset_digest": setup.dataset.digest,
                "start_step": step,
                "peak_flops": flops_peak or 0.0,
                "max_steps": cfg.max_steps,
                "eval_interval": cfg.eval_interval,
                "model": cfg.model.to_json(),
                **({"budget_plan": setup.plan} if setup.plan else {}),
            }
        )
    window_loss, window_steps, window_start = 0.0, 0, time.perf_counter()
    last: dict[str, float] = history[-1] if history else {}
    best = best_evaluation(history)
    stopped_early = False
    # A budgeted run that turns out slower than measured still ends on time, its schedule cut
    # short. A resumed one has its step count fixed already and no clock of its own.
    fresh_budget = cfg.time_budget is not None and setup.resume_from is None
    deadline = started + cfg.time_budget if fresh_budget else None
    replan_at = budget.replan_at(cfg) if fresh_budget else None
    step_times: list[float] = []
    final = False
    while step < cfg.max_steps and not stopped_early and not final:
        began = time.perf_counter()
        set_lr(optimizer, lr_at(step, cfg))
        runnable.train()
        micro_batches = [
            setup.train.batch(
                cfg.seed, step, (micro * world.size + world.rank) * cfg.batch_size, cfg.batch_size
            )
            for micro in range(cfg.grad_accum)
        ]
        step_loss, grad_norm = train_step(
            runnable, optimizer, micro_batches, precision, device, scaler, cfg.grad_clip
        )
        step += 1
        window_loss += float(step_loss)
        window_steps += 1
        if replan_at is not None:  # timed only until the last plan
            if step > budget.WARM_STEPS:
                step_times.append(time.perf_counter() - began)
            if step == replan_at:
                replan_at = None
                if step < cfg.max_steps:
                    cfg = replan(cfg, setup, step, step_times, deadline - time.monotonic())
                    if world.is_main:
                        callbacks.on_replan(step, cfg.max_steps, setup.plan)
                    replan_at, step_times = budget.decay_replan_at(cfg, step), []
        final = step == cfg.max_steps or past(deadline, world, device)
        evaluate = step % cfg.eval_interval == 0 or final
        if step % cfg.log_interval == 0 or evaluate:
            elapsed = time.perf_counter() - window_start
            tokens_per_s = window_steps * cfg.tokens_per_step_for(world.size) / elapsed
            metrics = {
                "train_loss": mean_across(window_loss / window_steps, world, device),
                "lr": lr_at(step - 1, cfg),
                "grad_norm": float(grad_norm),
                "tokens_per_s": tokens_per_s,
            }
            if flops_peak:
                per_device = tokens_per_s / world.size
                metrics["mfu"] = model.flops_per_token() * per_device / flops_peak
            if evaluate and setup.val is not None:
                evaluation_began = time.perf_counter()
                scored = evaluate_windows(model, setup.val, cfg.eval_tokens, device, world)
                setup.eval_s = time.perf_counter() - evaluation_began
                metrics |= scored.metrics()
            window_loss, window_steps = 0.0, 0
            last = {"step": step, **metrics}
            history.append(last)
            if "val_loss" in last and (best is None or last["val_loss"] < best["val_loss"]):
                best = last
                if world.is_main:
                    state = {"step": step, "dataset_digest": setup.dataset.digest, "best": best}
                    checkpoint.save_best(cfg.out_dir, model, state)
            stopped_early = patience_ran_out(history, best, cfg.early_stop_patience)
            if world.is_main:
                callbacks.on_metrics(step, metrics)
            window_start = time.perf_counter()
        stopping = stop_agreed(stop, world, device)
        if step % cfg.checkpoint_interval == 0 or final or stopping or stopped_early:
            if world.is_main:
                state = {
                    "step": step,
                    "seed": cfg.seed,
                    "dataset_digest": setup.dataset.digest,
                    "precision": precision,
                    "world_size": world.size,
                    "history": history,
                    "settings": cfg.to_params(),
                }
                path = checkpoint.save_checkpoint(
                    cfg.out_dir, model, optimizer, scaler, state, cfg.keep_last
                )
                callbacks.on_checkpoint(step, path)
            barrier(world)
        if stopping and not final:
            raise TrainingInterrupted(step, checkpoint.resolve_checkpoint(cfg.out_dir), stop.signum)
    final_checkpoint = checkpoint.resolve_checkpoint(cfg.out_dir)
    return TrainResult(
        checkpoint=final_checkpoint,
        weights=final_checkpoint if best is None else cfg.out_dir / checkpoint.BEST,
        steps=step,
        train_loss=last.get("train_loss", math.nan),
        best=best,
        precision=precision,
        device=str(device),
        dataset_digest=setup.dataset.digest,
        stopped_early=stopped_early,
        budget_plan=setup.plan,
        history=history,
    )


def replan(
    cfg: TrainConfig, setup: Setup, step: int, step_times: list[float], remaining_s: float
) -> TrainConfig:
    """Fix the budget's step count again from the median of this run's own timed steps (and
    its last evaluation's time, once it has evaluated), and say so in the plan. With several
    processes, all plan from the means of the ranks' numbers, so they agree on the count
    (else one would wait forever)."""
    median, eval_s, remaining_s = means_across(
        [statistics.median(step_times), setup.eval_s, remaining_s], setup.world, setup.device
    )
    speed = budget.Speed(step_s=median, eval_s=eval_s)
    planned = budget.replanned(
        cfg, step, speed, remaining_s, setup.dataset.tokens["train"], setup.interval_from_speed
    )
    setup.plan += (
        f"; at step {step}, steps of {median:.3g} s measured in the run: "
        f"{planned.max_steps} steps (was {cfg.max_steps})"
    )
    if planned.eval_interval != cfg.eval_interval:
        setup.plan += f", evaluations every {planned.eval_interval} steps (was {cfg.eval_interval})"
    return planned


def best_evaluation(history: list[dict[str, float]]) -> dict[str, float] | None:
    """The logged step with the lowest val_loss (the first of equals), or None."""
    evaluated = [h for h in history if "val_loss" in h]
    return min(evaluated, key=lambda h: h["val_loss"]) if evaluated else None


def patience_ran_out(
    history: list[dict[str, float]], best: dict[str, float] | None, patience: int | None
) -> bool:
    """Early stopping: `patience` evaluations in a row since the best without beating it."""
    if patience is None or best is None:
        return False
    since = [h for h in history if "val_loss" in h and h["step"] > best["step"]]
    return len(since) >= patience


def past(deadline: float | None, world: World, device: torch.device) -> bool:
    """Whether the time budget is spent (on any process: all stop at the same step)."""
    if deadline is None:
        return False
    late = float(time.monotonic() > deadline)
    return (mean_across(late, world, device) if world.distributed else late) > 0


def stop_agreed(stop: StopRequest, world: World, device: torch.device) -> bool:
    """Whether to stop after this step; with several processes, any one asking stops all at
    the same step (torchrun signals every rank, but not at the same instant)."""
    if not world.distributed:
        return stop.is_set()
    return mean_across(float(stop.is_set()), world, device) > 0
