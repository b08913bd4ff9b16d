"""A generation job's records file and journal: which records a resumed job may keep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gptforge.flows.generation_records import (
    Journal,
    journal_path,
    reusable_records,
    write_records,
    writing,
)
from gptforge.pipeline.errors import RunError

# Two prompts, one grid point: request r is prompt r; each record must carry these fields.
IDENTITY = {0: {"prompt": "a", "model_uri": "models:/m/1", "temperature": 0.8}}
IDENTITY[1] = IDENTITY[0] | {"prompt": "b"}
REQUESTS = {(0, r): (r, fields) for r, fields in IDENTITY.items()}


def record(prompt_index: int, sample: int, **changes) -> dict:
    fields = IDENTITY[prompt_index] | {"setting_index": 0, "prompt_index": prompt_index}
    return fields | {"sample_index": sample, "completion": f"{prompt_index}/{sample}"} | changes


def test_finished_records_of_the_file_and_the_journal_are_kept_by_output(tmp_path: Path) -> None:
    out = tmp_path / "gen.jsonl"
    write_records(out, [record(1, 0), record(0, 0)])
    with Journal(out, keep=True) as journal:
        journal.add(record(0, 1))
    kept = reusable_records(out, REQUESTS, samples=2)
    assert sorted(kept) == [(0, 0), (0, 1), (1, 0)]
    assert kept[(0, 1)]["completion"] == "0/1"


def test_a_line_cut_short_by_a_kill_is_not_taken(tmp_path: Path) -> None:
    out = tmp_path / "gen.jsonl"
    whole = json.dumps(record(0, 0)) + "\n"
    torn = json.dumps(record(1, 0))
    journal_path(out).write_text(whole + torn[:-1] + "\n" + torn[:-9])  # cut: not JSON
    assert sorted(reusable_records(out, REQUESTS, samples=2)) == [(0, 0)]
    with Journal(out, keep=True) as journal:  # the resumed job appends after the cut line
        journal.add(record(0, 1))
    assert sorted(reusable_records(out, REQUESTS, samples=2)) == [(0, 0), (0, 1)]


def test_records_another_job_would_write_differently_are_not_kept(tmp_path: Path) -> None:
    out = tmp_path / "gen.jsonl"
    others = [
        record(0, 0, temperature=0.5),  # other settings
        record(0, 1, model_uri="models:/m/2"),  # other model
        record(1, 0, prompt="changed"),  # the prompt at that place changed
        record(1, 2),  # more samples than this job asks for
        record(1, 1, setting_index=1),  # a grid point this job does not have
        record(0, 0) | {"sample_index": "0"},  # not keyed by numbers
        {"setting_index": [0], "prompt_index": 0, "sample_index": 0},
        {"prompt": "no keys"},
    ]
    out.write_text("".join(json.dumps(r) + "\n" for r in others) + "[1, 2]\n")
    assert reusable_records(out, REQUESTS, samples=2) == {}
    assert reusable_records(tmp_path / "missing.jsonl", REQUESTS, samples=2) == {}


def test_the_whole_file_replaces_the_journal_in_job_order(tmp_path: Path) -> None:
    out = tmp_path / "gen.jsonl"
    with Journal(out, keep=False) as journal:
        journal.add(record(1, 0))
    write_records(out, [record(1, 0), record(0, 1), record(0, 0)])
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["prompt_index"], r["sample_index"]) for r in lines] == [(0, 0), (0, 1), (1, 0)]
    assert not journal_path(out).exists()
    with Journal(out, keep=True) as journal:
        journal.add(record(0, 0))
    with Journal(out, keep=False):  # a new job (not a resume) starts an empty journal
        pass
    assert journal_path(out).read_text() == ""


def test_one_job_writes_a_records_file_at_a_time(tmp_path: Path) -> None:
    out = tmp_path / "records.jsonl"
    with writing(out):
        with pytest.raises(RunError, match="another generation job is writing"), writing(out):
            pass
        with writing(tmp_path / "other.jsonl"):  # another file is another job's
            pass
    with writing(out):  # released with the job
        pass
