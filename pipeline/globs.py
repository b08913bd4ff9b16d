"""Gitignore-like globs over POSIX relative paths, where `**` really spans directories.

`*` and `?` stay within one path segment, `**/` matches zero or more whole segments, and a
pattern without a slash (`*.log`) matches at any depth, as in .gitignore.
"""

from __future__ import annotations

import re
from functools import lru_cache


@lru_cache(maxsize=1024)
def compile_glob(pattern: str) -> re.Pattern[str]:
    pat = pattern.strip()
    anchored = "/" in pat.rstrip("/")  # a leading "/" anchors, as in .gitignore
    pat = pat.strip("/") or "**"
    if not anchored:
        pat = "**/" + pat
    out, i = [], 0
    while i < len(pat):
        if pat.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif pat.startswith("**", i):
            out.append(".*")
            i += 2
        elif pat[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pat[i] == "?":
            out.append("[^/]")
            i += 1
        elif pat[i] == "[":
            end = pat.find("]", i + 2)
            if end == -1:
                out.append(re.escape(pat[i]))
                i += 1
            else:
                body = pat[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end + 1
        else:
            out.append(re.escape(pat[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def matches(relpath: str, patterns: tuple[str, ...]) -> str | None:
    """The first pattern that matches `relpath`, or None."""
    for pattern in patterns:
        if compile_glob(pattern).match(relpath):
            return pattern
    return None


def prunes_dir(reldir: str, patterns: tuple[str, ...]) -> str | None:
    """The first pattern that excludes the whole directory (`build`, `**/node_modules/**`)."""
    for pattern in patterns:
        stem = pattern.strip().rstrip("/")
        if compile_glob(pattern).match(reldir) or (
            # "docs/**" has a slash, so it is anchored; its stem "docs" must stay anchored too
            stem.endswith("/**") and compile_glob("/" + stem[: -len("/**")]).match(reldir)
        ):
            return pattern
    return None
