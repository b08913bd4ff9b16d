"""Training for a wall-clock budget: measure this machine, then fix the step count (and, when
asked, the model's size) before the first real step.

The step count is fixed up front, not discovered by watching the clock, so the learning-rate
schedule (warmup, cosine decay to `min_lr`) is laid over the whole budget and a stopped run
resumes exactly: the count is saved with every checkpoint. Measuring runs a few optimizer
steps and one evaluation on a throwaway copy of the model, on real batches; its cost counts
against the budget.

A few steps measured before training can mislead: the first run in a process was measured at
up to 1.6x its real step time (a 120 s run planned 175 steps and ended after 73 s). So the
count is fixed once more from the run's own steps, at the end of warmup (`replan_at`): no
step before it depends on the count, so the schedule stays smooth and a resume exact.

A machine also changes speed during a run (another job starts, a laptop throttles): a 900 s
run re-planned 3,674 steps down to 3,131 at step 100 and the deadline still stopped it at
2,842, its learning rate never annealed. A warmup-stable-decay run therefore fixes its count
a last time inside its flat phase (`decay_replan_at`), from the steps since the first
re-plan: the flat rate does not depend on the count, so the count can still shrink and the
decay end on time, or grow into the time the first plan's reserve held back.

Sizing (`size_for_budget`) picks the largest model of a ladder that this budget can train on
at least TOKENS_PER_PARAMETER tokens per parameter of its transformer blocks (the token
embedding, which doubles as the output layer, is a fixed cost that dominates small models
and is left out). Hoffmann et al. (2022) put the compute-optimal ratio at ~20 tokens per
parameter, all parameters counted, for models of 70 M and up; on this ladder's small models,
where the 50,304-wide output layer is most of each step's compute, a deeper model costs
little more per token, and the measured optimum is ~1 token per block parameter
(docs/training.md: 1 x 64 wins at 2 minutes, 2 x 128 at 5, 3 x 192 at 15).

On a small dataset the tokens are capped at MAX_EPOCHS passes over the training split
(repeating data beyond ~4 epochs stops paying: Muennighoff et al. 2023), and the model is
sized for those tokens instead.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from dataclasses import dataclass, replace

import torch

from gptforge.model.config import GPTConfig
from gptforge.model.data import TokenWindows
from gptforge.model.evaluate import evaluate
from gptforge.model.gpt import GPT
from gptforge.model.optim import decay_start, make_optimizer
from gptforge.model.train_config import TrainConfig

TOKENS_PER_PARAMETER = 1
MAX_EPOCHS = 4
# Steps run untimed (allocation, first-call overheads), then timed one by one; the median
# counts, so one step slowed by another process does not shrink the whole plan.
WARM_STEPS, TIMED_STEPS = 2, 5
# Share of the remaining budget planned for; the rest absorbs checkpoints and jitter.
PLANNED_SHARE = 0.95
# Where in its flat phase a warmup-stable-decay run fixes its count a last time: late enough
# for hundreds of its own steps to time, early enough that the count may still shrink by a
# quarter without moving the decay's start into the steps already taken.
DECAY_REPLAN_SHARE = 0.75
# Share of a budgeted run's time its evaluations take when the interval is not given: at the
# fixed 50 steps they took ~20% of a 2-minute gpt2 run on 2 cores (docs/training.md).
EVAL_SHARE = 0.1
# ... but no more often than this: each evaluation also logs and may write the best weights.
MIN_EVAL_INTERVAL = 10
# The ladder `size_for_budget` chooses from: depth d, width 64 x d (64-wide heads).
LADDER_DEPTHS = (1, 2, 3, 4, 6, 8, 12, 16)


@dataclass(frozen=True)
class Speed:
    """Seconds per optimizer step and per evaluation of one model on this machine."""

    step_s: float
    eval_s: float


@dataclass(frozen=True)
class Plan:
    """What the budget buys: the settings to train with and why, for the log."""

    cfg: TrainConfig
    reason: str


def ladder(max_context: int) -> list[GPTConfig]:
    """Models from 1 block of 64 wide to 16 blocks of 1024, context growing with depth (and
    at most `max_context`, which the data must be able to fill)."""
    shapes = []
    for depth in LADDER_DEPTHS:
        context = 128 if depth <= 2 else 256 if depth <= 6 else 512 if depth <= 8 else 1024
        shapes.append(
            GPTConfig(
                block_size=min(context, max_context),
                n_layer=depth,
                n_head=depth,
                n_embd=64 * depth,
            )
        )
    return shapes


def block_parameters(config: GPTConfig) -> int:
    """Parameters of the transformer blocks (attention, MLP, norms): what TOKENS_PER_PARAMETER
    counts here."""
    c = config.n_embd
    per_layer = 12 * c * c + 13 * c if config.bias else 12 * c * c + 2 * c
    return config.n_layer * per_layer


def measure(
    cfg: TrainConfig,
    model: GPT,
    train: TokenWindows,
    val: TokenWindows | None,
    step_fn,
    device: torch.device,
) -> Speed:
    """Time WARM_STEPS + TIMED_STEPS optimizer steps (the median of the timed ones) and one
    evaluation on a copy of `model` (its weights and any optimizer state are thrown away
    after)."""
    probe = copy.deepcopy(model).train()
    optimizer = make_optimizer(probe, cfg, device)
    batches = [
        train.batch(cfg.seed, step, micro * cfg.batch_size, cfg.batch_size)
        for step in range(WARM_STEPS + TIMED_STEPS)
        for micro in range(cfg.grad_accum)
    ]
    times = []
    for step in range(WARM_STEPS + TIMED_STEPS):
        _sync(device)
        started = time.perf_counter()
        micro = batches[step * cfg.grad_accum : (step + 1) * cfg.grad_accum]
        step_fn(probe, optimizer, micro)
        _sync(device)
        times.append(time.perf_counter() - started)
    step_s = statistics.median(times[WARM_STEPS:])
    eval_s = 0.0
    if val is not None:
        started = time.perf_counter()
        evaluate(probe, val, cfg.eval_tokens, device)
        eval_s = time.perf_counter() - started
    return Speed(step_s=step_s, eval_s=eval_s)


def steps_for(remaining_s: float, speed: Speed, eval_interval: int) -> int:
    """Steps that fit `remaining_s` with an evaluation every `eval_interval` steps and one at
    the end: n x step + (n / eval_interval + 1) x eval <= PLANNED_SHARE x remaining."""
    usable = PLANNED_SHARE * remaining_s - speed.eval_s
    per_step = speed.step_s + speed.eval_s / eval_interval
    return max(1, math.floor(usable / per_step))


def eval_interval_for(speed: Speed) -> int:
    """Steps between evaluations that make them about EVAL_SHARE of the time:
    eval = EVAL_SHARE x (interval x step + eval), and at least MIN_EVAL_INTERVAL."""
    interval = math.ceil(speed.eval_s * (1 - EVAL_SHARE) / (EVAL_SHARE * speed.step_s))
    return max(MIN_EVAL_INTERVAL, interval)


def replan_at(cfg: TrainConfig) -> int:
    """The step after which a budgeted run fixes its count again: the end of warmup, and
    enough steps to time (WARM_STEPS untimed + TIMED_STEPS)."""
    return max(cfg.warmup_steps, WARM_STEPS + TIMED_STEPS)


def decay_replan_at(cfg: TrainConfig, step: int) -> int | None:
    """After a re-plan at `step`, the step where the run fixes its count a last time:
    DECAY_REPLAN_SHARE of the way to its decay (warmup-stable-decay only: under a cosine
    schedule every step's rate depends on the count), or None."""
    if not cfg.model.uses("wsd"):
        return None
    at = math.floor(DECAY_REPLAN_SHARE * decay_start(cfg.max_steps))
    return at if at > step else None


def flat_through(step: int) -> int:
    """The fewest steps whose warmup-stable-decay schedule is still flat at `step`."""
    steps = step
    while decay_start(steps) < step:
        steps += 1
    return steps


def replanned(
    cfg: TrainConfig,
    step: int,
    speed: Speed,
    remaining_s: float,
    train_tokens: int,
    interval_from_speed: bool,
) -> TrainConfig:
    """`cfg` with the step count that fits `remaining_s` after `step` at `speed` (measured on
    the run's own steps); what was derived from the first count (warmup, learning-rate
    floor, log cadence) stays as the steps already taken used it, and a warmup-stable-decay
    schedule stays flat through `step` (the rate of no step taken changes). An evaluation
    interval the budget chose is chosen again from `speed` while no evaluation has run yet:
    the first, from a cold process's slow steps, evaluated too often (every 74 steps where
    105 kept evaluations at EVAL_SHARE)."""
    interval = cfg.eval_interval
    if interval_from_speed and step < interval:
        interval = eval_interval_for(speed)
    steps = step + steps_for(remaining_s, speed, interval)
    if cfg.size_for_budget:
        steps = min(steps, epoch_capped_steps(cfg, train_tokens))
    if cfg.model.uses("wsd"):
        steps = max(steps, flat_through(step))
    return replace(cfg, max_steps=steps, eval_interval=interval, derived=frozenset())


def sized(
    cfg: TrainConfig, split_tokens: tuple[int, int], remaining_s: float, reference: Speed
) -> Plan:
    """The largest ladder model this budget trains on >= TOKENS_PER_PARAMETER tokens per block
    parameter, estimated from `reference` (the speed of `cfg.model`, measured) scaled by
    training FLOPs per token; the tokens are capped at MAX_EPOCHS passes over the data."""
    with torch.device("meta"):
        reference_flops = GPT(cfg.model).flops_per_token()
    tokens_per_s = cfg.tokens_per_step_for() / reference.step_s
    flops_per_s = reference_flops * tokens_per_s
    train_tokens, val_tokens = split_tokens
    data_cap = MAX_EPOCHS * train_tokens
    fillable = min(train_tokens, val_tokens or train_tokens) - 1
    max_context = 2 ** int(math.log2(max(fillable, 64)))
    chosen, tokens = None, 0.0
    for shape in ladder(min(1024, max_context)):
        with torch.device("meta"):
            flops = GPT(shape).flops_per_token()
        affordable = min(PLANNED_SHARE * remaining_s * flops_per_s / flops, data_cap)
        if chosen is None or affordable >= TOKENS_PER_PARAMETER * block_parameters(shape):
            chosen, tokens = shape, affordable
    assert chosen is not None  # the ladder is never empty
    limit = f"the data: {MAX_EPOCHS} epochs" if tokens >= data_cap else "the budget"
    reason = (
        f"{chosen.n_layer} layers x {chosen.n_embd} wide, context {chosen.block_size}: "
        f"{block_parameters(chosen):,} block parameters, ~{tokens:,.0f} training tokens "
        f"affordable (limited by {limit}; the rule wants >= {TOKENS_PER_PARAMETER} per "
        f"block parameter), from {tokens_per_s:,.0f} tokens/s measured on the "
        f"{cfg.model.n_layer}x{cfg.model.n_embd} model"
    )
    model = replace(
        chosen,
        vocab_size=cfg.model.vocab_size,
        dropout=cfg.model.dropout,
        **cfg.model.recipe_settings(),
    )
    return Plan(cfg=replace(cfg, model=model), reason=reason)


def epoch_capped_steps(cfg: TrainConfig, train_tokens: int) -> int:
    """The steps of MAX_EPOCHS passes over the training split at this batch shape."""
    return max(1, math.ceil(MAX_EPOCHS * train_tokens / cfg.tokens_per_step_for()))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
