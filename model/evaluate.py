"""Validation loss that can be compared across runs: a fixed set of windows, fp32, three units.

The set is the val split's first `eval_tokens` tokens, cut into consecutive, non-overlapping
`block_size` windows (`TokenWindows.fixed`): the same for every run on the same data, whatever
its seed, batch size, precision or process count. Windows are scored a fixed number at a time
(from the model's shape alone) in fp32, so the same weights give the same numbers.

- `val_loss`: mean cross-entropy per target token, in nats.
- `val_ppl`: exp(val_loss).
- `val_bpb`: bits per UTF-8 byte of the evaluated text, the tokenizer-independent measure
  nanochat reports: the loss summed over targets that stand for text (end-of-text stands for no
  byte and is left out), over ln 2, over the bytes those targets stand for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from gptforge.model.checkpoint import load_model
from gptforge.model.data import Dataset, TokenWindows
from gptforge.model.distributed import World, sum_across
from gptforge.model.gpt import GPT
from gptforge.pipeline.tokenizer import token_byte_lengths

# The default evaluation: the whole val split up to this many tokens (a few seconds for the
# `tiny` model on two CPU cores; docs/training.md). `eval_tokens` sets another size.
EVAL_TOKENS_CAP = 32_768
# Windows scored per pass: as many as would give this many logits (which are only ever held
# a chunk at a time, model/head_loss.py); fixed by the model's shape, so results are too.
MAX_LOGITS = 2**24


@dataclass(frozen=True)
class Evaluation:
    val_loss: float
    val_ppl: float
    val_bpb: float
    tokens: int

    def metrics(self) -> dict[str, float]:
        return {"val_loss": self.val_loss, "val_ppl": self.val_ppl, "val_bpb": self.val_bpb}


def eval_token_budget(eval_tokens: int | None) -> int:
    return EVAL_TOKENS_CAP if eval_tokens is None else eval_tokens


@torch.no_grad()
def evaluate(
    model: GPT,
    windows: TokenWindows,
    eval_tokens: int | None,
    device: torch.device,
    world: World | None = None,
) -> Evaluation:
    """Score the fixed windows; with several processes each scores every world.size-th group
    and the sums are added up, so every rank returns the same numbers."""
    was_training = model.training
    model.eval()
    config = model.config
    rows = max(1, MAX_LOGITS // (config.block_size * config.vocab_size))
    count = windows.fixed_count(eval_token_budget(eval_tokens))
    byte_lengths = torch.from_numpy(token_byte_lengths())
    rank, size = (world.rank, world.size) if world is not None else (0, 1)
    # nats over every target, nats over targets that stand for text, targets, bytes
    sums = torch.zeros(4, dtype=torch.float64)
    for first in range(rank * rows, count, rows * size):
        x, y = windows.fixed(first, min(rows, count - first))
        nats = model.token_nats(x.to(device), y.to(device)).flatten().double().cpu()
        nbytes = byte_lengths[y.flatten()]
        sums += torch.stack(
            [nats.sum(), nats[nbytes > 0].sum(), torch.tensor(y.numel()), nbytes.sum()]
        ).double()
    if world is not None and world.distributed:
        sums = sum_across(sums, world, device)
    model.train(was_training)
    nats, text_nats, tokens, nbytes = sums.tolist()
    val_loss = nats / tokens
    return Evaluation(
        val_loss=val_loss,
        val_ppl=math.exp(min(val_loss, 50.0)),
        val_bpb=text_nats / math.log(2) / max(nbytes, 1.0),
        tokens=int(tokens),
    )


def evaluate_checkpoint(
    weights: Path, data_dir: Path, eval_tokens: int | None = None, device: str = "cpu"
) -> Evaluation | None:
    """A saved model scored on a dataset's val split the way training scores its own, so a
    model trained on other data can be compared on this data; None without a val split."""
    model = load_model(weights, device)
    dataset = Dataset.open(data_dir)
    if dataset.tokens["val"] <= model.config.block_size:
        return None
    windows = TokenWindows(dataset, "val", model.config.block_size)
    return evaluate(model, windows, eval_tokens, torch.device(device))
