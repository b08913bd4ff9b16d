"""Text ingestion throughput against raw tiktoken on the same text.

Run:  .venv/bin/python tests/perf/bench_text_ingest.py [--mb 40] [--reps 5] [--quick]

A deterministic tree of English-like prose (.md/.txt/.rst) and Python-like code (.py), with
log-normal file sizes, is written to a temporary directory. Then, alternating the order of
the sides every repetition, it times:

  peer    raw `gpt2_encoding().encode_ordinary` on every file's text, already in memory, one
          process, one thread (no reading, decoding, hashing, caching or shard writing);
  ingest  `pipeline.ingest.ingest(IngestConfig(sources=[tree], out=<fresh dir>,
          workers=<cores>))` with a cold extraction cache, timed around the call only, in two
          settings: in a fresh Python process (the forkserver and its preload of the
          extractors and tokenizer are started inside the timed call, as for one CLI run),
          and in this process after an untimed warm-up ingest (forkserver already running);
  extra   tiktoken's own threaded `encode_ordinary_batch` with <cores> threads, for
          information: what the cores could do on text already in memory.

The tree's files stay in the OS page cache throughout ("cold" means the extraction cache).
It also times a warm re-run (every file a cache hit), breaks one cold in-process ingest into
its steps, and profiles the per-file work of an extraction process. Prints medians and
ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from textgen import GeneratedFile, generate_tree

from gptforge.pipeline.workers import default_workers

SIDES = ("raw", "batch", "fresh", "inproc")
LABELS = {
    "raw": "peer: raw encode_ordinary, 1 process, in memory",
    "batch": "info: tiktoken encode_ordinary_batch, {w} threads",
    "fresh": "ingest, {w} workers, fresh process",
    "inproc": "ingest, {w} workers, warm process",
}


def child_ingest(src: str, out: str, workers: int) -> None:
    """Hidden mode: one cold ingest in this fresh process, timed around the call only."""
    from gptforge.pipeline.config import IngestConfig
    from gptforge.pipeline.ingest import ingest

    cfg = IngestConfig(sources=[Path(src)], out=Path(out), workers=workers)
    start = time.perf_counter()
    manifest = ingest(cfg)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "tokens": _doc_tokens(manifest)}))


def _doc_tokens(manifest: dict) -> int:
    """Tokens of the documents themselves (the shards also hold one EOT per document)."""
    shard_tokens = sum(info["tokens"] for info in manifest["splits"].values())
    return shard_tokens - sum(info["documents"] for info in manifest["splits"].values())


def run_fresh(src: Path, out: Path, workers: int) -> float:
    done = subprocess.run(
        [sys.executable, __file__, "--child-ingest", str(src), str(out), str(workers)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def rates(label: str, mb: float, tokens: int, seconds: float) -> str:
    speed = f"{mb / seconds:7.2f} MB/s {tokens / seconds / 1e6:6.2f} M tok/s"
    return f"  {label:52s} {seconds:7.2f} s {speed}"


def breakdown(tree: Path, out: Path, workers: int) -> list[tuple[str, float]]:
    """One cold in-process ingest, step by step, with the functions `ingest()` calls."""
    from gptforge.pipeline.config import IngestConfig
    from gptforge.pipeline.ingest import Executor, assemble, extract, locked, plan

    cfg = IngestConfig(sources=[tree], out=out, workers=workers)
    steps = []
    start = time.perf_counter()
    with locked(cfg.out):
        work = plan(cfg)
        steps.append(("plan: discover, hash, sniff, cache lookup", time.perf_counter() - start))
        # plan started the forkserver at its first cache miss; its preload ran meanwhile
        t = time.perf_counter()
        extract(work, Executor())
        label = f"extract {len(work.jobs)} files: start {workers} processes, run, close"
        steps.append((label, time.perf_counter() - t))
        t = time.perf_counter()
        assemble(work)
        steps.append(("assemble: read cache, write shards + manifest", time.perf_counter() - t))
    steps.append(("total", time.perf_counter() - start))
    return steps


def profile_job(tree: Path, files: list[GeneratedFile], cache_dir: Path) -> list[tuple[str, float]]:
    """What one extraction process does per file (pipeline/jobs.py:run_job), piece by piece."""
    import hashlib

    from gptforge.pipeline.cache import ExtractionCache
    from gptforge.pipeline.textdecode import decode_text
    from gptforge.pipeline.tokenizer import encode_array

    cache = ExtractionCache(cache_dir)
    totals = dict.fromkeys(
        (
            "read_bytes",
            "sha256 of the file (re-check; plan hashed it already)",
            "decode_text (decode once, normalise)",
            "encode_array (the peer's work, straight to uint16)",
            "text -> UTF-8 bytes (for the hash and the cache)",
            "sha256 of the text (doc_sha256)",
            "ExtractionCache.put",
        ),
        0.0,
    )
    names = list(totals)
    for i, f in enumerate(files):
        marks = [time.perf_counter()]
        data = (tree / f.relpath).read_bytes()
        marks.append(time.perf_counter())
        key = hashlib.sha256(data).hexdigest()
        marks.append(time.perf_counter())
        text, _ = decode_text(data, [])
        marks.append(time.perf_counter())
        tokens = encode_array(text)
        marks.append(time.perf_counter())
        text_utf8 = text.encode("utf-8")
        marks.append(time.perf_counter())
        hashlib.sha256(text_utf8).hexdigest()
        marks.append(time.perf_counter())
        cache.put(f"{key}-{i}", {"chars": len(text)}, text_utf8, tokens)
        marks.append(time.perf_counter())
        for name, a, b in zip(names, marks, marks[1:], strict=False):
            totals[name] += b - a
    return list(totals.items())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=float, default=40.0, help="size of the tree (default 40)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions per side (default 5)")
    parser.add_argument("--workers", type=int, default=default_workers(), help="default: cores")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile-mb", type=float, default=10.0, help="text for the job profile")
    parser.add_argument("--no-details", action="store_true", help="skip breakdown and profile")
    parser.add_argument("--quick", action="store_true", help="4 MB, 1 rep: a smoke test")
    parser.add_argument("--child-ingest", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_ingest:
        src, out, workers = args.child_ingest
        child_ingest(src, out, int(workers))
        return
    if args.quick:
        args.mb, args.reps, args.profile_mb = 4.0, 1, 2.0

    from gptforge.pipeline.config import IngestConfig
    from gptforge.pipeline.ingest import ingest
    from gptforge.pipeline.tokenizer import gpt2_encoding

    w = args.workers
    with tempfile.TemporaryDirectory(prefix="bench-text-") as tmp_name:
        tmp = Path(tmp_name)
        tree = tmp / "tree"
        start = time.perf_counter()
        files = generate_tree(tree, int(args.mb * 1e6), seed=args.seed)
        gen_s = time.perf_counter() - start
        texts = [f.text for f in files]
        mb = sum((tree / f.relpath).stat().st_size for f in files) / 1e6
        code = sum(f.relpath.endswith(".py") for f in files)
        sizes = sorted(len(t) for t in texts)

        enc = gpt2_encoding()
        tokens = sum(len(enc.encode_ordinary(t)) for t in texts[:50])  # warm the encoder
        warm_tree = tmp / "warmup-tree"
        generate_tree(warm_tree, 200_000, seed=args.seed + 99)
        warm_cfg = IngestConfig(sources=[warm_tree], out=tmp / "warmup", workers=w)
        first_s = timed(lambda: ingest(warm_cfg))

        times: dict[str, list[float]] = {side: [] for side in SIDES}
        kept: Path | None = None
        manifest: dict = {}
        for rep in range(args.reps):
            order = SIDES[rep % len(SIDES) :] + SIDES[: rep % len(SIDES)]
            for side in order:
                out = tmp / f"out-{side}-{rep}"
                if side == "raw":
                    start = time.perf_counter()
                    tokens = sum(len(enc.encode_ordinary(t)) for t in texts)
                    times[side].append(time.perf_counter() - start)
                elif side == "batch":
                    start = time.perf_counter()
                    batch = enc.encode_ordinary_batch(texts, num_threads=w)
                    times[side].append(time.perf_counter() - start)
                    del batch
                elif side == "fresh":
                    times[side].append(run_fresh(tree, out, w))
                else:
                    cfg = IngestConfig(sources=[tree], out=out, workers=w)
                    start = time.perf_counter()
                    manifest = ingest(cfg)
                    times[side].append(time.perf_counter() - start)
                if side in ("fresh", "inproc"):
                    if kept is None and side == "inproc":
                        kept = out
                    else:
                        shutil.rmtree(out)
        assert kept is not None
        warm = [
            timed(lambda: ingest(IngestConfig(sources=[tree], out=kept, workers=w)))
            for _ in range(min(args.reps, 3))
        ]
        steps = prof = None
        if not args.no_details:
            steps = breakdown(tree, tmp / "out-breakdown", w)
            subset, size = [], 0
            for f in files:
                if size >= args.profile_mb * 1e6:
                    break
                subset.append(f)
                size += len(f.text)
            prof = profile_job(tree, subset, tmp / "profile-cache")
            prof_mb = size / 1e6

    ingest_tokens = _doc_tokens(manifest)
    med = {side: statistics.median(ts) for side, ts in times.items()}
    print(f"bench_text_ingest: {len(files):,} files ({code:,} .py), {mb:.1f} MB, {tokens:,} tokens")
    print(
        f"  file sizes: median {sizes[len(sizes) // 2] / 1e3:.1f} kB, "
        f"p90 {sizes[int(len(sizes) * 0.9)] / 1e3:.1f} kB, max {sizes[-1] / 1e3:.0f} kB; "
        f"generated in {gen_s:.1f} s (seed {args.seed})"
    )
    print(
        f"  {w} workers, {os.cpu_count()} CPUs, {args.reps} reps, side order rotated each rep; "
        "medians; tree in the OS page cache"
    )
    agree = "agree" if ingest_tokens == tokens else f"DISAGREE (ingest {ingest_tokens:,})"
    print(f"  token counts of ingest (shards minus one EOT per document) and peer: {agree}")
    print()
    for side in SIDES:
        print(rates(LABELS[side].format(w=w), mb, tokens, med[side]))
    print()
    best = {side: min(ts) for side, ts in times.items()}
    print(
        f"  ratio ingest/raw, fresh process: {med['raw'] / med['fresh']:.2f}x (target >= 1.0); "
        f"best-of-{args.reps} ratio {best['raw'] / best['fresh']:.2f}x"
    )
    print(
        f"  ratio ingest/raw, warm process:  {med['raw'] / med['inproc']:.2f}x; "
        f"best-of-{args.reps} ratio {best['raw'] / best['inproc']:.2f}x"
    )
    print(
        f"  ratio ingest (warm process)/threaded batch (info): {med['batch'] / med['inproc']:.2f}x"
    )
    print(
        f"  fresh - warm process (forkserver start + preload, plus noise): "
        f"{med['fresh'] - med['inproc']:+.2f} s median, "
        f"{best['fresh'] - best['inproc']:+.2f} s best"
    )
    print(f"  first ingest of this process (0.2 MB warm-up tree, untimed above): {first_s:.2f} s")
    print(
        f"  warm re-run (every file a cache hit, nothing extracted): "
        f"{statistics.median(warm):.2f} s (all: {', '.join(f'{t:.2f}' for t in warm)})"
    )
    print()
    print("  all repetitions (s):")
    for side in SIDES:
        print(f"    {side:7s} " + "  ".join(f"{t:6.2f}" for t in times[side]))
    if steps and prof:
        print()
        print("  one cold ingest in this process, step by step:")
        for name, seconds in steps:
            print(f"    {name:52s} {seconds:6.2f} s")
        total = sum(s for _, s in prof)
        print()
        print(f"  per-file work of an extraction process (run_job), {prof_mb:.1f} MB, here:")
        for name, seconds in prof:
            print(f"    {name:54s} {seconds:6.2f} s {100 * seconds / total:5.1f}%")
        print(f"    {'total':54s} {total:6.2f} s ({prof_mb / total:.2f} MB/s per process)")


if __name__ == "__main__":
    main()
