"""Without a working tesseract, text, code and born-digital PDFs still ingest; images and scanned
pages fail one by one with a reason saying what to install. A tesseract that hangs costs seconds,
not a worker's whole file timeout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import docgen
import pytest
from extract_helpers import LANG, PAGE_ONE, PAGE_TWO, image, pdf

from gptforge.pipeline import ocr
from gptforge.pipeline.ocr import NOT_INSTALLED, check_languages
from gptforge.pipeline.records import ExtractionError

SCAN_TEXT = "Scanned words nobody can read without tesseract."


def forget_tesseract() -> None:
    ocr.tesseract_problem.cache_clear()
    ocr.installed_languages.cache_clear()


@pytest.fixture
def path_without_tesseract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH is one empty folder; what tesseract this process knew of is forgotten (and is
    again afterwards, so later tests probe the real one)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    forget_tesseract()
    yield folder
    forget_tesseract()


@pytest.fixture
def hanging_tesseract(path_without_tesseract: Path, monkeypatch: pytest.MonkeyPatch) -> float:
    """A `tesseract` that never answers; the probe's time limit cut to one second."""
    fake = path_without_tesseract / "tesseract"
    fake.write_text(f"#!/bin/sh\nexec {shutil.which('sleep', path='/usr/bin:/bin')} 60\n")
    fake.chmod(0o755)
    monkeypatch.setattr(ocr, "PROBE_TIMEOUT_S", 1.0)
    return 1.0


def png(text: str) -> bytes:
    return docgen.image_bytes(docgen.render_text_image(text), "PNG")


def test_a_missing_tesseract_is_returned_not_raised_by_the_settings_check(
    path_without_tesseract: Path,
) -> None:
    assert check_languages("eng") == NOT_INSTALLED
    assert NOT_INSTALLED == "tesseract is not installed (apt-get install tesseract-ocr)"


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_an_image_fails_with_the_reason(path_without_tesseract: Path, fmt: str) -> None:
    frames = [docgen.render_text_image(t) for t in (PAGE_ONE, PAGE_TWO)]
    data = docgen.image_bytes(frames[0], fmt, save_all=True, append_images=frames[1:])
    with pytest.raises(ExtractionError) as info:
        image(data)
    assert str(info.value) == NOT_INSTALLED


def test_a_scanned_pdf_fails_with_the_reason(path_without_tesseract: Path, tmp_path: Path) -> None:
    scan = docgen.scanned_pdf(tmp_path / "scan.pdf", [SCAN_TEXT, SCAN_TEXT]).read_bytes()
    with pytest.raises(ExtractionError) as info:
        pdf(scan)
    assert str(info.value) == NOT_INSTALLED


def test_a_born_digital_pdf_needs_no_tesseract(path_without_tesseract: Path) -> None:
    extraction = pdf(docgen.text_pdf_bytes([PAGE_TWO]))
    assert (extraction.text, extraction.warnings) == (PAGE_TWO, [])


def test_a_pdf_with_text_and_scanned_pages_keeps_its_text_and_warns(
    path_without_tesseract: Path, tmp_path: Path
) -> None:
    mixed = docgen.mixed_pdf(tmp_path / "mixed.pdf", PAGE_TWO, SCAN_TEXT).read_bytes()
    extraction = pdf(mixed)
    assert " ".join(extraction.text.split()) == PAGE_TWO
    assert extraction.warnings == [f"1 page(s) not OCR'd, first page 2: {NOT_INSTALLED}"]


def test_a_hanging_tesseract_fails_a_file_in_seconds(hanging_tesseract: float) -> None:
    started = time.monotonic()
    with pytest.raises(ExtractionError) as info:
        image(png(SCAN_TEXT))
    assert str(info.value) == "tesseract did not answer `tesseract --version` within 1 s"
    assert time.monotonic() - started < 10  # not OCR_TIMEOUT, nor the file timeout
    started = time.monotonic()
    with pytest.raises(ExtractionError):
        image(png(SCAN_TEXT))
    assert time.monotonic() - started < hanging_tesseract  # probed once per process
    assert check_languages("eng") == "tesseract did not answer `tesseract --list-langs` within 1 s"


INGEST = """
import json, sys
from pathlib import Path
from gptforge.pipeline.config import IngestConfig
from gptforge.pipeline.ingest import ingest
from gptforge.pipeline.ocr import check_languages
print(json.dumps({"check": check_languages("eng")}))
manifest = ingest(IngestConfig(sources=(Path(sys.argv[1]),), out=Path(sys.argv[2]), workers=2))
print(json.dumps({r["path"].rsplit("/", 1)[-1]: [r["status"], r["reason"]]
                  for r in manifest["files"]}))
"""


def test_ingest_without_tesseract_records_images_and_scans_as_errors(tmp_path: Path) -> None:
    """A fresh process, so that the extraction workers start with PATH too."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "notes.txt").write_text(f"{PAGE_TWO}\n")
    (src / "tool.py").write_text("def main() -> None:\n    print('hello')\n")
    (src / "paper.pdf").write_bytes(docgen.text_pdf_bytes([PAGE_TWO]))
    docgen.scanned_pdf(src / "scan.pdf", [SCAN_TEXT])
    (src / "photo.png").write_bytes(png(SCAN_TEXT))
    empty = tmp_path / "bin"
    empty.mkdir()
    tests = Path(__file__).parent
    env = os.environ | {"PATH": str(empty), "PYTHONPATH": f"{tests.parent}{os.pathsep}{tests}"}
    done = subprocess.run(
        [sys.executable, "-c", INGEST, str(src), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    check, records = (json.loads(line) for line in done.stdout.splitlines()[-2:])
    assert check == {"check": NOT_INSTALLED}
    assert records == {
        "notes.txt": ["ok", None],
        "tool.py": ["ok", None],
        "paper.pdf": ["ok", None],
        "scan.pdf": ["error", NOT_INSTALLED],
        "photo.png": ["error", NOT_INSTALLED],
    }


def test_the_real_tesseract_is_found_again_afterwards() -> None:
    forget_tesseract()
    assert (check_languages(LANG), ocr.tesseract_problem()) == (None, None)
