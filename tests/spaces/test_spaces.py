"""Search spaces: one per registered method, and every suggestion applies cleanly to its config."""

from __future__ import annotations

import subprocess
import sys

import optuna
import pytest

from coreg.engine import TrainConfig
from coreg.methods import list_methods
from coreg.tuning.spaces import SPACES, suggest

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_every_method_has_a_space() -> None:
    assert set(list_methods()) <= set(SPACES), sorted(set(list_methods()) - set(SPACES))


@pytest.mark.parametrize("name", list_methods())
def test_overrides_apply_to_the_method_config(name: str) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    base = TrainConfig.for_method(name)
    for _ in range(5):
        overrides = suggest(name, study.ask())
        assert all("=" in o and not o.startswith("warmup=") for o in overrides)
        cfg = base.with_overrides(overrides)
        assert cfg.method_name == name and type(cfg.method) is type(base.method)
        if overrides:
            assert cfg != base


def test_fixed_trial_values_reach_the_config() -> None:
    trial = optuna.trial.FixedTrial({"lr": 0.02, "lambda_u": 0.5, "T": 0.4, "p_threshold": 0.6, "alpha": 1.0,
                                     "proto_weight": 0.2, "cont_weight": 0.3, "proj_dim": 64})
    cfg = TrainConfig.for_method("coreg").with_overrides(suggest("coreg", trial))
    assert (cfg.lr, cfg.method.lambda_u, cfg.method.T, cfg.model.proj_dim) == (0.02, 0.5, 0.4, 64)


def test_unknown_method_raises() -> None:
    with pytest.raises(ValueError, match="valid"):
        suggest("nope", optuna.trial.FixedTrial({}))


def test_import_is_cheap() -> None:
    code = "import sys, coreg.tuning.spaces; print('optuna' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
