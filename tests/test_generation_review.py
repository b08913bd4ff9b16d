"""Reviewing generations in MLflow: a trace per output with its settings as tags and its code
scores as assessments, a child run per sampling setting, human feedback read back by
`review`, recommended settings used by `generate`, and the pyfunc model's params."""

from __future__ import annotations

import inspect
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import AssessmentSource
from served import served
from train_helpers import micro_config

from gptforge.flows.cli import main
from gptforge.flows.cli_parser import build_parser
from gptforge.flows.generate import generate_flow
from gptforge.flows.generation_runs import SETTING_STAGE
from gptforge.flows.home import QUIET_ENV, mlflow_uri
from gptforge.flows.models import register_checkpoint
from gptforge.flows.review import review_flow
from gptforge.flows.review_settings import RECOMMENDED_TAG
from gptforge.flows.servers import free_port
from gptforge.flows.traces import TAGGED
from gptforge.flows.tracking import (
    GENAI_KIND,
    KIND_TAG,
    STAGE_TAG,
    generations_experiment,
    stage_run,
)
from gptforge.model.checkpoint import load_model
from gptforge.model.generate import generate
from gptforge.model.sampling_config import SamplingConfig
from gptforge.model.scores import output_scores
from gptforge.model.train import train
from gptforge.pipeline.config import ConfigError
from gptforge.pipeline.tokenizer import decode, encode

pytestmark = pytest.mark.slow
CODE_SCORES = {"length", "distinct_1", "distinct_2", "repeated_3gram_rate", "finish_reason"}


@pytest.fixture(scope="module")
def registered(prefect, token_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A micro model trained for a few steps and registered as `review-test`."""
    out = tmp_path_factory.mktemp("review-model")
    result = train(micro_config(token_data, out, max_steps=2))
    with stage_run("train", "gptforge") as run_id:
        version = register_checkpoint(result.checkpoint, "review-test", result.dataset_digest)
    return {
        "uri": f"models:/review-test/{version}",
        "version": version,
        "run_id": run_id,
        "checkpoint": result.checkpoint,
    }


def _records(result: dict) -> list[dict]:
    return [json.loads(line) for line in Path(result["records"]).read_text().splitlines()]


def _traces(run: mlflow.entities.Run) -> list:
    return mlflow.search_traces(
        locations=[run.info.experiment_id], run_id=run.info.run_id, return_type="list"
    )


def _children(run_id: str) -> list[mlflow.entities.Run]:
    return mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.mlflow.parentRunId = '{run_id}'",
        output_format="list",
    )


def test_every_output_is_a_trace_with_its_settings_scores_and_run(
    registered: dict, tmp_path: Path
) -> None:
    result = generate_flow(
        model=registered["uri"],
        prompts=["The model", "Data flows"],
        temperature=[0.7, 1.0],
        top_k=20,
        max_new_tokens=6,
        num_return_sequences=2,
        out=str(tmp_path / "gen.jsonl"),
        experiment="review-a",
    )
    records = _records(result)
    assert len(records) == 8
    mlflow.set_tracking_uri(mlflow_uri())
    experiment = mlflow.get_experiment_by_name(generations_experiment("review-a"))
    assert experiment.tags[KIND_TAG] == GENAI_KIND
    assert mlflow.get_experiment_by_name("review-a") is None  # nothing else went there

    # the documented filter finds exactly the outputs sampled at 0.7
    mlflow.set_experiment(generations_experiment("review-a"))
    found = mlflow.search_traces(filter_string="tags.temperature = '0.7'", return_type="list")
    expected = {(r["prompt_index"], r["sample_index"]) for r in records if r["temperature"] == 0.7}
    assert len(found) == len(expected) == 4
    assert {
        (int(t.info.tags["prompt_index"]), int(t.info.tags["sample_index"])) for t in found
    } == (expected)

    job = mlflow.get_run(result["mlflow_run_id"])
    assert job.info.experiment_id == experiment.experiment_id
    assert not [m for m in job.data.metrics if "." in m]  # no `distinct_2.t0.7-...` columns
    children = _children(job.info.run_id)
    assert sorted(c.data.params["temperature"] for c in children) == ["0.7", "1.0"]
    model_id = MlflowClient().get_model_version("review-test", registered["version"]).model_id
    by_key = {(r["setting"], r["prompt_index"], r["sample_index"]): r for r in records}
    for child in children:
        assert child.data.tags[STAGE_TAG] == SETTING_STAGE
        assert child.data.params["top_k"] == "20"
        assert {"distinct_1", "distinct_2", "repeated_3gram_rate", "tokens_per_s"} <= set(
            child.data.metrics
        )
        assert child.data.metrics["outputs"] == 4
        traces = _traces(child)
        assert len(traces) == 4
        for trace in traces:
            tags = trace.info.tags
            record = by_key[(tags["setting"], int(tags["prompt_index"]), int(tags["sample_index"]))]
            assert set(TAGGED) <= set(tags)
            assert tags["setting"] == child.data.params["setting"]
            assert json.loads(tags["temperature"]) == record["temperature"]
            assert (
                json.loads(tags["stop"]) == [] and tags["finish_reason"] == record["finish_reason"]
            )
            assert tags["model_version"] == registered["version"]
            assert tags["train_run_id"] == registered["run_id"]
            assert trace.info.trace_metadata["mlflow.sourceRun"] == child.info.run_id
            assert trace.info.trace_metadata.get("mlflow.modelId") == model_id
            span = trace.data.spans[0]
            assert span.inputs == {"prompt": record["prompt"]}
            assert span.outputs == {"completion": record["completion"]}
            scores = {a.name: a for a in trace.info.assessments}
            assert set(scores) >= CODE_SCORES
            assert {a.source.source_type for a in scores.values()} == {"CODE"}
            expected_scores = output_scores(
                record["completion_token_ids"], record["finish_reason"], record.get("mean_logprob")
            )
            for name in CODE_SCORES:
                assert scores[name].feedback.value == pytest.approx(expected_scores[name])
            assert ("mean_logprob" in scores) == (record.get("mean_logprob") is not None)


def test_distinct_1_of_a_known_completion_as_its_assessment(
    registered: dict, tmp_path: Path
) -> None:
    """Greedy decoding of a fixed prompt: the trace's distinct-1 is computed from its ids."""
    result = generate_flow(
        model=registered["uri"],
        prompts=["Tokens"],
        do_sample=False,
        max_new_tokens=8,
        out=str(tmp_path / "greedy.jsonl"),
        experiment="review-k",
    )
    (record,) = _records(result)
    ids = record["completion_token_ids"]
    (child,) = _children(result["mlflow_run_id"])
    (trace,) = _traces(child)
    scores = {a.name: a.feedback.value for a in trace.info.assessments}
    assert scores["length"] == len(ids)
    assert scores["distinct_1"] == pytest.approx(len(set(ids)) / len(ids))


def test_without_traces_the_job_logs_runs_only(registered: dict, tmp_path: Path) -> None:
    result = generate_flow(
        model=registered["uri"],
        prompts=["Tokens"],
        max_new_tokens=3,
        traces=False,
        out=str(tmp_path / "quiet.jsonl"),
        experiment="review-q",
    )
    (child,) = _children(result["mlflow_run_id"])
    assert _traces(child) == []


def _rate(traces: list, ratings: list) -> None:
    human = AssessmentSource(source_type="HUMAN", source_id="reviewer@example.com")
    for trace, rating in zip(traces, ratings, strict=True):
        mlflow.log_feedback(
            trace_id=trace.info.trace_id, name="quality", value=rating, source=human
        )


def test_review_reads_human_ratings_per_setting_and_recommends_the_best(
    registered: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    job = {"model": registered["uri"], "prompts": ["The model"], "max_new_tokens": 4}
    with pytest.raises(ConfigError, match="has no recommended settings yet") as err:
        generate_flow(**job, settings="recommended", experiment="review-r")
    assert err.value.field == "settings"
    result = generate_flow(
        **job,
        temperature=[0.5, 1.0],
        top_p=0.9,
        num_return_sequences=3,
        out=str(tmp_path / "rated.jsonl"),
        experiment="review-r",
    )
    children = {c.data.params["setting"]: c for c in _children(result["mlflow_run_id"])}
    cool, hot = _traces(children["t0.5-k50-p0.9-r1"]), _traces(children["t1-k50-p0.9-r1"])
    _rate(cool, [4, 5, 5])
    _rate(hot, [2, "3", 2])
    code = AssessmentSource(source_type="CODE", source_id="not-a-person")
    mlflow.log_feedback(trace_id=hot[0].info.trace_id, name="quality", value=5, source=code)
    other = AssessmentSource(source_type="HUMAN", source_id="r2")
    mlflow.log_feedback(trace_id=hot[1].info.trace_id, name="fluency", value=5, source=other)

    assert (
        main(["review", "--model", registered["uri"], "--experiment", "review-r", "--promote"]) == 0
    )
    printed = capsys.readouterr().out
    assert "t0.5-k50-p0.9-r1: 3 ratings, mean 4.6667" in printed and "<- best" in printed
    version = MlflowClient().get_model_version("review-test", registered["version"])
    note = json.loads(version.tags[RECOMMENDED_TAG])
    assert note["settings"] == {
        "do_sample": True,
        "temperature": 0.5,
        "top_k": 50,
        "top_p": 0.9,
        "repetition_penalty": 1.0,
    }
    assert note["ratings"] == 3 and note["mean"] == pytest.approx(14 / 3)
    run = mlflow.get_run(note["review_run_id"])
    assert run.data.tags[STAGE_TAG] == "review" and run.data.metrics["ratings"] == 6
    table = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/review.json")
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    hot_row = next(r for r in rows if r["setting"] == "t1-k50-p0.9-r1")
    assert hot_row["ratings"] == 3 and hot_row["mean"] == pytest.approx(7 / 3, abs=1e-4)

    again = generate_flow(
        **job,
        settings="recommended",
        temperature=[0.9, 1.2],
        out=str(tmp_path / "recommended.jsonl"),
        experiment="review-r",
    )
    assert {(r["temperature"], r["top_p"]) for r in _records(again)} == {(0.5, 0.9)}


def test_review_without_human_ratings_is_one_line(registered: dict, capsys) -> None:
    argv = ["review", "--model", registered["uri"], "--experiment", "review-none"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("gptforge review: no HUMAN feedback named 'quality'") and "\n" not in err


def test_review_options_are_spelt_like_the_flow_parameters_with_their_defaults() -> None:
    parameters = inspect.signature(review_flow.fn).parameters
    cli = vars(build_parser().parse_args(["review", "--model", "m"]))
    assert set(cli) - {"command", "verbose"} == set(parameters)
    for name, value in cli.items():
        if name in parameters and parameters[name].default is not inspect.Parameter.empty:
            assert value == parameters[name].default, name


def test_the_registered_pyfunc_honours_sampling_params(registered: dict) -> None:
    mlflow.set_tracking_uri(mlflow_uri())
    model = mlflow.pyfunc.load_model(registered["uri"])
    prompts = pd.DataFrame({"prompt": ["The model", "Data flows"]})
    params = {"do_sample": False, "max_new_tokens": 3, "num_return_sequences": 2}
    texts = model.predict(prompts, params=params)
    gpt = load_model(registered["checkpoint"])
    greedy = SamplingConfig(do_sample=False, max_new_tokens=3)
    expected = [
        g.text
        for g in generate(gpt, [encode("The model"), encode("Data flows")], greedy, decode=decode)
    ]
    assert texts == [expected[0], expected[0], expected[1], expected[1]]

    sampled = model.predict(prompts, params={"max_new_tokens": 3, "seed": 5})
    assert model.predict(prompts, params={"max_new_tokens": 3, "seed": 5}) == sampled
    # the job's shape is a parameter too; it does not change the text
    one_slot = {"max_new_tokens": 3, "seed": 5, "batch_size": 1, "batching": "static"}
    assert model.predict(prompts, params=one_slot) == sampled
    with pytest.raises(ConfigError, match="batch_size: must be >= 1, got 0"):
        model.predict(prompts, params={"batch_size": 0})
    # per-row settings: the first row greedy and 3 tokens, the second as the params say
    rows = pd.DataFrame({"prompt": ["The model", "Data flows"], "temperature": [0.0, None]})
    rows["max_new_tokens"] = [3, None]
    mixed = model.predict(rows, params={"max_new_tokens": 2, "seed": 5})
    assert mixed[0] == expected[0]
    assert mixed[1] == model.predict(prompts, params={"max_new_tokens": 2, "seed": 5})[1]


def test_mlflow_models_serve_answers_with_params_over_http(
    registered: dict, tmp_path: Path
) -> None:
    """`mlflow models serve` on 127.0.0.1: `inputs`, `dataframe_records` and `dataframe_split`
    payloads, with sampling settings as `params`, give what `predict` gives in-process."""
    port = free_port()
    # MLflow runs `uvicorn` by name: the virtual environment's bin must be on PATH
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = os.environ | QUIET_ENV | {"MLFLOW_TRACKING_URI": mlflow_uri(), "PATH": path}
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", registered["uri"]]
    command += ["--env-manager", "local", "--host", "127.0.0.1", "-p", str(port), "-w", "1"]
    url = f"http://127.0.0.1:{port}"
    with served(command, f"{url}/ping", tmp_path / "serve.log", env):
        params = {"do_sample": False, "max_new_tokens": 3, "num_return_sequences": 2}
        params |= {"batch_size": 3, "batching": "static"}
        model = mlflow.pyfunc.load_model(registered["uri"])
        prompts = ["The model", "Data flows"]
        expected = model.predict(pd.DataFrame({"prompt": prompts}), params=params)
        payloads = [
            {"inputs": [{"prompt": p} for p in prompts]},
            {"dataframe_records": [{"prompt": p} for p in prompts]},
            {"dataframe_split": {"columns": ["prompt"], "data": [[p] for p in prompts]}},
        ]
        for payload in payloads:
            answer = _post(f"{url}/invocations", payload | {"params": params})
            assert answer["predictions"] == expected, payload
        rows = [{"prompt": prompts[0], "max_new_tokens": 1}, {"prompt": prompts[1]}]
        greedy = {"do_sample": False}
        answer = _post(f"{url}/invocations", {"dataframe_records": rows, "params": greedy})
        assert answer["predictions"] == model.predict(pd.DataFrame(rows), params=greedy)


def _post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(
        url, json.dumps(payload).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{exc}: {exc.read()[:2000]!r} for {payload}") from None
