"""The `generate` flow: records on disk and in MLflow, linked to the model version and the
training run; every invalid setting refused before a model is loaded."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from prefect.artifacts import Artifact
from train_helpers import micro_config

from gptforge.flows.generate import MODEL_URI_TAG, TRAIN_RUN_TAG, generate_flow
from gptforge.flows.generation_records import journal_path
from gptforge.flows.home import mlflow_uri
from gptforge.flows.models import register_checkpoint
from gptforge.flows.tracking import STAGE_TAG, stage_run
from gptforge.flows.train import MODEL_VERSION_TAG
from gptforge.model.generate import Generation
from gptforge.model.train import train
from gptforge.pipeline.config import ConfigError

pytestmark = pytest.mark.slow

SETTINGS = ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty")
RECORD_FIELDS = {
    *SETTINGS,
    "prompt",
    "completion",
    "max_new_tokens",
    "seed",
    "stop",
    "eos_token_id",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "model",
    "model_version",
    "train_run_id",
    "seconds",
    "tokens_per_second",
}


@pytest.fixture(scope="module")
def registered(prefect, token_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A micro model trained for a few steps and registered as `gen-test`, as `train` would."""
    out = tmp_path_factory.mktemp("gen-model")
    result = train(micro_config(token_data, out, max_steps=2))
    with stage_run("train", "gptforge") as run_id:
        version = register_checkpoint(result.checkpoint, "gen-test", result.dataset_digest)
    return {"uri": f"models:/gen-test/{version}", "run_id": run_id, "version": version}


def test_a_sweep_writes_records_table_params_tags_and_metrics(
    registered: dict, tmp_path: Path
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "The model"}\n{"prompt": "Data flows", "max_new_tokens": 3}\n')
    out = tmp_path / "gen.jsonl"
    result = generate_flow(
        model=registered["uri"],
        prompts_file=str(prompts),
        temperature=[0.5, 1.0],
        top_k=20,
        max_new_tokens=6,
        num_return_sequences=2,
        out=str(out),
    )
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == result["outputs"] == 2 * 2 * 2
    assert all(set(r) >= RECORD_FIELDS for r in records)
    assert {r["temperature"] for r in records} == {0.5, 1.0}
    assert all(r["model"] == f"gen-test/{registered['version']}" for r in records)
    assert all(r["train_run_id"] == registered["run_id"] for r in records)
    short = [r for r in records if r["prompt"] == "Data flows"]
    assert all(r["max_new_tokens"] == 3 and r["completion_tokens"] <= 3 for r in short)
    assert all(r["finish_reason"] in ("eos", "length") for r in records)

    mlflow.set_tracking_uri(mlflow_uri())
    run = mlflow.get_run(result["mlflow_run_id"])
    assert run.data.tags[STAGE_TAG] == "generate"
    assert run.data.tags[MODEL_VERSION_TAG] == f"gen-test/{registered['version']}"
    assert run.data.tags[TRAIN_RUN_TAG] == registered["run_id"]
    assert run.data.tags[MODEL_URI_TAG] == registered["uri"]
    assert run.data.params["temperature"] == "[0.5, 1.0]" and run.data.params["top_k"] == "20"
    children = mlflow.search_runs(
        [run.info.experiment_id],
        f"tags.mlflow.parentRunId = '{run.info.run_id}'",
        output_format="list",
    )
    assert {c.data.params["setting"] for c in children} == {"t0.5-k20-p0.95-r1", "t1-k20-p0.95-r1"}
    for child in children:  # one run per setting, plain metric names (docs/generation.md)
        assert {
            "distinct_1",
            "distinct_2",
            "repeated_3gram_rate",
            "tokens_per_s",
            "mean_completion_tokens",
        } <= set(child.data.metrics)
    table = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/generations.json")
    assert len(table["data"]) == len(records)
    assert set(SETTINGS) | {"prompt", "completion", "finish_reason"} <= set(table["columns"])
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"gen.jsonl", "gen.png", "generations.json"} <= artifacts
    artifact = Artifact.get("generations")
    assert artifact is not None and "t0.5-k20-p0.95-r1" in str(artifact.data)


def test_an_override_on_one_prompt_leaves_the_others_text_alone(
    registered: dict, tmp_path: Path
) -> None:
    texts = []
    for name, second in [
        ("plain", '{"prompt": "Shards"}'),
        ("override", '{"prompt": "Shards", "temperature": 0.3}'),
    ]:
        prompts = tmp_path / f"{name}.jsonl"
        prompts.write_text(f'{{"prompt": "The model"}}\n{second}\n{{"prompt": "Tokens"}}\n')
        result = generate_flow(
            model=registered["uri"],
            prompts_file=str(prompts),
            max_new_tokens=6,
            out=str(tmp_path / f"{name}-out.jsonl"),
        )
        records = [json.loads(line) for line in Path(result["records"]).read_text().splitlines()]
        assert [r["prompt_index"] for r in records] == [0, 1, 2]
        texts.append([r["completion"] for r in records])
    plain, override = texts
    assert (plain[0], plain[2]) == (override[0], override[2])


def test_a_greedy_sweep_runs_each_distinct_decoding_once(registered: dict, tmp_path: Path) -> None:
    result = generate_flow(
        model=registered["uri"],
        prompts=["Tokens"],
        do_sample=False,
        temperature=[0.5, 1.0],
        top_k=[0, 20],
        max_new_tokens=4,
        out=str(tmp_path / "greedy.jsonl"),
    )
    assert result["outputs"] == 1 and list(result["metrics"]) == ["greedy-r1"]


def test_the_same_job_gives_the_same_text(registered: dict, tmp_path: Path) -> None:
    runs = [
        generate_flow(
            model=registered["uri"],
            prompts=["Tokens", "The shards are"],
            max_new_tokens=5,
            batch_size=batch,
            out=str(tmp_path / f"b{batch}.jsonl"),
        )
        for batch in (1, 4)
    ]
    texts = [
        [json.loads(line)["completion"] for line in Path(r["records"]).read_text().splitlines()]
        for r in runs
    ]
    assert texts[0] == texts[1]


@pytest.mark.parametrize(
    ("settings", "field", "allowed"),
    [
        ({"temperature": -0.1}, "temperature", ">= 0"),
        ({"top_p": 1.5}, "top_p", "> 0 and <= 1"),
        ({"top_p": [0.9, 0.0]}, "top_p", "> 0 and <= 1"),
        ({"top_k": -1}, "top_k", ">= 0"),
        ({"repetition_penalty": 0.0}, "repetition_penalty", "> 0"),
        ({"max_new_tokens": 0}, "max_new_tokens", ">= 1"),
        ({"num_return_sequences": 0}, "num_return_sequences", ">= 1"),
        ({"batch_size": 0, "model": "models:/no-such-model/7"}, "batch_size", ">= 1"),
        ({"model": "models:/no-such-model/7"}, "model", "does not exist"),
        ({"prompts": ["word " * 40]}, "prompts", "block_size=32"),
    ],
)
def test_invalid_settings_are_refused_before_loading_the_model(
    registered: dict, settings: dict, field: str, allowed: str
) -> None:
    job = {"model": registered["uri"], "prompts": ["Hello"]} | settings
    with pytest.raises(ConfigError) as err:
        generate_flow(**job)
    assert err.value.field == field and allowed in str(err.value)


def test_empty_and_malformed_prompt_files_are_refused(registered: dict, tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok", "temprature": 0.3}\n')
    for path, message in [(empty, "holds no prompts"), (bad, "unknown setting 'temprature'")]:
        with pytest.raises(ConfigError, match=message) as err:
            generate_flow(model=registered["uri"], prompts_file=str(path))
        assert err.value.field == "prompts_file"


def test_a_job_stopped_midway_keeps_its_finished_records_as_valid_jsonl(
    registered: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C (or SIGTERM, which the CLI turns into the same unwinding) after two outputs."""
    import gptforge.flows.generate as gen

    real = gen.stream

    def interrupted_after_two_outputs(*args, **kwargs):
        finished = 0
        for event in real(*args, **kwargs):
            if isinstance(event, Generation) and finished == 2:
                raise KeyboardInterrupt
            finished += isinstance(event, Generation)
            yield event

    monkeypatch.setattr(gen, "stream", interrupted_after_two_outputs)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"prompt": f"p{i}", "temperature": 0.5 + i / 10}) + "\n" for i in range(4)
        )
    )
    out = tmp_path / "out.jsonl"
    with pytest.raises(KeyboardInterrupt):
        generate_flow(
            model=registered["uri"], prompts_file=str(prompts), max_new_tokens=3, out=str(out)
        )
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in records] == ["p0", "p1"]
    assert all(set(r) >= RECORD_FIELDS for r in records)
    mlflow.set_tracking_uri(mlflow_uri())
    (run,) = mlflow.search_runs(
        filter_string=f"tags.`{STAGE_TAG}` = 'generate' and attributes.status = 'KILLED'",
        search_all_experiments=True,
        output_format="list",
    )


def outputs_of(path: Path) -> list[tuple]:
    """What a record says was generated, without its timings (which differ run to run)."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [
        (r["setting_index"], r["prompt_index"], r["sample_index"], r["completion"])
        + (r["completion_token_ids"], r["finish_reason"], r["model_uri"])
        for r in records
    ]


@pytest.fixture
def resumable_job(registered: dict, tmp_path: Path) -> tuple[dict, Path]:
    """A job of 8 outputs with per-prompt overrides and a sweep, and its uninterrupted records."""
    prompts = tmp_path / "p.jsonl"
    lines = [{"prompt": f"p{i}", "max_new_tokens": 2 + i} for i in range(4)]
    prompts.write_text("".join(json.dumps(line) + "\n" for line in lines))
    job = {"model": registered["uri"], "prompts_file": str(prompts), "traces": False}
    job |= {"temperature": [0.7, 1.0], "batch_size": 3}
    whole = tmp_path / "whole.jsonl"
    generate_flow(**job, out=str(whole))
    return job, whole


def test_a_stopped_job_resumed_generates_only_the_rest_and_ends_as_one_run_would(
    resumable_job: tuple[dict, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gptforge.flows.generate as gen

    job, whole = resumable_job
    real, skipped = gen.stream, []

    def stopped_after_three_outputs_the_first_time(*args, **kwargs):
        skipped.append(kwargs["skip"])
        finished = 0
        for event in real(*args, **kwargs):
            if isinstance(event, Generation):
                if finished == 3 and len(skipped) == 1:
                    raise KeyboardInterrupt
                finished += 1
            yield event

    monkeypatch.setattr(gen, "stream", stopped_after_three_outputs_the_first_time)
    out = tmp_path / "out.jsonl"
    with pytest.raises(KeyboardInterrupt):
        generate_flow(**job, out=str(out))
    assert len(outputs_of(out)) == 3 and not journal_path(out).exists()
    result = generate_flow(**job, out=str(out), resume=True)
    assert result["reused"] == 3 and len(skipped[1]) == 3, "only the other 5 were generated"
    assert outputs_of(out) == outputs_of(whole)


def test_a_job_killed_outright_resumes_from_its_journal(
    resumable_job: tuple[dict, Path], tmp_path: Path
) -> None:
    """No records file, only the journal's flushed lines, the last one cut by the kill."""
    job, whole = resumable_job
    out = tmp_path / "killed.jsonl"
    lines = whole.read_text().splitlines(keepends=True)
    journal_path(out).write_text("".join(lines[:4]) + lines[4][:40])
    assert generate_flow(**job, out=str(out), resume=True)["reused"] == 4
    assert outputs_of(out) == outputs_of(whole)
    assert not journal_path(out).exists()
    other = job | {"temperature": 0.5}  # another job: nothing of the file is its own
    assert generate_flow(**other, out=str(out), resume=True)["reused"] == 0


def test_resume_needs_the_records_file(registered: dict) -> None:
    with pytest.raises(ConfigError) as err:
        generate_flow(model=registered["uri"], prompts=["Hello"], resume=True)
    assert err.value.field == "resume"


def test_the_cli_says_where_a_stopped_job_is_and_how_to_continue_it(
    registered: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import gptforge.flows.generate as gen
    from gptforge.flows.cli import main

    real = gen.stream

    def stopped_after_the_first_output(*args, **kwargs):
        for event in real(*args, **kwargs):
            yield event
            if isinstance(event, Generation) and not kwargs["skip"]:
                raise KeyboardInterrupt

    monkeypatch.setattr(gen, "stream", stopped_after_the_first_output)
    argv = ["generate", "--model", registered["uri"], "--prompts", "a", "b", "--no-traces"]
    assert main(argv) == 130
    line = capsys.readouterr().err.strip().splitlines()[-1]
    out = line.rsplit(" ", 1)[-1]  # no --out given: the CLI named the file before starting
    assert line == (
        f"gptforge generate: stopped by SIGINT; the records finished are in {out}: "
        f"continue with --resume --out {out}"
    )
    assert main([*argv, "--resume", "--out", out]) == 0
    assert f"2 generation records (1 kept from the earlier run): {out}" in capsys.readouterr().out
