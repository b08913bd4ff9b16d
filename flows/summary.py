"""Human-readable summaries of an ingest: terminal lines and a Prefect markdown artifact."""

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
    counts, splits = manifest["counts"], manifest["splits"]
    out = [
        "# Ingest summary",
        f"Dataset digest `{manifest['dataset_digest']}`, manifest `{manifest_path}`.",
        "",
        "| split | documents | tokens | shards |",
        "|---|---:|---:|---:|",
    ]
    for split, info in splits.items():
        out.append(
            f"| {split} | {info['documents']} | {info['tokens']:,} | {len(info['shards'])} |"
        )
    out += ["", "| status | files |", "|---|---:|"]
    out += [f"| {status} | {n} |" for status, n in counts["by_status"].items()]
    out += ["", "| kind | files |", "|---|---:|"]
    out += [f"| {kind} | {n} |" for kind, n in counts["by_kind"].items()]
    errors = problems(manifest)
    if errors:
        out += ["", f"## Files with errors ({len(errors)})", "", "| file | reason |", "|---|---|"]
        for record in errors[:MAX_LISTED_PROBLEMS]:
            reason = str(record["reason"]).replace("|", "\\|").replace("\n", " ")
            out.append(f"| `{record['path']}` | {reason} |")
        if len(errors) > MAX_LISTED_PROBLEMS:
            out.append(f"| ... | {len(errors) - MAX_LISTED_PROBLEMS} more in the manifest |")
    return "\n".join(out)
