"""`gptforge sample DIR` (`pipeline.sample_corpus.build_sample`): what it writes, what it refuses
to overwrite, and that it needs nothing outside the installed packages."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from trees import write_tree

from gptforge.pipeline import sample_corpus
from gptforge.pipeline.config import ConfigError
from gptforge.pipeline.sample_corpus import MARKER, PACKAGES, build_sample


def test_a_sample_holds_source_a_pdf_a_scan_and_its_marker(tmp_path: Path):
    out = build_sample(tmp_path / "new" / "sample")
    assert (out / MARKER).is_file()
    assert (out / "source" / "pipeline" / "sample_corpus.py").is_file()
    assert (out / "documents" / "gptforge-overview.pdf").read_bytes().startswith(b"%PDF-")
    assert (out / "documents" / "scanned-page.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("cwd_form", [False, True], ids=["path", "dot"])
def test_a_folder_that_is_not_a_sample_is_refused_and_left_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cwd_form: bool
):
    folder = write_tree(tmp_path / "work", {"thesis.tex": "years of work", "data/x.csv": "1"})
    if cwd_form:  # `gptforge sample .`
        monkeypatch.chdir(folder)
    with pytest.raises(ConfigError, match="not empty and not a sample corpus") as caught:
        build_sample(Path(".") if cwd_form else folder)
    assert caught.value.field == "out"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == [
        "data",
        "data/x.csv",
        "thesis.tex",
    ]


def test_a_file_or_a_symlink_is_refused(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("keep")
    (tmp_path / "link").symlink_to(build_sample(tmp_path / "sample"))
    for out in (tmp_path / "notes.txt", tmp_path / "link"):
        with pytest.raises(ConfigError, match="is not a directory"):
            build_sample(out)
    assert (tmp_path / "notes.txt").read_text() == "keep"


def test_an_empty_folder_is_filled_and_a_sample_is_replaced(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (build_sample(empty) / MARKER).is_file()
    (empty / "stale.txt").write_text("from an older sample")
    build_sample(empty)
    assert not (empty / "stale.txt").exists()
    assert (empty / "documents" / "scanned-page.png").is_file()


def test_the_sample_needs_only_the_packages_a_wheel_installs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A wheel holds pipeline/, model/ and flows/ but no README.md or docs/."""
    wheel = tmp_path / "site-packages"
    for package in PACKAGES:
        shutil.copytree(sample_corpus.PACKAGE_ROOT / package, wheel / package)
    monkeypatch.setattr(sample_corpus, "PACKAGE_ROOT", wheel)
    out = build_sample(tmp_path / "sample")
    copied = {p.relative_to(out / "source").parts[0] for p in (out / "source").rglob("*.py")}
    assert copied == set(PACKAGES)
    assert (out / "documents" / "gptforge-overview.pdf").stat().st_size > 1000
