"""The registered model's pyfunc face, logged as code (MLflow "models from code"): nothing is
pickled. `mlflow.pyfunc.load_model("models:/gptforge/3").predict(pd.DataFrame({"prompt":
["Once upon"]}), params={"temperature": 0.3, "num_return_sequences": 2})` generates, and
a DataFrame may carry per-row settings in columns named like the sampling parameters. Our own tools
skip this wrapper and load the safetensors checkpoint directly."""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel, PythonModelContext

from gptforge.flows.models import JOB_PARAMS


class GPTForgeModel(PythonModel):
    # MLflow checks predict's type hints when the class is defined, and warns (at every
    # registration) when there are none; ours has none on purpose (below). MLflow's own
    # switch for classes that opt out of that check (pinned MLflow, constraints.txt).
    _skip_type_hint_validation = True

    def load_context(self, context: PythonModelContext) -> None:
        from gptforge.model.checkpoint import load_model

        self.model = load_model(context.artifacts["checkpoint"])

    # No type hints on the inputs: MLflow would infer a signature from them and drop the
    # explicit one (flows/models.py: model_signature), whose parameters carry the defaults.
    def predict(self, context: PythonModelContext, model_input, params=None):  # noqa: ANN001
        """Completions ordered by (row, sample index): `num_return_sequences` per row. Rows
        with different settings share one batch, each with its own."""
        from gptforge.model.generate import generate
        from gptforge.model.sampling_config import JobConfig, SamplingConfig
        from gptforge.pipeline.tokenizer import decode, encode

        params = dict(params or {})
        job = JobConfig(**{name: params.pop(name, value) for name, value in JOB_PARAMS.items()})
        rows = _rows(model_input)
        outputs = generate(
            self.model,
            [encode(prompt) for prompt, _ in rows],
            [SamplingConfig.from_json(params | overrides) for _, overrides in rows],
            num_return_sequences=job.num_return_sequences,
            batch_size=job.batch_size,
            batching=job.batching,
            decode=decode,
        )
        return [g.text for g in outputs]


def _rows(model_input: Any) -> list[tuple[str, dict[str, Any]]]:
    """(prompt, per-row settings) from a DataFrame (`prompt` column, else the first; other
    columns named like sampling settings override the params for their row), a string or a
    list of strings."""
    if not hasattr(model_input, "columns"):
        prompts = [model_input] if isinstance(model_input, str) else model_input
        return [(str(p), {}) for p in prompts]
    column = "prompt" if "prompt" in model_input.columns else model_input.columns[0]
    kinds = _setting_kinds()
    per_row = [c for c in model_input.columns if c in kinds]
    rows = []
    for record in model_input.to_dict(orient="records"):
        overrides = {c: _value(record[c], kinds[c]) for c in per_row if _given(record[c])}
        rows.append((str(record[column]), overrides))
    return rows


def _setting_kinds() -> dict[str, type]:
    from gptforge.model.sampling_config import SamplingConfig

    kinds = {"bool": bool, "int": int, "float": float}
    return {f.name: kinds[str(f.type)] for f in fields(SamplingConfig) if str(f.type) in kinds}


def _given(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _value(value: Any, kind: type) -> Any:
    """A DataFrame cell as the setting's type (pandas turns 50 into 50.0 next to a NaN)."""
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if kind is bool and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    return value.item() if hasattr(value, "item") else value


mlflow.models.set_model(GPTForgeModel())
