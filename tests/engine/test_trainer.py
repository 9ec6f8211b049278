"""Engine: LR schedule, resume bit-identical, checkpoints, a 2-epoch end-to-end run on digits."""

from __future__ import annotations

import pytest
import torch

from coreg.data import load_dataset
from coreg.engine import TrainConfig, fit
from coreg.engine.schedule import cosine_lr
from coreg.errors import CoregError
from coreg.simulate import simulate_annotation


def test_lr_values() -> None:
    assert cosine_lr(0, base_lr=0.01) == pytest.approx(0.01)
    assert cosine_lr(100, base_lr=0.01) == pytest.approx(0.0096198, abs=1e-7)
    assert cosine_lr(400, base_lr=0.01) == pytest.approx(0.005005)
    assert cosine_lr(800, base_lr=0.01) == pytest.approx(1e-5)


@pytest.fixture(scope="module")
def small():
    b = load_dataset("digits")
    keep = 240
    b.train.images, b.train.labels, b.train.ids = b.train.images[:keep], b.train.labels[:keep], b.train.ids[:keep]
    b.test.images, b.test.labels, b.test.ids = b.test.images[:100], b.test.labels[:100], b.test.ids[:100]
    return b, simulate_annotation(b, kind="flip", q=0.2, eta=0.2, seed=0)


def _cfg(**kw) -> TrainConfig:
    sets = ["model.name=tiny_cnn", "method.batch_size=32", "method.moco_queue=100", "method.start_cont=0",
            "amp=off", "channels_last=false", "warmup=1", "val_fraction=0.1",
            "warmup_patience=0", "warmup_min_after=0", "warmup_min_agreement=0"]  # fixed unless a test asks
    return TrainConfig.for_method("coreg").with_overrides(sets).with_updates(kw)


def test_resume_is_bit_identical(tmp_path, small) -> None:
    bundle, ann = small
    full = fit(_cfg(epochs=3), bundle, ann, out_dir=tmp_path / "a", progress=False)

    class Interrupt(Exception):
        pass

    def stop_after_second(epoch: int, metrics: dict) -> None:
        if epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):  # the same command, interrupted after its second epoch
        fit(_cfg(epochs=3), bundle, ann, out_dir=tmp_path / "b", progress=False, callbacks=[stop_after_second])
    resumed = fit(_cfg(epochs=3), bundle, ann, out_dir=tmp_path / "b", resume=True, progress=False)
    assert len(resumed.history) == 3
    for na, nb in zip(full.student.nets, resumed.student.nets):
        for (ka, va), (_, vb) in zip(na.state_dict().items(), nb.state_dict().items()):
            assert torch.equal(va, vb), ka
    assert full.history[-1]["test_acc"] == resumed.history[-1]["test_acc"]
    # selection metrics are logged every epoch
    assert all("val_approx_acc" in h and "val_covering_rate" in h for h in full.history)


def test_refuses_to_overwrite_and_other_settings(tmp_path, small) -> None:
    bundle, ann = small
    fit(_cfg(epochs=1), bundle, ann, out_dir=tmp_path, progress=False)
    with pytest.raises(CoregError, match="--resume"):
        fit(_cfg(epochs=1), bundle, ann, out_dir=tmp_path, progress=False)
    with pytest.raises(CoregError, match=r"changed hyper-parameters: seed \(0 -> 5\)"):
        fit(_cfg(epochs=2, seed=5), bundle, ann, out_dir=tmp_path, resume=True, progress=False)


def test_divergence_is_a_clear_error(tmp_path, small) -> None:
    bundle, ann = small
    with pytest.raises(CoregError, match="diverged"):
        fit(_cfg(epochs=3, lr=1e8), bundle, ann, out_dir=tmp_path, progress=False)


def _warmup_flags(history: list[dict]) -> list[int]:
    return [int(h["warmup_epoch"]) for h in history]


def test_fixed_warmup_runs_exactly_w_epochs(tmp_path, small) -> None:
    bundle, ann = small
    res = fit(_cfg(epochs=4, warmup=2, warmup_patience=0), bundle, ann, out_dir=tmp_path, progress=False)
    assert _warmup_flags(res.history) == [1, 1, 0, 0]
    assert all("net1_num_labelled" in h for h in res.history[2:])  # co-training epochs divided the data


@pytest.mark.parametrize("min_delta", [0.0, 1.0])
def test_adaptive_warmup_follows_the_selection_metric(tmp_path, small, min_delta) -> None:
    """warm-up lasts at least W epochs, then ends at the first epoch whose last `patience` values of
    the label-free metric did not beat the earlier best by min_delta (1.0: impossible, so right away
    once the history is long enough; 0.0: only a non-improving epoch ends it)."""
    bundle, ann = small
    res = fit(_cfg(epochs=6, warmup=1, warmup_patience=1, warmup_min_delta=min_delta), bundle, ann,
              out_dir=tmp_path, progress=False)
    flags = _warmup_flags(res.history)
    n_warm = sum(flags)
    assert flags == [1] * n_warm + [0] * (6 - n_warm)  # one warm-up block, then co-training
    vals = [h["val_approx_acc"] for h in res.history]
    expected = next((e + 1 for e in range(1, 6) if vals[e] < max(vals[:e]) + min_delta), 6)
    assert n_warm == expected
    if min_delta == 1.0:
        assert n_warm == 2  # the first epoch it can judge (W=1, patience 1)


def test_adaptive_warmup_too_late_to_switch_warms_up_to_the_end(tmp_path, small) -> None:
    bundle, ann = small
    # a plateau is declared at once (min_delta 1.0) but never with 4+ epochs left of 5: no co-training
    res = fit(_cfg(epochs=5, warmup=1, warmup_patience=1, warmup_min_delta=1.0, warmup_min_after=4), bundle, ann,
              out_dir=tmp_path / "a", progress=False)
    assert _warmup_flags(res.history) == [1] * 5
    assert not any("net1_num_labelled" in h for h in res.history)
    res = fit(_cfg(epochs=5, warmup=1, warmup_patience=1, warmup_min_delta=1.0, warmup_min_after=3), bundle, ann,
              out_dir=tmp_path / "b", progress=False)
    assert _warmup_flags(res.history) == [1, 1, 0, 0, 0]


def test_agreement_gate_holds_warmup_until_the_networks_agree(tmp_path, small) -> None:
    """val_agreement is the share of held-out images both networks label alike; with
    warmup_min_agreement the hand-over waits for it (1.0 unreached: the run stays a warm-up)."""
    bundle, ann = small
    kw = dict(epochs=5, warmup=1, warmup_patience=1, warmup_min_delta=1.0, warmup_min_after=0)
    res = fit(_cfg(**kw, warmup_min_agreement=1.0), bundle, ann, out_dir=tmp_path / "a", progress=False)
    agree = [h["val_agreement"] for h in res.history]
    assert all(0.0 <= a <= 1.0 for a in agree)
    if max(agree) < 1.0:
        assert _warmup_flags(res.history) == [1] * 5
    # a gate first passed at epoch e hands over there (a plateau is declared at once, min_delta 1.0);
    # until the hand-over both runs train alike, so run a's agreement says when
    bar = max(agree[1:4])
    first = next(e for e in range(1, 4) if agree[e] >= bar)
    res = fit(_cfg(**kw, warmup_min_agreement=bar), bundle, ann, out_dir=tmp_path / "b", progress=False)
    assert sum(_warmup_flags(res.history)) == first + 1
    assert [h["val_agreement"] for h in res.history[:first + 1]] == agree[:first + 1]


def test_adaptive_warmup_survives_resume(tmp_path, small) -> None:
    bundle, ann = small
    kw = dict(epochs=4, warmup=1, warmup_patience=1, warmup_min_delta=1.0)
    full = fit(_cfg(**kw), bundle, ann, out_dir=tmp_path / "a", progress=False)

    class Interrupt(Exception):
        pass

    def stop(epoch: int, metrics: dict) -> None:
        if epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(_cfg(**kw), bundle, ann, out_dir=tmp_path / "b", progress=False, callbacks=[stop])
    resumed = fit(_cfg(**kw), bundle, ann, out_dir=tmp_path / "b", resume=True, progress=False)
    assert _warmup_flags(resumed.history) == _warmup_flags(full.history) == [1, 1, 0, 0]
    assert resumed.history[-1]["test_acc"] == full.history[-1]["test_acc"]


def test_lr_ramps_linearly_over_the_first_epochs(tmp_path, small, monkeypatch) -> None:
    from coreg.methods.coreg import CoReg

    seen: list[tuple[int, int, int, float]] = []
    orig = CoReg.training_step

    def spy(self, batch, ctx):
        seen.append((ctx.epoch, ctx.batch_index, ctx.num_batches, ctx.optimizer.param_groups[0]["lr"]))
        return orig(self, batch, ctx)

    monkeypatch.setattr(CoReg, "training_step", spy)
    bundle, ann = small
    fit(_cfg(epochs=4, lr_warmup_epochs=2, lr=0.1), bundle, ann, out_dir=tmp_path, progress=False)
    assert {e for e, *_ in seen} == {0, 1, 2, 3}
    for epoch, b, n, lr in seen:
        base = cosine_lr(epoch, base_lr=0.1, period=4, decay_rate=0.1)
        ramp = min(1.0, (epoch + (b + 1) / n) / 2) if epoch < 2 else 1.0
        assert lr == pytest.approx(base * ramp), (epoch, b, n)
    assert seen[0][3] < 0.1 / 2 / seen[0][2] + 1e-9  # the first step runs at a small fraction of the rate
    ramp_lrs = [lr for e, _, _, lr in seen if e == 0]
    assert ramp_lrs[-1] > ramp_lrs[0]


def test_faithful_preset_has_no_lr_ramp() -> None:
    assert TrainConfig.for_method("coreg", preset="faithful").lr_warmup_epochs == 0
    assert TrainConfig.for_method("coreg").lr_warmup_epochs > 0
