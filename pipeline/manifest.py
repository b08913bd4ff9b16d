"""`manifest.json`: what a dataset directory holds and where every input file went.

It is written last and atomically: its presence means the shards it lists are complete.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from gptforge.pipeline.atomic import write_text_atomic
from gptforge.pipeline.tokenizer import EOT_TOKEN, TOKENIZER_NAME, VOCAB_SIZE

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "gptforge.manifest/1"
SPLITS = ("train", "val")


class ManifestError(ValueError):
    pass


def tokenizer_info() -> dict[str, Any]:
    return {"name": TOKENIZER_NAME, "vocab_size": VOCAB_SIZE, "eot_token": EOT_TOKEN}


def dataset_digest(splits: dict[str, dict[str, Any]]) -> str:
    """A name for exactly these tokens: same shards, same digest, whatever the file paths."""
    digest = hashlib.sha256(json.dumps(tokenizer_info(), sort_keys=True).encode())
    for split in SPLITS:
        for shard in splits[split]["shards"]:
            digest.update(f"{split}:{shard['sha256']}:{shard['tokens']}".encode())
    return digest.hexdigest()


def write_manifest(directory: Path, manifest: dict[str, Any]) -> Path:
    final = Path(directory) / MANIFEST_NAME
    write_text_atomic(final, manifest_json(manifest))
    return final


def manifest_json(manifest: dict[str, Any]) -> str:
    """Indented, except that each file record is one line: as readable, and several times
    faster than `indent=1` throughout, which makes `json` use its pure-Python encoder (~0.2 s
    for a few thousand files).

    A name that is not valid UTF-8 holds lone surrogates (`os.fsdecode`); they are written as
    JSON escapes (`"bad\\udcff.txt"`), which `json` reads back to the same string, so
    `os.fsencode(record["path"])` gives the name's bytes. Everything else stays UTF-8."""
    head = {key: value for key, value in manifest.items() if key != "files"}
    text = json.dumps(head, indent=1, ensure_ascii=False)
    if "files" not in manifest:
        return _escape_surrogates(text + "\n")
    rows = ",\n  ".join(json.dumps(record, ensure_ascii=False) for record in manifest["files"])
    listing = f"[\n  {rows}\n ]" if rows else "[]"
    opening = text[: -len("\n}")] + "," if head else "{"
    return _escape_surrogates(f'{opening}\n "files": {listing}\n}}\n')


def _escape_surrogates(text: str) -> str:
    """Lone surrogates occur only inside JSON strings here, where `\\udcff` is their escape."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def load_manifest(directory: Path) -> dict[str, Any]:
    """Read and sanity-check a dataset's manifest; errors say what is wrong and where."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{directory}: no {MANIFEST_NAME}; run `gptforge ingest` first")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise ManifestError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(manifest, dict):
        raise ManifestError(f"{path}: not a JSON object")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ManifestError(f"{path}: format {manifest.get('format')!r}, need {MANIFEST_FORMAT}")
    if manifest.get("tokenizer") != tokenizer_info():
        raise ManifestError(f"{path}: tokenizer {manifest.get('tokenizer')} is not GPT-2's")
    if problem := _missing_part(manifest):
        raise ManifestError(f"{path}: {problem}; run `gptforge ingest` again")
    return manifest


def _missing_part(manifest: dict[str, Any]) -> str | None:
    """What training relies on and the manifest lacks: the digest, each split's token count and
    its shards' files and token counts."""
    if not isinstance(manifest.get("dataset_digest"), str):
        return "no dataset_digest"
    splits = manifest.get("splits")
    for split in SPLITS:
        info = splits.get(split) if isinstance(splits, dict) else None
        if not isinstance(info, dict) or not isinstance(info.get("tokens"), int):
            return f"no token count for the {split} split"
        shards = info.get("shards")
        if not isinstance(shards, list) or not all(
            isinstance(s, dict)
            and isinstance(s.get("file"), str)
            and isinstance(s.get("tokens"), int)
            for s in shards
        ):
            return f"the {split} split's shard list is malformed"
    return None
