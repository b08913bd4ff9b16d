"""The `generate` flow: a batch generation job over prompts and a grid of sampling settings,
written as JSONL generation records and logged to MLflow as a reviewable table."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import mlflow
import torch
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from gptforge.flows.generation_records import (
    Journal,
    Key,
    record_order,
    reusable_records,
    write_records,
    writing,
)
from gptforge.flows.generation_runs import log_setting_runs
from gptforge.flows.home import gptforge_home
from gptforge.flows.mlflow_names import check_tracking_names
from gptforge.flows.models import ModelRef, resolve_model
from gptforge.flows.plots import plot_diversity
from gptforge.flows.progress import report
from gptforge.flows.review import recommended_settings
from gptforge.flows.review_settings import SettingsSource
from gptforge.flows.tracking import (
    DEFAULT_EXPERIMENT,
    GENAI_KIND,
    flow_run_name,
    generations_experiment,
    run_link,
    stage_run,
)
from gptforge.flows.train import MODEL_VERSION_TAG
from gptforge.model.checkpoint import CONFIG, load_model
from gptforge.model.config import GPTConfig
from gptforge.model.generate import JOB, Generation, stream, validate_prompts
from gptforge.model.generation_job import (
    Prompt,
    load_prompts,
    sampling_grid,
    setting_label,
    with_overrides,
)
from gptforge.model.sampling_config import Batching, JobConfig, SamplingConfig
from gptforge.pipeline.config import ConfigError
from gptforge.pipeline.settings import check_output
from gptforge.pipeline.tokenizer import decode, encode

TRAIN_RUN_TAG = "gptforge.train_run_id"
MODEL_URI_TAG = "gptforge.model_uri"
TABLE_FILE = "generations.json"
Sweep = float | list[float]


@task(name="generate-batch", cache_policy=NO_CACHE)
def generate_task(
    ref: ModelRef,
    prompts: list[Prompt],
    grid: list[SamplingConfig],
    num_return_sequences: int,
    batch_size: int,
    batching: Batching,
    out_path: Path,
    reused: dict[Key, dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[float]]:
    """Run every (setting, prompt) pair of the job in one decoding loop.

    Returns the records and, per grid point, the seconds its outputs spent in their slots.
    Every output shares the batch whatever its settings (sweep values, per-prompt
    overrides) and keeps its prompt's index in the job, so its text depends only on (seed,
    prompt index, sample index). `reused` are outputs an earlier run of the job finished:
    they are not generated again. Each finished record goes to the journal at once; stopped
    early (Ctrl-C, SIGTERM, an error), it writes the records finished so far to `out_path`
    before the stop goes on (flows/generation_records.py)."""
    records: list[dict[str, Any]] = list(reused.values())
    with Journal(out_path, keep=bool(reused)) as journal:
        try:
            job = (ref, prompts, grid, num_return_sequences, batch_size, batching)
            return _generate_all(*job, records, set(reused), journal)
        except BaseException:
            write_records(out_path, records)
            raise


def _generate_all(
    ref: ModelRef,
    prompts: list[Prompt],
    grid: list[SamplingConfig],
    num_return_sequences: int,
    batch_size: int,
    batching: Batching,
    records: list[dict[str, Any]],
    skip: set[Key],
    journal: Journal,
) -> tuple[list[dict[str, Any]], list[float]]:
    device, autocast = inference_device()
    model = load_model(ref.checkpoint, device)
    tokens = [encode(p.text) for p in prompts]
    settings = job_settings(prompts, grid)
    seconds = [0.0] * len(grid)
    for record in records:
        seconds[record["setting_index"]] += record["seconds"]
    outputs = stream(
        model,
        tokens * len(grid),
        settings,
        num_return_sequences=num_return_sequences,
        batch_size=batch_size,
        batching=batching,
        decode=decode,
        device=device,
        autocast_dtype=autocast,
        text_events=False,
        prompt_indices=list(range(len(prompts))) * len(grid),
        skip=skip,
    )
    total = len(settings) * num_return_sequences
    for out in outputs:
        if not isinstance(out, Generation):
            continue
        setting_index = out.request_index // len(prompts)
        text = prompts[out.prompt_index].text
        record = _record(text, out, settings[out.request_index], setting_index, ref)
        journal.add(record)
        records.append(record)
        seconds[setting_index] += out.seconds
        report("generate", len(records), total)
    records.sort(key=record_order)
    return records, seconds


def job_settings(prompts: list[Prompt], grid: list[SamplingConfig]) -> list[SamplingConfig]:
    """One request per (grid point, prompt), its overrides applied: request r is grid point
    r // len(prompts) for prompt r % len(prompts)."""
    return [with_overrides(base, p.overrides) for base in grid for p in prompts]


def earlier_records(
    out_path: Path, ref: ModelRef, prompts: list[Prompt], grid: list[SamplingConfig], samples: int
) -> dict[Key, dict[str, Any]]:
    """The outputs of this job that `out_path` (or its journal) already holds."""
    settings = job_settings(prompts, grid)
    requests = {
        (r // len(prompts), r % len(prompts)): (
            r,
            {"prompt": prompts[r % len(prompts)].text, "model_uri": ref.uri, **s.to_json()},
        )
        for r, s in enumerate(settings)
    }
    return reusable_records(out_path, requests, samples)


def inference_device() -> tuple[torch.device, torch.dtype | None]:
    """The GPU when there is one (bf16 autocast), else the CPU in fp32."""
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16
    return torch.device("cpu"), None


DEFAULTS = SamplingConfig()  # every default below comes from model/sampling_config.py


@flow(name="generate", flow_run_name=flow_run_name("generate", "model"))
def generate_flow(
    model: str,
    prompts: list[str] | None = None,
    prompts_file: str | None = None,
    temperature: Sweep = DEFAULTS.temperature,
    top_k: int | list[int] = DEFAULTS.top_k,
    top_p: Sweep = DEFAULTS.top_p,
    repetition_penalty: Sweep = DEFAULTS.repetition_penalty,
    max_new_tokens: int = DEFAULTS.max_new_tokens,
    do_sample: bool = DEFAULTS.do_sample,
    stop: list[str] | None = None,
    num_return_sequences: int = JOB.num_return_sequences,
    batch_size: int = JOB.batch_size,
    batching: Batching = JOB.batching,
    seed: int = DEFAULTS.seed,
    settings: SettingsSource = "given",
    traces: bool = True,
    out: str | None = None,
    resume: bool = False,
    experiment: str = DEFAULT_EXPERIMENT,
) -> dict[str, Any]:
    """Generate completions for every prompt under every sampling setting.

    Args:
        model: `models:/NAME/VERSION`, `models:/NAME@ALIAS`, `models:/NAME/latest`,
            `runs:/RUN_ID/model`, or a checkpoint directory.
        prompts: prompts given inline.
        prompts_file: a .txt file (one prompt per line) or .jsonl ({"prompt": ..., plus any
            sampling setting to override for that prompt}).
        temperature: a value or a list to sweep (0 = greedy).
        top_k: keep the k most likely tokens (0 = off); a value or a list to sweep.
        top_p: nucleus sampling threshold in (0, 1]; a value or a list to sweep.
        repetition_penalty: > 0, 1 = off; a value or a list to sweep.
        max_new_tokens: completion length limit.
        do_sample: false = greedy decoding.
        stop: strings that end a completion (not included in it).
        num_return_sequences: completions per prompt and setting.
        batch_size: outputs decoded together (the decoder's slots).
        batching: continuous (a finished output's slot is refilled at the next step) or
            static (a batch runs until its last output ends).
        seed: each output's randomness depends only on (seed, prompt, sample index).
        settings: given (the sampling settings above) or recommended (the model version's
            best-rated ones, stored by `review --promote`; they replace do_sample,
            temperature, top_k, top_p and repetition_penalty).
        traces: log every output as an MLflow trace with its code scores.
        out: JSONL file for the records (default: under GPTFORGE_HOME/generations/).
        resume: continue the job whose records are in `out` (stopped, or killed outright):
            the outputs it finished are kept, the others generated.
        experiment: the project's MLflow experiment; the job, its traces and its per-setting
            runs go to <experiment>-generations.
    """
    logger = get_run_logger()
    check_tracking_names(experiment)
    if resume and out is None:
        raise ConfigError("resume", "needs out: the records file of the job to continue")
    out_path = check_output("out", out, file=True) if out is not None else default_out()
    job = load_prompts(prompts, prompts_file)
    JobConfig(num_return_sequences, batch_size, batching)
    sweep = {
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "repetition_penalty": repetition_penalty,
        "max_new_tokens": max_new_tokens,
        "do_sample": do_sample,
        "stop": tuple(stop or ()),
        "seed": seed,
    }
    ref = resolve_model(model) if settings == "recommended" else None
    if ref is not None:
        recommended = recommended_settings(ref)
        logger.info("%s's recommended settings: %s", ref.label, recommended)
        sweep |= recommended
    grid = sampling_grid(sweep)  # the prompts' overrides were checked as they were read
    ref = ref or resolve_model(model)
    config = GPTConfig.load(ref.checkpoint / CONFIG)
    validate_prompts([encode(p.text) for p in job], config.block_size, config.vocab_size)
    logger.info("%d prompts x %d settings with %s", len(job), len(grid), ref.label)
    with writing(out_path):  # one job per records file: see generation_records.py
        reused = earlier_records(out_path, ref, job, grid, num_return_sequences) if resume else {}
        if resume:
            total = len(job) * len(grid) * num_return_sequences
            logger.info("resuming: %d of %d outputs are in %s", len(reused), total, out_path)
        name = f"generate-{ref.label}"
        with stage_run(
            "generate", generations_experiment(experiment), name, kind=GENAI_KIND
        ) as run_id:
            mlflow.log_params(
                {
                    "model": ref.uri,
                    "prompts": len(job),
                    "prompts_file": prompts_file or "",
                    **sweep,
                    "stop": json.dumps(stop or []),
                    "num_return_sequences": num_return_sequences,
                    "batch_size": batch_size,
                    "batching": batching,
                    "settings_in_grid": len(grid),
                    "settings": settings,
                    "reused_outputs": len(reused),
                }
            )
            mlflow.set_tags(_model_tags(ref))
            started = time.perf_counter()
            records, seconds = generate_task(
                ref, job, grid, num_return_sequences, batch_size, batching, out_path, reused
            )
            elapsed = time.perf_counter() - started
            write_records(out_path, records)
            mlflow.log_artifact(str(out_path))
            mlflow.log_table(_table(records), artifact_file=TABLE_FILE)
            by_setting = log_setting_runs(records, grid, seconds, ref, traces)
            mlflow.log_metrics(
                {
                    "outputs": len(records),
                    "tokens_per_s": _tokens(records, reused) / elapsed,
                }
            )
            if len({s.temperature for s in grid}) > 1:
                mlflow.log_artifact(
                    str(plot_diversity(by_setting, grid, out_path.with_suffix(".png")))
                )
            link = run_link(run_id)
        create_table_artifact(
            [
                {
                    "setting": r["setting"],
                    "prompt": r["prompt"][:60],
                    "completion": r["completion"][:160],
                    "finish": r["finish_reason"],
                    "tokens": r["completion_tokens"],
                }
                for r in records[:200]
            ],
            key="generations",
            description=f"{len(records)} generations by {ref.label}; MLflow {link}",
        )
        logger.info("%d records in %s; MLflow %s", len(records), out_path, link)
        return {
            "records": str(out_path),
            "mlflow_run_id": run_id,
            "outputs": len(records),
            "reused": len(reused),
            "model": ref.label,
            "metrics": by_setting,
            "samples": [r["completion"] for r in records[:3]],
        }


def _record(
    prompt: str,
    out: Generation,
    settings: SamplingConfig,
    setting_index: int,
    ref: ModelRef,
) -> dict[str, Any]:
    """One generation record, exactly the fields docs/generation.md lists."""
    return {
        "prompt": prompt,
        "completion": out.text,
        "prompt_index": out.prompt_index,
        "sample_index": out.sample_index,
        "setting": setting_label(settings),
        "setting_index": setting_index,
        **settings.to_json(),
        "finish_reason": out.finish_reason,
        "prompt_tokens": out.num_prompt_tokens,
        "completion_tokens": out.num_completion_tokens,
        "mean_logprob": out.mean_logprob,
        "model": ref.label,
        "model_uri": ref.uri,
        "model_name": ref.name,
        "model_version": ref.version,
        "train_run_id": ref.run_id,
        "seconds": round(out.seconds, 4),
        "tokens_per_second": round(out.tokens_per_second, 2),
        "completion_token_ids": out.tokens,
    }


def _table(records: list[dict[str, Any]]) -> dict[str, list]:
    """Column-wise rows for `mlflow.log_table`; token ids stay in the JSONL only."""
    columns = [k for k in records[0] if k != "completion_token_ids"]
    return {
        c: [json.dumps(r[c]) if isinstance(r[c], list) else r[c] for r in records] for c in columns
    }


def _model_tags(ref: ModelRef) -> dict[str, str]:
    tags = {MODEL_URI_TAG: ref.uri}
    if ref.name and ref.version:
        tags[MODEL_VERSION_TAG] = f"{ref.name}/{ref.version}"
    if ref.run_id:
        tags[TRAIN_RUN_TAG] = ref.run_id
    return tags


def _tokens(records: list[dict[str, Any]], reused: dict[Key, dict[str, Any]]) -> int:
    """Completion tokens this run generated (an earlier run's are not its speed)."""
    total = sum(r["completion_tokens"] for r in records)
    return total - sum(r["completion_tokens"] for r in reused.values())


def default_out() -> Path:
    return gptforge_home() / "generations" / f"{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
