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
