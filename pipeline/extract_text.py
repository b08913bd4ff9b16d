"""Text, source code and Jupyter notebooks -> text."""

from __future__ import annotations

import json
import re

from gptforge.pipeline.records import Extraction, ExtractionError
from gptforge.pipeline.textdecode import decode_text, normalize_text

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
TEXT_MIMES = ("text/plain", "text/markdown", "text/latex")


def extract_plain(data: bytes) -> Extraction:
    warnings: list[str] = []
    text, encoding = decode_text(data, warnings)
    return Extraction(text=text, extractor=f"text:{encoding}", warnings=warnings)


def extract_notebook(data: bytes) -> Extraction:
    """Cell sources in order, plus text outputs; images and HTML blobs are left out."""
    warnings: list[str] = []
    raw, _ = decode_text(data, warnings)
    try:
        notebook = json.loads(raw)
        cells = notebook["cells"] if isinstance(notebook, dict) else None
        if not isinstance(cells, list):
            raise KeyError("cells")
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ExtractionError(f"not a valid Jupyter notebook: {exc}") from exc
    parts = []
    for cell in cells:
        if not isinstance(cell, dict):
            continue
        source = _joined(cell.get("source", ""))
        if source.strip():
            parts.append(source.rstrip())
        if cell.get("cell_type") == "code":
            parts.extend(_outputs_text(cell.get("outputs") or []))
    text = normalize_text("\n\n".join(parts))
    return Extraction(text=text, extractor="notebook", warnings=warnings)


def _outputs_text(outputs: list) -> list[str]:
    texts = []
    for output in outputs:
        if not isinstance(output, dict):
            continue
        kind = output.get("output_type")
        if kind == "stream":
            texts.append(_joined(output.get("text", "")))
        elif kind in ("execute_result", "display_data"):
            data = output.get("data") or {}
            mime = next((m for m in TEXT_MIMES if m in data), None)
            if mime:
                texts.append(_joined(data[mime]))
        elif kind == "error":
            texts.append("\n".join(_joined(line) for line in output.get("traceback") or []))
    return [ANSI_ESCAPE.sub("", t).rstrip() for t in texts if t and t.strip()]


def _joined(value: object) -> str:
    if isinstance(value, list):
        return "".join(str(v) for v in value)
    return str(value)
