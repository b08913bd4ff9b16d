"""The installed package: one import name, `gptforge`, and a CLI that works without the
repository (the sample corpus is built from the installed modules, not from README or docs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["pyproject.toml", "README.md", "LICENSE", "gptforge", "flows", "pipeline", "model"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip install --no-deps --target DIR .` of a copy of the project (the build writes
    `build/` and `*.egg-info` beside the sources, so it does not run in the checkout)."""
    work = tmp_path_factory.mktemp("package")
    project = work / "project"
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, project / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            project.mkdir(exist_ok=True)
            shutil.copy(source, project / name)
    target = work / "target"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(project),
        ],
        check=True,
        capture_output=True,
    )
    return target


def test_an_install_adds_one_import_name(installed: Path) -> None:
    top_level = {p.name for p in installed.iterdir()}
    assert top_level == {"gptforge", "gptforge-0.1.0.dist-info", "bin"}
    assert {p.name for p in (installed / "gptforge").iterdir() if p.is_dir()} >= {
        "flows",
        "pipeline",
        "model",
    }


def test_python_m_gptforge_writes_the_sample_corpus_from_the_install(
    installed: Path, tmp_path: Path
) -> None:
    env = os.environ | {"PYTHONPATH": str(installed), "GPTFORGE_HOME": str(tmp_path / "home")}
    where = subprocess.run(
        [sys.executable, "-c", "import gptforge.flows.cli as m; print(m.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(installed)), "the installed copy, not the checkout"
    done = subprocess.run(
        [sys.executable, "-m", "gptforge", "sample", str(tmp_path / "sample")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    sources = list((tmp_path / "sample" / "source").rglob("*.py"))
    assert len(sources) > 40 and (tmp_path / "sample" / "documents").is_dir()
