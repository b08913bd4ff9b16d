"""A generation job's records file, and what lets a stopped job continue from it.

The `--out` JSONL is written whole, once, when the job ends or stops (write-then-rename), so
it is never half-written. While the job runs, each finished record is also appended to a
journal beside it (`<out>.partial`, one flushed line per record): a job killed outright
(SIGKILL, out of memory, the machine going down) leaves its finished outputs there. A job run
again with `resume` takes every record of either file that the same job would write (same
model, prompt, position in the job and effective settings) and generates only the rest; an
output depends only on (seed, prompt index, sample index), so the file that results is the
one an uninterrupted run writes (fp32, same device). A line cut short by the kill is not
JSON (a record is an object: cut anywhere, it lacks its closing brace) and is not taken.

One job writes a records file at a time (`writing`): a second would truncate the first's
journal, and whichever ended last would replace the other's file. It is refused at once.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any

from gptforge.pipeline.atomic import atomic_open, exclusive
from gptforge.pipeline.errors import RunError, write_failure

Key = tuple[int, int]  # (request index, sample index): one output of the job


def journal_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def writing(out: Path) -> AbstractContextManager[None]:
    """Held while a job writes `out` and its journal (a hidden `.<name>.lock` beside them)."""
    busy = f"another generation job is writing {out}; wait for it to end or give another --out"
    return exclusive(out.with_name(f".{out.name}.lock"), RunError(busy))


def record_order(record: dict[str, Any]) -> tuple[int, int, int]:
    return record["setting_index"], record["prompt_index"], record["sample_index"]


def write_records(out: Path, records: list[dict[str, Any]]) -> None:
    """The whole records file, in job order, replacing the journal."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out) as fh:
        for record in sorted(records, key=record_order):
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    journal_path(out).unlink(missing_ok=True)


class Journal:
    """Finished records appended as they come, each line flushed to the OS at once."""

    def __init__(self, out: Path, keep: bool):
        self.path = journal_path(out)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.fh: IO[str] = self.path.open("a" if keep else "w", encoding="utf-8")
            if keep and self.fh.tell() and not _ends_a_line(self.path):
                self.fh.write("\n")  # end the line a kill cut short: the next is whole
        except OSError as exc:
            raise write_failure(self.path, exc) from exc

    def add(self, record: dict[str, Any]) -> None:
        try:
            self.fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.fh.flush()
        except OSError as exc:
            raise write_failure(self.path, exc) from exc

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.fh.close()


def _ends_a_line(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(-1, 2)
        return fh.read(1) == b"\n"


def reusable_records(
    out: Path, requests: dict[tuple[int, int], tuple[int, dict[str, Any]]], samples: int
) -> dict[Key, dict[str, Any]]:
    """The records in `out` and its journal that this job would write, by output.

    `requests` maps (setting index, prompt index) to the request's index and the fields a
    record of it must carry (prompt, model, effective settings); `samples` is the outputs per
    request."""
    found: dict[Key, dict[str, Any]] = {}
    for record in _complete_records(out) + _complete_records(journal_path(out)):
        try:
            request = requests.get((record["setting_index"], record["prompt_index"]))
            sample = record["sample_index"]
        except (KeyError, TypeError):  # not one of our records, or not keyed by numbers
            continue
        if request is None or type(sample) is not int or not 0 <= sample < samples:
            continue
        index, identity = request
        if all(record.get(name) == value for name, value in identity.items()):
            found[(index, sample)] = record
    return found


def _complete_records(path: Path) -> list[dict[str, Any]]:
    """The lines that are whole JSON objects; anything else is skipped."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise RunError(f"cannot read {path}: {exc.strerror or exc}") from exc
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
