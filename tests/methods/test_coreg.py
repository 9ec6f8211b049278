"""Co-Reg method: spec section 8 properties at the method level (items 9, 12, 19, 20, 22, 24)."""

from __future__ import annotations

import torch
from torch import nn

from coreg.engine import TrainConfig
from coreg.engine.seed import epoch_generators
from coreg.engine.trainer import build_method
from coreg.methods.base import EpochContext, StepContext
from coreg.models import LogitSumEnsemble

W = 1


def _setup(data, *overrides: str):
    cfg = TrainConfig.for_method("coreg").with_overrides(
        ["model.name=tiny_cnn", "epochs=20", f"warmup={W}", "method.batch_size=8", "method.moco_queue=20",
         "method.start_cont=1", "channels_last=false", "amp=off", "val_fraction=0", *overrides])
    method = build_method(cfg, data, device=torch.device("cpu"))
    return cfg, method


def _epoch(method, data, epoch: int):
    gen, rng = epoch_generators(0, epoch)
    ctx = EpochContext(epoch=epoch, num_epochs=20, warmup=W, data=data, generator=gen, rng=rng, seed=0,
                       device=torch.device("cpu"))
    method.train()
    return ctx, method.on_epoch_start(ctx)


def _step(method, data, ctx, phase, batch, idx=0, n=3):
    sctx = StepContext(epoch=ctx.epoch, warmup=W, phase=phase, batch_index=idx, num_batches=n,
                       generator=ctx.generator, rng=ctx.rng, data=data)
    return method.training_step(batch, sctx)


def _bn(net: nn.Module) -> nn.BatchNorm2d:
    return next(m for m in net.modules() if isinstance(m, nn.BatchNorm2d))


def test_co_divide_wiring_and_key_reset(tiny_data) -> None:
    _, method = _setup(tiny_data)
    ctx, plan = _epoch(method, tiny_data, W)  # first co-training epoch
    # both divisions exist before any training of this epoch
    assert set(method._divisions) == {"net1", "net2"}
    for p1, k1 in zip(method.net1.parameters(), method.key1.parameters()):
        assert torch.equal(p1, k1)
    batch = next(iter(plan.phases["net1"]))
    div2 = method._divisions["net2"]
    # net 1 is trained on net 2's division: its labelled batch comes from P2, with w2 and q2
    assert div2.labelled[batch["x_idx"]].all()
    assert torch.equal(batch["w"], div2.w[batch["x_idx"]])
    assert torch.equal(batch["q"], div2.q[batch["x_idx"]])
    # q is the aligned distribution restricted to candidates, rows summing to 1
    y = tiny_data.candidates
    assert torch.all(div2.q[y == 0] == 0) and torch.allclose(div2.q.sum(1), torch.ones(len(y)))


def test_bn_call_order_six_train_calls_and_frozen_peer(tiny_data) -> None:
    _, method = _setup(tiny_data, "method.p_threshold=0.0")
    ctx, plan = _epoch(method, tiny_data, W)
    batch = next(iter(plan.phases["net1"]))
    bn = _bn(method.net1)
    peer_state = {k: v.clone() for k, v in method.net2.state_dict().items()}
    calls = []
    hook = bn.register_forward_hook(lambda m, i, o: calls.append(m.training))
    before = int(bn.num_batches_tracked)
    out = _step(method, tiny_data, ctx, "net1", batch)
    out.losses["loss"].backward()
    hook.remove()
    n_u = len(batch["u_idx"])
    expected = 6 if n_u else 4  # with an empty U the two unlabelled calls are absent
    assert int(bn.num_batches_tracked) - before == expected
    assert all(calls) and len(calls) == expected
    for k, v in method.net2.state_dict().items():
        assert torch.equal(v, peer_state[k]), f"peer changed: {k}"
    assert all(p.grad is None for p in method.key1.parameters())


def test_bn_order_with_unlabelled(tiny_data) -> None:
    _, method = _setup(tiny_data, "method.p_threshold=0.5")
    ctx, plan = _epoch(method, tiny_data, W)
    batches = [b for b in plan.phases["net1"] if len(b["u_idx"])]
    if not batches:  # division put everything in P; force a U batch
        b = next(iter(method._iter_cotrain(([torch.arange(0, 8)], [torch.arange(8, 16)]), method._divisions["net2"])))
        batches = [b]
    bn = _bn(method.net1)
    order = []
    hook = method.net1.register_forward_hook(lambda m, i, o: order.append(i[0].shape[0]))
    before = int(bn.num_batches_tracked)
    _step(method, tiny_data, ctx, "net1", batches[0])
    hook.remove()
    bx, bu = len(batches[0]["x_idx"]), len(batches[0]["u_idx"])
    assert int(bn.num_batches_tracked) - before == 6
    # u_w1, u_w2, x_w1, x_w2, mixed (2Bx + 2Bu), query (Bx + Bu)
    assert order == [bu, bu, bx, bx, 2 * bx + 2 * bu, bx + bu]


def test_gating_and_state_updates(tiny_data) -> None:
    _, method = _setup(tiny_data, "method.start_cont=2")
    for epoch, gated in ((W, False), (W + 2, False), (W + 3, True)):
        ctx, plan = _epoch(method, tiny_data, epoch)
        batch = next(iter(plan.phases["net1"]))
        ptr = int(method.queue1.ptr)
        protos = method.prototypes.prototypes.clone()
        out = _step(method, tiny_data, ctx, "net1", batch)
        assert ("loss_proto" in out.report) == gated and ("loss_cont" in out.report) == gated
        assert int(method.queue1.ptr) != ptr or method.queue1.size == len(batch["x_idx"]) + len(batch["u_idx"])
        assert not torch.equal(protos, method.prototypes.prototypes)
        assert torch.isfinite(out.losses["loss"])


def test_warmup_step_writes_memory(tiny_data) -> None:
    _, method = _setup(tiny_data)
    ctx, plan = _epoch(method, tiny_data, 0)
    batch = next(iter(plan.phases["net1"]))
    out = _step(method, tiny_data, ctx, "net1", batch)
    assert torch.isfinite(out.losses["loss"])
    mem = method.memory1[batch["idx"]]
    assert torch.allclose(mem.sum(1), torch.ones(len(batch["idx"])))
    assert not torch.allclose(mem, torch.full_like(mem, 1 / 3))


def test_ablations_run(tiny_data) -> None:
    for extra in (["method.co_pseudo_label=false"], ["method.use_unlabelled=false"], ["method.cont_mode=supcon"],
                  ["method.proto_weight=0"], ["method.soft_labels=true"]):
        _, method = _setup(tiny_data, *extra)
        ctx, plan = _epoch(method, tiny_data, W + 5)
        batch = next(iter(plan.phases["net2"]))
        if extra[0] == "method.use_unlabelled=false":
            assert len(batch["u_idx"]) == 0
        if extra[0] == "method.co_pseudo_label=false":
            assert torch.equal(batch["w"], method._divisions["net2"].w[batch["x_idx"]])  # own division
        out = _step(method, tiny_data, ctx, "net2", batch)
        assert torch.isfinite(out.losses["loss"])


def test_seed_determinism(tiny_data) -> None:
    losses = []
    for _ in range(2):
        _, method = _setup(tiny_data)
        ctx, plan = _epoch(method, tiny_data, W + 3)
        losses.append(_step(method, tiny_data, ctx, "net1", next(iter(plan.phases["net1"]))).losses["loss"])
    assert torch.equal(losses[0], losses[1])


def test_logit_sum_ensemble_differs_from_probability_sum() -> None:
    class Fixed(nn.Module):
        def __init__(self, logits: list[float]) -> None:
            super().__init__()
            self.register_buffer("logits", torch.tensor([logits]))

        def forward(self, x: torch.Tensor):
            return self.logits.expand(len(x), -1), torch.zeros(len(x), 2)

    # net a is moderately sure of class 0, net b strongly prefers 1 over 0 in logits: the
    # probability sum picks 0, the raw-logit sum (spec 3.10) picks 1.
    a, b = Fixed([2.0, 0.0, 0.0]), Fixed([-3.0, 0.5, 0.0])
    x = torch.zeros(1, 1)
    prob_sum = torch.softmax(a(x)[0], 1) + torch.softmax(b(x)[0], 1)
    logit_sum = LogitSumEnsemble([a, b])(x)
    assert prob_sum.argmax(1).item() == 0
    assert logit_sum.argmax(1).item() == 1
    assert torch.allclose(logit_sum, a(x)[0] + b(x)[0])


def test_warmup_view_picks_the_augmentation(tiny_data, monkeypatch) -> None:
    """``method.warmup_view`` chooses which view the warm-up step trains on (strong = reference)."""
    import pytest

    from coreg.config import ConfigError

    for view, other in (("strong", "weak"), ("weak", "strong")):
        _, method = _setup(tiny_data, f"method.warmup_view={view}")
        ctx, plan = _epoch(method, tiny_data, 0)
        calls: list[str] = []
        for name in ("strong", "weak"):
            real = getattr(tiny_data.augment, name)
            monkeypatch.setattr(tiny_data.augment, name, lambda x, g, _n=name, _r=real, _c=calls: _c.append(_n) or _r(x, g))
        _step(method, tiny_data, ctx, "net1", next(iter(plan.phases["net1"])))
        assert calls == [view] and other not in calls
        monkeypatch.undo()
    with pytest.raises(ConfigError, match="warmup_view"):
        _setup(tiny_data, "method.warmup_view=medium")
