"""Human-readable summaries of an ingest: terminal lines, and Prefect artifacts (prose and
tables) for the UI."""

from __future__ import annotations

from typing import Any

MAX_LISTED_PROBLEMS = 200


def problems(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in manifest["files"] if f["status"] == "error"]


def summary_lines(manifest: dict[str, Any], manifest_path: str) -> list[str]:
    counts = manifest["counts"]
    statuses = ", ".join(f"{n} {s}" for s, n in counts["by_status"].items())
    splits = manifest["splits"]
    lines = [
        f"files: {counts['files']} ({statuses})",
        "tokens: "
        + ", ".join(
            f"{split} {splits[split]['tokens']:,} in {len(splits[split]['shards'])} shard(s)"
            for split in splits
        ),
        f"OCR'd pages: {counts['ocr_pages']}",
        f"dataset digest: {manifest['dataset_digest'][:16]}",
        f"manifest: {manifest_path}",
    ]
    errors = problems(manifest)
    for record in errors[:10]:
        lines.append(f"  error  {record['path']}: {record['reason']}")
    if len(errors) > 10:
        lines.append(f"  ... and {len(errors) - 10} more errors (see the manifest)")
    return lines


def summary_markdown(manifest: dict[str, Any], manifest_path: str) -> str:
    """The ingest in prose; its tables are `split_rows` and `problem_rows`."""
    counts = manifest["counts"]
    statuses = ", ".join(f"{n} {status}" for status, n in counts["by_status"].items())
    kinds = ", ".join(f"{n} {kind}" for kind, n in counts["by_kind"].items())
    return (
        f"# Ingest summary\n\nDataset digest `{manifest['dataset_digest']}`, manifest "
        f"`{manifest_path}`.\n\n{counts['files']} files: {statuses}. By kind: {kinds}. "
        f"OCR'd pages: {counts['ocr_pages']}. Splits are in the `ingest-splits` table"
        + (", files with errors in `ingest-problems`." if problems(manifest) else ".")
    )


def split_rows(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "split": split,
            "documents": info["documents"],
            "tokens": info["tokens"],
            "shards": len(info["shards"]),
        }
        for split, info in manifest["splits"].items()
    ]


def problem_rows(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The first MAX_LISTED_PROBLEMS files with errors (the manifest has them all)."""
    return [
        {"file": record.get("display") or record["path"], "reason": str(record["reason"])}
        for record in problems(manifest)[:MAX_LISTED_PROBLEMS]
    ]
