"""`gptforge`: the command line. Each command validates its settings, then runs a flow."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from pipeline.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gptforge", description="Documents in, a GPT trained from scratch out."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show Prefect's logs")
    commands = parser.add_subparsers(dest="command", required=True)

    ingest = commands.add_parser("ingest", help="documents -> GPT-2 token shards + manifest")
    ingest.add_argument("sources", nargs="+", help="files or directories to read")
    ingest.add_argument("--out", required=True, help="dataset directory to write")
    ingest.add_argument("--val-fraction", type=float, default=0.05)
    ingest.add_argument("--ocr-lang", default="eng", help="tesseract languages, e.g. eng+deu")
    ingest.add_argument("--workers", type=int, default=None, help="default: every core")
    ingest.add_argument("--include", action="append", default=[], metavar="GLOB")
    ingest.add_argument("--exclude", action="append", default=[], metavar="GLOB")
    ingest.add_argument("--include-hidden", action="store_true")
    ingest.add_argument("--pdf-password", action="append", default=[], metavar="PASSWORD")
    ingest.add_argument("--batch-files", type=int, default=64)
    ingest.add_argument("--experiment", default="gptforge", help="MLflow experiment")

    sample = commands.add_parser("sample", help="write the bundled sample corpus to a directory")
    sample.add_argument("out", help="directory to (re)create")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"gptforge {args.command}: invalid setting {exc}", file=sys.stderr)
        return 2


def run_sample(args: argparse.Namespace) -> int:
    from pipeline.sample_corpus import build_sample

    print(f"sample corpus written to {build_sample(args.out)}")
    return 0


def run_ingest(args: argparse.Namespace) -> int:
    from flows.home import apply_quiet_env

    apply_quiet_env()
    from flows.ingest import ingest_config, ingest_flow
    from flows.progress import set_progress_sink
    from flows.summary import summary_lines
    from pipeline.manifest import load_manifest
    from pipeline.ocr import check_languages

    settings = {
        "sources": args.sources,
        "out": args.out,
        "val_fraction": args.val_fraction,
        "ocr_lang": args.ocr_lang,
        "workers": args.workers,
        "include": args.include,
        "exclude": args.exclude,
        "include_hidden": args.include_hidden,
    }
    cfg = ingest_config(**settings, pdf_passwords=args.pdf_password)
    check_languages(cfg.ocr_lang)
    if args.batch_files < 1:
        raise ConfigError("batch_files", f"must be >= 1, got {args.batch_files}")
    with ProgressBar() as bar:
        set_progress_sink(bar.update)
        result = ingest_flow(
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


class ProgressBar:
    """A tqdm bar per stage, shown only while there is work to count."""

    def __init__(self) -> None:
        self._bar = None

    def update(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(total=total, desc=stage, unit="file", file=sys.stderr)
        self._bar.n = done
        self._bar.refresh()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()


COMMANDS = {"ingest": run_ingest, "sample": run_sample}

if __name__ == "__main__":
    sys.exit(main())
