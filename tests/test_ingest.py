"""End-to-end behaviour of `pipeline.ingest`: shards, manifest, dedup, splits, caching, crashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from trees import write_tree

from gptforge.pipeline.cache import ExtractionCache, cache_key
from gptforge.pipeline.config import ConfigError, IngestConfig
from gptforge.pipeline.ingest import (
    BATCH_BYTES,
    BATCH_FILES,
    IngestError,
    batched,
    extract_batch,
    ingest,
    locked,
    plan,
)
from gptforge.pipeline.jobs import ExtractJob, lost_batch
from gptforge.pipeline.manifest import load_manifest
from gptforge.pipeline.shards import HEADER_BYTES, SHARD_MAGIC, read_shard
from gptforge.pipeline.tokenizer import EOT_TOKEN, decode

PROSE = "The quick brown fox jumps over the lazy dog. " * 20


def corpus(root: Path, n: int = 12) -> Path:
    files: dict[str, str | bytes] = {
        f"notes/note_{i:03d}.md": f"# Note {i}\n\n{PROSE} Number {i} of {n}.\n" for i in range(n)
    }
    files |= {
        "src/app.py": "def main():\n    return 'hello'\n",
        "src/Makefile": "all:\n\tpython app.py\n",
        "copy_of_note_0.md": files["notes/note_000.md"],
        "notes/empty.txt": "",
        "blob.py": b"\x00\x01\x02" * 100,
        "archive.txt": b"\x1f\x8b\x08\x00" + b"\x00" * 64,
        "latin1.txt": "Grüße aus München, schöne Straße. Déjà vu.".encode("latin-1"),
    }
    return write_tree(root, files)


def shard_tokens(out: Path, shard: str) -> np.ndarray:
    return np.asarray(read_shard(out / shard))


def test_shards_decode_back_to_every_documents_text(tmp_path: Path) -> None:
    src, out = corpus(tmp_path / "src"), tmp_path / "out"
    cfg = IngestConfig(sources=[src], out=out, val_fraction=0.3, workers=2)
    progress: list[tuple[str, int, int]] = []
    manifest = ingest(cfg, lambda *tick: progress.append(tick))
    cache = ExtractionCache(out / "cache")
    ok = [f for f in manifest["files"] if f["status"] == "ok"]
    assert len(ok) == 12 + 3
    assert progress[0] == ("extract", 0, 15) and progress[-1] == ("extract", 15, 15)
    for record in ok:
        tokens = shard_tokens(out, record["shard"])
        start = record["offset"]
        assert tokens[start] == EOT_TOKEN
        body = tokens[start + 1 : start + 1 + record["tokens"]].tolist()
        entry = cache.get(cache_key(record["sha256"], record["kind"], cfg.extraction_key()))
        assert decode(body) == entry.text
        assert len(entry.text) == record["chars"]
    latin = next(r for r in ok if r["relpath"] == "latin1.txt")
    entry = cache.get(cache_key(latin["sha256"], latin["kind"], cfg.extraction_key()))
    assert entry.text == "Grüße aus München, schöne Straße. Déjà vu."


def test_shards_use_the_llm_c_layout(tmp_path: Path) -> None:
    src, out = corpus(tmp_path / "src"), tmp_path / "out"
    manifest = ingest(IngestConfig(sources=[src], out=out, val_fraction=0.3, workers=1))
    for split, info in manifest["splits"].items():
        for shard in info["shards"]:
            path = out / shard["file"]
            assert path.name.startswith(f"{split}_") and path.suffix == ".bin"
            header = np.fromfile(path, dtype="<i4", count=256)
            assert header[0] == SHARD_MAGIC and header[1] == 1
            assert header[2] == shard["tokens"] and not header[3:].any()
            assert path.stat().st_size == HEADER_BYTES + 2 * shard["tokens"]
            body = np.fromfile(path, dtype="<u2", offset=HEADER_BYTES)
            assert body[0] == EOT_TOKEN
            assert (body == EOT_TOKEN).sum() == sum(
                f["shard"] == shard["file"] for f in manifest["files"]
            )
    assert sum(i["tokens"] for i in manifest["splits"].values()) == sum(
        f["tokens"] + 1 for f in manifest["files"] if f["status"] == "ok"
    )


def test_every_file_is_accounted_for_once_with_a_reason(tmp_path: Path) -> None:
    src, out = corpus(tmp_path / "src"), tmp_path / "out"
    manifest = ingest(IngestConfig(sources=[src], out=out, workers=1))
    on_disk = sorted(str(p) for p in src.rglob("*") if p.is_file())
    assert sorted(f["path"] for f in manifest["files"]) == on_disk
    by_name = {f["relpath"]: f for f in manifest["files"]}
    # Discovery order is by path, so the copy at the top level is the one that is kept.
    assert by_name["notes/note_000.md"]["status"] == "duplicate"
    assert by_name["notes/note_000.md"]["duplicate_of"] == str(src / "copy_of_note_0.md")
    assert by_name["notes/empty.txt"]["status"] == "empty"
    assert by_name["blob.py"]["status"] == "skipped"
    assert "gzip" in by_name["archive.txt"]["reason"]
    assert by_name["src/Makefile"]["kind"] == "code"
    for record in manifest["files"]:
        assert (record["reason"] is None) == (record["status"] == "ok"), record
    assert manifest["counts"]["files"] == len(on_disk)


def test_the_manifest_file_is_the_returned_manifest_with_one_line_per_file(tmp_path: Path):
    src, out = corpus(tmp_path / "src"), tmp_path / "out"
    manifest = ingest(IngestConfig(sources=[src], out=out, workers=1))
    text = (out / "manifest.json").read_text(encoding="utf-8")
    assert json.loads(text) == manifest
    lines = {line.strip().removesuffix(",") for line in text.splitlines()}
    for record in manifest["files"]:
        assert json.dumps(record, ensure_ascii=False) in lines


def test_same_text_in_different_files_is_ingested_once(tmp_path: Path) -> None:
    src = write_tree(
        tmp_path / "src",
        {"a.txt": "same words\r\nhere\n", "b.txt": "same words\nhere\n", "c.md": PROSE},
    )
    manifest = ingest(IngestConfig(sources=[src], out=tmp_path / "out", workers=1))
    status = {f["relpath"]: f["status"] for f in manifest["files"]}
    assert status == {"a.txt": "ok", "b.txt": "duplicate", "c.md": "ok"}


def test_split_depends_only_on_content(tmp_path: Path) -> None:
    src, out = corpus(tmp_path / "src", n=40), tmp_path / "out"
    first = ingest(IngestConfig(sources=[src], out=out, val_fraction=0.3, workers=2))
    splits = {f["doc_sha256"]: f["split"] for f in first["files"] if f["status"] == "ok"}
    assert set(splits.values()) == {"train", "val"}
    write_tree(src, {"zzz/new.md": "A brand new document about something else entirely."})
    second = ingest(IngestConfig(sources=[src], out=out, val_fraction=0.3, workers=2))
    again = {f["doc_sha256"]: f["split"] for f in second["files"] if f["status"] == "ok"}
    assert {k: again[k] for k in splits} == splits


def test_rerun_on_unchanged_folder_extracts_nothing_and_is_byte_identical(tmp_path: Path) -> None:
    src, out = corpus(tmp_path / "src"), tmp_path / "out"
    cfg = IngestConfig(sources=[src], out=out, val_fraction=0.3, workers=2)
    first = ingest(cfg)
    snapshot = {p: p.read_bytes() for p in (out / "shards").iterdir()}
    manifest_bytes = (out / "manifest.json").read_bytes()
    assert plan(cfg).jobs == []
    assert ingest(cfg) == first
    assert {p: p.read_bytes() for p in (out / "shards").iterdir()} == snapshot
    assert (out / "manifest.json").read_bytes() == manifest_bytes


def test_adding_one_file_extracts_only_that_file(tmp_path: Path) -> None:
    src, out = corpus(tmp_path / "src"), tmp_path / "out"
    cfg = IngestConfig(sources=[src], out=out, workers=2)
    ingest(cfg)
    write_tree(src, {"notes/added.md": "Freshly added notes. " * 10})
    jobs = plan(cfg).jobs
    assert [job.path for _, job in jobs] == [str(src / "notes/added.md")]
    manifest = ingest(cfg)
    assert any(f["relpath"] == "notes/added.md" and f["status"] == "ok" for f in manifest["files"])


def test_half_written_cache_entries_and_shards_are_never_used(tmp_path: Path) -> None:
    src, out = corpus(tmp_path / "src"), tmp_path / "out"
    cfg = IngestConfig(sources=[src], out=out, workers=1)
    reference = ingest(cfg)
    pack = next((out / "cache").rglob("*.pack"))  # one worker, one pack: tear its last entry
    pack.write_bytes(pack.read_bytes()[:-7])
    with open(out / "cache" / "v2" / "index.jsonl", "ab") as index:
        index.write(b'{"key": "torn line of a killed run')
    (out / "shards" / ".train_000000.bin.999.tmp").write_bytes(b"partial")
    assert len(plan(cfg).jobs) == 1
    assert ingest(cfg)["dataset_digest"] == reference["dataset_digest"]
    assert not list(out.rglob("*.tmp"))


def _digest_of_clean_run(src: Path, out: Path) -> str:
    return ingest(IngestConfig(sources=[src], out=out, workers=2))["dataset_digest"]


@pytest.mark.slow
def test_a_run_killed_at_any_point_completes_on_rerun(tmp_path: Path) -> None:
    src = corpus(tmp_path / "src", n=400)
    expected = _digest_of_clean_run(src, tmp_path / "reference")
    out = tmp_path / "out"
    script = (
        "import sys; from gptforge.pipeline.config import IngestConfig;"
        "from gptforge.pipeline.ingest import ingest;"
        f"ingest(IngestConfig(sources=[{str(src)!r}], out={str(out)!r}, workers=2))"
    )
    for delay in (0.3, 0.8, 1.2, 1.6, 2.0, 2.5):
        proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        manifest_path = out / "manifest.json"
        if manifest_path.exists():
            manifest = json.loads(manifest_path.read_text())
            for info in manifest["splits"].values():
                for shard in info["shards"]:
                    assert read_shard(out / shard["file"]).shape[0] == shard["tokens"]
    assert _digest_of_clean_run(src, out) == expected
    assert load_manifest(out)["counts"]["by_status"]["ok"] == 400 + 3
    assert not list(out.rglob("*.tmp"))


def test_one_ingest_per_output_directory_at_a_time(tmp_path: Path) -> None:
    src, out = corpus(tmp_path / "src", n=2), tmp_path / "out"
    with locked(out), pytest.raises(IngestError, match="another ingest"):
        ingest(IngestConfig(sources=[src], out=out, workers=1))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("val_fraction", 1.5, "val_fraction: must be >= 0 and < 1"),
        ("workers", 0, "workers: must be >= 1"),
        ("ocr_lang", "en g", "ocr_lang: expected tesseract codes"),
        ("shard_tokens", 10, "shard_tokens: must be >= 1024"),
        ("file_timeout_s", 0, "file_timeout_s: must be > 0"),
    ],
)
def test_invalid_settings_name_the_field(tmp_path: Path, field: str, value, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        IngestConfig(sources=[tmp_path], out=tmp_path / "out", **{field: value})


def test_missing_source_and_missing_ocr_language_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sources: .* does not exist"):
        IngestConfig(sources=[tmp_path / "nope"], out=tmp_path / "out")
    with pytest.raises(ConfigError, match="ocr_lang: tesseract has no model for xyz"):
        ingest(IngestConfig(sources=[tmp_path], out=tmp_path / "out", ocr_lang="xyz"))


def test_manifest_without_shards_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no manifest.json"):
        load_manifest(tmp_path)


# --- batches of small files -------------------------------------------------------------------


def _job(name: str, kind: str = "text", size: int = 1000) -> ExtractJob:
    return ExtractJob(
        path=name,
        kind=kind,
        key=name,
        cache_dir="",
        ocr_lang="eng",
        ocr_dpi=300,
        ocr_timeout_s=1.0,
        max_image_pixels=10**6,
        size=size,
    )


def test_small_text_files_are_batched_and_pdfs_and_images_go_alone():
    jobs = [_job(f"t{i}") for i in range(5 + BATCH_FILES + 3)]
    jobs[5:5] = [_job("big.txt", size=BATCH_BYTES), _job("scan.pdf", "pdf"), _job("a.png", "image")]
    sizes = [len(batch) for batch in batched(jobs)]
    assert sizes == [5, 1, 1, 1, BATCH_FILES, 3]
    assert [job for batch in batched(jobs) for job in batch] == jobs, "order is kept"


class _CrashingPool:
    """Stands in for WorkerPool: any batch holding `crash` loses its process."""

    def __init__(self) -> None:
        self.calls: list[list[list[str]]] = []

    def map(self, batches):
        self.calls.append([[job.path for job in batch] for batch in batches])
        results = []
        for batch in batches:
            if any(job.path == "crash" for job in batch):
                result = lost_batch(batch, "extraction process died (exit code -11)")
            else:
                result = [{"status": "ok", "reason": None, "path": job.path} for job in batch]
            results.append(result)
        return results


def test_a_batch_whose_process_died_is_rerun_file_by_file_and_only_the_culprit_fails():
    jobs = [_job("a"), _job("crash"), _job("b")]
    pool = _CrashingPool()
    results = extract_batch(jobs, pool)
    assert pool.calls == [[["a", "crash", "b"]], [["a"], ["crash"], ["b"]]]
    assert [r.get("path") for r in results] == ["a", None, "b"]
    assert results[1] == {"status": "error", "reason": "extraction process died (exit code -11)"}


def test_names_that_are_not_utf8_or_hold_control_codes_are_recorded_and_round_trip(
    tmp_path: Path,
) -> None:
    """Such names used to kill the ingest while writing manifest.json, and every rerun again."""
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    base = os.fsencode(src)
    bad, odd = base + b"/bad\xff.txt", base + os.fsencode("/a\nb\x1b[31m.txt")
    inner, copy = base + b"/dir\xfe/inner.txt", base + b"/copy.txt"
    os.mkdir(base + b"/dir\xfe")
    for name, text in [
        (bad, b"A name that is not UTF-8."),
        (odd, b"A name with a newline and a terminal colour code."),
        (inner, b"Inside a folder whose name is not UTF-8."),
        (copy, b"A name that is not UTF-8."),
    ]:
        with open(name, "wb") as fh:
            fh.write(text)
    for _ in range(2):  # the rerun (all cached) works as well
        manifest = ingest(IngestConfig(sources=[src], out=out, workers=1))
    raw = (out / "manifest.json").read_bytes()
    assert json.loads(raw.decode("utf-8")) == manifest == load_manifest(out)
    by_name = {os.fsencode(r["path"]): r for r in manifest["files"]}
    assert set(by_name) == {bad, odd, inner, copy}
    assert [by_name[n]["status"] for n in (bad, odd, inner)] == ["ok"] * 3
    assert by_name[bad]["display"] == f"{src}/bad\\xff.txt"
    assert by_name[odd]["display"] == f"{src}/a\\nb\\x1b[31m.txt"
    assert by_name[inner]["relpath"] == os.fsdecode(b"dir\xfe/inner.txt")
    assert by_name[copy]["display"] is None
    # reasons are for people: the name is escaped there; duplicate_of is the path itself
    assert by_name[copy]["reason"] == f"same bytes as {src}/bad\\xff.txt"
    assert os.fsencode(by_name[copy]["duplicate_of"]) == bad
