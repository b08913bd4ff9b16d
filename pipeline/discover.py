"""Find every file under the source roots, and say why each one that will not be read is left out.

Policy (documented in docs/ingestion.md):
- Symlinks are followed; a directory reached twice (a loop, or two links to one place) is
  walked once, and the repeat is listed under `pruned` with its reason. A dangling link is a
  file with an error, unless the rules below would leave it out anyway.
- Hidden entries (name starts with '.') are left out unless `include_hidden`: hidden
  directories are pruned, hidden files are listed as skipped. Default excludes (.git,
  virtualenvs, node_modules, build output) and user excludes prune directories the same way.
- Sources named explicitly as files are always read.
- The output directory is never read back as input.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import IngestConfig
from pipeline.globs import matches, prunes_dir
from pipeline.records import FoundFile


@dataclass
class Discovery:
    files: list[FoundFile] = field(default_factory=list)
    pruned: list[dict[str, str]] = field(default_factory=list)


def discover(cfg: IngestConfig) -> Discovery:
    """Walk every source; files come out in a stable order (by root, then relative path)."""
    found = Discovery()
    seen_dirs: set[tuple[int, int]] = set()
    never_read = {_identity(cfg.out)} - {None}
    for source in cfg.sources:
        if source.is_symlink() and not source.exists():
            found.files.append(_dangling(source, source.parent, None))
        elif source.is_dir():
            _walk(source.resolve(), source.resolve(), cfg, found, seen_dirs, never_read)
        else:
            path = source.absolute()
            found.files.append(_file_entry(path, path.parent, path.name, cfg, True))
    return found


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _walk(
    root: Path,
    directory: Path,
    cfg: IngestConfig,
    found: Discovery,
    seen: set[tuple[int, int]],
    never_read: set,
) -> None:
    ident = _identity(directory)
    rel = _rel(root, directory)
    if ident in never_read:
        found.pruned.append({"path": str(directory), "reason": "output directory of this ingest"})
        return
    if ident in seen:
        found.pruned.append(
            {"path": str(directory), "reason": "already walked (symlink loop or second link)"}
        )
        return
    seen.add(ident)
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as exc:
        found.pruned.append({"path": str(directory), "reason": f"cannot list: {exc.strerror}"})
        return
    for entry in entries:
        path = Path(entry.path)
        relpath = f"{rel}/{entry.name}" if rel else entry.name
        try:
            is_dir = entry.is_dir(follow_symlinks=True)
        except OSError:
            is_dir = False
        if entry.is_symlink() and not path.exists():
            found.files.append(_dangling(path, root, _rule_skip_reason(entry.name, relpath, cfg)))
        elif is_dir:
            reason = _dir_prune_reason(path, relpath, cfg)
            if reason:
                found.pruned.append({"path": str(path), "reason": reason})
            else:
                _walk(root, path, cfg, found, seen, never_read)
        else:
            found.files.append(_file_entry(path, root, relpath, cfg, False))


def _dir_prune_reason(path: Path, relpath: str, cfg: IngestConfig) -> str | None:
    if path.name.startswith(".") and not cfg.include_hidden:
        return "hidden directory (include_hidden is off)"
    pattern = prunes_dir(relpath, cfg.excludes)
    if pattern:
        return f"excluded by pattern {pattern!r}"
    if cfg.default_excludes and (path / "pyvenv.cfg").is_file():
        return "Python virtual environment"
    return None


def _rel(root: Path, path: Path) -> str:
    return "" if path == root else path.relative_to(root).as_posix()


def _dangling(path: Path, root: Path, skip_reason: str | None) -> FoundFile:
    """A dangling link is an error only if it would have been read (an Emacs lock file
    `.#name` is hidden, an excluded link is excluded): the walk's rules decide first."""
    entry = FoundFile(path=str(path), relpath=_rel(root, path) or path.name, root=str(root))
    entry.skip_reason = skip_reason
    if skip_reason is None:
        entry.error_reason = f"dangling symlink -> {os.readlink(path)}"
    return entry


def _file_entry(
    path: Path, root: Path, relpath: str, cfg: IngestConfig, explicit: bool
) -> FoundFile:
    entry = FoundFile(path=str(path), relpath=relpath, root=str(root))
    try:
        st = path.stat()
    except OSError as exc:
        entry.error_reason = f"cannot stat: {exc.strerror}"
        return entry
    entry.size = st.st_size
    if not stat.S_ISREG(st.st_mode):
        entry.skip_reason = "not a regular file (device, socket or pipe)"
    elif not explicit:
        entry.skip_reason = _rule_skip_reason(path.name, relpath, cfg)
    if entry.skip_reason is None and st.st_size > cfg.max_file_mb * 1024 * 1024:
        entry.skip_reason = f"larger than max_file_mb={cfg.max_file_mb:g} ({st.st_size} bytes)"
    return entry


def _rule_skip_reason(name: str, relpath: str, cfg: IngestConfig) -> str | None:
    """The hidden/exclude/include rules for a file found by walking."""
    if name.startswith(".") and not cfg.include_hidden:
        return "hidden file (include_hidden is off)"
    if pattern := matches(relpath, cfg.excludes):
        return f"excluded by pattern {pattern!r}"
    if cfg.include and not matches(relpath, cfg.include):
        return "not matched by any include pattern"
    return None
