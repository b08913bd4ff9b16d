"""File names that are not UTF-8 or hold control characters: discovered, matched by globs and
ignore files like any other, and shown escaped (`pipeline.names.display_path`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gptforge.pipeline.config import IngestConfig
from gptforge.pipeline.discover import discover
from gptforge.pipeline.names import display_path


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        (b"bad\xff.txt", "bad\\xff.txt"),
        ("a\nb\x1b[31m.txt", "a\\nb\\x1b[31m.txt"),
        ("tab\there\r.md", "tab\\there\\r.md"),
        ("\u202egnp.exe", "\\u202egnp.exe"),  # right-to-left override: looks like "exe.png"
        ("back\\slash\n", "back\\\\slash\\n"),  # escaped, so that escapes stay unambiguous
        ("Grüße/日本語 notes.md", "Grüße/日本語 notes.md"),
        ("plain\\name.md", "plain\\name.md"),  # printable names are shown as they are
    ],
)
def test_display_path_escapes_only_what_is_not_printable(name: str | bytes, shown: str):
    assert display_path(name) == shown
    assert display_path(name).isprintable()


def test_odd_names_are_discovered_and_matched_by_globs_and_ignore_files(tmp_path: Path):
    root = tmp_path / "src"
    base = os.fsencode(root)
    os.mkdir(base)
    os.mkdir(base + b"/sub\xfe")
    names = [b"bad\xff.txt", b"drop\xff.log", b"sub\xfe/x.md", os.fsencode("a\nb\x1b[31m.txt")]
    for name in names:
        with open(base + b"/" + name, "wb") as fh:
            fh.write(b"text")
    with open(base + b"/.gitignore", "wb") as fh:
        fh.write(b"bad\xff.txt\n")  # a pattern holding the same undecodable byte
    found = discover(IngestConfig(sources=[root], out=tmp_path / "out", exclude=("*.log",)))
    reasons = {os.fsencode(f.relpath): f.skip_reason for f in found.files}
    assert reasons == {
        b".gitignore": "hidden file (include_hidden is off)",
        b"a\nb\x1b[31m.txt": None,
        b"bad\xff.txt": "ignored by pattern 'bad\\udcff.txt' in .gitignore",
        b"drop\xff.log": "excluded by pattern '*.log'",
        b"sub\xfe/x.md": None,
    }
    assert all(os.path.isfile(f.path) for f in found.files)
