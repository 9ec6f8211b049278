"""Prototype-similarity loss (spec 3.7; spec 8 item 16)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from coreg.losses import prototype_loss


def _setup(m: int = 6, k: int = 3, d: int = 4) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(m, d, generator=g), dim=1)
    protos = F.normalize(torch.randn(k, d, generator=g), dim=1)
    ta = F.softmax(torch.randn(m, k, generator=g) * 2, 1)
    ta[0] = F.one_hot(torch.tensor(1), k).float()  # exact zeros: 0 log 0 = 0
    perm = torch.randperm(m, generator=g)
    return z, protos, ta, ta[perm]


def test_lambda_one_closed_form() -> None:
    z, protos, ta, tb = _setup()
    n = 4
    s = F.softmax(z @ protos.t() / 0.3, 1)
    kl = sum(sum(float(ta[i, j] * (torch.log(ta[i, j]) - torch.log(s[i, j]))) for j in range(3) if ta[i, j] > 0)
             for i in range(n)) / n
    mse = ((s[n:] - ta[n:]) ** 2).mean().item()
    got = prototype_loss(z, protos, ta, tb, lam=1.0, num_labelled=n, lambda_u=0.5)
    assert got.item() == pytest.approx(kl + 0.5 * mse, abs=1e-6)


def test_no_gradient_to_prototypes() -> None:
    z, protos, ta, tb = _setup()
    protos.requires_grad_(True)
    z.requires_grad_(True)
    prototype_loss(z, protos, ta, tb, lam=0.7, num_labelled=3).backward()
    assert protos.grad is None and z.grad is not None


def test_gradient_equals_mixed_target_loss() -> None:
    z, protos, ta, tb = _setup()
    lam, n = 0.7, 4
    z1 = z.clone().requires_grad_(True)
    z2 = z.clone().requires_grad_(True)
    prototype_loss(z1, protos, ta, tb, lam=lam, num_labelled=n).backward()
    mixed = lam * ta + (1 - lam) * tb
    prototype_loss(z2, protos, mixed, mixed, lam=1.0, num_labelled=n).backward()
    torch.testing.assert_close(z1.grad, z2.grad, rtol=0, atol=1e-6)


def test_edges_and_errors() -> None:
    z, protos, ta, tb = _setup()
    only_u = prototype_loss(z, protos, ta, tb, lam=1.0, num_labelled=0)
    assert torch.isfinite(only_u)
    with pytest.raises(ValueError):
        prototype_loss(z, protos, ta, tb, lam=1.0, num_labelled=7)
    with pytest.raises(ValueError):
        prototype_loss(z, protos[:, :3], ta, tb, lam=1.0, num_labelled=2)
    bf = prototype_loss(z.bfloat16(), protos, ta, tb, lam=0.6, num_labelled=2)
    assert bf.dtype == torch.float32


def test_autocast_keeps_similarities_float32() -> None:
    z, protos, ta, tb = _setup()
    want = prototype_loss(z, protos, ta, tb, lam=0.8, num_labelled=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = prototype_loss(z, protos, ta, tb, lam=0.8, num_labelled=3)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(want.item(), abs=1e-6)
