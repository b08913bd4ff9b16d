"""Training: it learns, resumes exactly, accumulates correctly, and refuses bad settings early."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from train_helpers import MICRO, micro_config, weights

from gptforge.model.checkpoint import load_model, resolve_checkpoint
from gptforge.model.config import GPTConfig
from gptforge.model.gpt import GPT
from gptforge.model.optim import lr_at, make_optimizer
from gptforge.model.train import Callbacks, train
from gptforge.pipeline.config import ConfigError
from gptforge.pipeline.errors import RunError


class Recorder(Callbacks):
    def __init__(self) -> None:
        self.metrics: list[tuple[int, dict[str, float]]] = []
        self.checkpoints: list[int] = []
        self.info: dict = {}

    def on_start(self, info: dict) -> None:
        self.info = info

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.metrics.append((step, metrics))

    def on_checkpoint(self, step: int, path: Path) -> None:
        self.checkpoints.append(step)


def test_loss_decreases_on_a_small_real_corpus(token_data: Path, tmp_path: Path) -> None:
    recorder = Recorder()
    cfg = micro_config(
        token_data,
        tmp_path,
        max_steps=40,
        learning_rate=3e-3,
        warmup_steps=5,
        eval_interval=20,
        log_interval=5,
        checkpoint_interval=20,
    )
    result = train(cfg, recorder)
    first, last = recorder.metrics[0][1], recorder.metrics[-1][1]
    assert last["train_loss"] < first["train_loss"] - 1.0
    # 1.5 nats better than a uniform guess over the vocabulary (10.8). The corpus is this
    # repository's own docs and sources, so it changes with every edit: no tighter bound.
    uniform = math.log(MICRO.vocab_size)
    assert result.val_loss is not None and result.val_loss < uniform - 1.5
    assert {"train_loss", "lr", "grad_norm", "tokens_per_s", "mfu"} <= set(first)
    assert {"val_loss", "val_ppl", "val_bpb"} <= set(recorder.metrics[-1][1])
    assert recorder.checkpoints == [20, 40]
    assert recorder.info["parameters"] == GPT(MICRO).num_params()


def test_two_n_steps_equal_n_steps_resume_n_steps(token_data: Path, tmp_path: Path) -> None:
    straight = train(micro_config(token_data, tmp_path / "straight"))
    half = micro_config(token_data, tmp_path / "resumed", max_steps=3)
    train(half)
    resumed = train(micro_config(token_data, tmp_path / "resumed", resume=True))
    assert resumed.steps == straight.steps == 6
    a, b = weights(straight.checkpoint), weights(resumed.checkpoint)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    state = json.loads((resumed.checkpoint / "trainer_state.json").read_text())
    assert state["step"] == 6 and [h["step"] for h in state["history"]] == [1, 2, 3, 4, 5, 6]


def test_accumulating_4x2_equals_one_batch_of_8(token_data: Path, tmp_path: Path) -> None:
    one = train(micro_config(token_data, tmp_path / "one", max_steps=3, batch_size=8))
    acc = train(micro_config(token_data, tmp_path / "acc", max_steps=3, batch_size=2, grad_accum=4))
    a, b = weights(one.checkpoint), weights(acc.checkpoint)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)


def test_bf16_training_runs_on_cpu(token_data: Path, tmp_path: Path) -> None:
    result = train(micro_config(token_data, tmp_path, max_steps=3, precision="bf16"))
    assert result.precision == "bf16" and result.train_loss == result.train_loss
    model = load_model(tmp_path)
    assert next(model.parameters()).dtype == torch.float32


def test_checkpoints_keep_the_last_k_and_load_for_generation(
    token_data: Path, tmp_path: Path
) -> None:
    train(micro_config(token_data, tmp_path, max_steps=6, checkpoint_interval=1, keep_last=2))
    kept = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert kept == ["step_0000005", "step_0000006"]
    assert resolve_checkpoint(tmp_path).name == "step_0000006"
    assert not list((tmp_path / "checkpoints").glob(".*tmp*"))
    model = load_model(tmp_path)
    assert model.config == MICRO and not model.training
    assert set(p.name for p in resolve_checkpoint(tmp_path).iterdir()) == {
        "model.safetensors",
        "config.json",
        "optimizer.pt",
        "trainer_state.json",
    }


def test_optimizer_decays_matrices_only() -> None:
    model = GPT(MICRO)
    decay, no_decay = make_optimizer(
        model, micro_config(Path("."), Path(".")), torch.device("cpu")
    ).param_groups
    assert decay["weight_decay"] > 0 and no_decay["weight_decay"] == 0
    assert all(p.dim() == 2 for p in decay["params"])
    undecayed = {id(p) for p in no_decay["params"]}
    assert id(model.transformer.wte.weight) in undecayed
    assert id(model.transformer.wpe.weight) in undecayed


def test_learning_rate_warms_up_then_decays_to_the_floor(tmp_path: Path) -> None:
    cfg = micro_config(
        tmp_path, tmp_path, max_steps=100, warmup_steps=10, learning_rate=1e-3, min_lr=1e-4
    )
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(55, cfg) == pytest.approx(5.5e-4)
    assert lr_at(100, cfg) == pytest.approx(1e-4)


def test_fp16_on_cpu_is_refused_before_any_compute(token_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device") as err:
        train(micro_config(token_data, tmp_path, precision="fp16"))
    assert err.value.field == "precision"
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"max_steps": 0}, "max_steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"precision": "fp8"}, "precision"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_invalid_settings_name_the_field(tmp_path: Path, overrides: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        micro_config(tmp_path, tmp_path, **overrides)
    assert err.value.field == field


def test_data_problems_are_found_before_training(token_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no manifest.json") as err:
        train(micro_config(tmp_path / "nothing", tmp_path / "out"))
    assert err.value.field == "data_dir"
    huge = GPTConfig(block_size=1_000_000, n_layer=1, n_head=1, n_embd=8)
    with pytest.raises(ConfigError, match="block_size"):
        train(micro_config(token_data, tmp_path / "out", model=huge))


def test_resume_and_reuse_mistakes_are_refused(token_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nothing to resume") as err:
        train(micro_config(token_data, tmp_path, resume=True))
    assert err.value.field == "resume"
    train(micro_config(token_data, tmp_path, max_steps=1))
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train(micro_config(token_data, tmp_path, max_steps=1))
    wider = GPTConfig(block_size=32, n_layer=2, n_head=2, n_embd=64)
    with pytest.raises(ConfigError, match="n_embd=32"):
        train(micro_config(token_data, tmp_path, model=wider, resume=True))
    other = GPTConfig(block_size=32, n_layer=2, n_head=2, n_embd=32, tokenizer="cl100k")
    with pytest.raises(ConfigError, match="tokenizer") as err:
        train(micro_config(token_data, tmp_path / "x", model=other))
    assert err.value.field == "tokenizer"


def test_a_second_run_in_the_same_out_dir_is_refused_while_the_first_trains(
    token_data: Path, tmp_path: Path
) -> None:
    """A scheduled retrain firing while the last one still trains would interleave its
    checkpoints with the first's and move `latest` under it: it is refused, even with
    `resume` (a checkpoint is there to continue), and the first run goes on to its end."""
    refusals: list[str] = []

    class SecondRun(Callbacks):
        def on_checkpoint(self, step: int, path: Path) -> None:
            with pytest.raises(RunError, match="another training run is writing") as err:
                train(micro_config(token_data, tmp_path, resume=True, max_steps=9))
            refusals.append(str(err.value))

    first = train(micro_config(token_data, tmp_path), SecondRun())
    assert first.steps == 6 and len(refusals) == 2  # at both of the first run's checkpoints
    again = train(micro_config(token_data, tmp_path, resume=True, max_steps=9))  # it ended
    assert again.steps == 9


def test_resume_refuses_settings_that_would_draw_other_batches(
    token_data: Path, tmp_path: Path
) -> None:
    train(micro_config(token_data, tmp_path, max_steps=3))
    for field_name, value in [("seed", 7), ("batch_size", 2), ("grad_accum", 2)]:
        with pytest.raises(ConfigError, match="exact resume needs the same value") as err:
            train(micro_config(token_data, tmp_path, resume=True, **{field_name: value}))
        assert err.value.field == field_name


def test_resume_refuses_a_dataset_that_changed(token_data: Path, tmp_path: Path) -> None:
    train(micro_config(token_data, tmp_path, max_steps=3))
    state_file = resolve_checkpoint(tmp_path) / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps(state | {"dataset_digest": "0" * 64}))
    with pytest.raises(ConfigError, match="use init_from to continue on new data") as err:
        train(micro_config(token_data, tmp_path, resume=True))
    assert err.value.field == "resume"


def test_validation_runs_at_every_eval_interval_even_between_log_steps(
    token_data: Path, tmp_path: Path
) -> None:
    recorder = Recorder()
    train(micro_config(token_data, tmp_path, log_interval=2, eval_interval=3), recorder)
    evaluated = [step for step, metrics in recorder.metrics if "val_loss" in metrics]
    assert evaluated == [3, 6]
    assert [step for step, _ in recorder.metrics] == [2, 3, 4, 6]


def test_training_uses_no_more_threads_than_openmp_allows(monkeypatch: pytest.MonkeyPatch) -> None:
    """With OMP_THREAD_LIMIT below torch's pool, oneDNN's bf16 matmuls return garbage (training
    went NaN in ten steps on an AMX CPU): resolving the precision shrinks the pool to the limit."""
    from gptforge.model.precision import resolve_precision

    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_THREAD_LIMIT", "1")
    try:
        resolve_precision("fp32", torch.device("cpu"))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
