"""Bytes -> str for text and code: BOMs, PEP 263 cookies, UTF-8, then a charset detector.

Bad bytes never fail a file: they become U+FFFD and a warning on the file's record. The rules
for what counts as text (BOMs, control bytes, BOM-less UTF-16: `is_text`) live here once;
`sniff` asks `is_text`, so a file it calls text is one this module decodes as text.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from unicodedata import category

from charset_normalizer import from_bytes

BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
CODING_COOKIE = re.compile(rb"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)")
DETECT_BYTES = 256 * 1024
MOSTLY_UTF8 = 0.99
CP1252_TIE = 0.1
# C0 controls and DEL, except tab, newlines, form feed and escape (ANSI colour in logs)
TEXT_CONTROLS = "\t\n\f\r\x1b"
CONTROL_BYTES = bytes(b for b in [*range(32), 0x7F] if chr(b) not in TEXT_CONTROLS)
CONTROL_CHARS = re.compile(f"[{re.escape(CONTROL_BYTES.decode('ascii'))}]")
CONTROL_SHARE = 0.01  # more stray controls (or, in UTF-16, non-characters) than this: not text
UTF16_SAMPLE = 8192
NOT_TEXT_CATEGORIES = frozenset(["Cc", "Cn", "Co", "Cs"])  # controls, unassigned, private, halves


def decode_text(data: bytes, warnings: list[str]) -> tuple[str, str]:
    """Decode and normalise (newlines to \\n, NFC, no stray control characters).

    Returns (text, encoding); problems are appended to `warnings`.
    """
    encoding, body = _declared_encoding(data)
    if encoding is None:
        try:  # the common case, decoded once: valid UTF-8
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            encoding = "utf-8" if _mostly_utf8(data) else _detect_legacy(data[:DETECT_BYTES])
        else:
            # In UTF-8 a control character is its own byte, and looking for those in the bytes
            # is ~7x faster than the regex on the text, which most files then skip.
            if control_bytes(data):
                text = CONTROL_CHARS.sub("", text)
            return _newlines_and_form(text, "NFC"), "utf-8"
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError:
        text = body.decode(encoding, errors="replace")
        bad = text.count("\ufffd") - body.decode(encoding, errors="ignore").count("\ufffd")
        warnings.append(f"{bad} invalid byte sequence(s) for {encoding} replaced with U+FFFD")
    return normalize_text(text), encoding


def normalize_text(text: str, form: str = "NFC") -> str:
    """Newlines to \\n, stray control characters dropped, Unicode normal form `form`."""
    return _newlines_and_form(CONTROL_CHARS.sub("", text), form)


def _newlines_and_form(text: str, form: str) -> str:
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text if text.isascii() else unicodedata.normalize(form, text)


def _declared_encoding(data: bytes) -> tuple[str | None, bytes]:
    """The encoding the bytes announce (BOM, UTF-16 shape, PEP 263 cookie) and the body after
    any BOM; None when they announce nothing."""
    if found := _bom(data):
        bom, name = found
        return name, data[len(bom) :]
    return utf16_without_bom(data) or _pep263_cookie(data), data


def _detect_legacy(sample: bytes) -> str:
    """The detector's best guess, except that Windows-1252 wins near-ties.

    Short Western text fits several Latin code pages equally well; cp1252 (a superset of
    Latin-1's printable range) is by far the most common of them.
    """
    results = list(from_bytes(sample))
    if not results:
        return "utf-8"
    best = min(results, key=lambda m: m.chaos)
    for match in results:
        if match.encoding == "cp1252" and match.chaos <= best.chaos + CP1252_TIE:
            return "cp1252"
    return codecs.lookup(best.encoding).name


def _pep263_cookie(data: bytes) -> str | None:
    """A cookie naming an ASCII-compatible text codec; anything else is a comment that merely
    looks like one ("Content-Transfer-Encoding: base64", "encoding: UTF-16 explained")."""
    for line in data[:1024].split(b"\n", 2)[:2]:
        match = CODING_COOKIE.match(line)
        if match:
            try:
                codec = codecs.lookup(match.group(1).decode("ascii"))
                if codec._is_text_encoding and b"coding".decode(codec.name) == "coding":
                    return codec.name
            except (LookupError, UnicodeError):
                pass
            return None
    return None


def is_text(head: bytes) -> bool:
    """Text unless NULs or many control bytes appear; UTF-16/32 with a BOM and UTF-16 without
    one are text."""
    if _bom(head):
        return True
    if b"\x00" in head:
        return utf16_without_bom(head) is not None
    return control_bytes(head) <= len(head) * CONTROL_SHARE


def control_bytes(data: bytes) -> int:
    """How many bytes are C0 controls or DEL that text has no use for (CONTROL_BYTES)."""
    return len(data) - len(data.translate(None, CONTROL_BYTES))


def _bom(data: bytes) -> tuple[bytes, str] | None:
    """The byte-order mark `data` starts with, and its encoding."""
    return next(((bom, name) for bom, name in BOMS if data.startswith(bom)), None)


def utf16_without_bom(data: bytes) -> str | None:
    """The byte order, "utf-16-le" or "utf-16-be", when the first bytes are UTF-16 text.

    Only bytes with a NUL qualify: UTF-8 and legacy text never hold one, while read as UTF-16
    they mostly decode to valid CJK ("Bush hid the facts"). The byte order is the one whose
    high bytes (the Unicode block) take fewer values, on a tie the more NULs (ASCII): Cyrillic
    is 04 and 00 (spaces, newlines), Japanese a few blocks, while low bytes vary. The decoded
    sample must then be text: as few controls, unassigned, private-use or lone surrogate
    characters as `is_text` allows control bytes.
    """
    sample = data[:UTF16_SAMPLE]
    sample = sample[: len(sample) - len(sample) % 2]
    if b"\x00" not in sample:
        return None
    le = _spread(sample[1::2]) <= _spread(sample[0::2])
    encoding = "utf-16-le" if le else "utf-16-be"
    text = sample.decode(encoding, errors="surrogatepass")
    if "\ud800" <= text[-1] <= "\udbff":  # a pair cut by the end of the sample
        text = text[:-1]
    bad = sum(1 for ch in text if ch not in TEXT_CONTROLS and category(ch) in NOT_TEXT_CATEGORIES)
    return encoding if bad <= len(text) * CONTROL_SHARE else None


def _spread(data: bytes) -> tuple[int, int]:
    return len(set(data)), -data.count(0)


def _mostly_utf8(data: bytes) -> bool:
    """Valid UTF-8 with a few corrupt bytes is UTF-8 with damage, not Latin-1."""
    decoded = data.decode("utf-8", errors="replace")
    bad = decoded.count("\ufffd")
    multibyte = sum(1 for ch in decoded if ord(ch) > 127 and ch != "\ufffd")
    return multibyte > bad and 1 - bad / max(len(decoded), 1) >= MOSTLY_UTF8
