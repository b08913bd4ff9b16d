"""The `gptforge` command line's grammar: commands and options. The options of the ingest,
train, sampling and generation-job settings are generated from their dataclasses
(`flows/settings_cli.py`)."""

from __future__ import annotations

import argparse
from dataclasses import fields
from functools import partial
from typing import NoReturn, get_args

from gptforge.flows.review_settings import SettingsSource
from gptforge.flows.servers import add_commands as add_server_commands
from gptforge.flows.settings_cli import add_settings
from gptforge.model.config import PRESETS, GPTConfig
from gptforge.model.sampling_config import SWEEPABLE, JobConfig, SamplingConfig
from gptforge.model.train_config import TrainConfig
from gptforge.pipeline.config import ConfigError, IngestConfig

PRECISIONS = next(f for f in fields(TrainConfig) if f.name == "precision").metadata["choices"]


class OneLineErrors(argparse.ArgumentParser):
    """A bad option is one line naming it, exit status 2; `--help` shows the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(
        prog="gptforge", description="Documents in, a GPT trained from scratch out."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show Prefect's logs")
    parser.add_argument("--version", action="version", version=f"gptforge {package_version()}")
    # Each command's --help shows every option's default ("None": derived, or not set).
    with_defaults = partial(OneLineErrors, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=with_defaults)

    ingest = commands.add_parser("ingest", help="documents -> GPT-2 token shards + manifest")
    ingest.add_argument("sources", nargs="+", help="files or directories to read")
    ingest.add_argument("--out", required=True, help="dataset directory to write")
    add_settings(ingest, IngestConfig, skip=set())
    _list(ingest, "--include", "GLOB", "only files matching these globs")
    _list(ingest, "--exclude", "GLOB", "skip files matching these globs")
    _list(ingest, "--pdf-passwords", "PASSWORD", "passwords to try on encrypted PDFs")
    ingest.add_argument("--experiment", default="gptforge", help="MLflow experiment")

    train = commands.add_parser("train", help="train a GPT on a dataset, register it in MLflow")
    train.add_argument("--data", required=True, help="dataset directory written by ingest")
    train.add_argument("--out", default=None, help="checkpoint directory")
    _model_options(train)
    add_settings(train, TrainConfig, skip={"init_from"})
    train.add_argument("--init-from", default=None, help="start from these weights")
    train.add_argument("--experiment", default="gptforge", help="MLflow experiment")
    train.add_argument("--model-name", default="gptforge", help="MLflow registered model")

    gen = commands.add_parser("generate", help="batch generation job, or stream one prompt")
    gen.add_argument(
        "--model",
        required=True,
        help="models:/NAME/VERSION, models:/NAME@ALIAS, models:/NAME/latest, runs:/ID/model, dir",
    )
    _list(gen, "--prompts", "TEXT", "prompts given inline (they come before --prompts-file's)")
    gen.add_argument("--prompts-file", help=".txt (one per line) or .jsonl with overrides")
    gen.add_argument(
        "--stream", action="store_true", help="print one prompt's completion as it is sampled"
    )
    add_settings(gen, SamplingConfig, skip={"stop"}, sweep=frozenset(SWEEPABLE))
    _list(gen, "--stop", "TEXT", "end an output when it produces this text")
    add_settings(gen, JobConfig, skip=set())
    gen.add_argument("--out", default=None, help="JSONL file for the generation records")
    gen.add_argument(
        "--resume",
        action="store_true",
        help="continue the stopped job whose records are in --out: generate only the rest",
    )
    gen.add_argument("--experiment", default="gptforge", help="MLflow experiment")
    gen.add_argument(
        "--settings",
        default=get_args(SettingsSource)[0],
        choices=get_args(SettingsSource),
        help="recommended: the model version's best-rated sampling settings (gptforge review)",
    )
    gen.add_argument(
        "--traces",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="log every output as an MLflow trace with its code scores",
    )

    rev = commands.add_parser("review", help="human ratings of a model's outputs, per setting")
    rev.add_argument("--model", required=True, help="the model whose generations were rated")
    rev.add_argument("--feedback", default="quality", help="the feedback name reviewers used")
    rev.add_argument(
        "--min-ratings", type=int, default=2, help="ratings a setting needs to be recommended"
    )
    rev.add_argument(
        "--promote",
        action="store_true",
        help="store the best-rated settings on the model version (generate --settings recommended)",
    )
    rev.add_argument("--experiment", default="gptforge", help="MLflow experiment")

    run = commands.add_parser("run", help="the whole pipeline: ingest -> train -> generate")
    run.add_argument("sources", nargs="+", help="files or directories to read")
    run.add_argument("--data", default=None, help="dataset directory (kept between runs)")
    _model_options(run)
    run.add_argument("--max-steps", type=int, default=200, help="training steps")
    run.add_argument("--batch-size", type=int, default=8, help="sequences per micro-step")
    run.add_argument(
        "--precision", default="auto", choices=PRECISIONS, help="numeric precision of training"
    )
    run.add_argument(
        "--continue-training", action="store_true", help="start from the previous version"
    )
    run.add_argument("--force-train", action="store_true", help="train even if data is unchanged")
    run.add_argument("--model-name", default="gptforge", help="MLflow registered model")
    run.add_argument(
        "--promote-alias", default="champion", help="alias moved when val loss is no worse"
    )
    _list(run, "--eval-prompts", "TEXT", "prompts of the evaluation generation job")
    run.add_argument(
        "--eval-temperatures",
        type=float,
        nargs="+",
        default=None,
        metavar="T",
        help="temperatures the evaluation job sweeps; None: 0.7 and 1.0",
    )
    run.add_argument("--max-new-tokens", type=int, default=48, help="evaluation output length")
    run.add_argument("--experiment", default="gptforge", help="MLflow experiment")

    srv = commands.add_parser("serve", help="serve the flows as Prefect deployments")
    srv.add_argument(
        "--retrain-on-change",
        action="store_true",
        help="a changed dataset starts train, a version it registers starts generate",
    )
    srv.add_argument(
        "--retrain-cron",
        default=None,
        help='re-ingest --sources on this schedule, e.g. "0 3 * * *"; implies --retrain-on-change',
    )
    _list(srv, "--sources", "DIR", "folders the schedule re-ingests")
    srv.add_argument(
        "--data", default=None, help="dataset the schedule writes; None: <home>/datasets/gptforge"
    )
    srv.add_argument("--limit", type=int, default=1, help="flow runs at once")

    add_server_commands(commands)

    sample = commands.add_parser("sample", help="write the bundled sample corpus to a directory")
    sample.add_argument("out", help="directory to (re)create")
    return parser


def _list(parser: argparse.ArgumentParser, flag: str, metavar: str, text: str) -> None:
    """A list option: `--flag A B` and `--flag A --flag B` both give [A, B]."""
    parser.add_argument(flag, action="extend", nargs="+", default=None, metavar=metavar, help=text)


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset",
        choices=list(PRESETS),
        help="model size; unset: tiny, or with --time-budget the size the budget buys",
    )
    _list(parser, "--model-overrides", "KEY=VALUE", "model settings that replace the preset's")
    add_settings(parser, GPTConfig, skip=set())  # --recipe


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gptforge")
    except PackageNotFoundError:
        return "unknown (not installed)"


def parse_overrides(pairs: list[str] | None) -> dict[str, int | float | bool]:
    """`--model-overrides n_layer=3 dropout=0.1` -> {"n_layer": 3, "dropout": 0.1}."""
    out: dict[str, int | float | bool] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError("model_overrides", f"{pair!r} is not KEY=VALUE")
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
