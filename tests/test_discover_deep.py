"""A tree deeper than Python's recursion limit (a recursive walk died at ~1,000 levels)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from gptforge.pipeline.config import IngestConfig
from gptforge.pipeline.discover import discover

LEVELS = 1200


def test_a_tree_1200_directories_deep_is_walked(tmp_path: Path):
    assert sys.getrecursionlimit() < LEVELS
    root = tmp_path / "src"
    dirs = [str(root)]
    for _ in range(LEVELS):  # os.makedirs and shutil.rmtree recurse too: one level at a time
        dirs.append(dirs[-1] + "/d")
    for directory in dirs:
        os.mkdir(directory)
    bottom = Path(dirs[-1]) / "bottom.txt"
    bottom.write_text("found")
    (root / "top.txt").write_text("top")
    try:
        found = discover(IngestConfig(sources=[root], out=tmp_path / "out", workers=1))
        assert [f.relpath for f in found.files] == ["d/" * LEVELS + "bottom.txt", "top.txt"]
        assert found.pruned == []
    finally:
        bottom.unlink()
        for directory in reversed(dirs[1:]):
            os.rmdir(directory)
