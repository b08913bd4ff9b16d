"""Where discovery may follow a symlink: inside the sources by default, anywhere but /proc, /sys
and /dev with `follow_symlinks="all"`, and never round a loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from discovery_views import pruned, skipped, to_read
from trees import write_tree

from gptforge.pipeline.config import ConfigError, IngestConfig
from gptforge.pipeline.discover import Discovery, discover
from gptforge.pipeline.ingest import ingest
from gptforge.pipeline.shards import read_shard
from gptforge.pipeline.tokenizer import decode


def run(*sources: Path, **settings) -> Discovery:
    out = sources[0].parent / "out"
    return discover(IngestConfig(sources=sources, out=out, workers=1, **settings))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "src", {"doc.md": "a document"})


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    """Stands in for /etc: a folder outside the sources holding a secret."""
    return write_tree(tmp_path / "etc", {"shadow": "root:$6$secret-hash:19000::::::"})


def test_links_out_of_the_sources_are_skipped_with_their_target(root: Path, etc: Path):
    (root / "etc").symlink_to(etc)
    (root / "shadow").symlink_to(etc / "shadow")
    found = run(root)
    assert to_read(found) == ["doc.md"]
    assert pruned(found, root) == {"etc": f"symlink points outside the sources: {etc}"}
    assert skipped(found) == {"shadow": f"symlink points outside the sources: {etc / 'shadow'}"}


def test_follow_symlinks_all_reads_what_links_point_to(root: Path, etc: Path):
    (root / "etc").symlink_to(etc)
    assert to_read(run(root, follow_symlinks="all")) == ["doc.md", "etc/shadow"]


def test_links_inside_the_sources_are_followed(root: Path, tmp_path: Path):
    write_tree(root, {"docs/guide.md": "guide", "z-real/x.md": "x"})
    (root / "guide-link.md").symlink_to(root / "docs" / "guide.md")
    (root / "a-alias").symlink_to("z-real")  # walked first, so the real one is the repeat
    other = write_tree(tmp_path / "other", {"notes.md": "notes"})
    (root / "notes-link.md").symlink_to(other / "notes.md")  # inside the second source
    found = run(root, other)
    assert to_read(found) == [
        "a-alias/x.md",
        "doc.md",
        "docs/guide.md",
        "guide-link.md",
        "notes-link.md",
        "notes.md",
    ]
    assert pruned(found, root) == {"z-real": "already walked (symlink loop or second link)"}


def test_a_link_to_the_filesystem_root_is_skipped(root: Path):
    (root / "everything").symlink_to("/")
    found = run(root)
    assert pruned(found, root) == {"everything": "symlink points outside the sources: /"}


@pytest.mark.parametrize("target", ["/dev/fd", "/proc/self", "/sys/kernel"])
def test_even_follow_symlinks_all_never_enters_proc_sys_or_dev(root: Path, target: str):
    if not Path(target).is_dir():
        pytest.skip(f"{target} is not a directory here")
    (root / "system").symlink_to(target)
    (root / "zero").symlink_to("/dev/zero")  # endless if read
    found = run(root, follow_symlinks="all")
    assert to_read(found) == ["doc.md"]
    reason = pruned(found, root)["system"]
    assert reason.startswith("symlink points into /") and "are never read" in reason
    assert skipped(found)["zero"] == (
        "symlink points into /dev/zero: /proc, /sys and /dev are never read"
    )


def test_link_cycles_end_the_walk_and_are_listed(root: Path):
    write_tree(root, {"x/a.md": "a", "y/b.md": "b"})
    (root / "x" / "to-y").symlink_to("../y")
    (root / "y" / "to-x").symlink_to("../x")
    (root / "y" / "up").symlink_to("..")
    for follow in ("inside", "all"):
        found = run(root, follow_symlinks=follow)
        assert to_read(found) == ["doc.md", "x/a.md", "x/to-y/b.md"]
        assert set(pruned(found, root).values()) == {"already walked (symlink loop or second link)"}
        assert set(pruned(found, root)) == {"x/to-y/to-x", "x/to-y/up", "y"}


def test_follow_symlinks_is_checked(root: Path):
    with pytest.raises(ConfigError, match="follow_symlinks: must be one of inside, all, got 'yes'"):
        run(root, follow_symlinks="yes")


def test_a_linked_secret_never_reaches_the_shards(root: Path, etc: Path, tmp_path: Path):
    (root / "etc").symlink_to(etc)
    (root / "passwords").symlink_to(etc / "shadow")
    out = tmp_path / "out"
    manifest = ingest(IngestConfig(sources=[root], out=out, workers=1))
    assert [(r["relpath"], r["status"]) for r in manifest["files"]] == [
        ("doc.md", "ok"),
        ("passwords", "skipped"),
    ]
    assert [p["reason"] for p in manifest["pruned"]] == [
        f"symlink points outside the sources: {etc}"
    ]
    tokens = np.concatenate([np.asarray(read_shard(p)) for p in sorted(out.glob("shards/*.bin"))])
    assert "secret" not in decode(tokens.tolist())
