"""Configuration of the train stage (defaults < ``--config`` YAML < ``--set`` flags)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from coreg.config import ConfigError, StageConfig, check
from coreg.methods.base import MethodConfig

DEVICES = ("auto", "cpu", "cuda", "mps")

FAITHFUL: dict[str, Any] = {
    # engine: the reference's schedule (one pass per epoch, learning rate 0.01 on a cosine with a
    # fixed period of 800 epochs, a warm-up of exactly `warmup` epochs)
    "lr": 0.01,
    "lr_period": 800,
    "lr_warmup_epochs": 0.0,
    "min_steps_per_epoch": 0,
    "warmup_patience": 0,
    "warmup_min_after": 0,
    "warmup_min_agreement": 0.0,
    # Co-Reg: the reference's division and budget (keys a method's config lacks are skipped)
    "method.division": "global",
    "method.warmup_view": "strong",
    "method.warmup_mixup": 0.0,
}
"""The reference behaviour (spec sections 3 and 6): ``--preset faithful`` / ``--set preset=faithful``."""


def preset_values(name: str, method: MethodConfig) -> dict[str, Any]:
    """The dotted config values a preset sets (only the method keys ``method`` has).

    ``robust`` (the default) restores the defaults of every key ``faithful`` changes. A method
    config class may add its own reference values in a ``FAITHFUL`` class attribute (field name ->
    value).

    Raises:
        ConfigError: unknown preset.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(method)}
    out: dict[str, Any] = {}
    # a method's own reference values (e.g. warmup_only's 512 batch) join the shared ones
    own = {f"method.{k}": v for k, v in getattr(type(method), "FAITHFUL", {}).items()}
    table = {**FAITHFUL, **own}
    for key in table:
        head, _, sub = key.partition(".")
        if head == "method" and sub not in fields:
            continue
        if name == "faithful":
            out[key] = table[key]
        elif head == "method":
            out[key] = next(f for f in dataclasses.fields(method) if f.name == sub).default
        else:
            out[key] = next(f for f in dataclasses.fields(TrainConfig) if f.name == key).default
    return out


PRESETS = ("robust", "faithful")


@dataclass(frozen=True)
class ModelConfig(StageConfig):
    """The student network (spec section 4)."""

    name: str = "preact_resnet18"
    width: float = 1.0
    proj_dim: int = 128

    def validate(self) -> None:
        check(self.width > 0, f"model.width must be > 0, got {self.width}")
        check(self.proj_dim >= 1, f"model.proj_dim must be >= 1, got {self.proj_dim}")


@dataclass(frozen=True)
class TrainConfig(StageConfig):
    """Engine settings; ``method`` holds the chosen method's own config.

    ``epochs`` is the number of epochs run (the reference's ``--num_epochs E`` runs E + 1);
    ``warmup`` the warm-up epochs W. The learning rate follows a cosine over ``lr_period``
    epochs; ``0`` (the default) means the run's own length, so every run ends at a low rate (the
    reference fixes the period at 800 whatever the length, spec 3.9: the ``faithful`` preset).
    ``lr_warmup_epochs``: the rate ramps linearly (per step) from 0 over the first epochs (0 = off,
    the reference). Without it a width-1.0 PreAct ResNet-18 at lr 0.1 was thrown near chance in its
    first epoch and never recovered (the warm-up loss ``PCE + NE`` is low for near-uniform
    predictions): digits, flip q=0.1 eta=0.2, 10 warm-up epochs: 0.12 test accuracy; with a
    2-epoch ramp 0.99 (lr 0.03 without a ramp: 0.98).
    ``min_steps_per_epoch``: every phase of an epoch runs at least this many SGD steps (extra
    reshuffled passes on small data; the reference runs one pass, e.g. 3 steps per warm-up epoch
    for 1,300 images at batch 512, which leaves the networks near chance after a short warm-up).
    ``warmup_patience``: 0 runs exactly ``warmup`` warm-up epochs; above 0, ``warmup`` is the
    minimum and warm-up goes on while the label-free selection metric (``val_approx_acc``, or
    ``val_acc`` with gold) still beats its best by ``warmup_min_delta`` within the last
    ``warmup_patience`` epochs: co-training starts once the networks have converged on the
    candidate sets, not while they are still weak (a division by a weak network is noise), and a
    budget too short for that convergence stays a warm-up of two networks.
    ``warmup_min_agreement``: with two or more networks, co-training also waits until they agree
    on at least this share of the held-out images (``val_agreement``, label-free: the agreement of
    two independently trained networks tracks their accuracy, from above when both learn the
    annotator's systematic mistakes). Self-training on pseudo-labels only pays once those labels
    are mostly right; below it the run stays a warm-up ensemble. 0.8 is measured: co-training
    paid where the networks agreed on 0.87 (digits, instance annotator) and 0.95 (digits, flip)
    at the hand-over, and cost 4-7 points on CIFAR-10 with a pre-trained annotator, where they
    agreed on 0.5-0.75 (``benchmarks/accuracy_small.py``).
    ``val_fraction`` of the training images is held out (with candidate labels only) for
    label-free model selection (covering rate, approximated accuracy).
    """

    method_name: str = "coreg"
    preset: str = "robust"
    epochs: int = 100
    warmup: int = 50
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_decay_rate: float = 0.1
    lr_period: int = 0
    lr_warmup_epochs: float = 2.0
    min_steps_per_epoch: int = 20
    warmup_patience: int = 3
    warmup_min_delta: float = 0.005
    warmup_min_after: int = 10
    warmup_min_agreement: float = 0.8
    device: str = "auto"
    amp: str = "auto"
    channels_last: bool = True
    strong_augment: str = "reference"
    eval_batch_size: int = 512
    val_fraction: float = 0.1
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)

    def validate(self) -> None:
        check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        check(0 <= self.warmup <= self.epochs, f"warmup must be in [0, epochs={self.epochs}], got {self.warmup}")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        check(self.weight_decay >= 0, "weight_decay must be >= 0")
        check(0 < self.lr_decay_rate <= 1, "lr_decay_rate must be in (0, 1]")
        check(self.lr_period >= 0, "lr_period must be >= 0 (0 = the run length)")
        check(self.min_steps_per_epoch >= 0, "min_steps_per_epoch must be >= 0")
        check(self.lr_warmup_epochs >= 0, f"lr_warmup_epochs must be >= 0, got {self.lr_warmup_epochs}")
        check(self.warmup_patience >= 0, "warmup_patience must be >= 0 (0 = a fixed warm-up of `warmup` epochs)")
        check(self.warmup_min_delta >= 0, "warmup_min_delta must be >= 0")
        check(self.warmup_min_after >= 0, "warmup_min_after must be >= 0")
        check(0.0 <= self.warmup_min_agreement <= 1.0, "warmup_min_agreement must be in [0, 1]")
        check(self.preset in PRESETS, f"preset must be one of {list(PRESETS)}, got {self.preset!r}")
        check(self.device in DEVICES, f"device must be one of {list(DEVICES)}, got {self.device!r}")
        check(self.amp in ("auto", "bf16", "off"), f"amp must be auto, bf16 or off, got {self.amp!r}")
        check(self.strong_augment in ("reference", "torchvision"),
              f"strong_augment must be reference or torchvision, got {self.strong_augment!r}")
        check(self.eval_batch_size >= 1, "eval_batch_size must be >= 1")
        check(0.0 <= self.val_fraction < 0.5, f"val_fraction must be in [0, 0.5), got {self.val_fraction}")

    @classmethod
    def for_method(cls, name: str, *, preset: str = "robust") -> TrainConfig:
        """Defaults with ``name``'s method config, under ``preset``."""
        from coreg.methods import get_method

        cfg = cls(method_name=name, method=get_method(name).config_cls())
        return cfg.with_updates({"preset": preset}) if preset != "robust" else cfg

    def with_updates(self, data: dict[str, Any], *, prefix: str = "") -> TrainConfig:
        """As :meth:`StageConfig.with_updates`; a ``preset`` key is applied first (its values), then
        the other keys of the same update on top of it."""
        if "preset" not in data:
            return super().with_updates(data, prefix=prefix)
        name = data["preset"]
        method = self.method
        if "method_name" in data:
            from coreg.methods import get_method

            method = get_method(str(data["method_name"])).config_cls()
        base = super().with_updates({"preset": name, **preset_values(str(name), method)}, prefix=prefix)
        return base.with_updates({k: v for k, v in data.items() if k != "preset"}, prefix=prefix)
