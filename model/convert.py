"""One-to-one conversion between our state dict and Hugging Face's `GPT2LMHeadModel`.

Hugging Face's Conv1D layers store weights as (in, out); ours are `nn.Linear` (out, in).
Everything else has the same name and shape.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from gptforge.model.config import GPTConfig

_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def to_hf(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Our state dict in `GPT2LMHeadModel`'s layout (only transposed tensors are copied)."""
    return {k: v.t() if k.endswith(_TRANSPOSED) else v for k, v in state_dict.items()}


def from_hf(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """A `GPT2LMHeadModel` state dict in our layout; HF's attention-bias buffers are dropped."""
    return {
        k: (v.t() if k.endswith(_TRANSPOSED) else v)
        for k, v in state_dict.items()
        if not k.endswith((".attn.bias", ".attn.masked_bias"))
    }


def hf_config_kwargs(config: GPTConfig) -> dict[str, Any]:
    """`GPT2Config` arguments for the same dimensions (dropout off is the caller's choice)."""
    if config.recipe != "gpt2":
        raise ValueError(
            f"only the gpt2 recipe is a GPT2LMHeadModel; this model is {config.recipe}"
        )
    if config.logit_cap:
        raise ValueError(
            f"GPT2LMHeadModel has no soft cap; this model has logit_cap {config.logit_cap:g}"
        )
    if (config.norm, config.activation) != ("layernorm", "gelu"):
        raise ValueError(
            "GPT2LMHeadModel has LayerNorm and GELU; this model has "
            f"{config.norm} and {config.activation}"
        )
    return dict(
        vocab_size=config.vocab_size,
        n_positions=config.block_size,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        activation_function="gelu_new",
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=True,
    )
