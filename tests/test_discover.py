"""Which files discovery lists, which it leaves out and why (`pipeline.discover`), and the
gitignore globs it matches with (`pipeline.globs`). Ignore files, symlinks, deep trees and odd
names have their own files: tests/test_discover_*.py."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from trees import write_tree

from gptforge.pipeline.config import IngestConfig
from gptforge.pipeline.discover import Discovery, discover
from gptforge.pipeline.globs import matches
from gptforge.pipeline.records import FoundFile


def run(root: Path, out: Path | None = None, **settings) -> Discovery:
    cfg = IngestConfig(sources=(root,), out=out or root.parent / "out", workers=1, **settings)
    return discover(cfg)


def by_relpath(found: Discovery) -> dict[str, FoundFile]:
    return {f.relpath: f for f in found.files}


def to_read(found: Discovery) -> list[str]:
    """Relative paths of the files that will be read (neither skipped nor in error)."""
    return [f.relpath for f in found.files if not f.skip_reason and not f.error_reason]


def pruned(found: Discovery, root: Path) -> dict[str, str]:
    """Pruned directories by path relative to `root`, with their reasons."""
    return {Path(p["path"]).relative_to(root).as_posix(): p["reason"] for p in found.pruned}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "src"
    path.mkdir()
    return path


# --- recursion and symlinks -------------------------------------------------------------------


def test_files_are_found_at_every_depth_in_a_stable_order(root: Path):
    write_tree(root, {"b.txt": "b", "a/one.md": "1", "a/deep/er/two.md": "2", "c/three.py": "3"})
    found = run(root)
    assert to_read(found) == ["a/deep/er/two.md", "a/one.md", "b.txt", "c/three.py"]
    assert to_read(run(root)) == to_read(found)
    entry = by_relpath(found)["a/deep/er/two.md"]
    assert Path(entry.path) == root / "a/deep/er/two.md"
    assert Path(entry.root) == root.resolve()
    assert entry.size == 1


def test_a_symlink_loop_to_a_parent_directory_is_walked_once(root: Path):
    write_tree(root, {"top.txt": "top", "a/inner.txt": "inner"})
    (root / "a" / "back_to_root").symlink_to(root, target_is_directory=True)
    (root / "a" / "back_to_a").symlink_to("..", target_is_directory=True)
    found = run(root)
    assert to_read(found) == ["a/inner.txt", "top.txt"]
    reasons = pruned(found, root)
    assert set(reasons) == {"a/back_to_a", "a/back_to_root"}
    assert all("already walked" in reason for reason in reasons.values())


def test_two_links_to_one_directory_read_it_once(root: Path, tmp_path: Path):
    shared = write_tree(tmp_path / "shared", {"doc.txt": "shared document"})
    (root / "first").symlink_to(shared)
    (root / "second").symlink_to(shared)
    found = run(root, follow_symlinks="all")
    assert to_read(found) == ["first/doc.txt"]
    assert "already walked" in pruned(found, root)["second"]


def test_a_symlink_to_a_file_outside_the_root_is_followed_only_with_follow_symlinks_all(
    root: Path, tmp_path: Path
):
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("followed")
    (root / "link.txt").symlink_to(outside)
    skipped = by_relpath(run(root))["link.txt"]
    assert skipped.skip_reason == f"symlink points outside the sources: {outside}"
    entry = by_relpath(run(root, follow_symlinks="all"))["link.txt"]
    assert not entry.skip_reason and not entry.error_reason
    assert entry.size == len("followed")


def test_a_dangling_symlink_is_an_error_record_naming_its_target(root: Path):
    (root / "gone.txt").symlink_to(root / "never-existed.txt")
    (root / "self").symlink_to("self")  # a link to itself never resolves either
    found = by_relpath(run(root))
    assert found["gone.txt"].error_reason == f"dangling symlink -> {root / 'never-existed.txt'}"
    assert found["self"].error_reason == "dangling symlink -> self"


def test_a_dangling_symlink_named_as_a_source_is_an_error_record(tmp_path: Path):
    link = tmp_path / "link.txt"
    link.symlink_to(tmp_path / "missing.txt")
    found = discover(IngestConfig(sources=(link,), out=tmp_path / "out", workers=1))
    assert [f.error_reason for f in found.files] == [f"dangling symlink -> {tmp_path}/missing.txt"]


@pytest.mark.parametrize(
    ("name", "settings", "reason"),
    [
        # an Emacs lock file: a dangling symlink by design
        (".#notes.md", {}, "hidden file (include_hidden is off)"),
        ("scratch.tmp", {"exclude": ("*.tmp",)}, "excluded by pattern '*.tmp'"),
        ("docs/old.md", {"include": ("**/*.py",)}, "not matched by any include pattern"),
    ],
    ids=["hidden", "excluded", "not-included"],
)
def test_a_dangling_symlink_that_would_not_be_read_anyway_is_skipped_not_an_error(
    root: Path, name: str, settings: dict, reason: str
):
    link = root / name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to("user@host.12345:1700000000")
    (root / "kept.py").symlink_to("missing.py")
    found = by_relpath(run(root, **settings))
    assert (found[name].error_reason, found[name].skip_reason) == (None, reason)
    assert found["kept.py"].error_reason == "dangling symlink -> missing.py", "read, so an error"


# --- hidden entries ---------------------------------------------------------------------------


def test_hidden_files_are_skipped_and_hidden_directories_pruned(root: Path):
    write_tree(root, {"visible.md": "v", ".env": "SECRET=1", ".cache/blob.txt": "b"})
    found = run(root)
    assert to_read(found) == ["visible.md"]
    assert by_relpath(found)[".env"].skip_reason == "hidden file (include_hidden is off)"
    assert pruned(found, root) == {".cache": "hidden directory (include_hidden is off)"}


def test_include_hidden_reads_dot_files_but_default_excludes_still_apply(root: Path):
    write_tree(root, {".env": "SECRET=1", ".cache/blob.txt": "b", ".git/HEAD": "ref: main"})
    found = run(root, include_hidden=True)
    assert to_read(found) == [".cache/blob.txt", ".env"]
    assert pruned(found, root)[".git"] == "excluded by pattern '**/.git'"


def test_a_hidden_file_named_as_a_source_is_read(tmp_path: Path):
    hidden = tmp_path / ".notes"
    hidden.write_text("named explicitly")
    found = discover(IngestConfig(sources=(hidden,), out=tmp_path / "out", workers=1))
    assert [(f.relpath, f.skip_reason) for f in found.files] == [(".notes", None)]


# --- default and user excludes ----------------------------------------------------------------

DEFAULT_EXCLUDED_TREE = {
    "keep.md": "k",
    ".git/config": "[core]",
    "node_modules/left-pad/index.js": "module.exports = 1",
    "web/node_modules/react/index.js": "module.exports = 2",
    "myenv/pyvenv.cfg": "home = /usr/bin",
    "myenv/lib/site.py": "x = 1",
    "pkg/__pycache__/mod.cpython-311.pyc": "pyc",
    "pkg/mod.py": "x = 1",
    "pkg.egg-info/PKG-INFO": "Name: pkg",
    ".mypy_cache/3.11/x.json": "{}",
}
# Directories that real source trees have: pip's _internal/operations/build, CPython's Lib/venv.
SOURCE_NAMED_LIKE_OUTPUT = {
    "build/out.txt": "built",
    "dist/notes.txt": "dist",
    "target/t.rs": "fn main() {}",
    "_internal/operations/build/wheel.py": "def build_wheel(): ...",
    "venv/__init__.py": "def create(): ...",
}


def test_default_excludes_prune_vcs_dependency_virtualenv_and_cache_directories(root: Path):
    write_tree(root, DEFAULT_EXCLUDED_TREE)
    found = run(root)
    assert to_read(found) == ["keep.md", "pkg/mod.py"]
    reasons = pruned(found, root)
    assert reasons["myenv"] == "Python virtual environment"
    assert reasons["node_modules"] == "excluded by pattern '**/node_modules'"
    assert reasons["web/node_modules"] == "excluded by pattern '**/node_modules'"
    assert set(reasons) == {
        ".git",
        ".mypy_cache",
        "node_modules",
        "web/node_modules",
        "myenv",
        "pkg/__pycache__",
        "pkg.egg-info",
    }


def test_directories_named_build_dist_target_or_venv_are_read(root: Path):
    write_tree(root, SOURCE_NAMED_LIKE_OUTPUT)
    found = run(root)
    assert to_read(found) == sorted(SOURCE_NAMED_LIKE_OUTPUT)
    assert found.pruned == []


def test_without_default_excludes_build_and_dependency_directories_are_read(root: Path):
    write_tree(root, DEFAULT_EXCLUDED_TREE)
    read = to_read(run(root, default_excludes=False))
    assert "node_modules/left-pad/index.js" in read
    assert "web/node_modules/react/index.js" in read
    assert "pkg.egg-info/PKG-INFO" in read
    assert "pkg/__pycache__/mod.cpython-311.pyc" in read
    assert ".git/config" not in read, "hidden directories are still pruned"


def test_without_default_excludes_a_virtualenv_is_read_too(root: Path):
    write_tree(root, DEFAULT_EXCLUDED_TREE)
    assert "myenv/lib/site.py" in to_read(run(root, default_excludes=False))


def test_a_user_exclude_with_double_star_prunes_matching_directories_at_any_depth(root: Path):
    write_tree(
        root,
        {
            "app.js": "a",
            "node_modules/x/index.js": "1",
            "packages/ui/node_modules/y/index.js": "2",
            "packages/ui/src/button.js": "3",
        },
    )
    found = run(root, default_excludes=False, exclude=("**/node_modules/**",))
    assert to_read(found) == ["app.js", "packages/ui/src/button.js"]
    assert set(pruned(found, root)) == {"node_modules", "packages/ui/node_modules"}


def test_a_user_exclude_without_a_slash_skips_files_at_any_depth(root: Path):
    write_tree(root, {"run.log": "l", "a/b/debug.log": "l", "a/b/notes.md": "n"})
    found = run(root, exclude=("*.log",))
    assert to_read(found) == ["a/b/notes.md"]
    assert by_relpath(found)["a/b/debug.log"].skip_reason == "excluded by pattern '*.log'"


def test_include_globs_recurse_with_double_star(root: Path):
    write_tree(
        root,
        {
            "src/main.py": "1",
            "src/pkg/sub/deep.py": "2",
            "src/README.md": "3",
            "lib/other.py": "4",
            "tests/src/fake.py": "5",
        },
    )
    found = run(root, include=("src/**/*.py",))
    assert to_read(found) == ["src/main.py", "src/pkg/sub/deep.py"]
    reasons = {f.relpath: f.skip_reason for f in found.files if f.skip_reason}
    assert reasons == {
        "lib/other.py": "not matched by any include pattern",
        "src/README.md": "not matched by any include pattern",
        "tests/src/fake.py": "not matched by any include pattern",
    }


def test_a_file_named_as_a_source_is_read_even_if_excluded(tmp_path: Path):
    log = tmp_path / "server.log"
    log.write_text("explicit")
    found = discover(
        IngestConfig(sources=(log,), out=tmp_path / "out", workers=1, exclude=("*.log",))
    )
    assert [f.skip_reason for f in found.files] == [None]


# --- what is never read -----------------------------------------------------------------------


def test_the_output_directory_inside_a_source_is_never_read(root: Path):
    write_tree(root, {"doc.md": "d", "dataset/manifest.json": "{}", "dataset/cache/x.doc": "c"})
    found = run(root, out=root / "dataset")
    assert to_read(found) == ["doc.md"]
    assert pruned(found, root) == {"dataset": "output directory of this ingest"}


def test_the_output_directory_reached_through_a_symlink_is_never_read(root: Path, tmp_path: Path):
    out = write_tree(tmp_path / "out", {"manifest.json": "{}"})
    write_tree(root, {"doc.md": "d"})
    (root / "link-to-out").symlink_to(out)
    found = run(root, out=out, follow_symlinks="all")
    assert to_read(found) == ["doc.md"]
    assert pruned(found, root) == {"link-to-out": "output directory of this ingest"}


def test_a_fifo_is_skipped_without_blocking(root: Path):
    write_tree(root, {"doc.md": "d"})
    os.mkfifo(root / "pipe")
    result: list[Discovery] = []
    thread = threading.Thread(target=lambda: result.append(run(root)), daemon=True)
    thread.start()
    thread.join(timeout=20)
    assert result, "discovery blocked on a FIFO"
    found = result[0]
    assert to_read(found) == ["doc.md"]
    assert by_relpath(found)["pipe"].skip_reason == "not a regular file (device, socket or pipe)"


def test_files_over_max_file_mb_are_skipped_with_their_size(root: Path):
    write_tree(root, {"small.txt": "x" * 100, "large.txt": "x" * 3000})
    found = run(root, max_file_mb=0.002)  # 2097 bytes
    assert to_read(found) == ["small.txt"]
    assert by_relpath(found)["large.txt"].skip_reason == (
        "larger than max_file_mb=0.002 (3000 bytes)"
    )


# --- globs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "relpath", "expected"),
    [
        # a pattern without a slash matches its name at any depth
        ("*.log", "run.log", True),
        ("*.log", "a/b/run.log", True),
        ("*.log", "run.log.txt", False),
        ("build", "build", True),
        ("build", "src/build", True),
        ("build", "rebuild", False),
        # `*` and `?` stay inside one segment
        ("src/*.py", "src/a.py", True),
        ("src/*.py", "src/pkg/a.py", False),
        ("src/*.py", "lib/src/a.py", False),
        ("docs/?.md", "docs/a.md", True),
        ("docs/?.md", "docs/ab.md", False),
        ("a?b", "a/b", False),
        # `**/` spans zero or more whole directories
        ("src/**/*.py", "src/a.py", True),
        ("src/**/*.py", "src/x/y/z/a.py", True),
        ("src/**/*.py", "lib/src/a.py", False),
        ("**/node_modules/**", "node_modules/x.js", True),
        ("**/node_modules/**", "a/b/node_modules/c/x.js", True),
        ("**/node_modules/**", "a/node_modules_old/x.js", False),
        ("a/**/b", "a/b", True),
        ("a/**/b", "a/x/y/b", True),
        ("**", "anything/at/all", True),
        # classes, negated classes, and literal regex characters
        ("file[0-9].txt", "file7.txt", True),
        ("file[0-9].txt", "filex.txt", False),
        ("file[!0-9].txt", "filex.txt", True),
        ("file[!0-9].txt", "file7.txt", False),
        ("notes (1).md", "notes (1).md", True),
        ("a+b.txt", "aab.txt", False),
        # a trailing slash matches directories only (passed with a trailing slash)
        ("logs/", "logs/", True),
        ("logs/", "logs", False),
        ("logs/", "a/logs/", True),
        # a leading slash anchors the pattern and is not part of the path
        ("/src/*.py", "src/a.py", True),
        # a pattern that selects a directory selects everything below it, as in git
        ("src", "src/extra", True),
        ("docs/**", "docs/a/b.md", True),
    ],
)
def test_glob_matching(pattern: str, relpath: str, expected: bool):
    assert (matches(relpath, (pattern,)) == pattern) is expected


def test_matches_names_the_deciding_pattern_and_negations_take_files_back():
    """As in a .gitignore, the last matching pattern decides: a later `!` re-includes."""
    assert matches("a/b.log", ("*.md", "**/*.log", "*.log")) == "*.log"
    assert matches("a/b.txt", ("*.md", "*.log")) is None
    assert matches("anything", ()) is None
    assert matches("keep.log", ("*.log", "!keep.log")) is None
    assert matches("other.log", ("*.log", "!keep.log")) == "*.log"


def test_globs_match_the_whole_path():
    assert matches("a.py.bak", ("*.py",)) is None
    assert matches("rebuild/", ("build",)) is None


@pytest.mark.parametrize(
    ("pattern", "reldir", "expected"),
    [
        ("**/node_modules/**", "node_modules/", True),
        ("**/node_modules/**", "a/b/node_modules/", True),
        ("**/node_modules/**", "a/b/", False),
        ("src/**", "src/", True),
        ("src/**", "src/deep/", True),
        ("build", "x/build/", True),
        ("*.py", "pkg/", False),
    ],
)
def test_a_directory_is_excluded_whole_by_a_trailing_double_star(
    pattern: str, reldir: str, expected: bool
):
    assert (matches(reldir, (pattern,)) == pattern) is expected


def test_user_exclude_negation_keeps_one_file(root: Path):
    write_tree(root, {"a.log": "1", "keep.log": "2", "b/c.log": "3"})
    found = run(root, exclude=("*.log", "!keep.log"))
    assert to_read(found) == ["keep.log"]


def test_an_anchored_double_star_exclude_prunes_only_the_top_level_directory(root: Path):
    assert matches("pkg/docs/guide.md", ("docs/**",)) is None
    write_tree(root, {"docs/index.md": "top", "pkg/docs/guide.md": "nested", "pkg/a.py": "1"})
    found = run(root, exclude=("docs/**",))
    assert set(pruned(found, root)) == {"docs"}
    assert to_read(found) == ["pkg/a.py", "pkg/docs/guide.md"]


def test_a_leading_slash_anchors_a_pattern_to_the_root():
    assert matches("build", ("/build",)) == "/build"
    assert matches("src/build", ("/build",)) is None
