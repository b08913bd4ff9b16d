"""Find every file under the source roots, and say why each one that will not be read is left out.

Policy (documented in docs/ingestion.md):
- A symlink is followed only if its target lies inside one of the sources
  (`follow_symlinks="inside"`), or anywhere but /proc, /sys and /dev (`"all"`); otherwise it is
  left out with its target as the reason. A directory reached twice (a loop, or two links to
  one place) is walked once. A dangling link is a file with an error, unless the rules below
  would leave it out anyway.
- Hidden entries (name starts with '.') are left out unless `include_hidden`; so are the
  default excludes (VCS and tool caches; a directory holding a pyvenv.cfg), user excludes and
  whatever the `.gitignore`/`.ignore` files in the tree ignore. A directory left out is listed
  under `pruned` with its reason; a file left out is listed with its skip reason.
- Sources named explicitly as files are always read.
- The output directory is never read back as input.
- The walk keeps its own stack: a tree thousands of directories deep is no problem.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

from gptforge.pipeline.config import IngestConfig
from gptforge.pipeline.globs import (
    IGNORE_FILES,
    IgnoreFile,
    ignored_by,
    matches,
    read_ignore_file,
    stack_ignore_files,
)
from gptforge.pipeline.names import display_path
from gptforge.pipeline.records import FoundFile

# Not files: reading them hangs (/dev/zero is endless), leaks the machine's state into a
# dataset, or loops (/dev/fd -> /proc/self/fd holds the walk's own descriptors).
SYSTEM_DIRS = ("/proc", "/sys", "/dev")


@dataclass
class Discovery:
    files: list[FoundFile] = field(default_factory=list)
    pruned: list[dict[str, str]] = field(default_factory=list)


@dataclass
class _Dir:
    """A directory being listed: the walk's stack holds these instead of Python frames."""

    rel: str  # relative to its root, "" for the root itself
    real: str  # symlinks resolved, for the symlink and system-directory rules
    ignore_files: tuple[IgnoreFile, ...]
    entries: Iterator[os.DirEntry[str]]


def discover(cfg: IngestConfig) -> Discovery:
    """Walk every source; files come out in a stable order (by root, then relative path)."""
    walker = _Walker(cfg)
    for source in cfg.sources:
        if source.is_symlink() and not source.exists():
            walker.found.files.append(_dangling(str(source), str(source.parent), source.name))
        elif source.is_dir():
            walker.walk(str(source.resolve()))
        else:
            path = source.absolute()
            walker.found.files.append(walker.file(str(path), str(path.parent), path.name, None))
    return walker.found


class _Walker:
    def __init__(self, cfg: IngestConfig):
        self.cfg = cfg
        self.excludes = cfg.excludes
        self.found = Discovery()
        self.seen: set[tuple[int, int]] = set()
        self.never_read = {_identity(str(cfg.out))} - {None}
        self.sources = tuple(os.path.realpath(source) for source in cfg.sources)

    def walk(self, root: str) -> None:
        """Depth first, entries by name: the order a recursive walk would give."""
        stack: list[_Dir] = []
        self._enter(stack, root, "", root, ())
        while stack:
            parent = stack[-1]
            entry = next(parent.entries, None)
            if entry is None:
                stack.pop()
            else:
                self._visit(stack, root, parent, entry)

    def _visit(self, stack: list[_Dir], root: str, parent: _Dir, entry: os.DirEntry[str]) -> None:
        rel = f"{parent.rel}/{entry.name}" if parent.rel else entry.name
        link = entry.is_symlink()
        if link and not os.path.exists(entry.path):
            reason = self._file_rule(entry.name, rel, parent.ignore_files)
            self.found.files.append(_dangling(entry.path, root, rel, reason))
            return
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        if not is_dir:
            reason = self._file_rule(entry.name, rel, parent.ignore_files)
            if link and reason is None:
                reason = self._target_rule(os.path.realpath(entry.path), link)
            self.found.files.append(self.file(entry.path, root, rel, reason))
            return
        real = os.path.realpath(entry.path) if link else os.path.join(parent.real, entry.name)
        if reason := self._dir_rule(entry, rel, real, link, parent.ignore_files):
            self.found.pruned.append({"path": entry.path, "reason": reason})
        else:
            self._enter(stack, entry.path, rel, real, parent.ignore_files)

    def _enter(
        self, stack: list[_Dir], path: str, rel: str, real: str, inherited: tuple[IgnoreFile, ...]
    ) -> None:
        ident = _identity(path)
        if ident in self.never_read:
            self.found.pruned.append({"path": path, "reason": "output directory of this ingest"})
            return
        if ident in self.seen:
            reason = "already walked (symlink loop or second link)"
            self.found.pruned.append({"path": path, "reason": reason})
            return
        if ident is not None:
            self.seen.add(ident)
        try:
            # Listed whole and closed at once: no descriptor stays open per level.
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError as exc:
            self.found.pruned.append({"path": path, "reason": f"cannot list: {exc.strerror}"})
            return
        found = []
        if self.cfg.ignore_files:
            for entry in entries:
                if entry.name in IGNORE_FILES and entry.is_file():
                    relpath = f"{rel}/{entry.name}" if rel else entry.name
                    found.append(read_ignore_file(entry.path, relpath))
        ignore_files = stack_ignore_files(inherited, [f for f in found if f])
        stack.append(_Dir(rel, real, ignore_files, iter(entries)))

    def _dir_rule(
        self,
        entry: os.DirEntry[str],
        rel: str,
        real: str,
        link: bool,
        ignore_files: tuple[IgnoreFile, ...],
    ) -> str | None:
        if entry.name.startswith(".") and not self.cfg.include_hidden:
            return "hidden directory (include_hidden is off)"
        if pattern := matches(rel + "/", self.excludes):
            return f"excluded by pattern {pattern!r}"
        if reason := ignored_by(rel + "/", ignore_files):
            return reason
        if self.cfg.default_excludes and os.path.isfile(os.path.join(entry.path, "pyvenv.cfg")):
            return "Python virtual environment"
        return self._target_rule(real, link)

    def _file_rule(
        self, name: str, relpath: str, ignore_files: tuple[IgnoreFile, ...]
    ) -> str | None:
        """The hidden/exclude/ignore-file/include rules for a file found by walking."""
        if name.startswith(".") and not self.cfg.include_hidden:
            return "hidden file (include_hidden is off)"
        if pattern := matches(relpath, self.excludes):
            return f"excluded by pattern {pattern!r}"
        if reason := ignored_by(relpath, ignore_files):
            return reason
        if self.cfg.include and not matches(relpath, self.cfg.include):
            return "not matched by any include pattern"
        return None

    def _target_rule(self, real: str, link: bool) -> str | None:
        """Where the walk may go: never into /proc, /sys or /dev, and through a symlink only
        inside the sources unless `follow_symlinks="all"`."""
        if _under(real, SYSTEM_DIRS):
            where = f"symlink points into {display_path(real)}" if link else "directory"
            return f"{where}: /proc, /sys and /dev are never read"
        if link and self.cfg.follow_symlinks == "inside" and not _under(real, self.sources):
            return f"symlink points outside the sources: {display_path(real)}"
        return None

    def file(self, path: str, root: str, relpath: str, reason: str | None) -> FoundFile:
        """A file's record; `reason` is why the rules leave it out (None: read it)."""
        entry = FoundFile(path=path, relpath=relpath, root=root, skip_reason=reason)
        try:
            st = os.stat(path)
        except OSError as exc:
            if reason is None:
                entry.error_reason = f"cannot stat: {exc.strerror}"
            return entry
        entry.size = st.st_size
        if reason is not None:
            return entry
        if not stat.S_ISREG(st.st_mode):
            entry.skip_reason = "not a regular file (device, socket or pipe)"
        elif st.st_size > self.cfg.max_file_mb * 1024 * 1024:
            mb = self.cfg.max_file_mb
            entry.skip_reason = f"larger than max_file_mb={mb:g} ({st.st_size} bytes)"
        return entry


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _under(real: str, roots: tuple[str, ...]) -> bool:
    return any(real == r or real.startswith(r.rstrip("/") + "/") for r in roots)


def _dangling(path: str, root: str, relpath: str, skip_reason: str | None = None) -> FoundFile:
    """A dangling link is an error only if it would have been read (an Emacs lock file
    `.#name` is hidden, an excluded link is excluded): the walk's rules decide first."""
    entry = FoundFile(path=path, relpath=relpath, root=root, skip_reason=skip_reason)
    if skip_reason is None:
        entry.error_reason = f"dangling symlink -> {display_path(os.readlink(path))}"
    return entry
