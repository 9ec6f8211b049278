"""Contract of every registered method (STYLE section 6; timm ``test_models.py`` pattern).

For each ``list_methods()`` entry, on a tiny CNN and 24 synthetic 8x8 images: one step gives a
finite loss; the optimiser of the step's phase holds exactly trainable parameters; frozen
parameters (momentum encoders) get no gradient; the parameters and BatchNorm statistics of the
other phase's network (the frozen peer) do not move; two runs with one seed give equal losses.
Each method is checked in a warm-up epoch and in a main epoch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
import torch

from coreg.data.datasets import ImageSpec
from coreg.data.transforms import Augmenter
from coreg.engine import TrainConfig
from coreg.engine.seed import epoch_generators
from coreg.engine.trainer import build_method
from coreg.methods import EpochContext, Method, StepContext, TrainData, list_methods

N, K, S = 24, 3, 8
CPU = torch.device("cpu")


def tiny_data(*, with_scores: bool = True) -> TrainData:
    g = torch.Generator().manual_seed(0)
    gold = torch.arange(N) % K
    cand = (torch.rand(N, K, generator=g) < 0.3).float()
    cand[torch.arange(N), gold] = 1.0
    cand[:3] = 0.0  # three noisy rows: the set misses the gold label
    cand[torch.arange(3), (gold[:3] + 1) % K] = 1.0
    scores = torch.softmax(torch.randn(N, K, generator=g) + 2 * cand, dim=1) if with_scores else None
    spec = ImageSpec(S, 3, (0.5,) * 3, (0.5,) * 3, crop_padding=1)
    images = torch.randint(0, 256, (N, 3, S, S), generator=g, dtype=torch.uint8)
    return TrainData(images=images, candidates=cand, scores=scores, noisy_labels=cand.argmax(1), gold=gold,
                     spec=spec, augment=Augmenter(spec), classes=[f"c{i}" for i in range(K)])


def tiny_cfg(name: str, *, warmup: int) -> TrainConfig:
    cfg = TrainConfig.for_method(name)
    sets = ["model.name=tiny_cnn", "model.proj_dim=8", "model.width=0.5", "epochs=4", f"warmup={warmup}",
            "channels_last=False", "device=cpu", "amp=off"]
    fields = {f.name for f in dataclasses.fields(cfg.method)}
    sets += [f"method.{k}={v}" for k, v in (("batch_size", 8), ("moco_queue", 32)) if k in fields]
    return cfg.with_overrides(sets)


def first_step(name: str, *, warmup: int) -> dict[str, Any]:
    """Build, plan epoch 0, run the first batch of the first non-empty phase, step its optimiser."""
    data = tiny_data()
    cfg = tiny_cfg(name, warmup=warmup)
    method = build_method(cfg, data, device=CPU)
    opts = method.configure_optimizers()
    method.train()
    gen, rng = epoch_generators(cfg.seed, 0)
    ctx = EpochContext(epoch=0, num_epochs=cfg.epochs, warmup=warmup, data=data, generator=gen, rng=rng,
                       seed=cfg.seed, device=CPU)
    plan = method.on_epoch_start(ctx)
    firsts = [(name, next(iter(batches), None)) for name, batches in plan.phases.items()]
    firsts = [(name, b) for name, b in firsts if b is not None]
    if not firsts:
        return {"method": method, "opts": opts, "plan": plan, "phase": None}
    phase, batch = firsts[0]
    before = {n: t.detach().clone() for n, t in method.state_dict().items()}
    sctx = StepContext(epoch=0, warmup=warmup, phase=phase, batch_index=0, num_batches=plan.lengths.get(phase, 1),
                       generator=gen, rng=rng, data=data, optimizer=opts[phase])
    out = method.training_step(batch, sctx)
    loss = out.losses["loss"]
    opts[phase].zero_grad(set_to_none=True)
    loss.backward()
    grads = {id(p): p.grad is not None for p in method.parameters()}
    opts[phase].step()
    after = {n: t.detach().clone() for n, t in method.state_dict().items()}
    return {"method": method, "opts": opts, "plan": plan, "phase": phase, "loss": loss.detach(),
            "before": before, "after": after, "grads": grads}


def _param_names(method: Method, params: list[torch.nn.Parameter]) -> set[str]:
    ids = {id(p) for p in params}
    return {n for n, p in method.named_parameters() if id(p) in ids}


@pytest.mark.parametrize("warmup", [1, 0], ids=["warmup_epoch", "main_epoch"])
@pytest.mark.parametrize("name", list_methods())
def test_one_step_contract(name: str, warmup: int) -> None:
    r = first_step(name, warmup=warmup)
    method, opts = r["method"], r["opts"]
    if r["phase"] is None:  # a method that trains nothing (zero_shot)
        assert getattr(type(method), "trains", True) is False
        return
    assert math.isfinite(float(r["loss"]))
    phase = r["phase"]
    # Optimisers hold trainable parameters only, and every trainable parameter has an optimiser.
    in_opt = {id(p) for o in opts.values() for g in o.param_groups for p in g["params"]}
    for n, p in method.named_parameters():
        assert (id(p) in in_opt) == p.requires_grad, n
        if not p.requires_grad:
            assert not r["grads"][id(p)], f"frozen parameter {n} received a gradient"
    mine = _param_names(method, [p for g in opts[phase].param_groups for p in g["params"]])
    others = set().union(*(_param_names(method, [p for g in o.param_groups for p in g["params"]])
                           for k, o in opts.items() if k != phase))
    before, after = r["before"], r["after"]
    assert any(not torch.equal(before[n], after[n]) for n in mine), "the step changed nothing"
    # The peer network (another phase's parameters) and its BatchNorm statistics stay put.
    peer_modules = {n.rsplit(".", 1)[0] for n in others}
    for n in before:
        owner = n.rsplit(".", 1)[0]
        if n in others or owner in peer_modules:
            assert torch.equal(before[n], after[n]), f"{n} of the frozen peer moved"


@pytest.mark.parametrize("name", list_methods())
def test_same_seed_same_loss(name: str) -> None:
    a, b = first_step(name, warmup=0), first_step(name, warmup=0)
    if a["phase"] is None:
        return
    assert torch.equal(a["loss"], b["loss"])
    for n in a["after"]:
        assert torch.equal(a["after"][n], b["after"][n]), n


@pytest.mark.parametrize("name", list_methods())
def test_checkpoint_state_loads_weights_only(name: str, tmp_path) -> None:
    """What the engine checkpoints for a method (after a main epoch's plan, e.g. Co-Reg's loss
    history) is tensors and plain types: it round-trips through ``torch.load(weights_only=True)``
    and restores the same extra state."""
    from coreg.engine.checkpoint import load_checkpoint, save_checkpoint

    r = first_step(name, warmup=0)
    method, opts = r["method"], r["opts"]
    state = {"epoch": 0, "method": method.state_dict(), "optimizers": {k: o.state_dict() for k, o in opts.items()},
             "extra": method.extra_state(), "history": [{"test_acc": 0.5}], "best": {"value": -math.inf, "epoch": None}}
    back = load_checkpoint(save_checkpoint(tmp_path / "checkpoint.pt", state))
    fresh = first_step(name, warmup=1)["method"]  # another instance, in another state
    fresh.load_state_dict(back["method"])
    fresh.load_extra_state(back["extra"])
    again = fresh.extra_state()
    assert again.keys() == state["extra"].keys()
    torch.testing.assert_close(again, state["extra"], rtol=0, atol=0)
    for k, v in method.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k


def test_non_finite_inputs_are_bad_input_not_a_divergence() -> None:
    """A NaN score would otherwise surface epochs later as "diverged, lower the lr"."""
    import dataclasses as dc

    from coreg.errors import CoregError

    data = tiny_data()
    for name in ("scores", "candidates"):
        bad = getattr(data, name).clone()
        bad[5, 1] = float("nan") if name == "scores" else float("inf")
        with pytest.raises(CoregError, match=rf"training {name} hold NaN or inf in 1 rows \(first: row 5\): bad input"):
            dc.replace(data, **{name: bad})
    dc.replace(data, scores=None)  # no scores is fine
