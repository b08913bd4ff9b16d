"""`pipeline.textdecode`: bytes of any common encoding -> normalised text, never a failure."""

from __future__ import annotations

import codecs
import time

import pytest

from gptforge.pipeline.extract_text import extract_plain
from gptforge.pipeline.textdecode import decode_text, normalize_text, utf16_without_bom
from gptforge.pipeline.tokenizer import decode, encode

GERMAN = "Grüße aus München! Die Straße ist schön, der Käse würzig."
MIXED = "Grüße, 東京, Ελλάδα, emoji 🎉 and math ∑ x²."


def decoded(data: bytes) -> tuple[str, str, list[str]]:
    warnings: list[str] = []
    text, encoding = decode_text(data, warnings)
    return text, encoding, warnings


# --- byte order marks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bom", "codec", "expected"),
    [
        (codecs.BOM_UTF8, "utf-8", "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16-le", "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be", "utf-16-be"),
        (codecs.BOM_UTF32_LE, "utf-32-le", "utf-32-le"),
        (codecs.BOM_UTF32_BE, "utf-32-be", "utf-32-be"),
    ],
)
def test_a_bom_decides_the_encoding_and_is_removed(bom: bytes, codec: str, expected: str):
    text, encoding, warnings = decoded(bom + MIXED.encode(codec))
    assert (text, encoding, warnings) == (MIXED, expected, [])


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_bom_is_recognised(codec: str):
    source = "def main():\n    print('hello, world')\n" * 5
    text, encoding, _ = decoded(source.encode(codec))
    assert (text, encoding) == (source, codec)


RUSSIAN = "Съешь же ещё этих мягких французских булок, да выпей чаю.\n"
JAPANESE = "\u3000吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。\n"
EMOJI_AT_THE_CUT = "a" * 4095 + "🎉 and more text after the sample\n"  # pair split at byte 8192


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("source", [RUSSIAN * 40, JAPANESE * 40, RUSSIAN, JAPANESE[:12]])
def test_non_latin_utf16_without_a_bom_is_recognised(source: str, codec: str):
    text, encoding, warnings = decoded(source.encode(codec))
    assert (text, encoding, warnings) == (source, codec, [])


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_a_surrogate_pair_cut_by_the_end_of_the_sample_is_still_utf16(codec: str):
    assert decoded(EMOJI_AT_THE_CUT.encode(codec))[:2] == (EMOJI_AT_THE_CUT, codec)


def test_utf16_detection_needs_a_nul_so_ascii_is_never_read_as_cjk():
    source = "Bush hid the facts"  # valid CJK if read as UTF-16, the classic false positive
    assert decoded(source.encode())[:2] == (source, "utf-8")
    assert utf16_without_bom(source.encode()) is None
    assert utf16_without_bom(b"\x00" * 64) is None  # NULs, but U+0000 is not text
    assert utf16_without_bom(bytes(range(256)) * 4) is None


# --- declared and detected encodings ----------------------------------------------------------


def test_a_pep263_coding_cookie_is_honoured():
    source = "# -*- coding: latin-1 -*-\nname = 'José Muñoz'\n"
    text, encoding, warnings = decoded(source.encode("latin-1"))
    assert (text, encoding, warnings) == (source, "iso8859-1", [])


def test_a_coding_cookie_on_the_second_line_after_a_shebang_is_honoured():
    source = "#!/usr/bin/env python\n# vim: set fileencoding=cp1251 :\nprint('Привет')\n"
    text, encoding, _ = decoded(source.encode("cp1251"))
    assert (text, encoding) == (source, "cp1251")


def test_an_unknown_coding_cookie_is_ignored():
    source = "# coding: no-such-codec\nprint('ok')\n"
    assert decoded(source.encode())[:2] == (source, "utf-8")


@pytest.mark.parametrize(
    "first_line",
    [
        "# Content-Transfer-Encoding: base64",
        "# Decoding: rot13 puzzles for the newsletter",
        "# encoding: hex dumps of the firmware follow",
    ],
)
def test_a_comment_that_looks_like_a_cookie_naming_a_non_text_codec_is_ignored(first_line):
    body = "These notes are plain ASCII, readable as they are.\n"
    extraction = extract_plain(f"{first_line}\n{body}".encode())
    assert extraction.text == f"{first_line}\n{body}"
    assert (extraction.extractor, extraction.warnings) == ("text:utf-8", [])


@pytest.mark.parametrize("codec", ["UTF-16", "utf-32-le", "cp037"])
def test_a_comment_that_looks_like_a_cookie_naming_a_non_ascii_codec_is_ignored(codec: str):
    body = "These notes are plain ASCII, readable as they are.\n"
    source = f"# Character encoding: {codec} explained\n{body}"
    extraction = extract_plain(source.encode())
    assert (extraction.text, extraction.extractor) == (source, "text:utf-8")


def test_strict_utf8_wins_over_detection():
    text, encoding, warnings = decoded(MIXED.encode("utf-8"))
    assert (text, encoding, warnings) == (MIXED, "utf-8", [])


@pytest.mark.parametrize(
    "source",
    [
        "Grüße aus München, schöne Straße. Déjà vu.",
        "Le cœur a ses raisons que la raison ne connaît point. “Ça”, dit l’élève – 5 € …",
    ],
    ids=["latin-1-range", "cp1252-only-characters"],
)
def test_western_legacy_text_is_decoded_as_cp1252(source: str):
    text, encoding, warnings = decoded(source.encode("cp1252"))
    assert (text, encoding, warnings) == (source, "cp1252", [])


@pytest.mark.parametrize(
    ("source", "codec", "expected"),
    [
        (
            "Привет, мир! Это пример текста на русском языке. Мы проверяем, что кодировка "
            "определяется правильно, даже если в файле нет метки порядка байтов. "
            "Москва - столица России, а Волга - самая длинная река Европы.",
            "koi8_r",
            {"koi8-r"},
        ),
        (
            "日本語のテキストです。これは文字コードの判定を確認するための文章です。"
            "東京は日本の首都であり、多くの人が住んでいます。"
            "今日は天気が良いので、公園を散歩しました。",
            "shift_jis",
            {"shift_jis", "cp932"},  # cp932 is Windows' superset of Shift_JIS
        ),
    ],
    ids=["koi8-r", "shift-jis"],
)
def test_non_western_legacy_encodings_are_detected(source: str, codec: str, expected: set):
    text, encoding, warnings = decoded(source.encode(codec))
    assert text == source
    assert encoding in expected
    assert warnings == []


# --- damage -----------------------------------------------------------------------------------


def test_invalid_bytes_in_utf8_become_replacement_characters_with_a_warning():
    data = (GERMAN + " ").encode() * 5 + b"\xff\xfe broken \xc3 bytes " + GERMAN.encode()
    text, encoding, warnings = decoded(data)
    assert encoding == "utf-8"
    assert text.count("\ufffd") == 3
    assert text.startswith(GERMAN) and text.endswith(GERMAN)
    assert warnings == ["3 invalid byte sequence(s) for utf-8 replaced with U+FFFD"]


def test_bytes_a_declared_encoding_cannot_decode_are_a_warning_not_a_failure():
    data = "# coding: ascii\nname = 'José'\n".encode()
    extraction = extract_plain(data)
    assert extraction.extractor == "text:ascii"
    assert "name = 'Jos\ufffd\ufffd'" in extraction.text
    assert extraction.warnings == ["2 invalid byte sequence(s) for ascii replaced with U+FFFD"]


# --- normalisation ----------------------------------------------------------------------------


def test_crlf_and_lone_cr_become_newlines():
    text, _, _ = decoded(b"windows\r\nold mac\rlast\n\r\n")
    assert text == "windows\nold mac\nlast\n\n"


RAW_CONTROLS = "Cafe\u0301\x00 be\x07ll\ttab\x0cpage \x1b[1mbold\x1b[0m\x7f\r\n"
CLEAN_CONTROLS = "Café bell\ttab\x0cpage \x1b[1mbold\x1b[0m\n"


def test_text_is_nfc_and_stray_control_characters_are_removed():
    assert normalize_text(RAW_CONTROLS) == CLEAN_CONTROLS


@pytest.mark.parametrize("codec", ["utf-8", "utf-8-sig", "utf-16"])
def test_decoding_removes_the_same_control_characters_whatever_the_encoding(codec: str):
    # UTF-8 files take a byte-level shortcut; every path must agree with normalize_text
    data = RAW_CONTROLS.replace("\u0301", "").replace("Cafe", "Café").encode(codec)
    assert decoded(data)[0] == CLEAN_CONTROLS


def test_ascii_utf8_without_control_bytes_comes_back_unchanged():
    source = "def f(x):\n\treturn x  # plain ASCII, the common case\n"
    assert decoded(source.encode())[:2] == (source, "utf-8")


def test_extract_plain_names_the_encoding_it_used():
    source = "Très bien, à bientôt: la fenêtre coûte 5 € à l’hôtel."
    extraction = extract_plain(source.encode("cp1252"))
    assert (extraction.text, extraction.extractor) == (source, "text:cp1252")


def test_a_5mb_single_line_minified_file_decodes_and_tokenizes_quickly():
    parts, size, i = [], 0, 0
    while size < 5 * 1024 * 1024:
        part = f'function f{i}(a,b){{var c=a+b*{i};return c>0?"k{i}":null}};var v{i}=f{i}(1,2);'
        parts.append(part)
        size += len(part)
        i += 1
    data = "".join(parts).encode()
    started = time.monotonic()
    text, encoding, warnings = decoded(data)
    tokens = encode(text)
    elapsed = time.monotonic() - started
    assert (encoding, warnings, text.count("\n")) == ("utf-8", [], 0)
    assert len(text) == len(data)
    assert len(tokens) > len(data) / 4
    assert decode(tokens[:50]) == text[: len(decode(tokens[:50]))]
    assert elapsed < 60
