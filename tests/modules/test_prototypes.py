"""Prototype EMA update (spec 3.7; spec 8 item 15)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from coreg.modules import PrototypeModule


def _sequential(protos: torch.Tensor, z: torch.Tensor, labels: torch.Tensor, g: float) -> torch.Tensor:
    out = protos.clone()
    for i in range(z.shape[0]):
        c = int(labels[i])
        out[c] = g * out[c] + (1 - g) * z[i]
    return F.normalize(out, dim=1)


@pytest.mark.parametrize("momentum", [0.999, 0.9, 0.0])
def test_closed_form_equals_sequential_loop(momentum: float) -> None:
    gen = torch.Generator().manual_seed(0)
    k, d = 4, 5
    module = PrototypeModule(k, d, momentum=momentum)
    state = module.prototypes.clone()
    for _ in range(3):
        z = F.normalize(torch.randn(8, d, generator=gen), dim=1)
        labels = torch.randint(0, k - 1, (8,), generator=gen)  # class k-1 never touched
        module.update(z, labels)
        state = _sequential(state, z, labels, momentum)
        torch.testing.assert_close(module.prototypes, state, rtol=0, atol=1e-6)
    norms = module.prototypes.norm(dim=1)
    torch.testing.assert_close(norms[: k - 1], torch.ones(k - 1))
    assert module.prototypes[k - 1].abs().sum() == 0  # untouched zero row stays zero


def test_update_has_no_grad_and_checks_shapes() -> None:
    module = PrototypeModule(3, 4)
    z = torch.randn(2, 4, requires_grad=True)
    module.update(z, torch.tensor([0, 2]))
    assert not module.prototypes.requires_grad
    with pytest.raises(ValueError):
        module.update(torch.randn(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError):
        module.update(torch.randn(2, 4), torch.tensor([0]))
    with pytest.raises(ValueError):
        PrototypeModule(3, 4, momentum=1.5)
