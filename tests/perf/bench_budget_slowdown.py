"""A time-budgeted run on a machine that turns busy halfway: does the schedule still end?

    .venv/bin/python tests/perf/bench_budget_slowdown.py [--budget 300] [--busy-at 0.3]

Trains what `gptforge train --time-budget S` trains with nothing else given (the default
recipe, sized for the budget) on bench_recipe.py's 30 MB corpus, twice: as the budget plans
it now (its count fixed at the end of warmup and a last time in the flat phase of its
warmup-stable-decay schedule, model/budget.py) and, as the peer, with the count fixed at the
end of warmup only (gptforge before 2026-12-03). In each run one busy loop (`sh -c 'while :;
do :; done'`, what another job on a laptop does) starts at `--busy-at` of the budget and
runs to the end, so the steps slow down after both runs planned their count. Prints per run
the count planned last, the steps taken, whether the deadline cut the decay short, the wall
time and the best val loss / bits per byte, then the difference.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from unittest.mock import patch

from bench_recipe import DEFAULT_DATA, corpus, cpu_name, run, warm_up

from gptforge.model import budget

BUSY = "while :; do :; done"


@contextmanager
def busy_after(seconds: float):
    """One busy loop from `seconds` from now until the block ends."""
    loops: list[subprocess.Popen] = []
    timer = threading.Timer(seconds, lambda: loops.append(subprocess.Popen(["sh", "-c", BUSY])))
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        for loop in loops:
            loop.kill()
            loop.wait()


def last_count(plan: str) -> int:
    """The step count the plan fixed last: the last re-plan's, or the first plan's."""
    replans = re.findall(r": (\d+) steps \(was", plan)
    return int(replans[-1]) if replans else int(plan.split(" steps of ")[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=300.0)
    parser.add_argument("--busy-at", type=float, default=0.3, help="share of the budget")
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="bench_recipe.py's corpus (built there if missing)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: a 20 s budget")
    args = parser.parse_args()
    if args.quick:
        args.budget = 20.0
    data = corpus(args.data)
    shape = argparse.Namespace(preset="tiny", precision="fp32", eval_interval=None)
    warm_up(data, shape)
    print(f"{cpu_name()}, budget {args.budget:g} s, a busy loop from {args.busy_at:.0%} of it")
    sides = {
        "warmup only (peer)": lambda cfg, step: None,
        "warmup + before the decay": budget.decay_replan_at,
    }
    rows = {}
    for name, last_plan in sides.items():
        with (
            patch.object(budget, "decay_replan_at", last_plan),
            busy_after(args.busy_at * args.budget),
        ):
            r = run(data, "sized", shape, args.budget)
        rows[name] = r
        print(f"{name}: {r['plan']}", flush=True)
    print("\n| count fixed at | planned last | steps taken | decay ended | wall s | "
          "best val_loss | val_bpb |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        planned = last_count(r["plan"])
        print(
            f"| {name} | {planned} | {r['steps']} | {'yes' if r['steps'] >= planned else 'no'} "
            f"| {r['wall']:.1f} | {r['val_loss']:.4f} | {r['val_bpb']:.4f} |"
        )
    peer, ours = rows.values()
    print(f"\nval_loss difference (ours - peer): {ours['val_loss'] - peer['val_loss']:+.4f} nats")
    return 0


if __name__ == "__main__":
    sys.exit(main())
