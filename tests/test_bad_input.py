"""Expected failures are one line on stderr, never a traceback: exit 2 for a setting (a path a
setting names that holds no usable dataset or checkpoint counts as one), 1 for a runtime
problem (a locked or full output, a model that gives no usable scores). Everything runs
in-process and is refused before Prefect or MLflow start."""

from __future__ import annotations

import builtins
import fcntl
import hashlib
import json
import math
import os
import shutil
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_model
from train_helpers import micro_config

from gptforge.flows import cli
from gptforge.flows.cli import main
from gptforge.flows.models import resolve_model
from gptforge.model import checkpoint as checkpoint_module
from gptforge.model.checkpoint import (
    CHECKPOINTS,
    CONFIG,
    LATEST,
    OPTIMIZER,
    TRAINER_STATE,
    WEIGHTS,
)
from gptforge.model.config import GPTConfig
from gptforge.model.generation_job import load_prompts
from gptforge.model.gpt import GPT
from gptforge.model.train import train
from gptforge.pipeline import shards
from gptforge.pipeline.config import ConfigError, IngestConfig
from gptforge.pipeline.errors import RunError
from gptforge.pipeline.ingest import ingest
from gptforge.pipeline.jobs import ExtractJob, run_job

# The CLI spelling of train_helpers.MICRO, which the `trained` fixture's checkpoint holds.
MICRO = [
    *("--model-overrides", "block_size=32", "n_layer=2", "n_head=2", "n_embd=32"),
    *("--recipe", "gpt2"),
]
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
]


@pytest.fixture(autouse=True)
def home(gptforge_home: Path) -> Path:
    return gptforge_home


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    docs = tmp_path_factory.mktemp("corpus")
    for i in range(6):
        words = [WORDS[(i * 7 + j * j) % len(WORDS)] for j in range(600)]
        (docs / f"doc{i}.txt").write_text(" ".join(words) + "\n")
    return docs


@pytest.fixture(scope="module")
def dataset(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dataset")
    ingest(IngestConfig(sources=(corpus,), out=out, val_fraction=0.3, workers=1))
    return out


@pytest.fixture(scope="module")
def trained(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A training output directory with a two-step checkpoint (resume, init_from, generate)."""
    out = tmp_path_factory.mktemp("trained")
    train(micro_config(dataset, out, max_steps=2, checkpoint_interval=2, eval_interval=2))
    return out


def latest(trained: Path) -> Path:
    root = trained / CHECKPOINTS
    return root / (root / LATEST).read_text().strip()


def copy_of(directory: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(directory, tmp_path / directory.name))


def one_line(capsys: pytest.CaptureFixture[str], argv: list[str], code: int) -> str:
    """Run the CLI; it must exit with `code` and say why in exactly one stderr line."""
    rc = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert rc == code and len(lines) == 1, err
    return lines[0]


# 1. output paths


def test_an_ingest_output_that_is_a_file_or_under_one_is_refused(
    capsys, corpus: Path, tmp_path: Path
) -> None:
    file = tmp_path / "file"
    file.write_text("mine\n")
    line = one_line(capsys, ["ingest", str(corpus), "--out", str(file)], 2)
    assert line == f"gptforge ingest: invalid setting out: {file} is a file; give a directory"
    under = file / "data"
    line = one_line(capsys, ["ingest", str(corpus), "--out", str(under)], 2)
    assert line == (
        f"gptforge ingest: invalid setting out: {under} lies under {file}, which is a file; "
        "give a directory"
    )
    assert file.read_text() == "mine\n"


def test_a_read_only_output_is_refused(capsys, corpus: Path, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes to a read-only (chmod) directory, and no read-only mount is ours")
    locked_dir = tmp_path / "ro"
    locked_dir.mkdir(mode=0o500)
    line = one_line(capsys, ["ingest", str(corpus), "--out", str(locked_dir / "data")], 2)
    assert line.endswith(f"cannot write to {locked_dir} (read-only or not yours)")


@pytest.mark.parametrize(
    "argv",
    [
        ["ingest", "SOURCES", "--out", ""],
        ["train", "--data", "DATA", "--out", ""],
        ["generate", "--model", "MODEL", "--prompts", "hi", "--out", ""],
    ],
    ids=["ingest", "train", "generate"],
)
def test_an_empty_out_is_refused_not_taken_as_the_current_directory(
    capsys,
    argv: list[str],
    corpus: Path,
    dataset: Path,
    trained: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    names = {"SOURCES": str(corpus), "DATA": str(dataset), "MODEL": str(latest(trained))}
    line = one_line(capsys, [names.get(a, a) for a in argv], 2)
    assert line == (
        f"gptforge {argv[0]}: invalid setting out: is empty; give a path (it would be the "
        "current directory)"
    )
    assert list(cwd.iterdir()) == []


def test_an_output_locked_by_another_ingest_is_one_line_exit_1(
    capsys, corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "data"
    out.mkdir()
    with open(out / ".lock", "w") as holder:  # what a running ingest holds
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        line = one_line(capsys, ["ingest", str(corpus), "--out", str(out)], 1)
    assert line == f"gptforge ingest: another ingest is writing to {out}; wait for it to end"


def test_a_full_disk_while_writing_shards_names_the_shard(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full filesystem needs a mount (tmpfs) and so root; /dev/full gives the kernel's own
    # ENOSPC at the lowest layer instead: every shard file is opened on it.
    def on_dev_full(_path: Path, mode: str):
        return builtins.open("/dev/full", mode)  # noqa: SIM115 - the caller closes it

    monkeypatch.setattr(shards, "open", on_dev_full, raising=False)
    with pytest.raises(RunError, match=r"cannot write .*train_000000\.bin.*: No space left"):
        ingest(IngestConfig(sources=(corpus,), out=tmp_path / "data", workers=1))
    assert not (tmp_path / "data" / "manifest.json").exists()


def test_a_cache_that_cannot_be_written_stops_the_ingest(corpus: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("")  # the cache directory cannot be created: like a read-only disk
    path = corpus / "doc0.txt"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    job = ExtractJob(str(path), "text", f"{digest}-x", str(blocker), "eng", 300, 1.0, 10**8)
    result = run_job(job)
    assert result["status"] == "error" and result["fatal"].startswith(f"cannot write {blocker}")


# 2. MLflow names


@pytest.mark.parametrize("command", ["ingest", "train", "generate", "run"])
def test_an_empty_experiment_is_refused_in_every_command(
    capsys, command: str, corpus: Path, dataset: Path, tmp_path: Path
) -> None:
    argv = {
        "ingest": ["ingest", str(corpus), "--out", str(tmp_path / "o")],
        "train": ["train", "--data", str(dataset), "--out", str(tmp_path / "o")],
        "generate": ["generate", "--model", str(tmp_path), "--prompts", "hi"],
        "run": ["run", str(corpus)],
    }[command]
    line = one_line(capsys, [*argv, "--experiment", ""], 2)
    expected = "invalid setting experiment: is empty; give an MLflow experiment name"
    assert line == f"gptforge {command}: {expected}"
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", ["", "team/model", "gpt:2", "..", "..x"])
def test_a_model_name_mlflow_refuses_is_refused_before_training(
    capsys, name: str, dataset: Path, tmp_path: Path
) -> None:
    argv = ["train", "--data", str(dataset), "--out", str(tmp_path / "o"), "--model-name", name]
    line = one_line(capsys, argv, 2)
    assert line.startswith("gptforge train: invalid setting model_name: ")
    assert not (tmp_path / "o").exists()


# 3. training data


def corrupt_manifest(data: Path, change) -> None:
    path = data / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def first_shard(data: Path) -> Path:
    return (
        data
        / json.loads((data / "manifest.json").read_text())["splits"]["train"]["shards"][0]["file"]
    )


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "manifest.json").write_text("{not json"), "manifest.json: unreadable"),
        (
            lambda d: corrupt_manifest(d, lambda m: m.pop("dataset_digest")),
            "manifest.json: no dataset_digest; run `gptforge ingest` again",
        ),
        (lambda d: first_shard(d).unlink(), "cannot read the shard (No such file or directory)"),
        (
            lambda d: first_shard(d).write_bytes(first_shard(d).read_bytes()[:-100]),
            "train_000000.bin: header says",
        ),
        (
            lambda d: corrupt_manifest(
                d, lambda m: m["splits"]["train"]["shards"][0].update(tokens=7)
            ),
            "train_000000.bin: the manifest lists 7 tokens, it holds",
        ),
    ],
    ids=["not-json", "no-digest", "missing-shard", "truncated-shard", "count-disagrees"],
)
def test_a_damaged_dataset_is_one_line_naming_the_file(
    capsys, damage, message: str, dataset: Path, tmp_path: Path
) -> None:
    data = copy_of(dataset, tmp_path)
    damage(data)
    argv = ["train", "--data", str(data), "--out", str(tmp_path / "o"), *MICRO]
    line = one_line(capsys, argv, 2)
    assert line.startswith(f"gptforge train: invalid setting data_dir: {data}")
    assert message in line


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
