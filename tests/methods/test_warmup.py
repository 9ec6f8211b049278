"""The shared warm-up objective (coreg and warmup_only): views and input mixup."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coreg.losses import PartialCELoss, negative_entropy
from coreg.methods.selection import sample_mixup
from coreg.methods.warmup import warmup_objective


def _forward(x: torch.Tensor) -> torch.Tensor:
    w = torch.linspace(-1, 1, x[0].numel() * 3).reshape(-1, 3)
    return torch.softmax(x.flatten(1) @ w, dim=1)


def test_mixup_mixes_inputs_and_partial_ce_with_one_permutation(tiny_data) -> None:
    idx = torch.arange(8)
    images, cand = tiny_data.images[idx], tiny_data.candidates[idx]
    pce = PartialCELoss()
    p, l_pce, l_ne = warmup_objective(_forward, images, cand, augment=tiny_data.augment, pce=pce, view="weak",
                                      mixup_alpha=1.0, rng=np.random.default_rng(3),
                                      generator=torch.Generator().manual_seed(5))
    # the same draws by hand: the view first, then the coefficient and the permutation
    g, rng = torch.Generator().manual_seed(5), np.random.default_rng(3)
    x = tiny_data.augment.weak(images, g)
    lam, perm = sample_mixup(8, alpha=1.0, rng=rng, generator=g)
    assert 0.5 <= lam < 1.0 and not torch.equal(perm, torch.arange(8))
    want_p = _forward(lam * x + (1 - lam) * x[perm])
    assert torch.allclose(p, want_p)
    assert torch.allclose(l_pce, lam * pce(want_p, cand) + (1 - lam) * pce(want_p, cand[perm]))
    assert torch.allclose(l_ne, negative_entropy(want_p))
    # without mixup: the plain partial CE of the view, and other numbers than with it
    p0, l0, _ = warmup_objective(_forward, images, cand, augment=tiny_data.augment, pce=pce, view="weak",
                                 mixup_alpha=0.0, rng=np.random.default_rng(3), generator=torch.Generator().manual_seed(5))
    assert torch.allclose(p0, _forward(x)) and torch.allclose(l0, pce(p0, cand))
    assert not torch.allclose(l0, l_pce)


def test_unknown_view_is_refused(tiny_data) -> None:
    with pytest.raises(ValueError, match="view"):
        warmup_objective(_forward, tiny_data.images[:2], tiny_data.candidates[:2], augment=tiny_data.augment,
                         pce=PartialCELoss(), view="medium", mixup_alpha=0.0, rng=np.random.default_rng(0),
                         generator=torch.Generator())


@pytest.mark.parametrize("method", ["coreg", "warmup_only"])
def test_methods_train_with_warmup_mixup(method: str, tiny_data) -> None:
    """One warm-up step of each method with mixup on: finite loss that differs from the plain one."""
    from coreg.engine import TrainConfig
    from coreg.engine.seed import epoch_generators
    from coreg.engine.trainer import build_method
    from coreg.methods.base import EpochContext, StepContext

    losses = []
    for mix in ("0", "1.0"):
        cfg = TrainConfig.for_method(method).with_overrides(
            ["model.name=tiny_cnn", "epochs=4", "warmup=2", "method.batch_size=8", "channels_last=false", "amp=off",
             "val_fraction=0", f"method.warmup_mixup={mix}"])
        m = build_method(cfg, tiny_data, device=torch.device("cpu"))
        gen, rng = epoch_generators(0, 0)
        ctx = EpochContext(epoch=0, num_epochs=4, warmup=2, data=tiny_data, generator=gen, rng=rng, seed=0,
                           device=torch.device("cpu"))
        m.train()
        plan = m.on_epoch_start(ctx)
        phase, batches = next(iter(plan.phases.items()))
        batch = next(iter(batches))
        sctx = StepContext(epoch=0, warmup=2, phase=phase, batch_index=0, num_batches=1, generator=gen, rng=rng,
                           data=tiny_data)
        out = m.training_step(batch, sctx)
        assert torch.isfinite(out.losses["loss"])
        losses.append(float(out.losses["loss"].detach()))
    assert losses[0] != losses[1]


def test_candidate_targets_weight_the_set_by_the_annotators_scores() -> None:
    from coreg.methods.warmup import candidate_targets

    cand = torch.tensor([[1, 1, 0, 0], [0, 1, 0, 1], [1, 0, 0, 0]])
    scores = torch.tensor([[0.5, 0.25, 0.2, 0.05], [0.1, 0.0, 0.1, 0.8], [0.3, 0.3, 0.3, 0.1]])
    assert torch.equal(candidate_targets(cand, scores, "uniform"), cand.float())
    assert torch.equal(candidate_targets(cand, None, "auto"), cand.float())
    w = candidate_targets(cand, scores, "scores")
    assert torch.equal(candidate_targets(cand, scores, "auto"), w)
    # zero outside the set, a maximum of 1 per row, proportional to the scores inside it
    assert torch.equal(w > 0, cand.bool())
    assert torch.allclose(w.amax(1), torch.ones(3))
    assert torch.allclose(w[0, :2], torch.tensor([1.0, 0.5]))
    assert torch.allclose(w[1, [1, 3]], torch.tensor([1e-3 / 0.8, 1.0]))  # a zero score is floored, not ruled out
    with pytest.raises(ValueError, match="needs an annotation with scores"):
        candidate_targets(cand, None, "scores")
    with pytest.raises(ValueError, match="candidate weights"):
        candidate_targets(cand, scores, "soft")


def test_score_weighted_partial_ce_pulls_towards_the_product_of_student_and_annotator() -> None:
    """The gradient of -log sum_j w_j p_j w.r.t. the logits is p - (w p) / sum(w p): the target is
    the renormalised product of the two beliefs."""
    from coreg.methods.warmup import candidate_targets

    logits = torch.tensor([[0.3, 0.1, -0.2, 0.0]], requires_grad=True)
    cand, scores = torch.tensor([[1, 1, 0, 1]]), torch.tensor([[0.2, 0.6, 0.1, 0.1]])
    w = candidate_targets(cand, scores, "scores")
    p = torch.softmax(logits, 1)
    PartialCELoss(eps=0.0)(p, w).backward()
    prod = (w * p).detach()
    assert torch.allclose(logits.grad, p.detach() - prod / prod.sum(), atol=1e-6)


@pytest.mark.parametrize("method", ["coreg", "warmup_only"])
def test_methods_train_on_score_weighted_candidates(method: str) -> None:
    """``method.candidate_weights=scores``: the warm-up (and Co-Reg's division) use ``Y * s``; the
    loss differs from the uniform sets'; without scores the option is refused, ``auto`` falls back."""
    import dataclasses

    from coreg.engine import TrainConfig
    from coreg.engine.seed import epoch_generators
    from coreg.engine.trainer import build_method
    from coreg.methods.base import EpochContext, StepContext
    from coreg.methods.warmup import candidate_targets
    from tests.methods.conftest import make_data

    data = make_data()
    g = torch.Generator().manual_seed(1)
    s = torch.rand(data.candidates.shape, generator=g) + 0.05
    data = dataclasses.replace(data, scores=s / s.sum(1, keepdim=True))
    losses = []
    for mode in ("uniform", "scores"):
        cfg = TrainConfig.for_method(method).with_overrides(
            ["model.name=tiny_cnn", "epochs=4", "warmup=2", "method.batch_size=8", "channels_last=false", "amp=off",
             "val_fraction=0", f"method.candidate_weights={mode}"])
        m = build_method(cfg, data, device=torch.device("cpu"))
        used = m.targets(data) if method == "coreg" else m.targets
        assert torch.equal(used, candidate_targets(data.candidates, data.scores, mode))
        gen, rng = epoch_generators(0, 0)
        ctx = EpochContext(epoch=0, num_epochs=4, warmup=2, data=data, generator=gen, rng=rng, seed=0,
                           device=torch.device("cpu"))
        m.train()
        phase, batches = next(iter(m.on_epoch_start(ctx).phases.items()))
        out = m.training_step(next(iter(batches)), StepContext(epoch=0, warmup=2, phase=phase, batch_index=0,
                                                              num_batches=1, generator=gen, rng=rng, data=data))
        losses.append(float(out.losses["loss"].detach()))
    assert losses[0] != losses[1] and all(np.isfinite(losses))
    bare = dataclasses.replace(data, scores=None)
    cfg = TrainConfig.for_method(method).with_overrides(["model.name=tiny_cnn", "method.candidate_weights=scores"])
    with pytest.raises(ValueError, match="needs an annotation with scores"):
        build_method(cfg, bare, device=torch.device("cpu"))
    cfg = TrainConfig.for_method(method).with_overrides(["model.name=tiny_cnn", "method.candidate_weights=auto"])
    m = build_method(cfg, bare, device=torch.device("cpu"))
    assert torch.equal(m.targets(bare) if method == "coreg" else m.targets, bare.candidates.float())
