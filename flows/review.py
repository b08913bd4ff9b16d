"""The `review` flow: human feedback flows back. Reviewers rate generation traces in the MLflow
UI (a feedback such as `quality`, 1-5 or pass/fail); this reads those ratings for one model,
summarizes them per sampling setting, records the summary as an MLflow run with a table, and
on request stores the best-rated settings on the model version, where
`gptforge generate --settings recommended` finds them."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Trace
from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from gptforge.flows.mlflow_names import check_tracking_names
from gptforge.flows.models import ModelRef, resolve_model
from gptforge.flows.review_settings import RECOMMENDED_TAG
from gptforge.flows.tracking import (
    DEFAULT_EXPERIMENT,
    GENAI_KIND,
    flow_run_name,
    generations_experiment,
    run_link,
    stage_run,
    use_experiment,
)
from gptforge.model.scores import RatingSummary, best_rated, rating_value, summarize
from gptforge.pipeline.config import ConfigError
from gptforge.pipeline.errors import RunError

REVIEW_TABLE = "review.json"
# What a setting is (its label's parts); a job's length, seed and stop strings stay its own.
RECOMMENDED = ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty")


@flow(name="review", flow_run_name=flow_run_name("review", "model"))
def review_flow(
    model: str,
    feedback: str = "quality",
    min_ratings: int = 2,
    promote: bool = False,
    experiment: str = DEFAULT_EXPERIMENT,
) -> dict[str, Any]:
    """Summarize human ratings of a model's generations per sampling setting.

    Args:
        model: the model whose generation traces were rated (any `generate` reference).
        feedback: the assessment name reviewers used, e.g. quality (numbers, true/false or
            pass/fail); only feedback whose source is HUMAN counts.
        min_ratings: a setting needs this many ratings to be recommended.
        promote: store the best-rated setting on the model version (tag
            gptforge.recommended_settings) for `generate --settings recommended`.
        experiment: the project's MLflow experiment (generations live in
            <experiment>-generations).
    """
    logger = get_run_logger()
    check_tracking_names(experiment)
    if min_ratings < 1:
        raise ConfigError("min_ratings", f"must be >= 1, got {min_ratings}")
    ref = resolve_model(model)
    if promote and not (ref.name and ref.version):
        raise ConfigError("promote", f"{ref.label} is not a registered version; nothing to tag")
    review_experiment = generations_experiment(experiment)
    traces = model_traces(ref, use_experiment(review_experiment, GENAI_KIND))
    ratings, settings = human_ratings(traces, feedback)
    if not ratings:
        raise RunError(
            f"no HUMAN feedback named {feedback!r} on the {len(traces)} generation traces of "
            f"{ref.label} in {review_experiment}: rate some in the MLflow UI first"
        )
    summaries = {label: summarize(values) for label, values in ratings.items()}
    best = best_rated(summaries, min_ratings)
    rows = summary_rows(summaries, settings, best)
    with stage_run("review", review_experiment, f"review-{ref.label}", kind=GENAI_KIND) as run_id:
        mlflow.log_params({"model": ref.uri, "feedback": feedback, "min_ratings": min_ratings})
        mlflow.log_metrics(
            {"traces": len(traces), "ratings": sum(s.count for s in summaries.values())}
        )
        mlflow.log_table(_columns(rows), artifact_file=REVIEW_TABLE)
        if best is not None:
            mlflow.set_tag("gptforge.best_setting", best)
            mlflow.log_metric("best_mean", summaries[best].mean)
        link = run_link(run_id)
    recommended = None
    if promote and best is not None:
        recommended = {k: settings[best][k] for k in RECOMMENDED if k in settings[best]}
        note = {
            "settings": recommended,
            "setting": best,
            "feedback": feedback,
            "mean": summaries[best].mean,
            "ratings": summaries[best].count,
            "review_run_id": run_id,
        }
        MlflowClient().set_model_version_tag(
            ref.name, ref.version, RECOMMENDED_TAG, json.dumps(note)
        )
        logger.info("%s recommends %s (%s)", ref.label, best, recommended)
    create_table_artifact(rows, key="review", description=f"{feedback} by setting; MLflow {link}")
    return {
        "model": ref.label,
        "mlflow_run_id": run_id,
        "rows": rows,
        "best": best,
        "recommended": recommended,
        "traces": len(traces),
    }


def model_traces(ref: ModelRef, experiment_id: str) -> list[Trace]:
    """Every generation trace of `ref` (tag `model` is its label), assessments included."""
    label = ref.label.replace("'", "\\'")
    return mlflow.search_traces(
        locations=[experiment_id],
        filter_string=f"tags.model = '{label}'",
        return_type="list",
        include_spans=False,
    )


def human_ratings(
    traces: list[Trace], feedback: str
) -> tuple[dict[str, list[float]], dict[str, dict[str, Any]]]:
    """Each setting's ratings (valid HUMAN feedback named `feedback`, as numbers), and each
    setting's sampling settings as its traces' tags record them."""
    ratings: dict[str, list[float]] = defaultdict(list)
    settings: dict[str, dict[str, Any]] = {}
    for trace in traces:
        tags = trace.info.tags
        label = tags.get("setting")
        if label is None:
            continue
        settings.setdefault(label, {k: json.loads(tags[k]) for k in RECOMMENDED if k in tags})
        for assessment in trace.info.assessments:
            if (
                assessment.name == feedback
                and assessment.source.source_type == "HUMAN"
                and assessment.valid is not False
                and assessment.feedback is not None
                and assessment.feedback.error is None
            ):
                value = rating_value(assessment.feedback.value)
                if value is not None:
                    ratings[label].append(value)
    return dict(ratings), settings


def summary_rows(
    summaries: dict[str, RatingSummary], settings: dict[str, dict[str, Any]], best: str | None
) -> list[dict[str, Any]]:
    """One row per rated setting, best mean first: count, mean, 95% interval."""
    rows = []
    for label, s in sorted(summaries.items(), key=lambda item: -item[1].mean):
        rows.append(
            {
                "setting": label,
                "ratings": s.count,
                "mean": round(s.mean, 4),
                "ci95_low": None if s.low is None else round(s.low, 4),
                "ci95_high": None if s.high is None else round(s.high, 4),
                "best": label == best,
                "settings": json.dumps(settings.get(label, {})),
            }
        )
    return rows


def recommended_settings(ref: ModelRef) -> dict[str, Any]:
    """The sampling settings a review stored on `ref`'s version; a one-line error if none."""
    hint = f"rate its generations, then run gptforge review --model {ref.uri} --promote"
    if not (ref.name and ref.version):
        raise ConfigError("settings", f"{ref.label} is not a registered version; {hint}")
    tag = MlflowClient().get_model_version(ref.name, ref.version).tags.get(RECOMMENDED_TAG)
    if not tag:
        raise ConfigError("settings", f"{ref.label} has no recommended settings yet; {hint}")
    return json.loads(tag)["settings"]


def _columns(rows: list[dict[str, Any]]) -> dict[str, list]:
    return {key: [row[key] for row in rows] for key in rows[0]}
