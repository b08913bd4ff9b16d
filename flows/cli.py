"""`gptforge`: the command line. Each command validates its settings, then runs a flow."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from collections.abc import Sequence

from flows.cli_parser import build_parser, parse_overrides
from flows.embedded import orchestrator
from flows.home import use_home
from flows.metric_sender import TrackingUnavailable
from flows.progress import ProgressBar, set_progress_sink
from flows.servers import ServerError, use_running_servers
from model.interrupt import Terminated, TrainingInterrupted, raise_on_sigterm
from model.sampling_config import SamplingConfig
from model.train_config import TrainConfig
from pipeline.config import ConfigError, IngestConfig
from pipeline.settings import documented

TRAIN_SETTINGS = [name for name in documented(TrainConfig) if name != "init_from"]
AFTER_STOP = {
    "ingest": "; run it again to continue: finished files are cached",
    "run": "; run it again to continue: finished files are cached",
    "train": "; the last checkpoint is kept: continue with --resume",
    "generate": "; the records finished before the stop are in the --out file",
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.verbose and args.command != "serve":
        quiet_console()
    use_home()
    use_running_servers()
    raise_on_sigterm()
    try:
        handler = getattr(args, "handler", None) or COMMANDS[args.command]
        return handler(args)
    except TrainingInterrupted as exc:
        print(f"gptforge train: {exc}; continue it with --resume", file=sys.stderr)
        return exc.exit_code
    except (KeyboardInterrupt, Terminated) as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        hint = AFTER_STOP.get(args.command, "")
        print(
            f"gptforge {args.command}: stopped by {signal.Signals(signum).name}{hint}",
            file=sys.stderr,
        )
        return 128 + signum
    except ConfigError as exc:
        print(f"gptforge {args.command}: invalid setting {exc}", file=sys.stderr)
        return 2
    except (ServerError, TrackingUnavailable) as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"gptforge {args.command}: {exc}", file=sys.stderr)
        return 1


def quiet_console() -> None:
    """The terminal shows progress and one line per outcome; Prefect's own console lines
    (a traceback for every failed task, retries of a restarting server) appear with -v.
    Run logs still go to the Prefect API at INFO, for the UI."""
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_DEBUG_LEVEL", "CRITICAL")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")


def run_sample(args: argparse.Namespace) -> int:
    from pipeline.sample_corpus import build_sample

    print(f"sample corpus written to {build_sample(args.out)}")
    return 0


def run_ingest(args: argparse.Namespace) -> int:
    from flows.home import apply_quiet_env

    apply_quiet_env()
    settings = {name: getattr(args, name) for name in documented(IngestConfig)}
    lists = {"include": args.include, "exclude": args.exclude}
    cfg = IngestConfig(args.sources, args.out, pdf_passwords=args.pdf_password, **lists, **settings)
    if args.batch_files < 1:
        raise ConfigError("batch_files", f"must be >= 1, got {args.batch_files}")
    from flows.ingest import ingest_flow
    from flows.summary import summary_lines
    from pipeline.manifest import load_manifest
    from pipeline.ocr import check_languages

    if problem := check_languages(cfg.ocr_lang):
        print(
            f"warning: OCR is off: {problem}; images and scans will be recorded as errors",
            file=sys.stderr,
        )
    with orchestrator(), ProgressBar() as bar:
        set_progress_sink(bar.update)
        result = ingest_flow(
            sources=args.sources,
            out=args.out,
            **lists,
            **settings,
            pdf_passwords=args.pdf_password,
            batch_files=args.batch_files,
            experiment=args.experiment,
        )
        set_progress_sink(None)
    for line in summary_lines(load_manifest(cfg.out), result["manifest"]):
        print(line)
    print(f"MLflow run: {result['mlflow_run_id']}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from flows.home import apply_quiet_env

    apply_quiet_env()
    settings = {
        "data_dir": args.data,
        "out_dir": args.out,
        "preset": args.preset,
        "model_overrides": parse_overrides(args.set),
        "init_from": args.init_from,
        **{name: getattr(args, name) for name in TRAIN_SETTINGS},
    }
    tracking = {"experiment": args.experiment, "registered_model_name": args.model_name}
    if int(os.environ.get("RANK", "0")) > 0:
        return run_train_worker(settings)
    from flows.train_settings import train_config

    cfg = train_config(**settings)  # every setting checked, nothing heavy imported yet
    from flows.train import train_flow
    from model.train import validate

    validate(cfg)

    with orchestrator(), ProgressBar(unit="step") as bar:
        set_progress_sink(bar.update)
        result = train_flow(**settings, **tracking)
        set_progress_sink(None)
    val = result["val_loss"]
    print(f"MLflow run: {result['mlflow_run_id']}")
    print(f"registered model: {result['model_uri']}")
    print(f"checkpoint: {result['checkpoint']}")
    print(f"final train loss: {result['train_loss']:.4f}")
    print(f"final val loss: {'n/a (no validation split)' if val is None else f'{val:.4f}'}")
    return 0


def run_pipeline(args: argparse.Namespace) -> int:
    from flows.home import apply_quiet_env

    apply_quiet_env()
    from flows.train_settings import train_config

    overrides = parse_overrides(args.set)

    # Training and generation settings are checked now, not after ingest, and whatever the
    # data turns out to be (unchanged data skips training, which must not hide a bad value).
    train_config(
        args.data or ".",
        out_dir=".",
        preset=args.preset,
        model_overrides=overrides,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        precision=args.precision,
    )
    SamplingConfig(max_new_tokens=args.max_new_tokens)
    from flows.full_pipeline import pipeline_flow

    with orchestrator(), ProgressBar(unit="item") as bar:
        set_progress_sink(bar.update)
        result = pipeline_flow(
            sources=args.sources,
            data_dir=args.data,
            preset=args.preset,
            model_overrides=overrides,
            max_steps=args.max_steps,
            batch_size=args.batch_size,
            precision=args.precision,
            continue_training=args.continue_training,
            force_train=args.force_train,
            model_name=args.model_name,
            promote_alias=args.alias or None,
            eval_prompts=args.prompt,
            max_new_tokens=args.max_new_tokens,
            experiment=args.experiment,
        )
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
    from flows.home import gptforge_home, mlflow_uri

    uri = mlflow_uri()
    if uri.startswith("http"):
        print(f"MLflow UI: {uri}")
    else:
        print(f"MLflow store: {uri}  (browse: mlflow ui --backend-store-uri {uri})")
    from flows.servers import active_urls

    api = os.environ.get("PREFECT_API_URL") or active_urls().get("PREFECT_API_URL")
    if api:
        print(f"Prefect UI: {api.removesuffix('/api')}")
    print(f"gptforge home: {gptforge_home()}")


def run_serve(args: argparse.Namespace) -> int:
    from flows.home import apply_quiet_env

    apply_quiet_env()
    from flows.serve import deployments, serve_all

    deployments(args.retrain_cron, args.sources)
    with orchestrator():
        serve_all(args.retrain_cron, args.sources, limit=args.limit)
    return 0


def run_train_worker(settings: dict) -> int:
    """torchrun ranks other than 0 train without Prefect or MLflow; rank 0 runs the flow."""
    from flows.train_settings import train_config
    from model.train import train

    train(train_config(**settings))
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from flows.home import apply_quiet_env

    apply_quiet_env()
    sweep = {
        "temperature": _one_or_list(args.temperature),
        "top_k": _one_or_list(args.top_k),
        "top_p": _one_or_list(args.top_p),
        "repetition_penalty": _one_or_list(args.repetition_penalty),
        "max_new_tokens": args.max_new_tokens,
        "do_sample": not args.greedy,
        "stop": args.stop,
        "seed": args.seed,
    }
    if args.prompt is not None:
        if args.out or args.num_return_sequences != 1:
            raise ConfigError(
                "prompt",
                "--prompt streams one completion to the terminal; for --out or "
                "--num-return-sequences write the prompt to a file and pass --prompts",
            )
        return stream_one(args.model, args.prompt, sweep)
    from flows.generate import generate_flow

    with orchestrator(), ProgressBar(unit="output") as bar:
        set_progress_sink(bar.update)
        result = generate_flow(
            model=args.model,
            prompts_file=args.prompts,
            num_return_sequences=args.num_return_sequences,
            batch_size=args.batch_size,
            out=args.out,
            experiment=args.experiment,
            **sweep,
        )
        set_progress_sink(None)
    for label, metrics in result["metrics"].items():
        shown = ", ".join(f"{k} {v:.3g}" for k, v in metrics.items())
        print(f"{label}: {shown}")
    print(f"{result['outputs']} generation records: {result['records']}")
    print(f"MLflow run: {result['mlflow_run_id']}")
    return 0


def stream_one(model_ref: str, prompt: str, sweep: dict) -> int:
    """Interactive use: no flow, no tracking, tokens printed as they are sampled."""
    from flows.generate import inference_device
    from flows.models import resolve_model
    from model.checkpoint import load_model
    from model.generate import Generation, stream
    from model.generation_job import SWEEPABLE, sampling_grid
    from pipeline.tokenizer import decode, encode

    for name in SWEEPABLE:
        if isinstance(sweep[name], list):
            raise ConfigError(name, "--prompt streams one completion: give one value, not a sweep")
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


def _one_or_list(values: list) -> object:
    return values[0] if len(values) == 1 else values


COMMANDS = {
    "ingest": run_ingest,
    "train": run_train,
    "generate": run_generate,
    "run": run_pipeline,
    "serve": run_serve,
    "sample": run_sample,
}

if __name__ == "__main__":
    sys.exit(main())
