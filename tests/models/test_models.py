"""Student networks and the registry (spec 4 and 8 item 21; STYLE section 2)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from coreg.models import (
    LogitsOnly,
    LogitSumEnsemble,
    PreActResNet18,
    TinyCNN,
    create_model,
    list_models,
    register_model,
)
from coreg.models.resnet import PreActBlock


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ----------------------------------------------------------------------------- registry
def test_registry_lists_and_creates() -> None:
    assert {"preact_resnet18", "tiny_cnn"} <= set(list_models())
    assert list_models("tiny*") == ["tiny_cnn"]
    net = create_model("tiny_cnn", num_classes=3, in_channels=1)
    assert isinstance(net, TinyCNN)
    assert net.coreg_spec == {"name": "tiny_cnn", "kwargs": {"num_classes": 3, "in_channels": 1}}
    # The spec rebuilds the same architecture.
    again = create_model(net.coreg_spec["name"], **net.coreg_spec["kwargs"])
    again.load_state_dict(net.state_dict())


def test_registry_errors() -> None:
    with pytest.raises(ValueError, match="tiny_cnn"):
        create_model("no_such_model", num_classes=3)
    with pytest.raises(ValueError, match="already registered"):
        register_model("tiny_cnn")(TinyCNN)
    with pytest.raises(ValueError, match="JSON"):
        create_model("tiny_cnn", num_classes=3, width=torch.tensor(1.0))


@pytest.mark.parametrize("kwargs", [{"setting": "48x48"}, {"width": 0.0}, {"num_classes": 0}])
def test_invalid_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        PreActResNet18(**{"num_classes": 3, **kwargs})


# ----------------------------------------------------------------------------- PreAct ResNet-18
def test_parameter_count_matches_spec() -> None:
    assert abs(_n_params(PreActResNet18(num_classes=10)) - 11.50e6) / 11.50e6 < 0.01
    assert abs(_n_params(PreActResNet18(num_classes=100)) - 11.55e6) / 11.55e6 < 0.01


def test_width_multiplier_shrinks_parameters() -> None:
    full = _n_params(PreActResNet18(num_classes=10))
    half = PreActResNet18(num_classes=10, width=0.5)
    assert half.feature_dim == 256
    assert _n_params(half) < 0.3 * full
    assert PreActResNet18(num_classes=10, width=0.01).feature_dim == 8  # minimum width


@pytest.mark.parametrize(
    "shape,setting",
    [((2, 3, 32, 32), "32x32"), ((2, 1, 28, 28), "32x32"), ((2, 1, 64, 64), "64x64"), ((2, 3, 64, 64), "64x64")],
)
def test_resnet_shapes(shape: tuple[int, ...], setting: str) -> None:
    # Width 0.125 keeps the test fast; the 4x4 last stage is checked with a hook.
    net = PreActResNet18(num_classes=5, in_channels=shape[1], setting=setting, width=0.125, proj_dim=16).eval()
    seen: list[tuple[int, ...]] = []
    net.layer4.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    with torch.no_grad():
        logits, z = net(torch.randn(shape, generator=_gen()))
    assert seen == [(2, 64, 4, 4)]
    assert logits.shape == (2, 5) and z.shape == (2, 16)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(2))


def test_resnet_full_width_32x32() -> None:
    net = PreActResNet18(num_classes=10).eval()
    with torch.no_grad():
        logits, z = net(torch.randn(1, 3, 32, 32, generator=_gen()))
        h = net.features(torch.randn(1, 3, 32, 32, generator=_gen()))
    assert logits.shape == (1, 10) and z.shape == (1, 128) and h.shape == (1, 512) and net.feature_dim == 512
    torch.testing.assert_close(z.norm(dim=1), torch.ones(1))


def test_resnet_small_input_16x16() -> None:
    net = PreActResNet18(num_classes=3, in_channels=1, width=0.125, proj_dim=8).eval()
    with torch.no_grad():
        logits, z = net(torch.randn(2, 1, 16, 16, generator=_gen()))
    assert logits.shape == (2, 3) and z.shape == (2, 8)


def test_identity_shortcut_adds_preactivated_tensor() -> None:
    block = PreActBlock(4, 4, 1).eval()
    nn.init.zeros_(block.conv2.weight)  # residual branch contributes nothing
    with torch.no_grad():
        block.bn1.running_mean.fill_(0.5)
        x = torch.randn(2, 4, 5, 5, generator=_gen())
        expected = torch.relu(block.bn1(x))
        torch.testing.assert_close(block(x), expected)
    assert isinstance(block.shortcut, nn.Identity)
    assert isinstance(PreActBlock(4, 8, 2).shortcut, nn.Conv2d)


def test_channels_last_bf16_autocast() -> None:
    net = PreActResNet18(num_classes=4, width=0.125, proj_dim=8).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 16, 16, generator=_gen()).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, z = net(x)
    assert logits.shape == (2, 4) and torch.isfinite(logits.float()).all()
    assert z.dtype == torch.float32  # projection normalised in float32
    torch.testing.assert_close(z.norm(dim=1), torch.ones(2))


# ----------------------------------------------------------------------------- TinyCNN
@pytest.mark.parametrize("shape", [(3, 3, 8, 8), (3, 1, 28, 28), (3, 3, 32, 32)])
def test_tiny_cnn(shape: tuple[int, ...]) -> None:
    net = TinyCNN(num_classes=3, in_channels=shape[1], proj_dim=4)
    assert _n_params(TinyCNN(num_classes=10)) < 10_000
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    logits, z = net(torch.randn(shape, generator=_gen()))
    assert logits.shape == (3, 3) and z.shape == (3, 4)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3))
    (logits.sum() + z.sum()).backward()
    assert all(p.grad is not None for p in net.parameters())


# ----------------------------------------------------------------------------- ensemble
def test_logit_sum_ensemble_sums_raw_logits() -> None:
    class Fixed(nn.Module):
        def __init__(self, logits: list[float]) -> None:
            super().__init__()
            self.register_buffer("out", torch.tensor([logits]))

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.out.expand(x.shape[0], -1), torch.zeros(x.shape[0], 2)

    # Probability sum prefers class 0, logit sum prefers class 1 (spec 8 item 24).
    a, b = Fixed([10.0, 0.0, 0.0]), Fixed([-5.0, 6.0, 0.0])
    x = torch.zeros(2, 1)
    ens = LogitSumEnsemble([a, b])
    out = ens(x)
    torch.testing.assert_close(out, torch.tensor([[5.0, 6.0, 0.0]] * 2))
    prob_sum = a(x)[0].softmax(1) + b(x)[0].softmax(1)
    assert prob_sum.argmax(1).tolist() == [0, 0] and out.argmax(1).tolist() == [1, 1]
    torch.testing.assert_close(LogitsOnly(a)(x), a(x)[0])
    with pytest.raises(ValueError):
        LogitSumEnsemble([])


def test_ensemble_is_exportable() -> None:
    nets = [TinyCNN(num_classes=3, proj_dim=4).eval() for _ in range(2)]
    ens = LogitSumEnsemble(nets).eval()
    x = torch.randn(2, 3, 8, 8, generator=_gen())
    batch = torch.export.Dim("batch", min=1)
    prog = torch.export.export(ens, (x,), dynamic_shapes={"x": {0: batch}})
    x5 = torch.randn(5, 3, 8, 8, generator=_gen())
    torch.testing.assert_close(prog.module()(x5), ens(x5))
