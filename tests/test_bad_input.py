"""Expected failures are one line on stderr, never a traceback: exit 2 for a setting (a path a
setting names that holds no usable dataset or checkpoint counts as one), 1 for a runtime
problem (a locked or full output, a model that gives no usable scores). Everything runs
in-process and is refused before Prefect or MLflow start."""

from __future__ import annotations

import builtins
import hashlib
import json
import os
from pathlib import Path

import pytest
from bad_input_helpers import MICRO, copy_of, held_lock, latest, one_line

from gptforge.pipeline import shards
from gptforge.pipeline.config import IngestConfig
from gptforge.pipeline.errors import RunError
from gptforge.pipeline.ingest import ingest
from gptforge.pipeline.jobs import ExtractJob, run_job

pytestmark = pytest.mark.usefixtures("gptforge_home")


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
    with held_lock(out / ".lock"):  # what a running ingest holds
        line = one_line(capsys, ["ingest", str(corpus), "--out", str(out)], 1)
    assert line == f"gptforge ingest: another ingest is writing to {out}; wait for it to end"


def test_an_out_dir_another_training_run_writes_is_one_line_exit_1(
    capsys, dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    with held_lock(out / ".lock"):  # what a training run holds
        line = one_line(capsys, ["train", "--data", str(dataset), "--out", str(out)], 1)
    assert line == (
        f"gptforge train: another training run is writing to {out}; wait for it to end or "
        "choose another out_dir"
    )
    assert list(out.iterdir()) == [out / ".lock"]


def test_a_records_file_another_generation_job_writes_is_one_line_exit_1(
    capsys, tmp_path: Path
) -> None:
    """Two jobs on one --out would truncate each other's journal: the second is refused
    before Prefect starts (the model is not even looked at)."""
    out = tmp_path / "records.jsonl"
    with held_lock(tmp_path / ".records.jsonl.lock"):  # what a running job holds
        argv = ["generate", "--model", str(tmp_path / "none"), "--prompts", "hi", "--out", str(out)]
        line = one_line(capsys, argv, 1)
    assert line == (
        f"gptforge generate: another generation job is writing {out}; wait for it to end or "
        "give another --out"
    )
    assert not out.exists()


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
