"""Plots people would rather look at than read: the loss curve of a training run."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_loss_curve(history: list[dict[str, float]], path: Path) -> Path:
    """Train loss at every log step and validation loss at every evaluation, one PNG."""
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot([h["step"] for h in history], [h["train_loss"] for h in history], label="train")
    evals = [h for h in history if "val_loss" in h]
    if evals:
        ax.plot(
            [h["step"] for h in evals], [h["val_loss"] for h in evals], "o-", label="validation"
        )
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.set_title("Training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
