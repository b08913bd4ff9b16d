"""What logging every output as an MLflow trace (with its code scores) costs a generation job.

Run:  .venv/bin/python tests/perf/bench_trace_logging.py [--reps 3] [--preset tiny] [--quick]

One random-init GPT of `--preset` (tiny: what `gptforge run` trains by default), registered
in a temporary SQLite MLflow store, and a 256-output job: 32 prompts x 2 temperatures x 4
samples, 32 new tokens each, end-of-text off (every output has the same length). Sides,
alternated every repetition (A B A B ...), each a full `generate_flow` call under Prefect's
test harness:

  peer    generate_flow(..., traces=False): the JSONL, the table, the job run and one child
          run per setting, no traces;
  traces  generate_flow(..., traces=True): the same plus 256 traces, 256 x 7 feedback
          assessments, exported by MLflow's async trace queue and flushed before the flow ends.

Also times `log_traces` + `flush` alone for the 256 records (no model), to split the cost.
Prints every repetition, medians, and the ratio traces/peer; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

SIDES = ("peer", "traces")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="4 prompts, 1 repetition")
    args = parser.parse_args()
    if args.quick:
        args.reps, args.prompts = 1, 4
    home = Path(tempfile.mkdtemp(prefix="bench-traces-"))
    os.environ.update(
        GPTFORGE_HOME=str(home), PREFECT_HOME=str(home / "prefect"), DO_NOT_TRACK="true"
    )
    os.environ.update(MLFLOW_DISABLE_TELEMETRY="true", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("PREFECT_API_URL", None)

    import torch
    from prefect.testing.utilities import prefect_test_harness

    from gptforge.flows.generate import generate_flow
    from gptforge.flows.models import register_checkpoint
    from gptforge.flows.tracking import stage_run
    from gptforge.model.checkpoint import save_best
    from gptforge.model.config import preset
    from gptforge.model.gpt import GPT

    torch.manual_seed(0)
    torch.set_num_threads(2)
    checkpoint = save_best(home / "model", GPT(preset(args.preset)), {"step": 0})
    prompts = [f"Prompt number {i} says" for i in range(args.prompts)]
    job = {
        "prompts": prompts,
        "temperature": [0.7, 1.0],
        "num_return_sequences": args.samples,
        "max_new_tokens": args.tokens,
        "batch_size": 8,
        "experiment": "bench-traces",
    }
    outputs = len(prompts) * 2 * args.samples
    print(f"{args.preset} model, {outputs} outputs of {args.tokens} tokens, {args.reps} reps")
    times: dict[str, list[float]] = {side: [] for side in SIDES}
    with prefect_test_harness(server_startup_timeout=120):
        with stage_run("train", "bench-traces"):
            version = register_checkpoint(checkpoint, "bench-traces", "digest")
        model = f"models:/bench-traces/{version}"
        generate_flow(model=model, **job, traces=True, out=str(home / "warmup.jsonl"))
        for rep in range(args.reps):
            for side in SIDES if rep % 2 == 0 else SIDES[::-1]:
                out = home / f"{side}-{rep}.jsonl"
                started = time.perf_counter()
                result = generate_flow(model=model, **job, traces=side == "traces", out=str(out))
                seconds = time.perf_counter() - started
                assert result["outputs"] == outputs
                times[side].append(seconds)
                print(f"  rep {rep} {side:7s} {seconds:7.2f} s  load {os.getloadavg()[0]:.2f}")
        logging_only = _log_only(out)
    medians = {side: statistics.median(values) for side, values in times.items()}
    for side, value in medians.items():
        print(f"{side:7s} median {value:7.2f} s  ({outputs / value:6.1f} outputs/s)")
    extra = medians["traces"] - medians["peer"]
    print(f"traces/peer = {medians['traces'] / medians['peer']:.2f}x  (+{extra:.2f} s)")
    per_trace = 1000 * logging_only / outputs
    print(f"log_traces + flush alone: {logging_only:.2f} s ({per_trace:.1f} ms per trace)")


def _log_only(path: Path) -> float:
    """The trace logging of one job's records by itself, in a run of its own."""
    import json

    import mlflow

    from gptforge.flows.generation_runs import record_scores
    from gptforge.flows.traces import flush, log_traces
    from gptforge.flows.tracking import GENAI_KIND, stage_run

    records = [json.loads(line) for line in path.read_text().splitlines()]
    with stage_run("bench", "bench-traces-only", kind=GENAI_KIND) as run_id:
        started = time.perf_counter()
        log_traces(records, [record_scores(r) for r in records], run_id)
        flush()
        seconds = time.perf_counter() - started
        where = [mlflow.active_run().info.experiment_id]
    found = mlflow.search_traces(locations=where, run_id=run_id, include_spans=False)
    assert len(found) == len(records)
    return seconds


if __name__ == "__main__":
    sys.exit(main())
