"""DistributedDataParallel on 2 CPU processes (gloo) through torchrun, the real launcher:
the same result as one process with their combined batch, an exact resume with the same
number of processes, a one-line refusal to resume with another number, and one time-budget
plan for both processes."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_helpers import micro_config, weights

from gptforge.model import budget
from gptforge.model.checkpoint import CHECKPOINTS, LATEST, read_trainer_state, resolve_checkpoint
from gptforge.model.train import train

pytestmark = pytest.mark.slow

TESTS = Path(__file__).parent
# The micro model of train_helpers.MICRO and ddp_worker's settings, as CLI options.
MICRO_CLI = ["--model-overrides", "block_size=32", "n_layer=2", "n_head=2", "n_embd=32"]
MICRO_CLI += ["--recipe", "gpt2", "--max-steps", "5", "--batch-size", "2", "--precision", "fp32"]


def torchrun(data: Path, out: Path, *args: str) -> None:
    """ddp_worker.py on 2 gloo processes: 5 steps of the micro model, checkpoints at 3 and 5
    (or a time budget)."""
    env = os.environ | {"PYTHONPATH": f"{TESTS}{os.pathsep}{TESTS.parent}", "OMP_NUM_THREADS": "1"}
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        + [str(TESTS / "ddp_worker.py"), str(data), str(out), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]


@pytest.fixture(scope="module")
def ddp_out(token_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "out"
    torchrun(token_data, out)
    return out


def test_two_gloo_processes_match_one_process_with_their_combined_batch(
    token_data: Path, ddp_out: Path, tmp_path: Path
) -> None:
    single = train(micro_config(token_data, tmp_path / "single", max_steps=5, batch_size=4))
    a, b = weights(single.checkpoint), weights(ddp_out / CHECKPOINTS / "step_0000005")
    # Summation order differs (two halves all-reduced vs one batch), and Adam magnifies that
    # noise where a gradient is near zero: up to ~1.6e-5 seen, against an update of ~1e-3
    # per step (learning rate 1e-3) that a wrong batch or a missed all-reduce would change.
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-4)
    assert read_trainer_state(ddp_out / CHECKPOINTS / "step_0000005")["world_size"] == 2


def test_resume_with_the_same_processes_continues_exactly(
    token_data: Path, ddp_out: Path, tmp_path: Path
) -> None:
    """Back to the step-3 checkpoint, then `--resume` on 2 processes: steps 4 and 5 again."""
    out = tmp_path / "out"
    shutil.copytree(ddp_out, out)
    shutil.rmtree(out / CHECKPOINTS / "step_0000005")
    (out / CHECKPOINTS / LATEST).write_text("step_0000003\n")

    torchrun(token_data, out, "--resume")

    state = read_trainer_state(out / CHECKPOINTS / "step_0000005")
    assert state["step"] == 5 and state["world_size"] == 2
    assert [h["step"] for h in state["history"]] == [1, 2, 3, 4, 5]
    assert all(math.isfinite(h["train_loss"]) for h in state["history"])
    resumed, straight = (
        weights(out / CHECKPOINTS / "step_0000005"),
        weights(ddp_out / CHECKPOINTS / "step_0000005"),
    )
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=0)


def test_resume_with_another_number_of_processes_is_one_line(
    token_data: Path, ddp_out: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(ddp_out, out)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("gptforge")), "train", "--data", str(token_data)]
        + ["--out", str(out), "--resume", *MICRO_CLI],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "trained by 2 processes, this run has 1" in lines[0]
    assert "step_0000005" in lines[0] and "--nproc_per_node=2" in lines[0]


def test_a_time_budget_gives_both_processes_one_plan(token_data: Path, tmp_path: Path) -> None:
    """Both ranks plan, and re-plan from their own steps, from the means of what each measured,
    so they stop at the same step (a rank planning one step more would wait forever)."""
    torchrun(token_data, tmp_path / "out", "--budget", "6")
    plans = [(tmp_path / f"plan.{rank}").read_text() for rank in (0, 1)]
    assert "measured in the run" in plans[0] and plans[0] == plans[1], plans
    state = read_trainer_state(resolve_checkpoint(tmp_path / "out"))
    assert state["world_size"] == 2 and state["step"] > budget.WARM_STEPS + budget.TIMED_STEPS
