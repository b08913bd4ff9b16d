"""The `ingest` flow: `pipeline.ingest.ingest` with its steps run as Prefect tasks (one per
extraction batch), the run summarised as Prefect artifacts and recorded in MLflow."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote
from pydantic import SecretStr

from gptforge.flows.mlflow_names import check_tracking_names
from gptforge.flows.progress import report
from gptforge.flows.summary import problem_rows, split_rows, summary_markdown
from gptforge.flows.tracking import (
    DEFAULT_EXPERIMENT,
    DIGEST_TAG,
    STAGE_TAG,
    flow_run_name,
    log_dataset,
    stage_run,
    use_experiment,
)
from gptforge.pipeline.config import FollowSymlinks, IngestConfig
from gptforge.pipeline.ingest import Batch, Executor, Plan, assemble, extract_batch, ingest, plan
from gptforge.pipeline.manifest import MANIFEST_NAME
from gptforge.pipeline.ocr import check_languages
from gptforge.pipeline.settings import defaults
from gptforge.pipeline.workers import WorkerPool

REINGESTED_TAG = "gptforge.reingested_at"
D = defaults(IngestConfig)  # every ingestion default comes from pipeline/config.py
RETRIED = {"cache_policy": NO_CACHE, "retries": 2, "retry_delay_seconds": 2}
plan_task = task(plan, name="plan", **RETRIED)
extract_task = task(extract_batch, name="extract-batch", **RETRIED)
assemble_task = task(assemble, name="assemble", cache_policy=NO_CACHE, retries=1)


class PrefectExecutor(Executor):
    """Each step of `ingest` a Prefect task; the extraction batches run on the flow's task
    runner and share one pool of extraction processes."""

    def plan(self, cfg: IngestConfig) -> Plan:
        work = plan_task(cfg)
        get_run_logger().info(
            "%d files found, %d need extraction, the rest are cached or not readable",
            len(work.records),
            len(work.jobs),
        )
        return work

    def map_batches(
        self, batches: Sequence[Batch], pool: WorkerPool | None
    ) -> Iterator[tuple[Batch, list[dict]]]:
        futures = {extract_task.submit(quote(batch), quote(pool)): batch for batch in batches}
        for future in as_completed(list(futures)):
            yield futures[future], future.result()

    def assemble(self, work: Plan) -> dict[str, Any]:
        return assemble_task(quote(work))


def executor_for(cfg: IngestConfig) -> PrefectExecutor:
    """Extraction on this flow's task runner (`local`), or on a Dask cluster."""
    if cfg.executor == "local":
        return PrefectExecutor()
    from gptforge.flows.dask_ingest import DaskExecutor, check_scheduler

    check_scheduler(cfg.executor)
    return DaskExecutor(cfg)


@task(name="record-in-mlflow", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def record_ingest(cfg: IngestConfig, manifest: dict[str, Any], experiment: str) -> str:
    """An MLflow run for this ingest: settings, counts, the manifest and the dataset digest."""
    with stage_run("ingest", experiment, run_name=f"ingest-{cfg.out.name}") as run_id:
        mlflow.log_params(
            {
                "sources": ",".join(str(s) for s in cfg.sources)[:5000],
                "out": str(cfg.out),
                "val_fraction": cfg.val_fraction,
                "ocr_lang": cfg.ocr_lang,
                "ocr_dpi": cfg.ocr_dpi,
                "workers": cfg.workers,
                "include": ",".join(cfg.include),
                "exclude": ",".join(cfg.exclude),
                "include_hidden": cfg.include_hidden,
                "shard_tokens": cfg.shard_tokens,
                "executor": cfg.executor,
            }
        )
        counts, splits = manifest["counts"], manifest["splits"]
        metrics = {f"files_{status}": n for status, n in counts["by_status"].items()}
        metrics |= {f"files_kind_{kind}": n for kind, n in counts["by_kind"].items()}
        metrics |= {f"{split}_tokens": info["tokens"] for split, info in splits.items()}
        metrics |= {f"{split}_documents": info["documents"] for split, info in splits.items()}
        metrics |= {"files": counts["files"], "ocr_pages": counts["ocr_pages"]}
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(cfg.out / MANIFEST_NAME))
        log_dataset(cfg.out, manifest["dataset_digest"], context="ingest")
    return run_id


def last_ingest(experiment: str, out: Path) -> tuple[str, str] | None:
    """(run id, dataset digest) of the newest ingest run into `out`, if any."""
    runs = mlflow.search_runs(
        experiment_ids=[use_experiment(experiment)],
        filter_string=f"tags.`{STAGE_TAG}` = 'ingest' and params.out = '{out}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return (runs[0].info.run_id, runs[0].data.tags.get(DIGEST_TAG, "")) if runs else None


def emit_dataset_event(
    out: Path, manifest: dict[str, Any], run_id: str, changed: bool, experiment: str
) -> None:
    """`gptforge.dataset.changed` when the digest differs from the last ingest into `out`
    (or there was none), else `gptforge.dataset.unchanged`: what deployment triggers and
    automations react to (retrain on new documents, not on every scheduled re-ingest). The
    directory is absolute: the flow run it starts may run elsewhere (`gptforge serve`)."""
    out = out.resolve()
    emit_event(
        event=f"gptforge.dataset.{'changed' if changed else 'unchanged'}",
        resource={
            "prefect.resource.id": f"gptforge.dataset.{out}",
            "prefect.resource.name": out.name,
        },
        related=[
            {"prefect.resource.id": f"mlflow.run.{run_id}", "prefect.resource.role": "mlflow-run"}
        ],
        payload={
            "directory": str(out),
            "dataset_digest": manifest["dataset_digest"],
            "tokens": {split: info["tokens"] for split, info in manifest["splits"].items()},
            "mlflow_run_id": run_id,
            "experiment": experiment,
        },
    )


@flow(
    name="ingest",
    flow_run_name=flow_run_name("ingest", "out"),
    task_runner=ThreadPoolTaskRunner(max_workers=4),
)
def ingest_flow(
    sources: list[str],
    out: str,
    val_fraction: float = D["val_fraction"],
    ocr_lang: str = D["ocr_lang"],
    ocr_dpi: int = D["ocr_dpi"],
    ocr_timeout_s: float = D["ocr_timeout_s"],
    file_timeout_s: float = D["file_timeout_s"],
    workers: int | None = D["workers"],
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    default_excludes: bool = D["default_excludes"],
    include_hidden: bool = D["include_hidden"],
    ignore_files: bool = D["ignore_files"],
    follow_symlinks: FollowSymlinks = D["follow_symlinks"],
    pdf_passwords: list[SecretStr] | None = None,
    max_file_mb: float = D["max_file_mb"],
    max_image_pixels: int = D["max_image_pixels"],
    shard_tokens: int = D["shard_tokens"],
    executor: str = D["executor"],
    experiment: str = DEFAULT_EXPERIMENT,
) -> dict[str, Any]:
    """Turn folders of documents into GPT-2 token shards and a manifest.

    Every ingestion setting is a field of `pipeline.config.IngestConfig`, which holds its
    default, range and description (`gptforge ingest --help` lists them).

    Args:
        sources: files or directories to read (recursively).
        out: dataset directory: shards/, manifest.json and the extraction cache.
        include: globs a file must match to be read (default: everything).
        exclude: extra globs to leave out, on top of VCS and tool-cache directories.
        pdf_passwords: passwords to try on encrypted PDFs.
        experiment: MLflow experiment.
    """
    settings = {k: v for k, v in locals().items() if k in D}
    check_tracking_names(experiment)
    secrets = [p.get_secret_value() for p in pdf_passwords or []]
    cfg = IngestConfig(
        sources=sources, out=out, include=include or (), exclude=exclude or (),
        pdf_passwords=secrets, **settings,
    )  # fmt: skip
    logger = get_run_logger()
    if problem := check_languages(cfg.ocr_lang):
        logger.warning("OCR is off: %s; images and scans will be recorded as errors", problem)

    def progress(stage: str, done: int, total: int) -> None:
        report(stage, done, total)
        logger.info("%s: %d/%d files", stage, done, total)

    manifest = ingest(cfg, progress, executor_for(cfg))
    manifest_path = str(cfg.out / MANIFEST_NAME)
    sources = ", ".join(map(str, cfg.sources))
    create_markdown_artifact(
        summary_markdown(manifest, manifest_path), key="ingest-summary", description=sources
    )
    create_table_artifact(split_rows(manifest), key="ingest-splits", description=sources)
    if rows := problem_rows(manifest):
        create_table_artifact(rows, key="ingest-problems", description=sources)
    digest = manifest["dataset_digest"]
    previous = last_ingest(experiment, cfg.out)
    changed = previous is None or previous[1] != digest
    run_id = record_ingest(cfg, quote(manifest), experiment) if changed else previous[0]
    if not changed:  # a no-op re-ingest: the run that recorded this dataset says when
        MlflowClient().set_tag(run_id, REINGESTED_TAG, datetime.now(UTC).isoformat())
    emit_dataset_event(cfg.out, manifest, run_id, changed, experiment)
    logger.info("MLflow run %s, dataset digest %s", run_id, digest)
    return {
        "manifest": manifest_path,
        "dataset_digest": manifest["dataset_digest"],
        "changed": changed,
        "mlflow_run_id": run_id,
        "counts": manifest["counts"],
        "tokens": {split: info["tokens"] for split, info in manifest["splits"].items()},
    }
