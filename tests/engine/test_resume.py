"""Which settings may change on --resume: only a pure run-length extension (and the device)."""

from __future__ import annotations

import pytest

from coreg.engine import TrainConfig
from coreg.engine.resume import check_resume_config, config_changes
from coreg.errors import CoregError


def _cfg(method: str = "coreg", **kw: object) -> dict:
    return TrainConfig.for_method(method).with_updates({"epochs": 10, "warmup": 2, **kw}).to_dict()


def test_changes_are_flattened_and_named() -> None:
    assert config_changes(_cfg(), _cfg(lr=0.05, **{"method.lambda_u": 2.0})) == {
        "lr": (0.1, 0.05), "method.lambda_u": (1.0, 2.0)}
    with pytest.raises(CoregError, match=r"changed hyper-parameters: lr \(0.1 -> 0.05\), method.lambda_u "
                                         r"\(1.0 -> 2.0\)"):
        check_resume_config(_cfg(), _cfg(lr=0.05, **{"method.lambda_u": 2.0}), where="run")


def test_only_a_pure_extension_may_grow_epochs() -> None:
    fixed = {"lr_period": 800, "warmup_patience": 0}
    assert check_resume_config(_cfg(**fixed), _cfg(**fixed), where="run") == {}
    assert check_resume_config(_cfg(**fixed), _cfg(epochs=20, **fixed), where="run") == {"epochs": (10, 20)}
    assert check_resume_config(_cfg(), _cfg(device="cpu"), where="run") == {"device": ("auto", "cpu")}
    with pytest.raises(CoregError, match=r"epochs \(10 -> 5\)"):  # shrinking is no extension
        check_resume_config(_cfg(**fixed), _cfg(epochs=5, **fixed), where="run")
    with pytest.raises(CoregError, match=r"epochs \(10 -> 20\); a longer run is not an extension.*lr_period=0"):
        check_resume_config(_cfg(), _cfg(epochs=20), where="run")  # the cosine spans the run
    with pytest.raises(CoregError, match="adaptive warm-up may only end while warmup_min_after"):
        check_resume_config(_cfg(lr_period=800), _cfg(epochs=20, lr_period=800), where="run")
    with pytest.raises(CoregError, match="pico schedules its epochs by the run length"):
        check_resume_config(_cfg("pico", **fixed), _cfg("pico", epochs=20, **fixed), where="run")
    assert check_resume_config(_cfg("proden", **fixed), _cfg("proden", epochs=20, **fixed), where="run")
