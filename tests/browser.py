"""Headless Chromium for tests: screenshots and rendered DOM of the Prefect and MLflow UIs.

Both UIs are single-page apps: without a virtual time budget Chromium captures the empty shell
before their scripts and API calls finish. Flags from ../shared/ENVIRONMENT.md; no downloads.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
]
DESKTOP = (1400, 900)


def _chromium(url: str, extra: list[str], size: tuple[int, int], budget_ms: int) -> str:
    """Run one headless capture; on a hang, kill Chromium's whole process group."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        command = [
            str(CHROMIUM),
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            f"--window-size={size[0]},{size[1]}",
            *extra,
            url,
        ]
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    if proc.returncode != 0:
        raise RuntimeError(f"chromium failed on {url}:\n{err[-2000:]}")
    return out


def screenshot(
    url: str, path: Path, size: tuple[int, int] = DESKTOP, budget_ms: int = 10000
) -> Path:
    """Save a PNG of `url` as rendered after `budget_ms` of virtual time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _chromium(url, [f"--screenshot={path}"], size, budget_ms)
    if not path.is_file() or path.stat().st_size == 0:
        raise RuntimeError(f"chromium wrote no screenshot of {url}")
    return path


def dump_dom(url: str, size: tuple[int, int] = DESKTOP, budget_ms: int = 10000) -> str:
    """The DOM as HTML after the page's scripts ran; a desktop-sized window shows the sidebars."""
    return _chromium(url, ["--dump-dom"], size, budget_ms)


def visible_text(html: str) -> str:
    """The DOM's text with scripts, styles, icons and tags removed, whitespace collapsed."""
    html = re.sub(r"<(script|style|svg)\b.*?</\1>", " ", html, flags=re.S | re.I)
    text = re.sub(r"<[^>]+>", " ", html)
    return re.sub(r"\s+", " ", text).strip()
