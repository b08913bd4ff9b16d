"""The chunked output layer + cap + cross-entropy gives the plain computation's loss and
gradients, whatever the chunking, with ignored targets, tied weights and bf16 autocast."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import gptforge.model.head_loss as head_loss_module
from gptforge.model.head_loss import head_loss

V, C, N = 1000, 16, 50


def plain(x: torch.Tensor, w: torch.Tensor, t: torch.Tensor, cap: float | None) -> torch.Tensor:
    z = x @ w.t()
    if cap is not None:
        z = cap * torch.tanh(z.float() / cap)
    return F.cross_entropy(z.float(), t, ignore_index=-1)


def loss_and_grads(fn, x, w, t, cap) -> tuple[torch.Tensor, ...]:  # noqa: ANN001
    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
    loss = fn(x, w, t, cap)
    (3.0 * loss).backward()  # a non-unit incoming gradient, as loss / grad_accum gives
    return loss.detach(), x.grad, w.grad


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, C, generator=g)
    w = torch.randn(V, C, generator=g) * 0.5
    t = torch.randint(0, V, (N,), generator=g)
    t[[3, 17]] = -1  # ignored targets
    return x, w, t


@pytest.mark.parametrize("cap", [None, 15.0, 2.0])
@pytest.mark.parametrize("chunk_logits", [1, 7 * V, 2**22])
def test_equals_the_plain_computation(batch, cap, chunk_logits, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(head_loss_module, "CHUNK_LOGITS", chunk_logits)
    ours = loss_and_grads(head_loss, *batch, cap)
    ref = loss_and_grads(plain, *batch, cap)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert ours[1][[3, 17]].abs().max() == 0  # ignored rows get no gradient


def test_without_grad_only_the_loss(batch) -> None:  # noqa: ANN001
    with torch.no_grad():
        loss = head_loss(*batch, 15.0)
    torch.testing.assert_close(loss, plain(*batch, 15.0))


def test_bf16_autocast_matches_plain_autocast(batch) -> None:  # noqa: ANN001
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = loss_and_grads(head_loss, *batch, 15.0)
        ref = loss_and_grads(plain, *batch, 15.0)
    assert ours[0].dtype == torch.float32
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=1e-3)


def test_tied_weight_accumulates_both_uses(batch) -> None:  # noqa: ANN001
    x, w, t = batch
    idx = torch.randint(0, V, (N,), generator=torch.Generator().manual_seed(1))
    grads = []
    for fn in (head_loss, plain):
        table = w.clone().requires_grad_()
        fn(table[idx] + x, table, t, None).backward()  # the table is embedding and head
        grads.append(table.grad)
    torch.testing.assert_close(*grads, rtol=1e-5, atol=1e-7)
