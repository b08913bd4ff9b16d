"""File names as Python holds them (`os.fsdecode`: undecodable bytes become lone surrogates),
and how to show them: a name may hold a newline or a terminal escape code, and printing it raw
would forge output lines or recolour the terminal."""

from __future__ import annotations

import os


def display_path(path: str | bytes | os.PathLike) -> str:
    """`path` safe to print on one line: undecodable bytes as `\\xff`, control and other
    non-printable characters as Python escapes (`\\n`, `\\x1b`, `\\u202e`); a printable name is
    returned unchanged. Only for showing: open files by the path itself."""
    text = os.fsdecode(path)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() and c != "\\" else _escape(c) for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape's stand-in for the byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    return char.encode("unicode_escape").decode("ascii")
