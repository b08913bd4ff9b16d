"""GPT-2 in plain PyTorch, one module per part; names match Hugging Face's `GPT2LMHeadModel`.

Linear weights are stored (out, in) as in `nn.Linear`; Hugging Face's Conv1D stores them
(in, out), so conversion transposes exactly the four projection weights per block.

`config.recipe == "modern"` swaps in what modded-nanogpt and nanochat measured to train
faster, each a small branch here on `config.uses(change)`, so `config.modern_off` can switch
any of them back to gpt2's way: rotary positions instead of a learned table
(model/rotary.py), RMS-normalised queries and keys (QK-norm), zero-initialised output
projections and an untied head. Three more are settings of their own on either recipe, off by
default because the ablation found they did not pay here (docs/training.md): `config.norm`
(parameter-free RMSNorm), `config.activation` (a ReLU² MLP) and `config.logit_cap` (a soft
cap on the logits).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gptforge.model.config import GPTConfig
from gptforge.model.head_loss import head_loss, token_nats
from gptforge.model.kv_cache import CacheStep, padding_mask, positions
from gptforge.model.rotary import Rotary, rotate

# modern: the head's initial scale (nanochat), near zero so the first predictions are uniform.
HEAD_STD = 0.001

Rope = tuple[Tensor, Tensor]


class RMSNorm(nn.Module):
    """Parameter-free RMS normalisation: no gain, no bias, nothing for the optimizer."""

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, (x.size(-1),))


def norm(config: GPTConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return RMSNorm()
    return nn.LayerNorm(config.n_embd, bias=config.bias)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.layer = layer
        self.qk_norm = config.uses("qk_norm")

    def forward(
        self, x: Tensor, mask: Tensor | None, cache: CacheStep | None, rope: Rope | None
    ) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head).unbind(2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if rope is not None:  # modern: rotary positions
            q, k = rotate(q, *rope), rotate(k, *rope)
        if self.qk_norm:
            q = F.rms_norm(q, (q.size(-1),)).to(v.dtype)
            k = F.rms_norm(k, (k.size(-1),)).to(v.dtype)
        if cache is not None:
            y = cache.attend(self.layer, q, k, v)
        else:
            y = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=mask,
                dropout_p=self.dropout if self.training else 0.0,
                is_causal=mask is None and T > 1,
            )
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(B, T, C)))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        self.relu2 = config.activation == "relu2"

    def forward(self, x: Tensor) -> Tensor:
        h = self.c_fc(x)
        h = F.relu(h).square() if self.relu2 else self.gelu(h)
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.ln_1 = norm(config)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = norm(config)
        self.mlp = MLP(config)

    def forward(
        self, x: Tensor, mask: Tensor | None, cache: CacheStep | None, rope: Rope | None = None
    ) -> Tensor:
        x = x + self.attn(self.ln_1(x), mask, cache, rope)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        # gpt2's modules in GPT-2's order: initialisation draws and optimizer state follow it.
        parts: dict[str, nn.Module] = dict(wte=nn.Embedding(config.vocab_size, config.n_embd))
        if not config.uses("rotary"):
            parts["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        parts |= dict(
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList(Block(config, i) for i in range(config.n_layer)),
            ln_f=norm(config),
        )
        self.transformer = nn.ModuleDict(parts)
        self.rotary = Rotary(config.head_dim, config.block_size) if config.uses("rotary") else None
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if not config.uses("untied_head"):
            self.lm_head.weight = self.transformer.wte.weight
        if config.uses("zero_init"):
            self._init_modern()
            return
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer) so the stream's variance
        # does not grow with depth.
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_modern(self) -> None:
        """nanochat's initialisation: unit-scale embeddings (normalised before the first block),
        inputs at 1/sqrt(width), output projections at zero (each block starts as the
        identity), a near-zero head (uniform first predictions). A head tied to the embedding
        (untied_head off) is drawn as the head; a position table (rotary off) as the token
        embedding; LayerNorms keep gain 1, bias 0."""
        untied = self.lm_head.weight is not self.transformer.wte.weight
        if untied:
            nn.init.normal_(self.transformer.wte.weight, std=1.0)
        nn.init.normal_(self.lm_head.weight, std=HEAD_STD)
        if "wpe" in self.transformer:
            nn.init.normal_(self.transformer.wpe.weight, std=1.0 if untied else HEAD_STD)
        for name, module in self.transformer.h.named_modules():
            if not isinstance(module, nn.Linear):
                continue
            if name.endswith("c_proj"):
                nn.init.zeros_(module.weight)
            else:
                nn.init.normal_(module.weight, std=self.config.n_embd**-0.5)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; by default without the lookup tables that do no matmul work: the
        position embeddings (as in the GPT-2 paper), and an untied input embedding (modern)."""
        n = sum(p.numel() for p in self.parameters())
        if not non_embedding:
            return n
        if "wpe" in self.transformer:
            n -= self.transformer.wpe.weight.numel()
        if self.lm_head.weight is not self.transformer.wte.weight:
            n -= self.transformer.wte.weight.numel()
        return n

    @property
    def cap(self) -> float | None:
        return self.config.logit_cap or None

    def soft_cap(self, logits: Tensor) -> Tensor:
        """With `logit_cap`, logits squashed into (-cap, cap) in fp32; else unchanged."""
        if self.cap is None:
            return logits
        return self.cap * torch.tanh(logits.float() / self.cap)

    @torch.no_grad()
    def token_nats(self, idx: Tensor, targets: Tensor) -> Tensor:
        """Cross-entropy of each target (B, T) in fp32, the logits held a chunk at a time:
        what the evaluation sums (model/evaluate.py)."""
        nats = token_nats(
            self.hidden(idx).flatten(0, 1), self.lm_head.weight, targets.flatten(), self.cap
        )
        return nats.view(targets.shape)

    def forward(
        self,
        idx: Tensor,
        targets: Tensor | None = None,
        *,
        cache: CacheStep | None = None,
        pad: Tensor | None = None,
        last_only: bool = False,
    ) -> tuple[Tensor | None, Tensor | None]:
        """Logits (B, T, V), or given targets only the mean cross-entropy in fp32 (target -1
        is skipped), computed without ever holding all the logits (model/head_loss.py).

        `cache` makes this an incremental step of the cache's slots, each from its own length;
        `pad` (B,) counts each row's left padding when there is no cache. `last_only`
        computes logits for the final position only: what generation needs.
        """
        x = self.hidden(idx, cache=cache, pad=pad)
        if targets is not None:
            loss = head_loss(x.flatten(0, 1), self.lm_head.weight, targets.flatten(), self.cap)
            return None, loss
        if last_only:
            x = x[:, -1:]
        return self.soft_cap(self.lm_head(x)), None

    def hidden(
        self, idx: Tensor, *, cache: CacheStep | None = None, pad: Tensor | None = None
    ) -> Tensor:
        """The final norm's output (B, T, C): everything but the LM head (and soft cap), which
        decoding applies to the last position only, in its own layout (model/batching.py)."""
        T = idx.size(1)
        mask = None  # with a cache, the cache attends (model/kv_cache.py)
        if cache is not None:
            pos, end = cache.positions, cache.end
        else:
            pos = positions(T, pad, idx.device)
            mask = None if pad is None else padding_mask(T, pad, idx.device)
            end = T
        if end > self.config.block_size:
            raise ValueError(
                f"sequence of {end} tokens exceeds block_size {self.config.block_size}"
            )
        rope = None if self.rotary is None else self.rotary(pos)
        x = self.transformer.wte(idx)
        if "wpe" in self.transformer:
            x = x + self.transformer.wpe(pos)
        if self.config.norm == "rmsnorm":
            x = F.rms_norm(x, (self.config.n_embd,))
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x, mask, cache, rope)
        if cache is not None:
            cache.advance()
        return self.transformer.ln_f(x)

    def flops_per_token(self) -> float:
        """Training FLOPs per token (forward + backward), PaLM appendix B: 6N + 12 L T C."""
        c = self.config
        return 6 * self.num_params() + 12 * c.n_layer * c.block_size * c.n_embd
