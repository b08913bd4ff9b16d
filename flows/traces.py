"""Generated outputs as MLflow traces: one trace per output (prompt in, completion out), its
sampling settings as searchable tags, its code scores as feedback assessments.

Cost: MLflow writes a trace in one store transaction with its tags and assessments when the
assessments are logged while the trace is still open (they are kept in memory until it
ends), and exports finished traces from background threads (`MLFLOW_ENABLE_ASYNC_TRACE_LOGGING`,
on by default) in batches; `flush` waits for them. Measured in docs/generation.md."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import mlflow
from mlflow.entities import AssessmentSource, SpanType

from gptforge.model.scores import Score

TRACE_NAME = "generate"
SCORER_ID = "gptforge.model.scores"
# Trace tags, each the record's value as JSON text (0.7 -> '0.7', True -> 'true',
# ["\n"] -> '["\\n"]'): `tags.temperature = '0.7'` finds the outputs sampled at 0.7.
TAGGED = (
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "repetition_penalty",
    "max_new_tokens",
    "seed",
    "stop",
    "setting",
    "setting_index",
    "finish_reason",
    "prompt_index",
    "sample_index",
    "prompt_tokens",
    "completion_tokens",
    "tokens_per_second",
    "model",
    "model_name",
    "model_version",
    "train_run_id",
)


def trace_tags(record: dict[str, Any]) -> dict[str, str]:
    """A generation record's searchable tags (unset ones, e.g. no model version, left out)."""
    tags = {}
    for key in TAGGED:
        value = record.get(key)
        if value is not None:
            tags[key] = value if isinstance(value, str) else json.dumps(value)
    return tags


def log_traces(
    records: Iterable[dict[str, Any]],
    scores: Iterable[dict[str, Score]],
    run_id: str,
    model_id: str | None = None,
) -> list[str]:
    """One trace per record in the active experiment, linked to `run_id` and to the logged
    model `model_id` (a registered version's), with its scores as CODE feedback; returns the
    trace ids. Traces are written in the background: `flush` before reading them back."""
    source = AssessmentSource(source_type="CODE", source_id=SCORER_ID)
    ids = []
    for record, score in zip(records, scores, strict=True):
        with mlflow.start_span(TRACE_NAME, span_type=SpanType.LLM, run_id=run_id) as span:
            span.set_inputs({"prompt": record["prompt"]})
            span.set_outputs({"completion": record["completion"]})
            span.set_attributes({"seconds": record["seconds"]})
            mlflow.update_current_trace(tags=trace_tags(record), model_id=model_id)
            for name, value in score.items():
                if value is not None:
                    mlflow.log_feedback(
                        trace_id=span.trace_id, name=name, value=value, source=source
                    )
        ids.append(span.trace_id)
    return ids


def flush() -> None:
    """Wait until every trace logged so far is in the tracking store."""
    mlflow.flush_trace_async_logging()
