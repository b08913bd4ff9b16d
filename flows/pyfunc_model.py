"""The registered model's pyfunc face, logged as code (MLflow "models from code"): nothing is
pickled. `mlflow.pyfunc.load_model("models:/gptforge/3").predict(["Once upon"])` generates.
Our own tools skip this wrapper and load the safetensors checkpoint directly."""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel, PythonModelContext


class GPTForgeModel(PythonModel):
    def load_context(self, context: PythonModelContext) -> None:
        from gptforge.model.checkpoint import load_model

        self.model = load_model(context.artifacts["checkpoint"])

    # No type hints on the inputs: MLflow would infer a signature from them and drop the
    # explicit one (flows/models.py: model_signature), whose parameters carry the defaults.
    def predict(self, context: PythonModelContext, model_input, params=None):  # noqa: ANN001

        from gptforge.model.generate import generate
        from gptforge.model.sampling_config import SamplingConfig
        from gptforge.pipeline.tokenizer import decode, encode

        prompts = [encode(p) for p in _prompts(model_input)]
        settings = SamplingConfig(**(params or {}))
        return [g.text for g in generate(self.model, prompts, settings, decode=decode)]


def _prompts(model_input: Any) -> list[str]:
    if hasattr(model_input, "columns"):
        column = "prompt" if "prompt" in model_input.columns else model_input.columns[0]
        return [str(p) for p in model_input[column]]
    if isinstance(model_input, str):
        return [model_input]
    return [str(p) for p in model_input]


mlflow.models.set_model(GPTForgeModel())
