"""Each sampling setting is defined once, in `model.sampling_config.SamplingConfig`: the CLI,
the `generate` flow's parameters (the Prefect UI form) and the registered model's parameter
schema all show the same default, field by field."""

from __future__ import annotations

import inspect
from dataclasses import fields

import pytest

from flows.cli import build_parser
from flows.generate import generate_flow
from flows.models import model_signature
from model.sampling_config import SamplingConfig

LIBRARY = SamplingConfig()
CLI = vars(build_parser().parse_args(["generate", "--model", "m", "--prompts", "p.txt"]))
FLOW = {name: p.default for name, p in inspect.signature(generate_flow.fn).parameters.items()}
MLFLOW = {spec.name: spec.default for spec in model_signature().params}


@pytest.mark.parametrize("name", [f.name for f in fields(SamplingConfig)])
def test_every_sampling_default_is_the_same_everywhere(name: str) -> None:
    library = getattr(LIBRARY, name)
    expected = list(library) if isinstance(library, tuple) else library
    assert MLFLOW[name] == expected
    if name == "stop":  # "none" is spelt None (flow), [] (CLI) and () (library)
        assert tuple(FLOW[name] or ()) == tuple(CLI[name]) == library
    elif name in FLOW:
        assert FLOW[name] == library
    if name in CLI and name != "stop":
        cli = CLI[name]
        assert (cli[0] if isinstance(cli, list) else cli) == library
    if name == "do_sample":
        assert CLI["greedy"] is (not library)


def test_the_registered_models_predict_samples_as_the_cli_does() -> None:
    """What drifted before: the CLI sampled with T=0.8/top-k 50/top-p 0.95, `predict` with
    1.0/0/1.0. Both now read SamplingConfig's defaults."""
    assert (LIBRARY.temperature, LIBRARY.top_k, LIBRARY.top_p) == (0.8, 50, 0.95)
    assert {p.name for p in model_signature().params} == {f.name for f in fields(SamplingConfig)}


def test_gptforge_version() -> None:
    from importlib.metadata import version

    from flows.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert version("gptforge")
