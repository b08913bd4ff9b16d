"""Run by torchrun in test_train_ddp.py: the same training entry point on every rank.

Arguments: DATA OUT [--resume]."""

from __future__ import annotations

import sys
from pathlib import Path

from train_helpers import micro_config

from gptforge.model.train import train

if __name__ == "__main__":
    data, out = Path(sys.argv[1]), Path(sys.argv[2])
    train(micro_config(data, out, max_steps=5, batch_size=2, resume="--resume" in sys.argv[3:]))
