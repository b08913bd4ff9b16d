"""Globs (`--include`, `--exclude`) and `.gitignore`/`.ignore` files, all with git's rules.

pathspec's GitIgnoreSpec does the matching, so patterns mean what they mean to git: `*` and
`?` stay in one path segment, `**/` spans directories, a pattern without a slash matches at any
depth, a leading or inner slash anchors it, a trailing slash matches directories only, `!`
re-includes, and the last matching pattern decides. Paths are POSIX and relative to their
root; a directory is passed with a trailing slash.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from pathspec import GitIgnoreSpec

from gptforge.pipeline.names import display_path

# Within one directory and across all of them, `.ignore` outranks `.gitignore` (as in ripgrep).
IGNORE_FILES = (".ignore", ".gitignore")


@lru_cache(maxsize=256)
def _spec(patterns: tuple[str, ...]) -> GitIgnoreSpec:
    return GitIgnoreSpec.from_lines(patterns)


def matches(relpath: str, patterns: tuple[str, ...]) -> str | None:
    """The pattern that selects `relpath` (the last one matching, unless that one is a `!`
    negation), or None."""
    if not patterns:
        return None
    spec = _spec(patterns)
    result = spec.check_file(relpath)
    return spec.patterns[result.index].pattern if result.include else None


@dataclass(frozen=True)
class IgnoreFile:
    """One `.gitignore` or `.ignore`: its patterns apply below its own directory."""

    base: str  # the directory relative to the root, "" or ending in "/"
    relpath: str
    spec: GitIgnoreSpec

    @property
    def rank(self) -> int:
        return IGNORE_FILES.index(self.relpath.rpartition("/")[2])


def read_ignore_file(path: str, relpath: str) -> IgnoreFile | None:
    """Patterns are read as file names are (undecodable bytes kept), so they match them;
    an unreadable file ignores nothing."""
    try:
        with open(path, "rb") as fh:
            lines = fh.read().decode("utf-8", "surrogateescape").splitlines()
    except OSError:
        return None
    base = relpath.rpartition("/")[0]
    return IgnoreFile(base + "/" if base else "", relpath, GitIgnoreSpec.from_lines(lines))


def stack_ignore_files(
    inherited: tuple[IgnoreFile, ...], found: list[IgnoreFile]
) -> tuple[IgnoreFile, ...]:
    """The files that apply in a directory, in the order they are asked: every `.ignore` before
    every `.gitignore`, and within each, the deepest first."""
    if not found:
        return inherited
    return tuple(sorted((*found, *inherited), key=lambda f: f.rank))


def ignored_by(relpath: str, ignore_files: tuple[IgnoreFile, ...]) -> str | None:
    """Why an ignore file leaves `relpath` out, or None. The first file with a matching pattern
    decides, so a deeper `!pattern` takes back what a shallower file ignored."""
    for ignore in ignore_files:
        result = ignore.spec.check_file(relpath[len(ignore.base) :])
        if result.include is not None:
            if not result.include:
                return None
            pattern = ignore.spec.patterns[result.index].pattern
            return f"ignored by pattern {pattern!r} in {display_path(ignore.relpath)}"
    return None
