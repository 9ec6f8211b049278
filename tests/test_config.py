"""Configuration precedence, validation and flattening."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from coreg.config import ConfigError, StageConfig, build_config, check


@dataclass(frozen=True)
class Inner(StageConfig):
    lr: float = 0.01
    mode: str = "a"

    def validate(self) -> None:
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class Outer(StageConfig):
    epochs: int = 10
    flag: bool = False
    sizes: tuple[int, ...] = (1, 2)
    inner: Inner = field(default_factory=Inner)


def test_precedence_defaults_yaml_set(tmp_path) -> None:
    y = tmp_path / "c.yaml"
    y.write_text("epochs: 20\ninner:\n  lr: 0.5\n  mode: b\n")
    cfg = build_config(Outer, config_file=y, overrides=["inner.lr=0.1", "flag=true", "sizes=[3,4]"])
    assert cfg.epochs == 20 and cfg.inner.mode == "b"  # from YAML
    assert cfg.inner.lr == 0.1 and cfg.flag is True and cfg.sizes == (3, 4)  # --set wins
    assert Outer().epochs == 10


def test_types_are_checked_and_validated() -> None:
    with pytest.raises(ConfigError, match="integer"):
        Outer().with_overrides(["epochs=1.5"])
    with pytest.raises(ConfigError, match="unknown config key 'inner.nope'"):
        Outer().with_overrides(["inner.nope=1"])
    with pytest.raises(ConfigError, match="lr must be > 0"):
        Outer().with_overrides(["inner.lr=-1"])
    with pytest.raises(ConfigError, match="key=value"):
        Outer().with_overrides(["epochs"])
    assert Outer().with_overrides(["inner.lr=1"]).inner.lr == 1.0  # int -> float is lossless


def test_to_params_flattens() -> None:
    p = Outer().to_params()
    assert p["inner.lr"] == 0.01 and p["epochs"] == 10 and p["sizes"] == [1, 2]
    assert Outer.from_dict(Outer().to_dict()) == Outer()


def test_bad_yaml(tmp_path) -> None:
    y = tmp_path / "c.yaml"
    y.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        build_config(Outer, config_file=y)
    with pytest.raises(ConfigError, match="cannot read"):
        build_config(Outer, config_file=tmp_path / "missing.yaml")


@dataclass(frozen=True)
class Floats(StageConfig):
    scale: float = 1.0  # no validate(): the base class alone must refuse non-finite values
    means: tuple[float, ...] = (0.5, 0.5)


@pytest.mark.parametrize("text", ["1e999", "-1e999"])
def test_non_finite_floats_are_refused_everywhere(text: str, tmp_path) -> None:
    with pytest.raises(ConfigError, match="scale must be a finite number"):
        Floats().with_overrides([f"scale={text}"])
    with pytest.raises(ConfigError, match="means must be a finite number"):
        Floats().with_overrides([f"means=[0.1, {text}]"])
    with pytest.raises(ConfigError, match="lr must be a finite number"):
        Outer().with_overrides([f"inner.lr={text}"])
    y = tmp_path / "c.yaml"
    y.write_text("scale: .nan\n")
    with pytest.raises(ConfigError, match="scale must be a finite number, got nan"):
        build_config(Floats, config_file=y)
    with pytest.raises(ConfigError, match="finite"):
        Floats(scale=float("nan"))  # direct construction too


def test_every_float_field_of_every_train_config_must_be_finite() -> None:
    import dataclasses

    from coreg.engine import TrainConfig
    from coreg.methods import list_methods

    checked = 0
    for name in list_methods():
        cfg = TrainConfig.for_method(name)
        for section, sub in (("", cfg), ("model.", cfg.model), ("method.", cfg.method)):
            for f in dataclasses.fields(sub):
                if isinstance(getattr(sub, f.name), float):
                    with pytest.raises(ConfigError, match=f"{f.name} must be a finite number"):
                        cfg.with_overrides([f"{section}{f.name}=1e999"])
                    checked += 1
    assert checked > 20


def test_presets_faithful_and_robust() -> None:
    from coreg.engine import TrainConfig
    from coreg.engine.config import FAITHFUL

    robust = TrainConfig.for_method("coreg")
    assert robust.preset == "robust" and robust.lr_period == 0 and robust.min_steps_per_epoch > 0
    assert robust.method.division != "global"
    faithful = TrainConfig.for_method("coreg", preset="faithful")
    assert faithful.lr_period == 800 and faithful.min_steps_per_epoch == 0 and faithful.method.division == "global"
    assert faithful.lr == 0.01 and faithful.warmup_patience == 0  # the reference's rate, a fixed warm-up
    assert robust.warmup_min_agreement == 0.8 and faithful.warmup_min_agreement == 0
    # a --set after the preset in the same update still wins; the preset key is applied first
    mixed = robust.with_overrides(["lr_period=50", "preset=faithful"])
    assert mixed.lr_period == 50 and mixed.min_steps_per_epoch == 0
    # back to robust restores every key the faithful preset changes
    assert faithful.with_overrides(["preset=robust"]) == robust
    assert set(FAITHFUL) >= {"lr", "lr_period", "min_steps_per_epoch", "warmup_patience", "method.division"}
    # a method's own reference values: Co-Reg's warm-up batch (2 x 256), warmup_only's 512 batch
    assert robust.method.warmup_batch_size == 128 and faithful.method.warmup_batch_size == 0
    assert faithful.method.warmup_view == "strong" and faithful.method.warmup_mixup == 0
    wo = TrainConfig.for_method("warmup_only")
    wo_faithful = TrainConfig.for_method("warmup_only", preset="faithful")
    assert wo.method.batch_size == 128 and wo_faithful.method.batch_size == 512
    assert wo_faithful.with_overrides(["preset=robust"]) == wo
    # method keys a baseline does not have are skipped
    kd = TrainConfig.for_method("kd", preset="faithful")
    assert kd.lr_period == 800 and kd.preset == "faithful"
    with pytest.raises(ConfigError, match="unknown preset"):
        robust.with_overrides(["preset=fast"])
