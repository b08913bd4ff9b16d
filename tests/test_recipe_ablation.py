"""`modern_off`: each change of the modern recipe switched back to gpt2's way on its own (the
ablation of docs/training.md); and the changes the ablation moved out of modern into settings
of their own (`norm`, `activation`, `logit_cap`). Each switch changes what it says and nothing
else breaks: the variant trains, saves and loads its config, decodes with the KV cache as
without; every change off at once is the gpt2 recipe bit for bit; models saved while a moved
change was part of modern load as they trained; bad names are one-line errors."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn
from train_helpers import MICRO, assert_cache_decodes_as_no_cache, micro_config, scrambled, weights

from gptforge.model.checkpoint import load_model, resolve_checkpoint
from gptforge.model.config import MODERN_CHANGES, NANOCHAT_LOGIT_CAP, RECIPE_SETTINGS, GPTConfig
from gptforge.model.convert import hf_config_kwargs
from gptforge.model.gpt import GPT
from gptforge.model.muon import MuonAdamW
from gptforge.model.optim import lr_at, make_optimizer
from gptforge.model.train import train
from gptforge.pipeline.config import ConfigError

MODERN = replace(MICRO, recipe="modern")
# modern as it was before the ablation moved RMSNorm and ReLU² out of it
RMS_RELU2 = replace(MODERN, norm="rmsnorm", activation="relu2")

pytestmark = pytest.mark.usefixtures("one_thread")


def off(*changes: str) -> GPTConfig:
    return replace(MODERN, modern_off=changes)


def optimizer_for(model: GPT) -> torch.optim.Optimizer:
    cfg = micro_config(Path("."), Path("."), model=model.config)
    return make_optimizer(model, cfg, torch.device("cpu"))


def test_names_are_checked_and_only_modern_has_them() -> None:
    with pytest.raises(ConfigError, match="unknown change 'rope'; known: rotary, qk_norm") as e:
        off("rope")
    assert e.value.field == "modern_off" and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"'relu2'.*\(relu2 is the setting activation now\)"):
        off("muon", "relu2")
    with pytest.raises(ConfigError, match="only the modern recipe") as e:
        replace(MICRO, modern_off=("qk_norm",))
    assert e.value.field == "modern_off"
    # one spelling per set of changes: order and repeats do not make another model
    assert off("wsd", "qk_norm", "wsd") == off("qk_norm", "wsd")
    assert off("wsd").modern_off == ("wsd",) == replace(MODERN, modern_off="wsd").modern_off


def test_config_json_keeps_the_switches_and_old_files_load_with_none_off(tmp_path: Path) -> None:
    config = off("muon", "rotary")
    config.save(tmp_path / "config.json")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["modern_off"] == ["rotary", "muon"]
    assert GPTConfig.load(tmp_path / "config.json") == config
    old = {k: v for k, v in MODERN.to_json().items() if k not in ("modern_off", "logit_cap")}
    assert GPTConfig.from_json(old).modern_off == ()


def test_modern_models_saved_when_the_cap_was_a_change_load_with_it() -> None:
    """Before `logit_cap`, every modern model soft-capped at 15 unless `modern_off` named
    `softcap`; such files load computing exactly as they trained. gpt2 files never had it."""
    saved = {k: v for k, v in MODERN.to_json().items() if k != "logit_cap"}
    assert GPTConfig.from_json(saved).logit_cap == NANOCHAT_LOGIT_CAP
    uncapped = GPTConfig.from_json(saved | {"modern_off": ["softcap", "muon"]})
    assert (uncapped.logit_cap, uncapped.modern_off) == (0.0, ("muon",))
    gpt2 = {k: v for k, v in MICRO.to_json().items() if k != "logit_cap"}
    assert GPTConfig.from_json(gpt2).logit_cap == 0.0


def test_models_saved_when_rmsnorm_and_relu2_were_modern_changes_load_with_them() -> None:
    """Before `norm` and `activation`, modern meant parameter-free RMSNorm and ReLU² unless
    `modern_off` named them; gpt2 meant LayerNorm and GELU, as it still does."""
    before = {k: v for k, v in MODERN.to_json().items() if k not in ("norm", "activation")}
    assert GPTConfig.from_json(before) == RMS_RELU2
    one_off = GPTConfig.from_json(before | {"modern_off": ["relu2", "muon"]})
    assert (one_off.norm, one_off.activation, one_off.modern_off) == ("rmsnorm", "gelu", ("muon",))
    both = GPTConfig.from_json(before | {"modern_off": ["rmsnorm", "relu2"]})
    assert both == MODERN
    gpt2 = {k: v for k, v in MICRO.to_json().items() if k not in ("norm", "activation")}
    assert GPTConfig.from_json(gpt2) == MICRO


def test_an_old_modern_checkpoint_loads_its_weights_as_trained(
    token_data: Path, tmp_path: Path
) -> None:
    """A checkpoint trained with RMSNorm and ReLU² whose config.json predates the settings
    (so it says neither) loads into the model it was trained as and predicts the same."""
    result = train(micro_config(token_data, tmp_path, model=RMS_RELU2, max_steps=2))
    path = resolve_checkpoint(tmp_path) / "config.json"
    saved = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in saved.items() if k not in ("norm", "activation")}))
    model = load_model(result.weights)
    assert model.config == RMS_RELU2
    trained = GPT(RMS_RELU2)
    trained.load_state_dict(weights(result.weights))
    idx = torch.randint(0, 500, (1, 8))
    torch.testing.assert_close(model.eval()(idx)[0], trained.eval()(idx)[0], rtol=0, atol=0)


def test_rotary_off_learns_a_position_table() -> None:
    model = GPT(off("rotary"))
    assert model.rotary is None and "transformer.wpe.weight" in model.state_dict()
    assert (
        GPT(MODERN).rotary is not None and "transformer.wpe.weight" not in GPT(MODERN).state_dict()
    )
    # the table is an embedding: not counted in num_params (as GPT-2's), trained as one
    assert model.num_params() == GPT(MODERN).num_params()
    groups = optimizer_for(model).param_groups
    embedding = next(
        g for g in groups if any(p is model.transformer.wte.weight for p in g["params"])
    )
    assert len(embedding["params"]) == 2


def test_norm_is_layernorm_with_gain_and_bias_or_parameter_free_rmsnorm() -> None:
    model = GPT(MODERN)
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 2 * MICRO.n_layer + 1
    for norm in norms:
        assert torch.equal(norm.weight, torch.ones_like(norm.weight))  # not zeroed by the init
        assert torch.equal(norm.bias, torch.zeros_like(norm.bias))
    for config in (replace(MODERN, norm="rmsnorm"), replace(MICRO, norm="rmsnorm")):
        rms = GPT(config)
        assert not any(isinstance(m, nn.LayerNorm) for m in rms.modules())
        assert not any("ln_" in name for name, _ in rms.named_parameters())


def scaled_qk_logits(config: GPTConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits before and after multiplying every query and key by 8."""
    torch.manual_seed(0)
    model = GPT(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(std=0.2)
        idx = torch.randint(0, 500, (2, 16))
        before = model(idx)[0]
        for block in model.transformer.h:
            block.attn.c_attn.weight[: 2 * config.n_embd] *= 8
            block.attn.c_attn.bias[: 2 * config.n_embd] *= 8
        return before, model(idx)[0]


def test_qk_norm_off_lets_the_scale_of_queries_and_keys_matter() -> None:
    torch.testing.assert_close(*scaled_qk_logits(MODERN), rtol=1e-4, atol=1e-4)
    before, after = scaled_qk_logits(off("qk_norm"))
    assert (before - after).abs().max() > 0.1


def test_activation_is_gelu_or_relu2_on_either_recipe() -> None:
    for config, activation in (
        (MODERN, lambda h: nn.functional.gelu(h, approximate="tanh")),
        (replace(MODERN, activation="relu2"), lambda h: torch.relu(h).square()),
        (replace(MICRO, activation="relu2"), lambda h: torch.relu(h).square()),
    ):
        mlp = GPT(config).transformer.h[0].mlp
        with torch.no_grad():
            nn.init.normal_(mlp.c_proj.weight)
            x = torch.randn(3, config.n_embd)
            torch.testing.assert_close(mlp(x), mlp.c_proj(activation(mlp.c_fc(x))))


def test_zero_init_off_is_gpt2s_init_and_learning_rates() -> None:
    torch.manual_seed(0)
    model = GPT(off("zero_init"))
    proj = model.transformer.h[0].attn.c_proj.weight
    expected = 0.02 / math.sqrt(2 * MICRO.n_layer)
    assert proj.std().item() == pytest.approx(expected, rel=0.15)
    assert model.transformer.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.lm_head.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert not GPT(MODERN).transformer.h[0].attn.c_proj.weight.any()
    scales = {g["lr_scale"] for g in optimizer_for(GPT(off("zero_init"))).param_groups}
    assert scales == {20.0, 1.0}  # Muon's 20x stays; the head and embedding train at 1x


def test_untied_head_off_shares_the_embedding() -> None:
    model = GPT(off("untied_head"))
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.lm_head.weight.std().item() == pytest.approx(0.001, rel=0.05)  # the head's init
    assert GPT(MODERN).lm_head.weight is not GPT(MODERN).transformer.wte.weight
    params = [p for g in optimizer_for(model).param_groups for p in g["params"]]
    assert len(params) == len(set(map(id, params))) == len(list(model.parameters()))


def test_a_logit_cap_keeps_logits_inside_it_on_either_recipe() -> None:
    for base in (MODERN, MICRO):
        for cap in (0.0, 15.0):
            model = GPT(replace(base, logit_cap=cap)).eval()
            with torch.no_grad():
                model.lm_head.weight.normal_(std=10.0)
                logits = model(torch.randint(0, 500, (2, 8)))[0]
            assert (logits.abs().max() <= 15.0) == bool(cap)
    with pytest.raises(ConfigError) as e:
        replace(MODERN, logit_cap=-1.0)
    assert e.value.field == "logit_cap"
    with pytest.raises(ValueError, match="no soft cap"):
        hf_config_kwargs(replace(MICRO, logit_cap=15.0))


def test_only_layernorm_and_gelu_convert_to_hugging_face() -> None:
    assert hf_config_kwargs(MICRO)["n_layer"] == MICRO.n_layer
    for changed in ({"norm": "rmsnorm"}, {"activation": "relu2"}):
        with pytest.raises(ValueError, match="GPT2LMHeadModel has LayerNorm and GELU"):
            hf_config_kwargs(replace(MICRO, **changed))


def test_muon_off_is_adamw_with_gpt2s_decay_on_the_block_matrices() -> None:
    model_cfg = off("muon")
    optimizer = optimizer_for(GPT(model_cfg))
    assert isinstance(optimizer, torch.optim.AdamW) and not isinstance(optimizer, MuonAdamW)
    assert all(g.get("kind") != "muon" for g in optimizer.param_groups)
    hidden = optimizer.param_groups[0]
    assert (hidden["weight_decay"], hidden["lr_scale"]) == (0.1, 1.0)
    assert len(hidden["params"]) == 4 * MICRO.n_layer  # c_attn, c_proj, c_fc, c_proj
    assert all(g["weight_decay"] == 0.0 for g in optimizer.param_groups[1:])
    assert isinstance(optimizer_for(GPT(MODERN)), MuonAdamW)


def test_wsd_off_is_the_cosine_schedule(tmp_path: Path) -> None:
    settings = dict(max_steps=100, warmup_steps=10, min_lr=1e-4)
    cosine = micro_config(tmp_path, tmp_path, model=off("wsd"), **settings)
    gpt2 = micro_config(tmp_path, tmp_path, **settings)
    wsd = micro_config(tmp_path, tmp_path, model=MODERN, **settings)
    assert [lr_at(s, cosine) for s in range(101)] == [lr_at(s, gpt2) for s in range(101)]
    assert lr_at(55, cosine) == pytest.approx(5.5e-4) and lr_at(55, wsd) == pytest.approx(1e-3)


VARIANTS = {
    **{f"{change} off": off(change) for change in MODERN_CHANGES},
    "rmsnorm": replace(MODERN, norm="rmsnorm"),
    "relu2": replace(MODERN, activation="relu2"),
    "gpt2 with rmsnorm and relu2": replace(MICRO, norm="rmsnorm", activation="relu2"),
}


@pytest.mark.parametrize("name", VARIANTS)
def test_each_variant_trains_saves_loads_and_decodes_with_the_cache(
    name: str, token_data: Path, tmp_path: Path
) -> None:
    config = VARIANTS[name]
    result = train(micro_config(token_data, tmp_path, model=config, max_steps=4))
    assert all(math.isfinite(h["train_loss"]) for h in result.history)
    assert result.val_loss is not None and math.isfinite(result.val_loss)
    saved = json.loads((resolve_checkpoint(tmp_path) / "config.json").read_text())
    assert {k: saved[k] for k in RECIPE_SETTINGS} == json.loads(
        json.dumps(config.recipe_settings())
    )
    assert load_model(result.weights).config == config
    small = replace(config, vocab_size=512, tokenizer_vocab_size=500)
    assert_cache_decodes_as_no_cache(scrambled(small, list(VARIANTS).index(name)), new_tokens=12)


def test_every_change_off_is_the_gpt2_recipe_bit_for_bit(token_data: Path, tmp_path: Path) -> None:
    """What each switch turns back to is gpt2's way: all of them off is gpt2's model, init and
    optimizer, so training the two from one seed gives the same weights."""
    everything = off(*MODERN_CHANGES)
    torch.manual_seed(0)
    a = GPT(everything).state_dict()
    torch.manual_seed(0)
    b = GPT(MICRO).state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    one = train(micro_config(token_data, tmp_path / "off", model=everything))
    two = train(micro_config(token_data, tmp_path / "gpt2", model=MICRO))
    wa, wb = weights(one.checkpoint), weights(two.checkpoint)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert one.val_loss == two.val_loss


def test_modern_with_rmsnorm_keeps_its_parameters_and_optimizer_groups() -> None:
    """Initial weights are drawn in parameter order and optimizer state is stored by position:
    these are what modern checkpoints trained before `modern_off`, `norm` and `activation`
    rely on (they are RMS_RELU2)."""
    names = [name for name, _ in GPT(RMS_RELU2).named_parameters()]
    assert names[:3] == [
        "transformer.wte.weight",
        "transformer.h.0.attn.c_attn.weight",
        "transformer.h.0.attn.c_attn.bias",
    ]
    assert names[-1] == "lm_head.weight" and len(names) == 1 + 8 * MICRO.n_layer + 1
    groups = optimizer_for(GPT(RMS_RELU2)).param_groups
    width = (MICRO.n_embd / 768) ** -0.5
    assert [(g["kind"], len(g["params"]), g["lr_scale"]) for g in groups] == [
        ("muon", 3 * MICRO.n_layer, 20.0),
        ("muon", MICRO.n_layer, 20.0),
        ("adamw", 1, 4.0 * width),
        ("adamw", 1, 200.0 * width),
        ("adamw", 4 * MICRO.n_layer, 1.0),
    ]


def cli_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from gptforge.flows.cli import main

    status = main(argv)
    return status, capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--modern-off", "muon,rope"], "invalid setting modern_off: unknown change 'rope'"),
        (["--recipe", "gpt2", "--modern-off", "muon"], "invalid setting modern_off: only"),
        (["--logit-cap", "-2"], "invalid setting logit_cap"),
        (["--modern-off", "relu2"], "relu2 is the setting activation now"),
    ],
)
def test_the_cli_refuses_bad_switches_in_one_line(
    options: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, err = cli_error(["train", "--data", str(tmp_path), *options], capsys)
    assert status == 2 and message in err and len(err.splitlines()) == 1


def test_the_cli_option_reaches_the_model(tmp_path: Path) -> None:
    from gptforge.flows.cli import build_parser
    from gptforge.flows.train_settings import train_config

    argv = ["train", "--data", "d", "--modern-off", "muon, qk_norm", "--logit-cap", "15"]
    args = build_parser().parse_args([*argv, "--norm", "rmsnorm", "--activation", "relu2"])
    assert args.modern_off == ("muon", "qk_norm")
    given = {name: getattr(args, name) for name in RECIPE_SETTINGS}
    cfg = train_config(str(tmp_path), str(tmp_path / "out"), **given)
    assert cfg.model.modern_off == ("qk_norm", "muon") and cfg.model.logit_cap == 15.0
    assert (cfg.model.norm, cfg.model.activation) == ("rmsnorm", "relu2")
    default = build_parser().parse_args(["train", "--data", "d"])
    assert (default.modern_off, default.norm, default.activation) == ((), "layernorm", "gelu")
    with pytest.raises(ConfigError, match="setting of its own"):
        train_config(str(tmp_path), None, model_overrides={"modern_off": "muon"})
