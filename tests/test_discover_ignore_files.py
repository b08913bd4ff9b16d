"""`.gitignore` and `.ignore` files in the sources, honoured as ripgrep does: each applies to
its own subtree, the deeper file and a later `!pattern` win, `.ignore` outranks `.gitignore`;
whatever they leave out is listed with the pattern and file that did it."""

from __future__ import annotations

from pathlib import Path

import pytest
from discovery_views import pruned, skipped, to_read
from trees import write_tree

from gptforge.pipeline.config import IngestConfig
from gptforge.pipeline.discover import Discovery, discover
from gptforge.pipeline.ingest import ingest


def run(root: Path, **settings) -> Discovery:
    return discover(IngestConfig(sources=(root,), out=root.parent / "out", workers=1, **settings))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "src"
    path.mkdir()
    return path


def test_a_gitignore_skips_files_prunes_directories_and_negations_keep_files(root: Path):
    write_tree(
        root,
        {
            ".gitignore": "# build output\n*.log\n!keep.log\nout/\n/secrets.txt\n",
            "main.py": "print(1)",
            "run.log": "noise",
            "keep.log": "wanted",
            "sub/deep.log": "noise",
            "sub/secrets.txt": "not anchored here, so read",
            "secrets.txt": "anchored to the root",
            "out/a.o": "binary",
        },
    )
    found = run(root)
    assert to_read(found) == ["keep.log", "main.py", "sub/secrets.txt"]
    assert skipped(found) == {
        ".gitignore": "hidden file (include_hidden is off)",
        "run.log": "ignored by pattern '*.log' in .gitignore",
        "secrets.txt": "ignored by pattern '/secrets.txt' in .gitignore",
        "sub/deep.log": "ignored by pattern '*.log' in .gitignore",
    }
    assert pruned(found, root) == {"out": "ignored by pattern 'out/' in .gitignore"}


def test_a_nested_gitignore_applies_below_its_folder_and_can_take_back(root: Path):
    write_tree(
        root,
        {
            ".gitignore": "*.tmp\n",
            "a.tmp": "ignored at the root",
            "pkg/.gitignore": "!wanted.tmp\n/local.md\n",
            "pkg/wanted.tmp": "taken back by pkg/.gitignore",
            "pkg/other.tmp": "still ignored",
            "pkg/local.md": "anchored to pkg/",
            "pkg/deeper/local.md": "read",
            "local.md": "read: pkg/.gitignore does not apply here",
        },
    )
    found = run(root)
    assert to_read(found) == ["local.md", "pkg/deeper/local.md", "pkg/wanted.tmp"]
    assert skipped(found)["pkg/local.md"] == "ignored by pattern '/local.md' in pkg/.gitignore"
    assert skipped(found)["pkg/other.tmp"] == "ignored by pattern '*.tmp' in .gitignore"


def test_dot_ignore_outranks_gitignore_wherever_each_is(root: Path):
    write_tree(
        root,
        {
            ".gitignore": "*.bak\n",
            ".ignore": "!important.bak\n*.draft\n",
            "important.bak": "taken back by .ignore",
            "old.bak": "ignored",
            "sub/.gitignore": "!notes.draft\n",
            "sub/notes.draft": ".ignore at the root still wins over sub/.gitignore",
        },
    )
    found = run(root)
    assert to_read(found) == ["important.bak"]
    assert skipped(found)["sub/notes.draft"] == "ignored by pattern '*.draft' in .ignore"


def test_ignore_files_off_reads_everything_they_name(root: Path):
    write_tree(root, {".gitignore": "*.log\nbuild/\n", "a.log": "1", "build/b.txt": "2"})
    assert to_read(run(root, ignore_files=False)) == ["a.log", "build/b.txt"]


def test_a_gitignore_inside_an_ignored_folder_is_never_read(root: Path):
    write_tree(root, {".gitignore": "vendor/\n", "vendor/.gitignore": "!*\n", "vendor/x.c": "x"})
    found = run(root)
    assert to_read(found) == []
    assert pruned(found, root) == {"vendor": "ignored by pattern 'vendor/' in .gitignore"}


def test_ignored_files_are_in_the_manifest_as_skipped(root: Path, tmp_path: Path):
    write_tree(root, {".gitignore": "*.log\ncache/\n", "a.md": "text", "b.log": "", "cache/c": ""})
    manifest = ingest(IngestConfig(sources=[root], out=tmp_path / "out", workers=1))
    statuses = {r["relpath"]: (r["status"], r["reason"]) for r in manifest["files"]}
    assert statuses["b.log"] == ("skipped", "ignored by pattern '*.log' in .gitignore")
    assert statuses["a.md"] == ("ok", None)
    assert manifest["pruned"] == [
        {"path": str(root / "cache"), "reason": "ignored by pattern 'cache/' in .gitignore"}
    ]
    assert manifest["settings"]["ignore_files"] is True
