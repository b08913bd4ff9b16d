"""`gptforge`: the command line. Each command validates its settings, then runs a flow."""

from __future__ import annotations

import argparse
import inspect
import math
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gptforge.flows.cli_parser import build_parser, parse_overrides
from gptforge.flows.embedded import orchestrator
from gptforge.flows.home import use_home
from gptforge.flows.metric_sender import TrackingUnavailable
from gptforge.flows.mlflow_names import check_tracking_names
from gptforge.flows.progress import ProgressBar, set_progress_sink
from gptforge.flows.run_link import announced
from gptforge.flows.servers import ServerError, use_running_servers
from gptforge.model.config import RECIPE_SETTINGS
from gptforge.model.interrupt import Terminated, TrainingInterrupted, raise_on_sigterm
from gptforge.model.sampling_config import SWEEPABLE, JobConfig, SamplingConfig
from gptforge.model.train_config import TrainConfig
from gptforge.pipeline.config import ConfigError, IngestConfig
from gptforge.pipeline.errors import RunError
from gptforge.pipeline.settings import check_output, documented

TRAIN_SETTINGS = [name for name in documented(TrainConfig) if name != "init_from"]
AFTER_STOP = {
    "ingest": "; run it again to continue: finished files are cached",
    "run": "; run it again to continue: finished files are cached",
    "train": "; the last checkpoint is kept: continue with --resume",
    "generate": "; the records finished are in {out}: continue with --resume --out {out}",
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.verbose and args.command != "serve":
        quiet_console()
    use_home()
    use_running_servers()
    raise_on_sigterm()
    try:
        if hasattr(args, "experiment"):
            check_tracking_names(
                args.experiment,
                getattr(args, "model_name", None),
                getattr(args, "promote_alias", None),
            )
        handler = getattr(args, "handler", None) or COMMANDS[args.command]
        return handler(args)
    except TrainingInterrupted as exc:
        print(f"gptforge train: {exc}; continue it with --resume", file=sys.stderr)
        return exc.exit_code
    except (KeyboardInterrupt, Terminated) as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        hint = AFTER_STOP.get(args.command, "")
        if "{out}" in hint and not getattr(args, "out", None):  # --stream writes no file
            hint = ""
        hint = hint.format_map(vars(args))
        print(
            f"gptforge {args.command}: stopped by {signal.Signals(signum).name}{hint}",
            file=sys.stderr,
        )
        return 128 + signum
    except ConfigError as exc:
        print(f"gptforge {args.command}: invalid setting {exc}", file=sys.stderr)
        return 2
    except (ServerError, TrackingUnavailable, RunError) as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"gptforge {args.command}: {exc}", file=sys.stderr)
        return 1


def flow_arguments(args: argparse.Namespace, flow: Callable) -> dict[str, Any]:
    """The parsed options a flow (or function) takes, by name: an option is spelt like the
    parameter it sets (`--model-name` is `model_name`), so nothing is mapped by hand."""
    function = getattr(flow, "fn", flow)
    return {
        name: getattr(args, name)
        for name in inspect.signature(function).parameters
        if hasattr(args, name)
    }


def quiet_console() -> None:
    """The terminal shows progress and one line per outcome; Prefect's own console lines
    (a traceback for every failed task, retries of a restarting server) appear with -v.
    Run logs still go to the Prefect API at INFO, for the UI."""
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_DEBUG_LEVEL", "CRITICAL")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")


def run_sample(args: argparse.Namespace) -> int:
    from gptforge.pipeline.sample_corpus import build_sample

    print(f"sample corpus written to {build_sample(args.out)}")
    return 0


def run_ingest(args: argparse.Namespace) -> int:
    from gptforge.flows.home import apply_quiet_env

    apply_quiet_env()
    names = [*documented(IngestConfig), "include", "exclude", "pdf_passwords"]
    cfg = IngestConfig(args.sources, args.out, **{name: getattr(args, name) for name in names})
    from gptforge.flows.ingest import ingest_flow
    from gptforge.flows.summary import summary_lines
    from gptforge.pipeline.ingest import locked
    from gptforge.pipeline.manifest import load_manifest
    from gptforge.pipeline.ocr import check_languages

    with locked(cfg.out):  # another ingest writing there is refused before Prefect starts
        pass
    if cfg.executor != "local":  # so is a Dask scheduler that does not answer
        from gptforge.flows.dask_ingest import check_scheduler

        check_scheduler(cfg.executor)

    if problem := check_languages(cfg.ocr_lang):
        print(
            f"warning: OCR is off: {problem}; images and scans will be recorded as errors",
            file=sys.stderr,
        )
    with orchestrator(), ProgressBar() as bar:
        set_progress_sink(bar.update)
        result = announced(ingest_flow)(**flow_arguments(args, ingest_flow))
        set_progress_sink(None)
    for line in summary_lines(load_manifest(cfg.out), result["manifest"]):
        print(line)
    print(f"MLflow run: {result['mlflow_run_id']}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from gptforge.flows.home import apply_quiet_env

    apply_quiet_env()
    args.model_overrides = parse_overrides(args.model_overrides)
    names = ["data", "out", "preset", "model_overrides", *RECIPE_SETTINGS, "init_from"]
    names += TRAIN_SETTINGS
    settings = {name: getattr(args, name) for name in names}
    if int(os.environ.get("RANK", "0")) > 0:
        return run_train_worker(settings)
    from gptforge.flows.train_settings import train_config

    cfg = train_config(**settings)  # every setting checked, nothing heavy imported yet
    from gptforge.flows.train import count_budget_from, train_flow
    from gptforge.model.checkpoint import writing
    from gptforge.model.resume import schedule_change
    from gptforge.model.train import validate

    checked = validate(cfg)
    with writing(cfg.out_dir):  # another run writing there is refused before Prefect starts
        pass
    if note := schedule_change(cfg, checked.resume_from):
        print(f"warning: {note}", file=sys.stderr)

    count_budget_from(command_started())
    with orchestrator(), ProgressBar(unit="step") as bar:
        set_progress_sink(bar.update)
        result = announced(train_flow)(**flow_arguments(args, train_flow))
        set_progress_sink(None)
    val = result["val_loss"]
    print(f"MLflow run: {result['mlflow_run_id']}")
    print(f"registered model: {result['model_uri']}")
    if result["budget_plan"]:
        print(f"time budget: {result['budget_plan']}")
    print(f"checkpoint: {result['checkpoint']}")
    print(f"final train loss: {result['train_loss']:.4f}")
    if val is None:
        print("validation: none (the dataset has no val split); the last step is registered")
    else:
        print(
            f"best validation (registered): step {result['best_step']}, val loss {val:.4f}, "
            f"ppl {math.exp(min(val, 50.0)):.2f}, {result['val_bpb']:.4f} bits/byte"
            + (" (stopped early)" if result["stopped_early"] else "")
        )
    return 0


def command_started() -> float:
    """When this process started, on the `time.monotonic()` clock: `train --time-budget`
    counts the whole command (imports, the servers' start-up) against the budget."""
    import psutil

    return time.monotonic() - (time.time() - psutil.Process().create_time())


def run_pipeline(args: argparse.Namespace) -> int:
    from gptforge.flows.home import apply_quiet_env, gptforge_home

    apply_quiet_env()
    from gptforge.flows.train_settings import train_config

    args.model_overrides = parse_overrides(args.model_overrides)

    # Training and generation settings are checked now, not after ingest, and whatever the
    # data turns out to be (unchanged data skips training, which must not hide a bad value).
    train_config(
        args.data or ".",
        out=str(gptforge_home()),  # where the pipeline's checkpoints go
        preset=args.preset,
        model_overrides=args.model_overrides,
        **{name: getattr(args, name) for name in RECIPE_SETTINGS},
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        precision=args.precision,
    )
    for temperature in args.eval_temperatures or []:
        SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=temperature)
    SamplingConfig(max_new_tokens=args.max_new_tokens)
    from gptforge.flows.full_pipeline import pipeline_flow

    with orchestrator(), ProgressBar(unit="item") as bar:
        set_progress_sink(bar.update)
        result = announced(pipeline_flow)(**flow_arguments(args, pipeline_flow))
        set_progress_sink(None)
    print(f"dataset digest: {result['dataset_digest'][:16]}")
    if not result["trained"]:
        print(result["reason"])
    else:
        print(f"registered model: {result['model_uri']} (val loss {result['val_loss']})")
        print(f"alias {result['alias']}: {'moved' if result['promoted'] else 'unchanged'}")
        print("samples:")
        for sample in result["samples"]:
            print(f"  {sample[:300]!r}")
        print(f"generation records: {result['records']}")
        print(
            f"MLflow runs: ingest {result['ingest_run_id']}, train {result['train_run_id']}, "
            f"generate {result['generate_run_id']}"
        )
    print_places()
    return 0


def print_places() -> None:
    """Where to look next: the UIs when servers are up, else the local stores."""
    from gptforge.flows.home import gptforge_home, mlflow_uri

    uri = mlflow_uri()
    if uri.startswith("http"):
        print(f"MLflow UI: {uri}")
    else:
        print(f"MLflow store: {uri}  (browse: mlflow ui --backend-store-uri {uri})")
    from gptforge.flows.servers import active_urls

    api = os.environ.get("PREFECT_API_URL") or active_urls().get("PREFECT_API_URL")
    if api:
        print(f"Prefect UI: {api.removesuffix('/api')}")
    print(f"gptforge home: {gptforge_home()}")


def run_serve(args: argparse.Namespace) -> int:
    from gptforge.flows.home import apply_quiet_env

    apply_quiet_env()
    from gptforge.flows.serve import checked_deployments, serve_all

    checked_deployments(args.retrain_cron, args.sources, args.limit)
    with orchestrator():
        serve_all(**flow_arguments(args, serve_all))
    return 0


def run_train_worker(settings: dict) -> int:
    """torchrun ranks other than 0 train without Prefect or MLflow; rank 0 runs the flow."""
    from gptforge.flows.train_settings import train_config
    from gptforge.model.train import train

    train(train_config(**settings))
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from gptforge.flows.home import apply_quiet_env

    apply_quiet_env()
    for name in SWEEPABLE:
        values = getattr(args, name)
        setattr(args, name, values[0] if len(values) == 1 else values)
    if not args.prompts and not args.prompts_file:
        raise ConfigError("prompts", "give --prompts TEXT... or --prompts-file FILE")
    if args.resume and args.out is None:
        raise ConfigError("resume", "needs --out: the records file of the job to continue")
    if args.out is not None:
        check_output("out", args.out, file=True)
    from gptforge.model.generation_job import load_prompts, sampling_grid

    load_prompts(args.prompts, args.prompts_file)

    sweep = {name: getattr(args, name) for name in documented(SamplingConfig)}
    sampling_grid(sweep)  # every value checked before anything starts
    JobConfig(**{name: getattr(args, name) for name in documented(JobConfig)})
    if args.stream:
        if (
            args.prompts_file
            or len(args.prompts) != 1
            or args.out
            or args.num_return_sequences != 1
        ):
            raise ConfigError(
                "stream",
                "--stream prints one completion to the terminal: give exactly one --prompts "
                "and no --prompts-file, --out or --num-return-sequences",
            )
        for name in SWEEPABLE:
            if isinstance(sweep[name], list):
                raise ConfigError(name, "--stream prints one completion: one value, not a sweep")
        return stream_one(args.model, args.prompts[0], sweep)
    from gptforge.flows.generate import default_out, generate_flow
    from gptforge.flows.generation_records import writing

    args.out = args.out or str(default_out())  # named now, so a stop can say where it is
    with writing(Path(args.out)):  # another job writing there is refused before Prefect starts
        pass
    with orchestrator(), ProgressBar(unit="output") as bar:
        set_progress_sink(bar.update)
        result = announced(generate_flow)(**flow_arguments(args, generate_flow))
        set_progress_sink(None)
    for label, metrics in result["metrics"].items():
        shown = ", ".join(f"{k} {v:.3g}" for k, v in metrics.items())
        print(f"{label}: {shown}")
    reused = f" ({result['reused']} kept from the earlier run)" if result["reused"] else ""
    print(f"{result['outputs']} generation records{reused}: {result['records']}")
    print(f"MLflow run: {result['mlflow_run_id']}")
    return 0


def stream_one(model_ref: str, prompt: str, sweep: dict) -> int:
    """Interactive use: no flow, no tracking, tokens printed as they are sampled."""
    from gptforge.flows.generate import inference_device
    from gptforge.flows.models import resolve_model
    from gptforge.model.checkpoint import load_model
    from gptforge.model.generate import Generation, stream
    from gptforge.model.generation_job import sampling_grid
    from gptforge.pipeline.tokenizer import decode, encode

    (settings,) = sampling_grid(sweep)
    device, autocast = inference_device()
    model = load_model(resolve_model(model_ref).checkpoint, device)
    print(prompt, end="", flush=True)
    for event in stream(model, [encode(prompt)], settings, decode=decode, autocast_dtype=autocast):
        if isinstance(event, Generation):
            print(f"\n[{event.finish_reason}, {event.tokens_per_second:.1f} tokens/s]")
        else:
            print(event.text, end="", flush=True)
    return 0


def run_review(args: argparse.Namespace) -> int:
    from gptforge.flows.home import apply_quiet_env

    apply_quiet_env()
    from gptforge.flows.review import review_flow

    with orchestrator():
        result = review_flow(**flow_arguments(args, review_flow))
    for row in result["rows"]:
        interval = "" if row["ci95_low"] is None else f" [{row['ci95_low']}, {row['ci95_high']}]"
        mark = "  <- best" if row["best"] else ""
        print(f"{row['setting']}: {row['ratings']} ratings, mean {row['mean']}{interval}{mark}")
    if result["recommended"] is not None:
        print(f"recommended settings of {result['model']}: {result['recommended']}")
    elif result["best"] is None:
        print(f"no setting has --min-ratings {args.min_ratings}; nothing to recommend")
    print(f"MLflow run: {result['mlflow_run_id']}")
    return 0


COMMANDS = {
    "ingest": run_ingest,
    "train": run_train,
    "generate": run_generate,
    "review": run_review,
    "run": run_pipeline,
    "serve": run_serve,
    "sample": run_sample,
}

if __name__ == "__main__":
    sys.exit(main())
