"""Text ingestion throughput vs raw tiktoken, and OCR scaling 1 worker vs all cores.

Run: .venv/bin/python tests/perf/ingest_throughput.py [--mb 40] [--pages 6] [--reps 3]
Prints medians and ratios; asserts nothing. Peer: `encode_ordinary` on the same text, one
process, text already in memory (so the ratio also charges ingest for reading, hashing,
decoding, caching and shard writing).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from pipeline.config import IngestConfig
from pipeline.ingest import ingest
from pipeline.sample_corpus import noisy_scan, render_page
from pipeline.tokenizer import gpt2_encoding

WORDS = [
    "model",
    "data",
    "token",
    "shard",
    "train",
    "value",
    "return",
    "import",
    "class",
    "function",
    "document",
    "page",
    "text",
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "with",
    "as",
    "was",
    "on",
    "be",
    "by",
    "this",
    "are",
    "from",
    "at",
    "or",
    "an",
    "have",
    "not",
    "gradient",
    "batch",
    "layer",
    "attention",
    "cache",
    "parser",
    "result",
    "error",
    "file",
    "path",
    "config",
    "manifest",
]


def make_tree(root: Path, megabytes: float, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts, total, i = [], 0, 0
    while total < megabytes * 1e6:
        n_words = rng.randint(200, 6000)
        if i % 3 == 0:
            lines = [
                f"def f_{i}_{j}(x):\n    return x * {rng.randint(0, 99)}  # {rng.choice(WORDS)}"
                for j in range(n_words // 10)
            ]
            text, name = "\n".join(lines) + "\n", f"code/m{i:05d}.py"
        else:
            text = " ".join(rng.choice(WORDS) for _ in range(n_words)) + ".\n"
            name = f"notes/d{i // 100:03d}/n{i:05d}.md"
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        texts.append(text)
        total += len(text)
        i += 1
    return texts


def bench_text(megabytes: float, reps: int, workers: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tree"
        texts = make_tree(root, megabytes)
        size_mb = sum(len(t) for t in texts) / 1e6
        enc = gpt2_encoding()
        raw, ours, tokens = [], [], 0
        for rep in range(reps):
            start = time.perf_counter()
            tokens = sum(len(enc.encode_ordinary(t)) for t in texts)
            raw.append(time.perf_counter() - start)
            out = Path(tmp) / f"out{rep}"
            start = time.perf_counter()
            ingest(IngestConfig(sources=[root], out=out, workers=workers, val_fraction=0.01))
            ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        ingest(IngestConfig(sources=[root], out=Path(tmp) / "out0", workers=workers))
        warm = time.perf_counter() - start
    t_raw, t_ours = statistics.median(raw), statistics.median(ours)
    print(f"text tree: {len(texts)} files, {size_mb:.1f} MB, {tokens:,} tokens, {reps} reps")
    for name, seconds in (
        ("raw encode_ordinary, 1 process", t_raw),
        (f"ingest, {workers} workers", t_ours),
    ):
        print(f"  {name:32s} {size_mb / seconds:6.2f} MB/s {tokens / seconds:12,.0f} tok/s")
    print(f"  ratio ingest/raw: {t_raw / t_ours:.2f}x (target >= 1.0)")
    print(f"  warm re-run (all cached): {warm:.2f} s")


def bench_ocr(pages: int, reps: int) -> None:
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "scans"
        root.mkdir()
        for i in range(pages):
            lines = [" ".join(random.Random(i * 100 + j).choices(WORDS, k=9)) for j in range(14)]
            noisy_scan(render_page(lines), seed=i).save(root / f"scan{i}.png")
        times: dict[int, list[float]] = {1: [], cores: []}
        for rep in range(reps):
            for workers in (1, cores):
                out = Path(tmp) / f"out-{workers}-{rep}"
                start = time.perf_counter()
                ingest(IngestConfig(sources=[root], out=out, workers=workers))
                times[workers].append(time.perf_counter() - start)
    one, many = statistics.median(times[1]), statistics.median(times[cores])
    print(f"OCR: {pages} scanned pages (A5 @150 dpi), {reps} reps, alternating")
    print(f"  1 worker:  {pages / one:.2f} pages/s")
    print(f"  {cores} workers: {pages / many:.2f} pages/s")
    print(f"  speedup: {one / many:.2f}x (target >= 1.7x on 2 cores)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=float, default=40.0)
    parser.add_argument("--pages", type=int, default=6)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small sizes, one rep")
    args = parser.parse_args()
    if args.quick:
        args.mb, args.pages, args.reps = 4.0, 2, 1
    bench_text(args.mb, args.reps, len(os.sched_getaffinity(0)))
    bench_ocr(args.pages, args.reps)


if __name__ == "__main__":
    main()
