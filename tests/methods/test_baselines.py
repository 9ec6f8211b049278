"""Each baseline's defining invariant, on closed forms and on one real step of a tiny CNN."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from coreg.data.annotations import Annotation
from coreg.data.datasets import DataBundle, ImageSpec, ImageSplit
from coreg.data.transforms import Augmenter
from coreg.engine import TrainConfig
from coreg.engine.seed import epoch_generators
from coreg.engine.trainer import build_method
from coreg.losses import PartialCELoss, negative_entropy
from coreg.methods import EpochContext, Method, StepContext, TrainData
from coreg.methods.baselines._single_net import restrict
from coreg.methods.baselines.alim import adjusted_targets, estimate_lambda
from coreg.methods.baselines.cc import cc_loss
from coreg.methods.baselines.cr_dpll import geometric_target
from coreg.methods.baselines.dividemix import training_labels, uniform_prior_penalty
from coreg.methods.baselines.kd import kd_loss
from coreg.methods.baselines.lws import lws_loss, lws_weights
from coreg.methods.baselines.pico import disambiguate
from coreg.methods.baselines.zero_shot import zero_shot_accuracy

N, K, S = 24, 3, 8
CPU = torch.device("cpu")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_data(*, with_scores: bool = True) -> TrainData:
    g = _gen()
    gold = torch.arange(N) % K
    cand = (torch.rand(N, K, generator=g) < 0.3).float()
    cand[torch.arange(N), gold] = 1.0
    cand[:3] = 0.0
    cand[torch.arange(3), (gold[:3] + 1) % K] = 1.0
    scores = torch.softmax(torch.randn(N, K, generator=g) + 2 * cand, dim=1) if with_scores else None
    spec = ImageSpec(S, 3, (0.5,) * 3, (0.5,) * 3, crop_padding=1)
    images = torch.randint(0, 256, (N, 3, S, S), generator=g, dtype=torch.uint8)
    return TrainData(images=images, candidates=cand, scores=scores, noisy_labels=cand.argmax(1), gold=gold,
                     spec=spec, augment=Augmenter(spec), classes=[f"c{i}" for i in range(K)])


def build(name: str, data: TrainData, *, warmup: int = 0, sets: tuple[str, ...] = ()) -> Method:
    cfg = TrainConfig.for_method(name)
    base = ["model.name=tiny_cnn", "model.proj_dim=8", "model.width=0.5", "epochs=4", f"warmup={warmup}",
            "channels_last=False", "device=cpu", "amp=off"]
    fields = {f.name for f in dataclasses.fields(cfg.method)}
    base += [f"method.{k}={v}" for k, v in (("batch_size", 8), ("moco_queue", 32)) if k in fields]
    return build_method(cfg.with_overrides(base + list(sets)), data, device=CPU)


class Run:
    """One epoch context of a built method, with helpers to take steps."""

    def __init__(self, method: Method, data: TrainData, *, epoch: int = 0, warmup: int = 0) -> None:
        self.method, self.data, self.epoch, self.warmup = method, data, epoch, warmup
        self.opts = method.configure_optimizers()
        method.train()
        self.gen, self.rng = epoch_generators(0, epoch)
        self.ctx = EpochContext(epoch=epoch, num_epochs=4, warmup=warmup, data=data, generator=self.gen,
                                rng=self.rng, seed=0, device=CPU)
        self.plan = method.on_epoch_start(self.ctx)
        self.phase = next(iter(self.plan.phases))
        self.batches = iter(self.plan.phases[self.phase])

    def step(self, *, backward: bool = True) -> tuple[Any, Any, torch.Tensor]:
        batch = next(self.batches)
        sctx = StepContext(epoch=self.epoch, warmup=self.warmup, phase=self.phase, batch_index=0, num_batches=3,
                           generator=self.gen, rng=self.rng, data=self.data, optimizer=self.opts[self.phase])
        out = self.method.training_step(batch, sctx)
        if backward:
            opt = self.opts[self.phase]
            opt.zero_grad()
            out.losses["loss"].backward()
            opt.step()
        return batch, out, self.gen


def _supported(w: torch.Tensor, cand: torch.Tensor) -> None:
    torch.testing.assert_close(w.sum(1), torch.ones(len(w)))
    assert (w[cand == 0] == 0).all()
    assert (w >= 0).all()


# ----------------------------------------------------------------------------- PRODEN
def test_proden_weights_stay_in_candidates_and_follow_predictions() -> None:
    data = tiny_data()
    m = build("proden", data)
    _supported(m.weights, data.candidates)
    r = Run(m, data)
    state = r.gen.get_state()
    net_copy = [p.detach().clone() for p in m.net.parameters()]
    idx, out, _ = r.step(backward=False)
    # Reproduce the step's forward: same generator state, same (un-stepped) parameters.
    x = data.augment.weak(data.images[idx], torch.Generator().set_state(state))
    assert all(torch.equal(a, b) for a, b in zip(net_copy, m.net.parameters()))
    logits = m.net(x)[0]
    w = m.weights[idx]
    _supported(w, data.candidates[idx])
    torch.testing.assert_close(w, restrict(F.softmax(logits, 1), data.candidates[idx]))
    others = torch.ones(N, dtype=torch.bool)
    others[idx] = False
    torch.testing.assert_close(m.weights[others], data.candidates[others] / data.candidates[others].sum(1, keepdim=True))


# ----------------------------------------------------------------------------- CC
def test_cc_loss_is_minus_log_candidate_mass() -> None:
    logits = torch.randn(8, K, generator=_gen()) * 3
    cand = (torch.rand(8, K, generator=_gen(1)) < 0.5).float()
    cand[:, 0] = 1.0
    expected = -torch.log((F.softmax(logits, 1) * cand).sum(1)).mean()
    torch.testing.assert_close(cc_loss(logits, cand), expected)
    assert float(cc_loss(logits, torch.ones(8, K))) == pytest.approx(0.0, abs=1e-6)
    big = torch.tensor([[100.0, -100.0, 0.0]])
    assert math.isfinite(float(cc_loss(big, torch.tensor([[0.0, 1.0, 0.0]]))))  # stable far from the set


# ----------------------------------------------------------------------------- RC
def test_rc_confidence_is_reestimated_by_the_updated_model() -> None:
    data = tiny_data()
    m = build("rc", data)
    r = Run(m, data)
    conf0 = m.confidence.clone()
    idx, _, _ = r.step()  # includes the optimiser step
    assert torch.equal(m.confidence, conf0), "RC re-estimates after the update, not from the old forward"
    _, view, cand = m._pending
    expected = restrict(F.softmax(m.net(view)[0].detach().float(), 1), cand)
    m.flush()
    torch.testing.assert_close(m.confidence[idx], expected)
    _supported(m.confidence, data.candidates)


def test_rc_epoch_mode_reestimates_every_row() -> None:
    data = tiny_data()
    m = build("rc", data, sets=("method.update=epoch",))
    Run(m, data, epoch=1)
    m.net.eval()
    expected = restrict(F.softmax(m.net(data.augment.test(data.images))[0].detach(), 1), data.candidates)
    torch.testing.assert_close(m.confidence, expected)


# ----------------------------------------------------------------------------- LWS
def test_lws_loss_form_and_weights() -> None:
    logits = torch.randn(8, K, generator=_gen())
    cand = (torch.rand(8, K, generator=_gen(1)) < 0.5).float()
    cand[:, 1] = 1.0
    w = lws_weights(F.softmax(torch.randn(8, K, generator=_gen(2)), 1), cand)
    # each part normalised on its own support
    part_in, part_out = (w * cand).sum(1), (w * (1 - cand)).sum(1)
    torch.testing.assert_close(part_in, torch.ones(8))
    has_out = (1 - cand).sum(1) > 0
    torch.testing.assert_close(part_out[has_out], torch.ones(int(has_out.sum())))
    loss, pos, neg = lws_loss(logits, cand, w, beta=2.0)
    exp_pos = (w * cand / (1 + torch.exp(logits))).sum(1).mean()
    exp_neg = (w * (1 - cand) / (1 + torch.exp(-logits))).sum(1).mean()
    torch.testing.assert_close(pos, exp_pos)
    torch.testing.assert_close(neg, 2.0 * exp_neg)
    torch.testing.assert_close(loss, exp_pos + 2.0 * exp_neg)


def test_lws_method_updates_weights_after_the_step() -> None:
    data = tiny_data()
    m = build("lws", data)
    r = Run(m, data)
    idx, _, _ = r.step()
    _, view, cand = m._pending
    expected = lws_weights(F.softmax(m.net(view)[0].detach().float(), 1), cand)
    m.flush()
    torch.testing.assert_close(m.weights[idx], expected)


# ----------------------------------------------------------------------------- CR-DPLL
def test_cr_dpll_geometric_target_and_first_step() -> None:
    cand = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    ps = [F.softmax(torch.randn(2, K, generator=_gen(i)), 1) for i in range(3)]
    t = geometric_target(ps, cand)
    _supported(t, cand)
    g = (ps[0] * ps[1] * ps[2]).pow(1 / 3) * cand
    torch.testing.assert_close(t, g / g.sum(1, keepdim=True))
    data = tiny_data()
    m = build("cr_dpll", data)
    r = Run(m, data)
    idx, out, _ = r.step(backward=False)
    assert out.report["cons_weight"] == 0.0  # the ramp starts at 0
    torch.testing.assert_close(out.losses["loss"], out.report["loss_sup"])
    _supported(m.targets, data.candidates)


# ----------------------------------------------------------------------------- PiCO
def test_pico_disambiguation_stays_in_candidates() -> None:
    cand = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    s = cand / cand.sum(1, keepdim=True)
    protos = F.normalize(torch.randn(K, 4, generator=_gen()), dim=1)
    q = protos[[1, 0]]  # closest prototypes are NOT candidates of the rows
    new = disambiguate(s, q, protos, cand, phi=0.8)
    _supported(new, cand)
    assert new[1, 1] == pytest.approx(1.0)


def test_pico_step_updates_targets_prototypes_and_ema_key() -> None:
    data = tiny_data()
    m = build("pico", data, sets=("method.prot_start=0",))
    r = Run(m, data)
    key_before = [p.detach().clone() for p in m.key.parameters()]
    net_before = [p.detach().clone() for p in m.net.parameters()]
    r.step(backward=False)
    mom = m.cfg.moco_m
    for kb, nb, k_now in zip(key_before, net_before, m.key.parameters()):
        torch.testing.assert_close(k_now, mom * kb + (1 - mom) * nb)
    _supported(m.targets, data.candidates)
    assert int(m.filled) == 8
    norms = m.prototypes.prototypes.norm(dim=1)
    assert ((norms - 1).abs() < 1e-5).any()


# ----------------------------------------------------------------------------- DivideMix
class _LookupNet(nn.Module):
    """Logits looked up from the image index encoded in the constant pixel value."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i = torch.round((x[:, 0, 0, 0] * 0.5 + 0.5) * 255).long()
        return self.table[i], torch.zeros(len(x), 2)


def test_dividemix_split_takes_the_low_loss_component() -> None:
    data = tiny_data()
    data.images = torch.arange(N, dtype=torch.uint8).view(N, 1, 1, 1).expand(N, 3, S, S).contiguous()
    labels = training_labels(data)
    table = torch.full((N, K), -4.0)
    agree = torch.arange(N) % 2 == 0
    table[torch.arange(N), torch.where(agree, labels, (labels + 1) % K)] = 4.0
    m = build("dividemix", data)
    w = m.divide(_LookupNet(table), data, labels, history=[], seed=0)
    assert w.shape == (N,) and ((w >= 0) & (w <= 1)).all()
    assert bool((w[agree] > 0.5).all()) and bool((w[~agree] < 0.5).all())
    data.trusted = ~agree
    torch.testing.assert_close(m.divide(_LookupNet(table), data, labels, history=[], seed=0)[~agree],
                               torch.ones(int((~agree).sum())))


def test_dividemix_uniform_prior_penalty() -> None:
    assert float(uniform_prior_penalty(torch.zeros(4, K))) == pytest.approx(0.0, abs=1e-7)
    assert float(uniform_prior_penalty(torch.tensor([[5.0, 0.0, 0.0]] * 4))) > 0.5


# ----------------------------------------------------------------------------- ALIM
def test_alim_adjusted_targets_variants() -> None:
    p = torch.tensor([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2]])
    cand = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    # lambda = 0: the base PLL disambiguation
    torch.testing.assert_close(adjusted_targets(p, cand, lam=0.0, variant="onehot"),
                               torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]))
    torch.testing.assert_close(adjusted_targets(p, cand, lam=0.0, variant="scale"), restrict(p, cand))
    # lambda = 0.5: row 0's non-candidate 0.35 beats 0.2, row 1's 0.25 loses to 0.3
    torch.testing.assert_close(adjusted_targets(p, cand, lam=0.5, variant="onehot"),
                               torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))
    a = (cand + 0.5 * (1 - cand)) * p
    torch.testing.assert_close(adjusted_targets(p, cand, lam=0.5, variant="scale"), a / a.sum(1, keepdim=True))
    torch.testing.assert_close(adjusted_targets(p, cand, lam=1.0, variant="scale"), p)


def test_alim_adaptive_lambda_moves_the_requested_share() -> None:
    g = _gen()
    p = F.softmax(torch.randn(200, 5, generator=g) * 2, 1)
    cand = (torch.rand(200, 5, generator=g) < 0.3).float()
    cand[torch.arange(200), torch.randint(0, 5, (200,), generator=g)] = 1.0
    lam = estimate_lambda(p, cand, noise_rate=0.2)
    assert 0.0 < lam <= 1.0
    moved = adjusted_targets(p, cand, lam=lam, variant="onehot").argmax(1)
    share = float((cand[torch.arange(200), moved] == 0).float().mean())
    assert share == pytest.approx(0.2, abs=0.03)
    assert estimate_lambda(p, cand, noise_rate=0.0) == 0.0


def test_alim_warmup_then_adjustment() -> None:
    data = tiny_data()
    m = build("alim", data, warmup=1, sets=("method.lambda_mode=fixed", "method.lam=0.7", "method.mixup_weight=0"))
    Run(m, data, epoch=0, warmup=1).step()
    assert float(m.lam) == 0.0
    _supported(m.targets, data.candidates)
    r = Run(m, data, epoch=1, warmup=1)
    assert float(m.lam) == pytest.approx(0.7)
    idx, _, _ = r.step()
    t = m.targets[idx]
    torch.testing.assert_close(t.sum(1), torch.ones(len(idx)))
    assert ((t == 0) | (t == 1)).all()  # onehot variant


# ----------------------------------------------------------------------------- KD
def test_kd_loss_is_soft_ce_to_scores() -> None:
    logits = torch.randn(8, K, generator=_gen())
    s = F.softmax(torch.randn(8, K, generator=_gen(1)), 1)
    torch.testing.assert_close(kd_loss(logits, s), -(s * F.log_softmax(logits, 1)).sum(1).mean())
    t = 2.0
    st = s.pow(1 / t) / s.pow(1 / t).sum(1, keepdim=True)
    torch.testing.assert_close(kd_loss(logits, s, temperature=t),
                               -(st * F.log_softmax(logits / t, 1)).sum(1).mean() * t * t)


def test_kd_step_and_missing_scores() -> None:
    data = tiny_data()
    m = build("kd", data)
    r = Run(m, data)
    state = r.gen.get_state()
    idx, out, _ = r.step(backward=False)
    x = data.augment.weak(data.images[idx], torch.Generator().set_state(state))
    torch.testing.assert_close(out.losses["loss"], kd_loss(m.net(x)[0], data.scores[idx]))
    with pytest.raises(ValueError, match="scores"):
        build("kd", tiny_data(with_scores=False))


# ----------------------------------------------------------------------------- warmup_only
def test_warmup_only_is_partial_ce_plus_negative_entropy() -> None:
    data = tiny_data()
    m = build("warmup_only", data)
    r = Run(m, data)
    state = r.gen.get_state()
    idx, out, _ = r.step(backward=False)
    x = data.augment.strong(data.images[idx], torch.Generator().set_state(state))
    p = F.softmax(m.net(x)[0], 1)
    torch.testing.assert_close(out.losses["loss"], PartialCELoss()(p, data.candidates[idx]) + negative_entropy(p))


# ----------------------------------------------------------------------------- zero_shot
def test_zero_shot_trains_nothing_and_reports_the_annotator() -> None:
    data = tiny_data()
    m = build("zero_shot", data)
    r = Run(m, data)
    assert sum(len(list(b)) for b in r.plan.phases.values()) == 0
    rep = m.on_epoch_end(r.ctx)
    assert rep["annotator_train_acc"] == pytest.approx(float((data.noisy_labels == data.gold).float().mean()))
    assert rep["annotator_train_coverage"] == pytest.approx(21 / 24)


def test_zero_shot_accuracy_uses_test_scores() -> None:
    spec = ImageSpec(S, 3, (0.5,) * 3, (0.5,) * 3)
    train = ImageSplit(np.zeros((4, S, S, 3), np.uint8), np.array([0, 1, 2, 0]), [str(i) for i in range(4)])
    test = ImageSplit(np.zeros((2, S, S, 3), np.uint8), np.array([1, 2]), ["0", "1"])
    bundle = DataBundle("toy", ["a", "b", "c"], train, test, spec)
    cand = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 0], [1, 1, 0]], bool)
    scores = np.array([[0.8, 0.1, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.5, 0.4, 0.1]], np.float32)
    test_scores = np.array([[0.1, 0.8, 0.1], [0.6, 0.2, 0.2]], np.float32)
    ann = Annotation(candidates=cand, classes=bundle.classes, annotator={"kind": "clip"}, data=bundle.describe(),
                     scores=scores, test_scores=test_scores)
    out = zero_shot_accuracy(ann, bundle)
    assert out["test_acc"] == pytest.approx(0.5)
    assert out["annotator_train_acc"] == pytest.approx(0.5)  # argmax scores: 0, 2, 0, 0 vs 0, 1, 2, 0
    assert out["annotator_train_coverage"] == pytest.approx(0.75)
    ann.test_scores = None
    assert "test_acc" not in zero_shot_accuracy(ann, bundle)
