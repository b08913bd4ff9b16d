"""The `gptforge` command line's grammar: commands and options. Options for the train and ingest
settings are generated from their dataclasses (`flows/settings_cli.py`); sampling defaults
come from `SamplingConfig`."""

from __future__ import annotations

import argparse

from flows.servers import add_commands as add_server_commands
from flows.settings_cli import add_settings
from model.sampling_config import SamplingConfig
from model.train_config import TrainConfig
from pipeline.config import ConfigError, IngestConfig

SAMPLING_DEFAULTS = SamplingConfig()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gptforge", description="Documents in, a GPT trained from scratch out."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show Prefect's logs")
    parser.add_argument("--version", action="version", version=f"gptforge {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    ingest = commands.add_parser("ingest", help="documents -> GPT-2 token shards + manifest")
    ingest.add_argument("sources", nargs="+", help="files or directories to read")
    ingest.add_argument("--out", required=True, help="dataset directory to write")
    add_settings(ingest, IngestConfig, skip=set())
    ingest.add_argument("--include", action="append", default=[], metavar="GLOB")
    ingest.add_argument("--exclude", action="append", default=[], metavar="GLOB")
    ingest.add_argument("--pdf-password", action="append", default=[], metavar="PASSWORD")
    ingest.add_argument("--batch-files", type=int, default=64)
    ingest.add_argument("--experiment", default="gptforge", help="MLflow experiment")

    train = commands.add_parser("train", help="train a GPT on a dataset, register it in MLflow")
    train.add_argument("--data", required=True, help="dataset directory written by ingest")
    train.add_argument("--preset", default="tiny", help="tiny, small, mini, gpt2, gpt2-medium")
    train.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="model override"
    )
    add_settings(train, TrainConfig, skip={"init_from"})
    train.add_argument("--out", default=None, help="checkpoint directory")
    train.add_argument("--init-from", default=None, help="start from these weights")
    train.add_argument("--experiment", default="gptforge", help="MLflow experiment")
    train.add_argument("--model-name", default="gptforge", help="MLflow registered model")

    gen = commands.add_parser("generate", help="batch generation job, or stream one prompt")
    gen.add_argument(
        "--model",
        required=True,
        help="models:/NAME/VERSION, models:/NAME@ALIAS, models:/NAME/latest, runs:/ID/model, dir",
    )
    source = gen.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompts", help=".txt (one per line) or .jsonl with overrides")
    source.add_argument("--prompt", help="one prompt: stream the completion to the terminal")
    for name, kind in (
        ("temperature", float),
        ("top_k", int),
        ("top_p", float),
        ("repetition_penalty", float),
    ):
        default = getattr(SAMPLING_DEFAULTS, name)
        gen.add_argument(
            f"--{name.replace('_', '-')}",
            type=kind,
            nargs="+",
            default=[default],
            help=f"one value, or several to sweep (default {default})",
        )
    gen.add_argument("--max-new-tokens", type=int, default=SAMPLING_DEFAULTS.max_new_tokens)
    gen.add_argument("--greedy", action="store_true", help="do_sample=False")
    gen.add_argument("--stop", action="append", default=[], metavar="TEXT")
    gen.add_argument("--num-return-sequences", type=int, default=1)
    gen.add_argument("--batch-size", type=int, default=8)
    gen.add_argument("--seed", type=int, default=SAMPLING_DEFAULTS.seed)
    gen.add_argument("--out", default=None, help="JSONL file for the generation records")
    gen.add_argument("--experiment", default="gptforge", help="MLflow experiment")

    run = commands.add_parser("run", help="the whole pipeline: ingest -> train -> generate")
    run.add_argument("sources", nargs="+", help="files or directories to read")
    run.add_argument("--data", default=None, help="dataset directory (kept between runs)")
    run.add_argument("--preset", default="tiny")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("--max-steps", type=int, default=200)
    run.add_argument("--batch-size", type=int, default=8)
    run.add_argument("--precision", default="auto")
    run.add_argument("--continue-training", action="store_true")
    run.add_argument("--force-train", action="store_true", help="train even if data is unchanged")
    run.add_argument("--model-name", default="gptforge")
    run.add_argument("--alias", default="champion", help="alias moved when val loss is no worse")
    run.add_argument("--prompt", action="append", default=None, help="evaluation prompt")
    run.add_argument("--max-new-tokens", type=int, default=48)
    run.add_argument("--experiment", default="gptforge")

    srv = commands.add_parser("serve", help="serve the flows as Prefect deployments")
    srv.add_argument("--retrain-cron", default=None, help='e.g. "0 3 * * *" (off by default)')
    srv.add_argument("--sources", nargs="+", default=None, help="folders the schedule re-ingests")
    srv.add_argument("--limit", type=int, default=1, help="flow runs at once")

    add_server_commands(commands)

    sample = commands.add_parser("sample", help="write the bundled sample corpus to a directory")
    sample.add_argument("out", help="directory to (re)create")
    return parser


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gptforge")
    except PackageNotFoundError:
        return "unknown (not installed)"


def parse_overrides(pairs: list[str]) -> dict[str, int | float | bool]:
    """`--set n_layer=3 --set dropout=0.1` -> {"n_layer": 3, "dropout": 0.1}."""
    out: dict[str, int | float | bool] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError("set", f"{pair!r} is not KEY=VALUE")
        if raw.lower() in ("true", "false"):
            out[key] = raw.lower() == "true"
            continue
        try:
            out[key] = int(raw)
        except ValueError:
            try:
                out[key] = float(raw)
            except ValueError as exc:
                raise ConfigError(key, f"{raw!r} is not a number") from exc
    return out
