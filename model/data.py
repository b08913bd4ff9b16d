"""Training windows from memory-mapped llm.c shards, a pure function of (seed, step, sample).

The batch at step N never depends on what ran before it, so a resumed run sees exactly
the batches an uninterrupted one would, and `grad_accum x batch_size` only decides how
the same samples are split into micro-batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gptforge.pipeline.config import ConfigError
from gptforge.pipeline.manifest import ManifestError, load_manifest
from gptforge.pipeline.shards import ShardFormatError, read_shard


@dataclass(frozen=True)
class Dataset:
    """The manifest's essentials: what training needs to know before it starts."""

    directory: Path
    digest: str
    tokens: dict[str, int]
    tokenizer: str
    shards: dict[str, list[dict]]  # per split: the manifest's {"file", "tokens", "sha256"}

    @classmethod
    def open(cls, directory: Path) -> Dataset:
        try:
            manifest = load_manifest(Path(directory))
        except ManifestError as exc:
            raise ConfigError("data_dir", str(exc)) from exc
        return cls(
            directory=Path(directory),
            digest=manifest["dataset_digest"],
            tokens={split: info["tokens"] for split, info in manifest["splits"].items()},
            tokenizer=manifest["tokenizer"]["name"],
            shards={split: info["shards"] for split, info in manifest["splits"].items()},
        )


class TokenWindows:
    """Windows of `block_size + 1` tokens over one split's shards, read lazily: random ones
    for training (`batch`), consecutive non-overlapping ones for evaluation (`fixed`)."""

    def __init__(self, dataset: Dataset, split: str, block_size: int):
        listed, root = dataset.shards[split], dataset.directory
        try:  # a missing, truncated or replaced shard: one line naming it
            self.shards = [read_shard(root / s["file"], s["tokens"]) for s in listed]
        except ShardFormatError as exc:
            raise ConfigError("data_dir", str(exc)) from exc
        lengths = np.array([len(s) for s in self.shards], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(lengths)])
        self.block_size = block_size
        self.n_windows = int(self.starts[-1]) - block_size
        if self.n_windows < 1:
            raise ConfigError(
                "block_size",
                f"the {split} split has {int(self.starts[-1])} tokens; a window needs "
                f"block_size + 1 = {block_size + 1}",
            )

    def batch(self, seed: int, step: int, first: int, count: int) -> tuple[Tensor, Tensor]:
        """Samples `first .. first+count-1` of step `step`: inputs and next-token targets."""
        offsets = np.random.default_rng([seed, step]).integers(
            0, self.n_windows, size=first + count
        )[first:]
        windows = np.stack([self._window(int(o)) for o in offsets]).astype(np.int64)
        data = torch.from_numpy(windows)
        return data[:, :-1], data[:, 1:]

    def fixed_count(self, max_tokens: int) -> int:
        """How many windows `fixed` has: the split cut into `block_size` pieces (each with the
        next token as its last target), no more than `max_tokens` tokens' worth, at least one."""
        whole = (int(self.starts[-1]) - 1) // self.block_size
        return max(1, min(whole, max_tokens // self.block_size))

    def fixed(self, first: int, count: int) -> tuple[Tensor, Tensor]:
        """Windows `first .. first+count-1` of the split read in order, without overlap: the
        evaluation set, which depends on the data and block_size only (no seed, no batch)."""
        starts = range(first * self.block_size, (first + count) * self.block_size, self.block_size)
        data = torch.from_numpy(np.stack([self._window(s) for s in starts]).astype(np.int64))
        return data[:, :-1], data[:, 1:]

    def _window(self, start: int) -> np.ndarray:
        end = start + self.block_size + 1
        first = int(np.searchsorted(self.starts, start, side="right")) - 1
        parts = []
        while start < end:
            shard = self.shards[first]
            local = start - int(self.starts[first])
            take = min(end - start, len(shard) - local)
            parts.append(shard[local : local + take])
            start += take
            first += 1
        return parts[0] if len(parts) == 1 else np.concatenate(parts)
