"""Plots people would rather look at than read: a run's loss curve, a sweep's diversity.

Drawn on `matplotlib.figure.Figure` directly (the object API): no pyplot state and no global
backend switch, so importing this module changes nothing for the caller's own plots."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from gptforge.model.sampling_config import SamplingConfig


def plot_loss_curve(history: list[dict[str, float]], path: Path) -> Path:
    """Train loss at every log step and validation loss at every evaluation, one PNG."""
    fig = Figure(figsize=(7, 4), dpi=110)
    ax = fig.subplots()
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
    return path


def plot_diversity(
    by_setting: dict[str, dict[str, float]], grid: list[SamplingConfig], path: Path
) -> Path:
    """Diversity against temperature, one line per combination of the other settings."""
    lines: dict[tuple, list[tuple[float, dict[str, float]]]] = {}
    for settings, metrics in zip(grid, by_setting.values(), strict=True):
        key = (settings.top_k, settings.top_p, settings.repetition_penalty)
        lines.setdefault(key, []).append((settings.temperature, metrics))
    fig = Figure(figsize=(10, 4), dpi=110)
    axes = fig.subplots(1, 2)
    for (top_k, top_p, penalty), points in lines.items():
        points.sort(key=lambda p: p[0])
        temps = [t for t, _ in points]
        label = f"top_k={top_k}, top_p={top_p:g}, rep={penalty:g}"
        axes[0].plot(temps, [m["distinct_2"] for _, m in points], "o-", label=label)
        axes[1].plot(temps, [m["repeated_3gram_rate"] for _, m in points], "o-", label=label)
    axes[0].set_ylabel("distinct-2 (higher = more varied)")
    axes[1].set_ylabel("repeated 3-gram rate (higher = more looping)")
    for ax in axes:
        ax.set_xlabel("temperature")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Diversity vs temperature")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
