"""Expected failures after the data is known good: a damaged checkpoint, a bad prompts file,
a run too large for memory, a changed schedule on resume, a model without usable scores.
One line on stderr, never a traceback; exit 2 for a setting, 1 for a runtime problem."""

from __future__ import annotations

import builtins
import json
import math
import os
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from bad_input_helpers import MICRO, copy_of, latest, one_line
from safetensors.torch import save_model

from gptforge.flows import cli
from gptforge.flows.cli import main
from gptforge.flows.models import resolve_model
from gptforge.model import checkpoint as checkpoint_module
from gptforge.model.checkpoint import (
    CHECKPOINTS,
    CONFIG,
    OPTIMIZER,
    TRAINER_STATE,
    WEIGHTS,
)
from gptforge.model.config import GPTConfig
from gptforge.model.generation_job import load_prompts
from gptforge.model.gpt import GPT
from gptforge.pipeline.config import ConfigError

pytestmark = pytest.mark.usefixtures("gptforge_home")


# 4. checkpoints


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def wider(config: Path) -> None:
    """A valid config that the weights beside it do not fit."""
    config.write_text(json.dumps(json.loads(config.read_text()) | {"n_embd": 64}))


@pytest.mark.parametrize(
    "file, damage, message",
    [
        (WEIGHTS, truncate, f"{WEIGHTS}: not a complete safetensors file"),
        (WEIGHTS, lambda p: p.write_bytes(os.urandom(4096)), f"{WEIGHTS}: not a complete"),
        (CONFIG, truncate, f"{CONFIG}: not a model config"),
        (CONFIG, wider, f"{WEIGHTS}: does not fit config.json"),
        (TRAINER_STATE, truncate, f"{TRAINER_STATE}: not a trainer state"),
        (TRAINER_STATE, lambda p: p.write_text('{"step": 2}'), f"{TRAINER_STATE}: not a trainer"),
        (OPTIMIZER, truncate, f"{OPTIMIZER}: not a complete optimizer state"),
    ],
    ids=[
        "weights-cut",
        "weights-garbage",
        "config-cut",
        "config-other",
        "state-cut",
        "state-bad",
        "optimizer-cut",
    ],
)
def test_a_damaged_checkpoint_is_refused_before_any_run_opens(
    capsys, file: str, damage, message: str, dataset: Path, trained: Path, tmp_path: Path
) -> None:
    out = copy_of(trained, tmp_path)
    checkpoint = latest(out)
    damage(checkpoint / file)
    base = ["train", "--data", str(dataset), *MICRO, "--max-steps", "4"]
    line = one_line(capsys, [*base, "--out", str(out), "--resume"], 2)
    assert line.startswith(f"gptforge train: invalid setting resume: {checkpoint}/{message}")
    if file in (TRAINER_STATE, OPTIMIZER):
        return  # neither starting from weights nor generating reads these
    fresh = str(tmp_path / "fresh")
    line = one_line(capsys, [*base, "--out", fresh, "--init-from", str(out)], 2)
    assert line.startswith(f"gptforge train: invalid setting init_from: {checkpoint}/{message}")
    argv = ["generate", "--model", str(checkpoint), "--prompts", "hi", "--stream"]
    line = one_line(capsys, argv, 2)
    assert line.startswith(f"gptforge generate: invalid setting model: {checkpoint}/{message}")
    with pytest.raises(ConfigError, match=message):  # what the generate flow calls first
        resolve_model(str(out))


def test_a_full_disk_while_checkpointing_is_one_line_and_leaves_no_partial_checkpoint(
    capsys, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The optimizer state goes to /dev/full: the kernel's own ENOSPC where the checkpoint is
    written (a full tmpfs would need a mount, and so root)."""

    def full_disk(path: Path, mode: str = "r", *args: object) -> object:
        return builtins.open("/dev/full" if str(path).endswith(OPTIMIZER) else path, mode)

    monkeypatch.setattr(checkpoint_module, "open", full_disk, raising=False)
    out = tmp_path / "run"
    argv = ["train", "--data", str(dataset), *MICRO, "--max-steps", "2", "--out", str(out)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (
        f"gptforge train: cannot write {out}/checkpoints/step_0000002: No space left on device"
    )
    assert not list((out / CHECKPOINTS).iterdir()), "no half-written checkpoint is left"


# 5. prompts files


def test_a_binary_prompts_file_is_refused_naming_it(capsys, trained: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(b"\x00\x01\x02\xff" * 100)
    argv = ["generate", "--model", str(latest(trained)), "--prompts-file", str(prompts)]
    line = one_line(capsys, argv, 2)
    assert line.startswith(f"gptforge generate: invalid setting prompts_file: {prompts}: binary")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_a_utf16_prompts_file_is_decoded_as_ingest_decodes_text(
    encoding: str, tmp_path: Path
) -> None:
    lines = ["Привет, мир", "日本語のプロンプト", "plain ASCII"]
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes("\r\n".join(lines).encode(encoding))
    assert [p.text for p in load_prompts(None, str(prompts))] == lines
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_bytes("\n".join(json.dumps({"prompt": t}) for t in lines).encode(encoding))
    assert [p.text for p in load_prompts(None, str(jsonl))] == lines


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ('"temperature": "hot"', "temperature: must be a finite number >= 0, got 'hot'"),
        ('"top_k": 2.5', "top_k: must be an integer >= 0, got 2.5"),
        ('"stop": 5', "stop: must be non-empty strings, got 5"),
        ('"stop": {"a": 1}', "stop: must be non-empty strings, got {'a': 1}"),
        ('"eos_token_id": 3.5', "eos_token_id: must be token ids >= 0, got 3.5"),
    ],
)
def test_a_bad_override_in_a_prompts_file_names_its_line(
    override: str, message: str, tmp_path: Path
) -> None:
    """Found as the file is read, before a flow run starts; not one traceback."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "a", "top_k": 5}\n{"prompt": "b", ' + override + "}\n")
    with pytest.raises(ConfigError) as err:
        load_prompts(None, str(prompts))
    assert str(err.value) == f"prompts_file: {prompts}:2: {message}"


def test_deeply_nested_json_in_a_prompts_file_names_the_line(
    capsys, trained: Path, tmp_path: Path
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "ok"}\n' + "[" * 100_000 + "]" * 100_000 + "\n")
    argv = ["generate", "--model", str(latest(trained)), "--prompts-file", str(prompts)]
    line = one_line(capsys, argv, 2)
    assert line == (
        f"gptforge generate: invalid setting prompts_file: {prompts}:2: JSON nested too deeply"
    )


# 6. sizes


@pytest.mark.parametrize(
    "extra, field",
    [
        (["--model-overrides", "n_embd=65536"], "model: n_layer=2, n_embd=65536: training needs"),
        (["--batch-size", "10000000"], "batch_size: training needs about"),
    ],
    ids=["wide-model", "huge-batch"],
)
def test_a_run_that_cannot_fit_in_memory_is_refused_with_the_numbers(
    capsys, extra: list[str], field: str, dataset: Path, tmp_path: Path
) -> None:
    argv = ["train", "--data", str(dataset), "--out", str(tmp_path / "o"), *extra]
    line = one_line(capsys, argv, 2)
    assert line.startswith(f"gptforge train: invalid setting {field}")
    assert " GB of cpu memory available" in line
    assert not (tmp_path / "o").exists()


def test_a_huge_max_new_tokens_stops_at_the_context_window(capsys, trained: Path) -> None:
    argv = ["generate", "--model", str(latest(trained)), "--prompts", "alpha beta", "--stream"]
    assert main([*argv, "--max-new-tokens", "10000000000", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "[length, " in out  # 32-token window: 30 new tokens after a 2-token prompt, not 1e10


# 7. extending a run


def test_resuming_with_more_steps_warns_that_the_schedule_changes(
    capsys, dataset: Path, trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = copy_of(trained, tmp_path)
    monkeypatch.setattr(cli, "orchestrator", nullcontext)  # the flow itself is not under test
    monkeypatch.setattr(cli, "announced", lambda flow: flow)
    monkeypatch.setattr("gptforge.flows.train.train_flow", lambda **_: FINISHED)
    shape = ["--batch-size", "4", "--precision", "fp32", "--device", "cpu", "--warmup-steps", "2"]
    argv = ["train", "--data", str(dataset), *MICRO, *shape, "--out", str(out), "--resume"]
    assert main([*argv, "--max-steps", "8"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "warning: resuming at step 2 with a different learning-rate schedule (max_steps 2 -> 8): "
        "the steps from here follow the new one, so the result differs from a run started "
        "with these settings"
    ]
    assert main([*argv, "--max-steps", "2"]) == 0
    assert capsys.readouterr().err == ""


FINISHED = {
    "mlflow_run_id": "r",
    "model_uri": "models:/gptforge/1",
    "checkpoint": "c",
    "train_loss": 1.0,
    "val_loss": None,
    "budget_plan": "",
}


# 8. a model without finite scores


def test_a_model_without_finite_scores_is_one_line_exit_1(capsys, tmp_path: Path) -> None:
    config = GPTConfig(block_size=32, n_layer=1, n_head=2, n_embd=32, recipe="gpt2")
    model = GPT(config)
    with torch.no_grad():
        model.transformer.ln_f.weight.fill_(math.nan)
    save_model(model, str(tmp_path / WEIGHTS))
    config.save(tmp_path / CONFIG)
    argv = ["generate", "--model", str(tmp_path), "--prompts", "hi", "--stream"]
    line = one_line(capsys, argv, 1)
    assert line == (
        "gptforge generate: the model gave no finite score in batch row 0: its weights or its "
        "precision (fp16 overflow?) are broken"
    )
