"""MLflow runs for every stage: one experiment per project, runs tagged with their stage."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset

from gptforge.flows.embedded import file_lock
from gptforge.flows.home import apply_quiet_env, gptforge_home, mlflow_artifact_root, mlflow_uri

DEFAULT_EXPERIMENT = "gptforge"
STAGE_TAG = "gptforge.stage"
DIGEST_TAG = "gptforge.dataset_digest"
PREFECT_RUN_TAG = "gptforge.prefect_flow_run"
# Which view the MLflow UI opens an experiment in (docs/generation.md, "Two experiments"):
# ingest and training runs are model development; generation review is GenAI.
KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"
GENAI_KIND = "genai_development"
GENERATIONS_SUFFIX = "-generations"


def use_experiment(name: str = DEFAULT_EXPERIMENT, kind: str = TRAINING_KIND) -> str:
    """Point MLflow at our store and make sure the experiment exists, of `kind`; returns
    its id. A kind someone chose in the UI is kept."""
    apply_quiet_env()
    mlflow.set_tracking_uri(mlflow_uri())
    # Concurrent first uses of one SQLite store would race on its schema and the experiment.
    with file_lock(gptforge_home() / "mlflow.lock"):
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            artifacts = mlflow_artifact_root(name)
            return mlflow.create_experiment(name, artifacts, tags={KIND_TAG: kind})
        if KIND_TAG not in experiment.tags:
            mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, KIND_TAG, kind)
    return experiment.experiment_id


def generations_experiment(experiment: str) -> str:
    """Where a project's generation jobs, traces and reviews go: `<experiment>-generations`."""
    return experiment + GENERATIONS_SUFFIX


def flow_run_name(stage: str, *parts: str) -> Callable[[], str]:
    """A Prefect `flow_run_name` that reads like the stage's MLflow run: `<stage>-<part>...`,
    each part the last path component of that flow parameter (unset ones are left out)."""

    def name() -> str:
        from prefect.runtime import flow_run

        given = [flow_run.parameters.get(part) for part in parts]
        return "-".join([stage, *(Path(str(v)).name or str(v) for v in given if v)])

    return name


@contextmanager
def stage_run(
    stage: str,
    experiment: str,
    run_name: str | None = None,
    run_id: str | None = None,
    kind: str = TRAINING_KIND,
) -> Iterator[str]:
    """An MLflow run tagged with its stage (`run_id`: continue that one); yields the run id.
    Started inside another run (a pipeline's), it is nested under it. A run stopped by the
    user ends KILLED, one that failed FAILED."""
    experiment_id = use_experiment(experiment, kind)
    nested = mlflow.active_run() is not None
    if run_id:
        run = mlflow.start_run(run_id=run_id, nested=nested)
    else:
        run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, nested=nested)
    try:
        mlflow.set_tags({STAGE_TAG: stage, **prefect_source_tags()})
        yield run.info.run_id
    except BaseException as exc:
        mlflow.end_run("KILLED" if stopped_by_user(exc) else "FAILED")
        raise
    mlflow.end_run()


def prefect_source_tags() -> dict[str, str]:
    """Inside a Prefect flow run: the run's Source is that flow run (its UI page when a
    Prefect server is up), not the `engine.py` that MLflow would otherwise name."""
    from prefect.runtime import flow_run

    if not flow_run.id:
        return {}
    where = flow_run.ui_url or f"prefect flow run {flow_run.name} ({flow_run.id})"
    return {
        "mlflow.source.name": where,
        "mlflow.source.type": "JOB",
        PREFECT_RUN_TAG: where,
    }


def stopped_by_user(exc: BaseException) -> bool:
    """Ctrl-C, SIGTERM (Prefect's or ours) or a training run stopped on request."""
    from prefect.exceptions import TerminationSignal

    from gptforge.model.interrupt import Terminated, TrainingInterrupted

    stops = KeyboardInterrupt | Terminated | TerminationSignal | TrainingInterrupted
    return isinstance(exc, stops)


def log_dataset(data_dir: Path, digest: str, context: str) -> None:
    """Record the token dataset as the run's input; training runs log the same one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = resolve_dataset_source(str(Path(data_dir).resolve()))
    dataset = MetaDataset(source=source, name=Path(data_dir).name, digest=digest[:32])
    mlflow.log_input(dataset, context=context)
    mlflow.set_tag(DIGEST_TAG, digest)


def find_stage_run(experiment: str, stage: str, digest: str) -> str | None:
    """The newest run of `stage` on exactly this dataset: how a training run finds its ingest."""
    experiment_id = use_experiment(experiment)
    runs = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=f"tags.`{STAGE_TAG}` = '{stage}' and tags.`{DIGEST_TAG}` = '{digest}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return runs[0].info.run_id if runs else None


def run_link(run_id: str) -> str:
    """A URL people can open when a tracking server is up, else the store and run id."""
    uri = mlflow.get_tracking_uri()
    if uri.startswith("http"):
        run = mlflow.get_run(run_id)
        return f"{uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}"
    return f"run {run_id} in {uri}"
