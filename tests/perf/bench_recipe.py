"""The gpt2 recipe against the modern one at equal wall-clock time, on a real corpus.

Run:  .venv/bin/python tests/perf/bench_recipe.py [--budget 120 ...] [--rounds 2]
          [--preset tiny] [--precision fp32] [--data DIR] [--recipes gpt2 modern]

Builds (once, into --data) a corpus of ~6.5 MB of source text already on this machine: the
Python standard library's top-level modules plus its asyncio and email packages, ingested
as `gptforge ingest` does. Then trains each recipe with `model.train.train` and the same
`time_budget`, preset and precision, alternating recipes (A B A B) so that load from other
processes falls on both alike, and prints per run: best val_loss and val_bpb (the fixed
evaluation, model/evaluate.py), steps, wall seconds, the 1-minute load average before and
after; then medians and the ratios modern/gpt2, and how long the modern run took to reach
the gpt2 run's best val_loss (first evaluation at or below it). Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from gptforge.model.config import RECIPES, preset
from gptforge.model.train import Callbacks, train
from gptforge.model.train_config import TrainConfig
from gptforge.pipeline.config import IngestConfig
from gptforge.pipeline.ingest import ingest

STDLIB = Path(os.__file__).parent


class Clock(Callbacks):
    """Seconds since the run started at each evaluation, with its val_loss."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.evaluations: list[tuple[float, float]] = []

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if "val_loss" in metrics:
            self.evaluations.append((time.monotonic() - self.started, metrics["val_loss"]))


def corpus(data: Path) -> Path:
    if (data / "manifest.json").exists():
        return data
    sources = (*sorted(STDLIB.glob("*.py")), STDLIB / "asyncio", STDLIB / "email")
    ingest(IngestConfig(sources=sources, out=data, workers=1))
    return data


def run(data: Path, recipe: str, args: argparse.Namespace, budget: float) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(
            data_dir=data,
            out_dir=Path(out),
            model=preset(args.preset, recipe=recipe),
            time_budget=budget,
            precision=args.precision,
            device="cpu",
            eval_interval=args.eval_interval,
        )
        load_before = os.getloadavg()[0]
        clock = Clock()
        result = train(cfg, clock)
        wall = time.monotonic() - clock.started
        assert result.best is not None, "the corpus has a val split"
    return {
        "recipe": recipe,
        "budget": budget,
        "val_loss": result.best["val_loss"],
        "val_bpb": result.best["val_bpb"],
        "steps": result.steps,
        "wall": wall,
        "load": (load_before, os.getloadavg()[0]),
        "evaluations": clock.evaluations,
    }


def time_to_reach(evaluations: list[tuple[float, float]], target: float) -> float | None:
    return next((t for t, loss in evaluations if loss <= target), None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, nargs="+", default=[120.0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--eval-interval", type=int, default=50)
    parser.add_argument("--recipes", nargs=2, default=["gpt2", "modern"], choices=RECIPES)
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "bench-recipe")
    args = parser.parse_args()
    data = corpus(args.data)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, data {data}")
    base, other = args.recipes
    for budget in args.budget:
        results: list[dict] = []
        for round_ in range(args.rounds):
            for recipe in (base, other):
                r = run(data, recipe, args, budget)
                results.append(r)
                print(
                    f"budget {budget:g}s round {round_} {recipe:7s} val_loss {r['val_loss']:.4f} "
                    f"val_bpb {r['val_bpb']:.4f} steps {r['steps']} wall {r['wall']:.1f}s "
                    f"load {r['load'][0]:.2f}->{r['load'][1]:.2f}",
                    flush=True,
                )
        pairs = list(zip(results[::2], results[1::2], strict=True))
        for a, b in pairs:
            reach = time_to_reach(b["evaluations"], a["val_loss"])
            shown = f"{reach / a['wall']:.2f}x" if reach is not None else "never"
            print(
                f"  pair: {other}-{base} val_loss {b['val_loss'] - a['val_loss']:+.4f}, "
                f"bpb ratio {b['val_bpb'] / a['val_bpb']:.3f}, {other} reaches {base}'s best "
                f"val_loss in {shown} of {base}'s time"
            )
        for recipe in (base, other):
            loss = statistics.median(r["val_loss"] for r in results if r["recipe"] == recipe)
            bpb = statistics.median(r["val_bpb"] for r in results if r["recipe"] == recipe)
            print(f"  median {recipe:7s} val_loss {loss:.4f} val_bpb {bpb:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
