"""Each setting is defined once: sampling in `model.sampling_config.SamplingConfig`, a generation
job's shape in `JobConfig`, training in `model.train_config.TrainConfig`. The CLI, the flows'
parameters (the Prefect UI form), the library and the registered model's parameter schema all
show the same default, field by field."""

from __future__ import annotations

import inspect
from dataclasses import fields

import pytest

from gptforge.flows.cli import build_parser
from gptforge.flows.generate import generate_flow
from gptforge.flows.models import model_signature
from gptforge.model.config import GPTConfig
from gptforge.model.generate import stream
from gptforge.model.sampling_config import JobConfig, SamplingConfig
from gptforge.model.train_config import TrainConfig
from gptforge.pipeline.config import IngestConfig
from gptforge.pipeline.settings import documented

LIBRARY = SamplingConfig()
CLI = vars(build_parser().parse_args(["generate", "--model", "m", "--prompts-file", "p.txt"]))
FLOW = {name: p.default for name, p in inspect.signature(generate_flow.fn).parameters.items()}
MLFLOW = {spec.name: spec.default for spec in model_signature().params}


@pytest.mark.parametrize("name", [f.name for f in fields(SamplingConfig)])
def test_every_sampling_default_is_the_same_everywhere(name: str) -> None:
    library = getattr(LIBRARY, name)
    expected = list(library) if isinstance(library, tuple) else library
    assert MLFLOW[name] == expected
    if name == "stop":  # "none" is spelt None (flow and CLI) and () (library)
        assert tuple(FLOW[name] or ()) == tuple(CLI[name] or ()) == library
    elif name in FLOW:
        assert FLOW[name] == library
    if name in CLI and name != "stop":
        cli = CLI[name]
        assert (cli[0] if isinstance(cli, list) else cli) == library


@pytest.mark.parametrize("name", documented(JobConfig))
def test_every_job_default_is_the_same_everywhere(name: str) -> None:
    """`--batch-size`, the flow's `batch_size`, `generate()`'s and `predict`'s: one default."""
    library = inspect.signature(stream).parameters[name].default
    assert CLI[name] == FLOW[name] == MLFLOW[name] == library == getattr(JobConfig(), name)


def test_the_registered_models_predict_samples_as_the_cli_does() -> None:
    """What drifted before: the CLI sampled with T=0.8/top-k 50/top-p 0.95, `predict` with
    1.0/0/1.0. Both now read SamplingConfig's defaults."""
    assert (LIBRARY.temperature, LIBRARY.top_k, LIBRARY.top_p) == (0.8, 50, 0.95)
    names = {f.name for f in fields(SamplingConfig)} | set(documented(JobConfig))
    assert {p.name for p in model_signature().params} == names


def test_gptforge_version() -> None:
    from importlib.metadata import version

    from gptforge.flows.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert version("gptforge")


def stage_defaults(settings: type, flow_module: str, flow: str, argv: list[str]) -> list:
    """(stage, field, CLI default, flow default, library default) for every documented field."""
    import importlib

    cli = vars(build_parser().parse_args(argv))
    parameters = inspect.signature(getattr(importlib.import_module(flow_module), flow).fn)
    return [
        pytest.param(cli[f.name], parameters.parameters[f.name].default, f.default, id=f.name)
        for f in fields(settings)
        if f.name in documented(settings)
    ]


@pytest.mark.parametrize(
    ("cli", "flow", "library"),
    stage_defaults(TrainConfig, "gptforge.flows.train", "train_flow", ["train", "--data", "d"])
    + stage_defaults(GPTConfig, "gptforge.flows.train", "train_flow", ["train", "--data", "d"])
    + stage_defaults(
        IngestConfig, "gptforge.flows.ingest", "ingest_flow", ["ingest", "s", "--out", "o"]
    ),
)
def test_every_train_and_ingest_default_is_the_same_in_the_cli_the_flow_and_the_library(
    cli: object, flow: object, library: object
) -> None:
    assert cli == flow == library


def test_derived_training_settings_are_decided_by_the_library(tmp_path) -> None:
    """A notebook's TrainConfig trains as the CLI does: warmup, floor and log cadence."""
    cfg = TrainConfig(data_dir=tmp_path, out_dir=tmp_path, max_steps=300, learning_rate=6e-4)
    assert (cfg.warmup_steps, cfg.min_lr, cfg.log_interval) == (30, pytest.approx(6e-5), 10)
    explicit = TrainConfig(data_dir=tmp_path, out_dir=tmp_path, warmup_steps=0, min_lr=0.0)
    assert (explicit.warmup_steps, explicit.min_lr) == (0, 0.0)


def exit_status(argv: list[str]) -> int:
    """What `gptforge ARGV` exits with: a refused option (argparse) exits as a bad value does."""
    from gptforge.flows.cli import main

    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code)


@pytest.mark.parametrize(
    ("command", "options", "message"),
    [
        ("train", ["--max-steps", "0"], "max_steps: must be >= 1"),
        ("train", ["--beta2", "1"], "beta2: must be >= 0 and < 1, got 1.0"),
        ("train", ["--learning-rate", "2"], "learning_rate: must be > 0 and <= 1"),
        ("train", ["--seed", "-1"], "seed: must be >= 0"),
        ("generate", ["--batch-size", "0"], "batch_size: must be >= 1, got 0"),
        ("generate", ["--num-return-sequences", "-2"], "num_return_sequences: must be >= 1"),
        ("generate", ["--top-p", "0"], "top_p: must be > 0 and <= 1, got 0.0"),
        ("generate", ["--resume"], "resume: needs --out: the records file of the job"),
    ],
)
def test_a_setting_out_of_range_is_refused_with_its_name_before_anything_starts(
    command: str,
    options: list[str],
    message: str,
    tmp_path,
    monkeypatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One line naming the setting; no Prefect server started, no flow run made."""
    from gptforge.flows import cli

    def started() -> None:
        raise AssertionError("the orchestrator was started")

    monkeypatch.setattr(cli, "orchestrator", started)
    job = {"train": ["--data", str(tmp_path)], "generate": ["--model", "m", "--prompts", "hi"]}
    assert exit_status([command, *job[command], *options]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--precision", "fp64"], "argument --precision: invalid choice: 'fp64'"),
        (["--preset", "huge"], "argument --preset: invalid choice: 'huge'"),
        (["--max-steps", "-5"], "max_steps: must be >= 1"),
        (["--max-new-tokens", "0"], "max_new_tokens: must be >= 1"),
    ],
)
def test_run_checks_training_and_generation_settings_before_it_ingests(
    args: list[str], message: str, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Today's data may be unchanged (training skipped): a bad value must still be refused."""
    assert exit_status(["run", str(tmp_path), "--data", str(tmp_path / "data"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "data").exists(), "nothing was ingested"


# Options that steer the terminal rather than the work: no flow parameter behind them.
CLI_ONLY = {"command", "verbose", "stream"}


@pytest.mark.parametrize(
    ("flow_module", "flow", "argv"),
    [
        ("gptforge.flows.ingest", "ingest_flow", ["ingest", "s", "--out", "o"]),
        ("gptforge.flows.train", "train_flow", ["train", "--data", "d"]),
        ("gptforge.flows.generate", "generate_flow", ["generate", "--model", "m"]),
        ("gptforge.flows.full_pipeline", "pipeline_flow", ["run", "s"]),
        ("gptforge.flows.serve", "serve_all", ["serve"]),
    ],
    ids=["ingest", "train", "generate", "run", "serve"],
)
def test_every_option_is_spelt_like_the_flow_parameter_it_sets_with_its_default(
    flow_module: str, flow: str, argv: list[str]
) -> None:
    """`--model-name` is `model_name` in the Prefect form too, and starts at the same value."""
    import importlib

    function = getattr(importlib.import_module(flow_module), flow)
    parameters = inspect.signature(getattr(function, "fn", function)).parameters
    cli = vars(build_parser().parse_args(argv))
    assert set(cli) - CLI_ONLY <= set(parameters), "options with no flow parameter"
    for name, value in cli.items():
        if name in CLI_ONLY or parameters[name].default is inspect.Parameter.empty:
            continue
        flow_default = parameters[name].default
        if isinstance(value, list) and not isinstance(flow_default, list) and value:
            value = value[0]  # a sweep option's default is one value
        assert value == flow_default, name


def test_the_preset_type_lists_exactly_the_presets() -> None:
    """The flows' `preset` parameter is a Literal, so the Prefect form offers a dropdown."""
    from typing import get_args

    from gptforge.model.config import PRESETS, PresetName

    assert get_args(PresetName) == tuple(PRESETS)
