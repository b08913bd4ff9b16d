"""Validation numbers that can be compared across runs (`model.evaluate`): a fixed set of
consecutive windows, scored in fp32, in nats per token and bits per UTF-8 byte; the best
evaluation's weights are what a run registers; small corpora still get validation data."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from train_helpers import MICRO, micro_config, weights
from trees import write_tree

from gptforge.model import evaluate as evaluation
from gptforge.model.checkpoint import BEST, load_model
from gptforge.model.data import Dataset, TokenWindows
from gptforge.model.evaluate import evaluate, evaluate_checkpoint
from gptforge.model.gpt import GPT
from gptforge.model.train import best_evaluation, patience_ran_out, train
from gptforge.pipeline.config import IngestConfig
from gptforge.pipeline.ingest import ingest
from gptforge.pipeline.shards import read_shard
from gptforge.pipeline.tokenizer import EOT_TOKEN, gpt2_encoding

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(MICRO).eval()


def val_tokens(data: Path) -> torch.Tensor:
    shards = sorted((data / "shards").glob("val_*.bin"))
    return torch.cat([torch.from_numpy(read_shard(s).astype("int64")) for s in shards])


def test_the_evaluation_is_every_consecutive_window_of_the_val_split(
    model: GPT, token_data: Path
) -> None:
    """The first `eval_tokens` of the split, cut into block_size pieces with no overlap and no
    sampling, scored one by one here: the same mean, the same bits per byte."""
    tokens, block = val_tokens(token_data), MICRO.block_size
    count = 40
    nats, text_nats, nbytes = [], 0.0, 0
    encoding = gpt2_encoding()
    for i in range(count):
        x, y = tokens[i * block : (i + 1) * block], tokens[i * block + 1 : (i + 1) * block + 1]
        with torch.no_grad():
            logits, _ = model(x[None])
        losses = F.cross_entropy(logits[0].float(), y, reduction="none").double()
        nats.append(losses)
        text = y != EOT_TOKEN
        text_nats += float(losses[text].sum())
        nbytes += len(encoding.decode_bytes(y[text].tolist()))
    windows = TokenWindows(Dataset.open(token_data), "val", block)
    scored = evaluate(model, windows, count * block, CPU)
    assert scored.tokens == count * block
    # fp32 rounding only: the evaluation computes the same cross-entropy chunk by chunk
    # (model/head_loss.py), another window or token would move these by far more
    assert scored.val_loss == pytest.approx(float(torch.cat(nats).mean()), rel=1e-6)
    assert scored.val_bpb == pytest.approx(text_nats / math.log(2) / nbytes, rel=1e-6)
    assert scored.val_ppl == pytest.approx(math.exp(scored.val_loss))


def test_the_same_weights_score_the_same_however_many_windows_go_through_at_once(
    model: GPT, token_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    windows = TokenWindows(Dataset.open(token_data), "val", MICRO.block_size)
    together = evaluate(model, windows, 1024, CPU)
    monkeypatch.setattr(evaluation, "MAX_LOGITS", 1)  # one window per forward pass
    alone = evaluate(model, windows, 1024, CPU)
    assert alone.val_loss == pytest.approx(together.val_loss, rel=1e-12)
    assert alone.val_bpb == pytest.approx(together.val_bpb, rel=1e-12)


@pytest.mark.parametrize(("seed", "batch_size"), [(1, 4), (2, 2)])
def test_what_a_run_logs_for_its_best_step_is_what_rescoring_its_weights_gives(
    seed: int, batch_size: int, token_data: Path, tmp_path: Path
) -> None:
    """The evaluation takes no seed and no batch size: whatever a run used, anyone scoring
    its registered weights later on the same data gets the numbers it logged."""
    cfg = micro_config(token_data, tmp_path / "run", seed=seed, batch_size=batch_size)
    result = train(cfg)
    again = evaluate_checkpoint(result.weights, token_data, eval_tokens=cfg.eval_tokens)
    assert again is not None
    assert (again.val_loss, again.val_bpb) == (result.best["val_loss"], result.best["val_bpb"])


def test_a_run_registers_its_best_evaluation_not_its_last_step(
    token_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = train(micro_config(token_data, out, max_steps=9, keep_last=5))
    evaluated = {h["step"]: h["val_loss"] for h in result.history if "val_loss" in h}
    assert sorted(evaluated) == [3, 6, 9]
    best_step = min(evaluated, key=evaluated.get)
    assert result.best["step"] == best_step and result.weights == out / BEST
    checkpoint = out / "checkpoints" / f"step_{best_step:07d}"
    saved, best = weights(checkpoint), weights(out / BEST)
    assert all(torch.equal(saved[k], best[k]) for k in saved)
    assert load_model(out / BEST).config == MICRO


def test_early_stopping_counts_evaluations_since_the_best() -> None:
    history = [
        {"step": 10, "val_loss": 3.0},
        {"step": 20, "val_loss": 2.5},
        {"step": 25, "train_loss": 2.0},
        {"step": 30, "val_loss": 2.6},
        {"step": 40, "val_loss": 2.5},
    ]
    best = best_evaluation(history)
    assert best == {"step": 20, "val_loss": 2.5}, "the first of equal losses"
    assert not patience_ran_out(history, best, 3)
    assert patience_ran_out(history, best, 2)
    assert not patience_ran_out(history, best, None)


def test_a_run_stops_early_when_validation_stops_improving(
    token_data: Path, tmp_path: Path
) -> None:
    """A learning rate of 1 wrecks the model after its first evaluation: patience 1 ends the
    run there and keeps the weights of that first evaluation."""
    cfg = micro_config(
        token_data, tmp_path / "run", max_steps=30, learning_rate=1.0, warmup_steps=0,
        early_stop_patience=1, eval_interval=3,
    )  # fmt: skip
    result = train(cfg)
    assert result.stopped_early and result.steps < 30
    assert result.best["step"] == result.steps - 3


@pytest.mark.parametrize(("documents", "val_documents"), [(1, 0), (2, 1), (8, 1)])
def test_every_corpus_of_two_or_more_documents_has_validation_data(
    documents: int, val_documents: int, tmp_path: Path
) -> None:
    """At val_fraction 0.001 the content hash sends none of these to val; the smallest hash
    goes there instead (a single document stays all training data)."""
    texts = {f"doc{i}.txt": f"Document number {i}. " * 200 for i in range(documents)}
    write_tree(tmp_path / "src", texts)
    cfg = IngestConfig(sources=[tmp_path / "src"], out=tmp_path / "data", val_fraction=0.001)
    manifest = ingest(cfg)
    assert manifest["splits"]["val"]["documents"] == val_documents
    assert ingest(cfg)["dataset_digest"] == manifest["dataset_digest"], "a pure function"
