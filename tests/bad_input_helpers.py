"""Shared by the bad-input tests (their fixtures `corpus`, `dataset` and `trained` are in
conftest.py): the micro model's CLI spelling, checkpoint paths, the one-line CLI check."""

from __future__ import annotations

import fcntl
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gptforge.flows.cli import main
from gptforge.model.checkpoint import CHECKPOINTS, LATEST

# The CLI spelling of train_helpers.MICRO, which the `trained` fixture's checkpoint holds.
MICRO = [
    *("--model-overrides", "block_size=32", "n_layer=2", "n_head=2", "n_embd=32"),
    *("--recipe", "gpt2"),
]


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


@contextmanager
def held_lock(path: Path) -> Iterator[None]:
    """Hold `path`'s `flock` as a running ingest, training run or generation job does."""
    with open(path, "w") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
