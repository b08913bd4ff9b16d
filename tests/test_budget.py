"""Training for a time budget (`model.budget`): the step count is fixed from this machine's
measured speed before the first step, once more from the run's own steps at the end of
warmup and (warmup-stable-decay) a last time before the decay, the model is sized for the
budget when none is given, and a stopped budgeted run resumes to the same plan."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
from train_helpers import MICRO, micro_config

from gptforge.flows.train_settings import train_config
from gptforge.model import budget
from gptforge.model import train as train_module
from gptforge.model.budget import Speed, block_parameters, steps_for
from gptforge.model.checkpoint import TRAINER_STATE, resolve_checkpoint
from gptforge.model.config import GPTConfig, preset
from gptforge.model.interrupt import StopRequest, TrainingInterrupted
from gptforge.model.optim import decay_start, lr_at
from gptforge.model.train import Callbacks, train
from gptforge.model.train_config import TrainConfig


def test_the_step_count_leaves_room_for_every_evaluation() -> None:
    """n steps of 1 s and an evaluation of 5 s every 10 steps plus one at the end fit 95% of
    100 s: n + 5 (n / 10 + 1) <= 95, so n = 60."""
    assert steps_for(100.0, Speed(step_s=1.0, eval_s=5.0), eval_interval=10) == 60
    assert steps_for(1.0, Speed(step_s=10.0, eval_s=0.0), eval_interval=10) == 1, "at least one"


def test_evaluations_take_a_tenth_of_a_budget_unless_their_interval_is_given() -> None:
    """Steps of 0.3 s and evaluations of 4 s: every 120 steps, 4 s of each 40 s evaluate."""
    speed = Speed(step_s=0.3, eval_s=4.0)
    interval = budget.eval_interval_for(speed)
    assert interval == pytest.approx(120, abs=1), "rounded up"
    share = speed.eval_s / (interval * speed.step_s + speed.eval_s)
    assert share == pytest.approx(budget.EVAL_SHARE, rel=0.01)
    cheap = budget.eval_interval_for(Speed(step_s=0.3, eval_s=0.0))
    assert cheap == budget.MIN_EVAL_INTERVAL, "each evaluation also logs and saves the best"


def test_a_bigger_budget_buys_a_bigger_model_and_small_data_caps_it(tmp_path: Path) -> None:
    cfg = TrainConfig(data_dir=tmp_path, out_dir=tmp_path, model=MICRO, time_budget=60)
    speed = Speed(step_s=0.1, eval_s=1.0)
    plenty = (10**9, 10**7)

    def layers(budget_s: float, tokens: tuple[int, int] = plenty) -> int:
        return budget.sized(cfg, tokens, budget_s, speed).cfg.model.n_layer

    sizes = [layers(seconds) for seconds in (60, 600, 6000, 60000)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    assert layers(60000, (5_000, 1_000)) == 1, "4 epochs of 5,000 tokens buy the smallest"
    plan = budget.sized(cfg, plenty, 60000, speed)  # affords more than the smallest
    tokens = float(plan.reason.split("~")[1].split(" ")[0].replace(",", ""))
    assert plan.cfg.model.n_layer > 1
    assert tokens >= budget.TOKENS_PER_PARAMETER * block_parameters(plan.cfg.model)


def test_the_ladder_fits_the_context_to_the_data() -> None:
    assert {shape.block_size for shape in budget.ladder(max_context=64)} == {64}
    assert all(isinstance(shape, GPTConfig) for shape in budget.ladder(1024))


def test_a_budgeted_run_plans_its_steps_and_records_the_plan(
    token_data: Path, tmp_path: Path
) -> None:
    cfg = micro_config(
        token_data, tmp_path / "run", time_budget=6.0, eval_interval=5, warmup_steps=None
    )
    result = train(cfg)
    saved = json.loads((resolve_checkpoint(result.checkpoint) / TRAINER_STATE).read_text())
    planned = saved["settings"]["max_steps"]
    assert planned >= 1 and result.steps <= planned
    first = int(result.budget_plan.split(" steps of ")[0])
    assert result.budget_plan.endswith(f": {planned} steps (was {first})"), "re-planned once"
    assert saved["settings"]["warmup_steps"] == min(100, first // 10), "as the first plan"
    assert saved["settings"]["eval_interval"] == 5, "given, so kept"


def test_time_spent_before_training_counts_against_the_budget(
    token_data: Path, tmp_path: Path
) -> None:
    """`gptforge train` starts the clock at the command's start: with 6 s of a 6 s budget
    gone before training, the run takes one step, evaluates and checkpoints."""
    cfg = micro_config(token_data, tmp_path / "run", time_budget=6.0, eval_interval=None)
    result = train(cfg, started=time.monotonic() - 6.0)
    assert result.steps == 1 and result.best is not None and result.best["step"] == 1


def test_a_budgeted_run_chooses_its_evaluation_interval(token_data: Path, tmp_path: Path) -> None:
    cfg = micro_config(token_data, tmp_path / "run", time_budget=6.0, eval_interval=None)
    result = train(cfg)
    saved = json.loads((resolve_checkpoint(result.checkpoint) / TRAINER_STATE).read_text())
    interval = saved["settings"]["eval_interval"]
    assert interval >= budget.MIN_EVAL_INTERVAL and f"every {interval} steps" in result.budget_plan
    evaluated = [h["step"] for h in result.history if "val_loss" in h]
    assert evaluated == [*range(interval, result.steps, interval), result.steps]


def test_a_wrong_measurement_is_corrected_by_the_runs_own_steps(
    token_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Measured 10x too slow (a busy moment, a cold process), the first plan would end the
    run early; at the end of warmup the run's own steps fix the count again."""
    monkeypatch.setattr(budget, "measure", lambda *args: Speed(step_s=0.3, eval_s=0.0))
    cfg = micro_config(
        token_data, tmp_path / "run", time_budget=6.0, eval_interval=100, checkpoint_interval=100
    )
    replans = []

    class Replans(Callbacks):
        def on_replan(self, step: int, max_steps: int, plan: str) -> None:
            replans.append((step, max_steps))

    result = train(cfg, Replans())
    first = int(result.budget_plan.split(" steps of ")[0])
    assert first <= 0.95 * 6.0 / 0.3
    assert [step for step, _ in replans] == [budget.WARM_STEPS + budget.TIMED_STEPS]
    assert result.steps > first and replans[0][1] > first


def test_an_interval_chosen_from_slow_steps_is_chosen_again_from_the_runs_own(
    token_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Measured at 0.3 s a step (a cold process), evaluations of 1 s would come every ~30
    steps to stay a tenth of the time; the run's own steps are far faster, so before its
    first evaluation the run spaces them out again, and evaluates on the new interval."""
    monkeypatch.setattr(budget, "measure", lambda *args: Speed(step_s=0.3, eval_s=1.0))
    cfg = micro_config(
        token_data, tmp_path / "run", time_budget=6.0, eval_interval=None, checkpoint_interval=100
    )
    result = train(cfg)
    first = int(result.budget_plan.split(" every ")[1].split(" steps")[0])
    saved = json.loads((resolve_checkpoint(result.checkpoint) / TRAINER_STATE).read_text())
    interval = saved["settings"]["eval_interval"]
    assert first == budget.eval_interval_for(Speed(step_s=0.3, eval_s=1.0))
    assert interval > first and result.budget_plan.endswith(
        f", evaluations every {interval} steps (was {first})"
    )
    evaluated = [h["step"] for h in result.history if "val_loss" in h]
    assert evaluated == [*range(interval, result.steps, interval), result.steps]


MODERN_MICRO = replace(MICRO, recipe="modern")


def test_the_last_plan_changes_the_rate_of_no_step_taken(tmp_path: Path) -> None:
    """Three quarters into the flat phase of 400 planned steps, a run twice as fast plans more
    steps, a far slower one fewer; but never so few that the decay would start before the
    step the run is at: the rates of the steps taken stay what they were."""
    cfg = TrainConfig(
        data_dir=tmp_path, out_dir=tmp_path, model=MODERN_MICRO, max_steps=400, time_budget=60
    )
    at = budget.decay_replan_at(cfg, budget.replan_at(cfg))
    assert at == int(budget.DECAY_REPLAN_SHARE * decay_start(400))
    remaining = 60.0 * (1 - at / 400)
    counts = {}
    for step_s in (0.075, 0.15, 1.5):  # twice as fast, as planned, ten times as slow
        again = budget.replanned(cfg, at, Speed(step_s, 0.0), remaining, 10**9, False)
        assert [lr_at(s, again) for s in range(at + 1)] == [lr_at(s, cfg) for s in range(at + 1)]
        counts[step_s] = again.max_steps
    assert counts[0.075] > 400 > counts[0.15] > counts[1.5] == budget.flat_through(at)
    assert decay_start(counts[1.5]) == at, "the decay starts at the step the run is at"
    assert budget.decay_replan_at(replace(cfg, model=MICRO), 7) is None, "cosine: no last plan"


class FakeClock:
    """What `model.train` reads as time.monotonic and time.perf_counter: it moves only when a
    training step runs, so a test of the budget does not depend on this machine's load."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    perf_counter = monotonic


@pytest.mark.parametrize("recipe", ["modern", "gpt2"])
def test_a_run_that_slows_down_still_decays_to_the_end_before_the_deadline(
    token_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recipe: str
) -> None:
    """Steps of 0.05 s, then 30% slower from the end of warmup on (another job started): the
    first two plans count on 0.05 s, 114 steps that would need ~7 s of a 6 s budget. The
    warmup-stable-decay run fixes its count a last time in its flat phase from its own
    slower steps and ends its decay on time; under gpt2's cosine, whose every step depends
    on the count, the deadline cuts the schedule short."""
    clock = FakeClock()
    monkeypatch.setattr(train_module, "time", clock)
    monkeypatch.setattr(budget, "measure", lambda *args: Speed(step_s=0.05, eval_s=0.0))
    real_step = train_module.train_step
    taken = []

    def step_on_the_clock(*args, **kwargs):
        taken.append(1)
        clock.now += 0.05 if len(taken) <= budget.WARM_STEPS + budget.TIMED_STEPS else 0.065
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", step_on_the_clock)
    replans = []

    class Replans(Callbacks):
        def on_replan(self, step: int, max_steps: int, plan: str) -> None:
            replans.append((step, max_steps))

    model = MODERN_MICRO if recipe == "modern" else MICRO
    cfg = micro_config(
        token_data, tmp_path / "run", model=model, time_budget=6.0, eval_interval=1000,
        checkpoint_interval=1000, log_interval=1000,
    )  # fmt: skip
    result = train(cfg, Replans())
    (first_step, first), *rest = replans
    assert first_step == budget.WARM_STEPS + budget.TIMED_STEPS and first * 0.065 > 6.0
    assert clock.now - 1000.0 <= 6.0 + 0.065, "the deadline holds either way"
    if recipe == "gpt2":
        assert rest == [] and result.steps < first, "cut short by the deadline"
        return
    [(last_step, last)] = rest
    assert last_step == budget.decay_replan_at(replace(cfg, max_steps=first), first_step)
    assert last < first and result.steps == last, "planned fewer steps and took them all"
    assert result.budget_plan.endswith(f": {last} steps (was {first})")


def test_without_a_model_the_budget_chooses_one(token_data: Path, tmp_path: Path) -> None:
    cfg = micro_config(token_data, tmp_path / "run", time_budget=6.0, model=None)
    assert cfg.size_for_budget
    result = train(cfg)
    assert "model: " in result.budget_plan and "block parameters" in result.budget_plan


def test_only_the_modern_recipe_is_sized(tmp_path: Path) -> None:
    """`--recipe gpt2` keeps the size it always had; the budget sizes the default recipe."""
    sized = train_config(str(tmp_path), str(tmp_path / "out"), time_budget=60)
    assert sized.size_for_budget and sized.model.recipe == "modern"
    gpt2 = train_config(str(tmp_path), str(tmp_path / "out"), recipe="gpt2", time_budget=60)
    assert not gpt2.size_for_budget and gpt2.model == preset("tiny", recipe="gpt2")


@pytest.mark.parametrize("stop_at", [3, 9], ids=["before-the-replan", "after-the-replan"])
def test_a_stopped_budgeted_run_resumes_to_the_steps_it_planned(
    token_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop_at: int
) -> None:
    """No second measurement: the resumed run takes model, step count, warmup and evaluation
    interval from its checkpoint (the first plan's, or the re-planned count from step 7 on).
    (The measurement is fixed here so that the first plan has steps to stop in, however busy
    the machine: at most 0.95 x 8 s / 0.35 s = 21 steps, less what opening the data took.)"""
    monkeypatch.setattr(budget, "measure", lambda *args: Speed(step_s=0.35, eval_s=0.0))
    out = tmp_path / "run"
    stop = StopRequest()

    class StopThere(Callbacks):
        def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
            if step == stop_at:
                stop.set()

    settings = dict(time_budget=8.0, eval_interval=None, checkpoint_interval=100, warmup_steps=None)
    with pytest.raises(TrainingInterrupted):
        train(micro_config(token_data, out, **settings), StopThere(), stop)
    planned = json.loads((resolve_checkpoint(out) / TRAINER_STATE).read_text())["settings"]
    assert stop_at < planned["max_steps"] and (planned["max_steps"] <= 21 or stop_at > 7)
    resumed = train(micro_config(token_data, out, **settings, resume=True))
    assert resumed.steps == planned["max_steps"] and resumed.budget_plan == ""
    finished = json.loads((resolve_checkpoint(out) / TRAINER_STATE).read_text())["settings"]
    assert finished["warmup_steps"] == planned["warmup_steps"]
    assert finished["eval_interval"] == planned["eval_interval"] == budget.MIN_EVAL_INTERVAL
