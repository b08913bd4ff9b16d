"""gpt2 against modern, and modern against itself with each change off, at equal wall-clock time.

On a real corpus: the gpt2 recipe against the modern one, or with `--ablate` modern against
itself with each of its changes switched off.

Run:  .venv/bin/python tests/perf/bench_recipe.py [--budgets 120 300] [--reps 2]
          [--preset tiny] [--precision fp32] [--data DIR] [--recipes gpt2 sized]
      .venv/bin/python tests/perf/bench_recipe.py --ablate [--budgets 120 ...] [--reps 1]
          [--variants rotary,cap15,muon+wsd,gpt2]

Builds (once, into --data) a corpus of ~30 MB (`CORPUS_BYTES`) of text already installed on
this machine, none of it ours: the Python standard library and the sources and docs of the
packages installed beside gptforge (`.py`, `.pyi`, `.md`, `.rst`, `.txt`; no tests, no
`__pycache__`, no dist-info, nothing with gptforge in its path, no file over 1 MB or not
UTF-8). Candidates are taken in the order of a hash of their relative path, which mixes
the standard library and the packages stably, until the total reaches `CORPUS_BYTES`: the
corpus is a pure function of what is installed. They are copied to `<data>-src` and
ingested from there as `gptforge ingest` does. Then trains the two `--recipes` with
`model.train.train` and the same `time_budget` and precision, alternating (A B A B) so that
load from other processes falls on both alike. The default pair is what `gptforge train
--time-budget S` trains with `--recipe gpt2` (the `tiny` preset) and with nothing given
(`sized`: the modern recipe at the size the budget chooses, model/budget.py, its measuring
included in its time); a variant is also `gpt2`, `modern` (at `--preset`), modern with changes
off (`rotary`, `rotary+muon`) or with one the ablation moved out turned back on (`rmsnorm`,
`relu2`, `softcap`, or `cap15`: a cap of 15), or modern at a ladder depth (`d3`). Prints
per run: best val_loss and val_bpb (the fixed evaluation, model/evaluate.py), steps, wall
seconds, the 1-minute load average before and after; then medians, the ratios second/first,
and how long the second took to reach the first's best val_loss (first evaluation at or below it).
Before the first measured run, 20 unmeasured steps warm the process (`warm_up`). Asserts
nothing.

`--ablate` (leave-one-out, docs/training.md "The ablation"): per budget and repetition, full
modern, then each variant of `--variants` (default: each change off, `GPTConfig.modern_off`;
then each change the ablation moved out of modern turned back on, `MOVED_CHANGES`; then gpt2;
`a+b` combines two; `sized` and ladder depths `d1`, `d2`, ... compare sizes), in reverse
order on odd repetitions.
Prints a table per budget: variant, steps, wall s, best val_loss, val_bpb, the delta of
val_loss against the same repetition's full modern (positive: turning the change off hurts,
so it earns its place) and the load; with several repetitions, medians per variant.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import sysconfig
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from gptforge.model.budget import LADDER_DEPTHS, ladder
from gptforge.model.config import (
    MODERN_CHANGES,
    MOVED_CHANGES,
    PRESETS,
    RECIPES,
    GPTConfig,
    preset,
)
from gptforge.model.train import Callbacks, train
from gptforge.model.train_config import TrainConfig
from gptforge.pipeline.config import IngestConfig
from gptforge.pipeline.ingest import ingest
from gptforge.pipeline.manifest import load_manifest

STDLIB = Path(os.__file__).parent
# The middle of the 20-40 MB of real text that issue 13 asks the benchmark to train on.
CORPUS_BYTES = 30_000_000
# Where the corpus is built and kept between runs (and read by bench_budget_slowdown.py).
DEFAULT_DATA = Path(tempfile.gettempdir()) / f"bench-recipe-{CORPUS_BYTES // 1_000_000}mb"
MAX_FILE_BYTES = 1_000_000  # larger ones are generated (stubs, tables), not written prose or code
SUFFIXES = frozenset({".py", ".pyi", ".md", ".rst", ".txt"})
# Test trees hold deliberately odd data (bad encodings, huge literals); a site-packages under
# the standard library is the base interpreter's packages, not this environment's.
LEFT_OUT_DIRS = frozenset(
    {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"}
)


class Clock(Callbacks):
    """Seconds since the run started at each evaluation, with its val_loss."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.evaluations: list[tuple[float, float]] = []

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if "val_loss" in metrics:
            self.evaluations.append((time.monotonic() - self.started, metrics["val_loss"]))


def candidates() -> list[tuple[str, Path]]:
    """(name under the staging folder, file) for every eligible file, in hashed-name order."""
    roots = {"stdlib": STDLIB, "site-packages": Path(sysconfig.get_path("purelib"))}
    found = []
    for label, root in roots.items():
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if eligible(d)]
            for name in files:
                path = Path(folder, name)
                rel = f"{label}/{path.relative_to(root).as_posix()}"
                if eligible(name) and path.suffix in SUFFIXES and "gptforge" not in rel.lower():
                    found.append((rel, path))
    return sorted(found, key=lambda item: (hashlib.sha256(item[0].encode()).digest(), item[0]))


def eligible(name: str) -> bool:
    """Not hidden (ingest would leave it out), not a test, cache or package-metadata folder."""
    return (
        not name.startswith(".")
        and name not in LEFT_OUT_DIRS
        and not name.endswith((".dist-info", ".egg-info"))
    )


def stage(staging: Path) -> tuple[int, int]:
    """Copy candidates into `staging` until `CORPUS_BYTES`; returns (files, bytes)."""
    files = total = 0
    for rel, path in candidates():
        if total >= CORPUS_BYTES:
            break
        content = path.read_bytes()
        if not 0 < len(content) <= MAX_FILE_BYTES:
            continue
        try:
            content.decode("utf-8")
        except UnicodeDecodeError:
            continue
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).write_bytes(content)
        files, total = files + 1, total + len(content)
    return files, total


def corpus(data: Path) -> Path:
    """The dataset in `data`, built from the staged copy `<data>-src` unless already there."""
    if not (data / "manifest.json").exists():
        staging = data.parent / f"{data.name}-src"
        shutil.rmtree(staging, ignore_errors=True)  # a half-staged copy from an interrupted run
        started = time.monotonic()
        files, total = stage(staging)
        staged = time.monotonic()
        ingest(IngestConfig(sources=(staging,), out=data, workers=2))
        print(
            f"corpus: {files} files, {total / 1e6:.1f} MB staged in {staged - started:.1f} s, "
            f"ingested in {time.monotonic() - staged:.1f} s",
            flush=True,
        )
    splits = load_manifest(data)["splits"]
    print(f"corpus: {splits['train']['tokens']} train / {splits['val']['tokens']} val tokens")
    return data


def depth_of(variant: str) -> int | None:
    """3 for `d3`, a ladder depth (model/budget.py); None for any other variant."""
    return int(variant[1:]) if variant[:1] == "d" and variant[1:].isdigit() else None


def cap_of(part: str) -> float | None:
    """15.0 for `cap15`, a logit cap; None for anything else."""
    number = part[3:]
    return float(number) if part[:3] == "cap" and number.replace(".", "", 1).isdigit() else None


def changes_of(variant: str) -> dict[str, object]:
    """The GPTConfig fields of a `+`-joined variant over modern: a name of MODERN_CHANGES
    turned off (`rotary`), a moved change turned on (`rmsnorm`, `relu2`, `softcap`: the
    value MOVED_CHANGES gives it), or a logit cap (`cap15`)."""
    off, fields = [], {}
    for part in variant.split("+"):
        if part in MODERN_CHANGES:
            off.append(part)
        elif part in MOVED_CHANGES:
            name, _, on = MOVED_CHANGES[part]
            fields[name] = on
        else:
            fields["logit_cap"] = cap_of(part)
    return fields | {"modern_off": tuple(off)}


def shape(preset_name: str, **changes: object) -> GPTConfig:
    """A preset, or a ladder depth (`d3`) shaped as the time budget sizes it, with `changes`
    applied: `--preset d3 --ablate` ablates what a budget that picks 3 layers trains."""
    if (depth := depth_of(preset_name)) is not None:
        return replace(next(s for s in ladder(1024) if s.n_layer == depth), **changes)
    return preset(preset_name, **changes)


def model_for(variant: str, preset_name: str) -> GPTConfig | None:
    """`gpt2`, `modern`, modern with changes (`rotary`, `rotary+relu2`, `cap15`: `changes_of`),
    at a ladder depth (`d3`: model/budget.py's shape of 3 layers), or `sized`: no model given,
    so the time budget chooses it, as `gptforge train --time-budget S` with nothing else does."""
    if variant == "sized":
        return None
    if variant in RECIPES:
        return shape(preset_name, recipe=variant)
    if depth_of(variant) is not None:
        return shape(variant)
    return shape(preset_name, recipe="modern", **changes_of(variant))


def run(data: Path, variant: str, args: argparse.Namespace, budget: float) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(
            data_dir=data,
            out_dir=Path(out),
            model=model_for(variant, args.preset),
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
        "recipe": variant,
        "budget": budget,
        "val_loss": result.best["val_loss"],
        "val_bpb": result.best["val_bpb"],
        "steps": result.steps,
        "wall": wall,
        "load": (load_before, os.getloadavg()[0]),
        "evaluations": clock.evaluations,
        "plan": result.budget_plan,
    }


def warm_up(data: Path, args: argparse.Namespace) -> None:
    """Train a few steps, unmeasured, before the first measured run: a process's first run
    otherwise times its steps while caches and kernels are cold (0.53 s against 0.36 s a step
    at 2 x 128), plans a shorter evaluation interval from them and ends early, a handicap
    for whichever variant comes first."""
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(
            data_dir=data,
            out_dir=Path(out),
            model=shape(args.preset, recipe="modern"),
            max_steps=20,
            eval_interval=10,
            precision=args.precision,
            device="cpu",
        )
        train(cfg, Callbacks())


def time_to_reach(evaluations: list[tuple[float, float]], target: float) -> float | None:
    return next((t for t, loss in evaluations if loss <= target), None)


def ablation(data: Path, args: argparse.Namespace) -> None:
    """Full modern, each variant, in alternating order; one table per budget."""
    variants = ["modern", *args.variants]
    for budget in args.budgets:
        results: list[dict] = []
        for rep in range(args.reps):
            for variant in variants if rep % 2 == 0 else variants[::-1]:
                r = run(data, variant, args, budget) | {"rep": rep}
                results.append(r)
                print(
                    f"budget {budget:g}s rep {rep} {variant:12s} val_loss {r['val_loss']:.4f} "
                    f"steps {r['steps']} wall {r['wall']:.1f}s\n    plan: {r['plan']}",
                    flush=True,
                )
        full = {r["rep"]: r["val_loss"] for r in results if r["recipe"] == "modern"}
        gpt2 = {r["rep"]: r for r in results if r["recipe"] == "gpt2"}
        print(f"\nbudget {budget:g} s, preset {args.preset}, {args.precision}, {cpu_name()}")
        print(
            "| variant | rep | steps | wall s | best val_loss | val_bpb | vs modern | "
            "reaches gpt2's best | load |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for r in sorted(results, key=lambda r: (variants.index(r["recipe"]), r["rep"])):
            r["delta"] = r["val_loss"] - full[r["rep"]]
            reach = "-"
            if r["rep"] in gpt2 and r["recipe"] != "gpt2":
                base = gpt2[r["rep"]]
                at = time_to_reach(r["evaluations"], base["val_loss"])
                reach = "never" if at is None else f"{at / base['wall']:.2f}x gpt2's time"
            print(
                f"| {label(r['recipe'])} | {r['rep'] + 1} | {r['steps']} | {r['wall']:.1f} | "
                f"{r['val_loss']:.4f} | {r['val_bpb']:.4f} | {r['delta']:+.4f} | {reach} | "
                f"{r['load'][0]:.2f} -> {r['load'][1]:.2f} |"
            )
        if args.reps > 1:
            print("\n| variant | median val_loss | median val_bpb | median delta vs modern |")
            print("|---|---|---|---|")
            for variant in variants:
                mine = [r for r in results if r["recipe"] == variant]
                print(
                    f"| {label(variant)} | {statistics.median(r['val_loss'] for r in mine):.4f} | "
                    f"{statistics.median(r['val_bpb'] for r in mine):.4f} | "
                    f"{statistics.median(r['delta'] for r in mine):+.4f} |"
                )


def label(variant: str) -> str:
    if variant in RECIPES:
        return variant
    if variant == "sized":
        return "modern, sized for the budget"
    if depth_of(variant) is not None:
        model = shape(variant)
        return f"modern, {model.n_layer} x {model.n_embd}, context {model.block_size}"
    parts = variant.split("+")
    off = [part for part in parts if part in MODERN_CHANGES]
    on = [
        part if cap_of(part) is None else f"cap {cap_of(part):g}"
        for part in parts
        if part not in MODERN_CHANGES
    ]
    return (
        "modern"
        + (f", {' + '.join(off)} off" if off else "")
        + (f", with {' + '.join(on)}" if on else "")
    )


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in lines if "model name" in line), "?")


def depth_names() -> str:
    return ", ".join(f"d{depth}" for depth in LADDER_DEPTHS)


def variant(name: str) -> str:
    if name in RECIPES or name == "sized" or depth_of(name) in LADDER_DEPTHS:
        return name
    known = {*MODERN_CHANGES, *MOVED_CHANGES}
    if not all(part in known or cap_of(part) is not None for part in name.split("+")):
        raise argparse.ArgumentTypeError(
            f"{name!r}: a variant is gpt2, modern, sized, a ladder depth ({depth_names()}), "
            f"or changes joined by +: off, {', '.join(MODERN_CHANGES)}; on, "
            f"{', '.join(MOVED_CHANGES)}, a logit cap (cap15)"
        )
    return name


def preset_or_depth(name: str) -> str:
    if name in PRESETS or depth_of(name) in LADDER_DEPTHS:
        return name
    raise argparse.ArgumentTypeError(
        f"{name!r}: a preset ({', '.join(PRESETS)}) or a ladder depth ({depth_names()})"
    )


def variant_list(text: str) -> list[str]:
    return [variant(name.strip()) for name in text.split(",") if name.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", "--budget", type=float, nargs="+", default=[120.0])
    parser.add_argument("--reps", "--rounds", type=int, default=None, help="2; --ablate: 1")
    parser.add_argument(
        "--preset",
        type=preset_or_depth,
        default="tiny",
        help="the shape the recipes train: a preset, or a ladder depth (d3) as sizing builds it",
    )
    parser.add_argument("--precision", default="fp32")
    parser.add_argument(
        "--eval-interval",
        type=int,
        default=None,
        help="unset: as gptforge train chooses for a budget (evaluations ~10%% of it); a "
        "fixed interval times 'reaches the best in' more finely",
    )
    parser.add_argument(
        "--recipes",
        nargs=2,
        type=variant,
        default=["gpt2", "sized"],
        help="the two variants to compare (default: what `gptforge train --time-budget S` "
        "trains with --recipe gpt2 and with nothing given)",
    )
    parser.add_argument("--ablate", action="store_true", help="modern with each change off")
    parser.add_argument(
        "--variants",
        type=variant_list,
        default=[*MODERN_CHANGES, *MOVED_CHANGES, "gpt2"],
        help="--ablate: comma-separated variants: modern's changes to turn off, the moved "
        "ones (softcap, rmsnorm, relu2) to turn on, a+b together, gpt2; default: each "
        "change off, then each moved one on, then gpt2",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
    )
    parser.add_argument("--quick", action="store_true", help="one 15 s budget, one repetition")
    args = parser.parse_args()
    args.reps = args.reps or (1 if args.ablate else 2)
    if args.quick:
        args.budgets, args.reps = [15.0], 1
    data = corpus(args.data)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, data {data}")
    warm_up(data, args)
    if args.ablate:
        ablation(data, args)
        return 0
    base, other = args.recipes
    for budget in args.budgets:
        results: list[dict] = []
        for round_ in range(args.reps):
            for recipe in (base, other):
                r = run(data, recipe, args, budget)
                results.append(r)
                print(
                    f"budget {budget:g}s round {round_} {recipe:7s} val_loss {r['val_loss']:.4f} "
                    f"val_bpb {r['val_bpb']:.4f} steps {r['steps']} wall {r['wall']:.1f}s "
                    f"load {r['load'][0]:.2f}->{r['load'][1]:.2f}\n    plan: {r['plan']}",
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
