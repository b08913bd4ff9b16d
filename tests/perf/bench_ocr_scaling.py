"""OCR throughput with one extraction process against one per core.

Run:  .venv/bin/python tests/perf/bench_ocr_scaling.py [--pages 8] [--reps 4] [--quick]

Writes N scanned-looking page images (pipeline.sample_corpus.render_page of deterministic
English-like prose, then noisy_scan; A5 at 150 dpi, PNG) to a temporary directory, then
ingests them with workers=1 and workers=os.cpu_count(), fresh output directories every time
(no extraction cache), alternating which goes first. The peer is the same ingest with one
worker; the ratio is the speedup from the extra processes (each runs one single-threaded
tesseract, OMP_THREAD_LIMIT=1). One untimed ingest of one page first starts the forkserver,
so neither side pays for it. Also checks that OCR read the pages (share of the source's words
found in the extracted text). Prints medians and the speedup; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import tempfile
import textwrap
import time
from pathlib import Path

from textgen import TextGen

from gptforge.pipeline.cache import ExtractionCache, cache_key
from gptforge.pipeline.config import IngestConfig
from gptforge.pipeline.ingest import ingest
from gptforge.pipeline.sample_corpus import noisy_scan, render_page

WORD = re.compile(r"[a-z]+")
LINES_PER_PAGE = 34


def make_pages(root: Path, pages: int, seed: int) -> list[str]:
    """Write `pages` PNG scans; returns the text typeset on each."""
    gen = TextGen(seed)
    root.mkdir(parents=True)
    texts = []
    for i in range(pages):
        paragraphs: list[str] = []
        while True:  # fill the page (render_page wraps at 62 chars, ~34 lines fit)
            candidate = [*paragraphs, gen.paragraph()]
            if sum(len(textwrap.wrap(p, 62)) + 1 for p in candidate) > LINES_PER_PAGE:
                break
            paragraphs = candidate
        noisy_scan(render_page(paragraphs), seed=seed + i).save(root / f"scan_{i:03d}.png")
        texts.append(" ".join(paragraphs))
    return texts


def recall(out: Path, cfg: IngestConfig, manifest: dict, sources: list[str]) -> float:
    """Share of the typeset words (on the page) that OCR returned, over all pages."""
    cache = ExtractionCache(out / "cache")
    found, wanted = 0, 0
    for record in manifest["files"]:
        entry = cache.get(cache_key(record["sha256"], record["kind"], cfg.extraction_key()))
        ocr_words = set(WORD.findall(entry.text.lower())) if entry else set()
        index = int(Path(record["path"]).stem.split("_")[1])
        page_words = set(WORD.findall(sources[index].lower()))
        found += len(page_words & ocr_words)
        wanted += len(page_words)
    return found / max(wanted, 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pages", type=int, default=8, help="scanned pages (default 8)")
    parser.add_argument("--reps", type=int, default=4, help="repetitions per side (default 4)")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="many side (default: CPUs)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2 pages, 1 rep: a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.pages, args.reps = 2, 1
    many = args.workers

    with tempfile.TemporaryDirectory(prefix="bench-ocr-") as tmp_name:
        tmp = Path(tmp_name)
        start = time.perf_counter()
        sources = make_pages(tmp / "scans", args.pages, args.seed)
        render_s = time.perf_counter() - start
        png_mb = sum(p.stat().st_size for p in (tmp / "scans").iterdir()) / 1e6

        warm = tmp / "warm"
        warm.mkdir()
        shutil.copy(tmp / "scans" / "scan_000.png", warm)
        start = time.perf_counter()
        ingest(IngestConfig(sources=[warm], out=tmp / "out-warm", workers=many))
        warm_s = time.perf_counter() - start

        times: dict[int, list[float]] = {1: [], many: []}
        checks = []
        for rep in range(args.reps):
            for workers in (1, many) if rep % 2 == 0 else (many, 1):
                out = tmp / f"out-{workers}-{rep}"
                cfg = IngestConfig(sources=[tmp / "scans"], out=out, workers=workers)
                start = time.perf_counter()
                manifest = ingest(cfg)
                times[workers].append(time.perf_counter() - start)
                ok = manifest["counts"]["by_status"].get("ok", 0)
                checks.append((ok, manifest["counts"]["ocr_pages"]))
                if rep == 0 and workers == many:
                    words = recall(out, cfg, manifest, sources)
                    chars = sum(f["chars"] for f in manifest["files"])
                shutil.rmtree(out)

    one, par = statistics.median(times[1]), statistics.median(times[many])
    pages = args.pages
    print(f"bench_ocr_scaling: {pages} scanned pages (A5 @150 dpi + skew), {png_mb:.1f} MB of PNG")
    print(
        f"  {os.cpu_count()} CPUs, {len(os.sched_getaffinity(0))} usable; {args.reps} reps, "
        "order alternated; fresh out dir (no cache) each time; medians"
    )
    print(
        f"  rendered in {render_s:.1f} s; untimed warm-up ingest of 1 page (starts the "
        f"forkserver): {warm_s:.2f} s"
    )
    bad = [c for c in checks if c != (pages, pages)]
    print(
        f"  every run OCR'd all {pages} pages: {'yes' if not bad else f'NO {bad}'}; "
        f"{chars:,} chars, {100 * words:.0f}% of the typeset words found (first {many}-worker run)"
    )
    print()
    for label, seconds in (("peer: 1 worker", one), (f"{many} workers", par)):
        print(
            f"  {label:16s} {seconds:6.2f} s {pages / seconds:6.2f} pages/s "
            f"{seconds / pages:5.2f} s/page (wall time per page)"
        )
    print(f"  speedup {many} workers / 1 worker: {one / par:.2f}x (target >= 1.7x on 2 cores)")
    print()
    print("  all repetitions (s):")
    for workers, ts in times.items():
        print(f"    workers={workers:<3d} " + "  ".join(f"{t:6.2f}" for t in ts))


if __name__ == "__main__":
    main()
