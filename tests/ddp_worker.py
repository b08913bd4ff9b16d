"""Run by torchrun in test_train_ddp.py: the same training entry point on every rank.

Arguments: DATA OUT [--resume | --budget SECONDS] (a budget: a fresh time-budgeted run, its
plan written to OUT/../plan.RANK, one file per rank: two processes printing to one pipe can
interleave their lines)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from train_helpers import micro_config

from gptforge.model.train import train

if __name__ == "__main__":
    data, out, options = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    if "--budget" in options:
        seconds = float(options[options.index("--budget") + 1])
        budgeted = dict(time_budget=seconds, warmup_steps=None, checkpoint_interval=1000)
        plan = train(micro_config(data, out, batch_size=2, **budgeted)).budget_plan
        (out.parent / f"plan.{os.environ['RANK']}").write_text(plan)
    else:
        train(micro_config(data, out, max_steps=5, batch_size=2, resume="--resume" in options))
