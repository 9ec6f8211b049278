"""Configuration of the train stage (defaults < ``--config`` YAML < ``--set`` flags)."""

from __future__ import annotations

from dataclasses import dataclass, field

from coreg.config import StageConfig, check
from coreg.methods.base import MethodConfig

DEVICES = ("auto", "cpu", "cuda", "mps")


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
    ``warmup`` the warm-up epochs W. The learning rate follows the reference's cosine with a
    fixed period ``lr_period`` (800), not the run length (spec 3.9).
    ``val_fraction`` of the training images is held out (with candidate labels only) for
    label-free model selection (covering rate, approximated accuracy).
    """

    method_name: str = "coreg"
    epochs: int = 100
    warmup: int = 50
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_decay_rate: float = 0.1
    lr_period: int = 800
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
        check(self.lr_period >= 1, "lr_period must be >= 1")
        check(self.device in DEVICES, f"device must be one of {list(DEVICES)}, got {self.device!r}")
        check(self.amp in ("auto", "bf16", "off"), f"amp must be auto, bf16 or off, got {self.amp!r}")
        check(self.strong_augment in ("reference", "torchvision"),
              f"strong_augment must be reference or torchvision, got {self.strong_augment!r}")
        check(self.eval_batch_size >= 1, "eval_batch_size must be >= 1")
        check(0.0 <= self.val_fraction < 0.5, f"val_fraction must be in [0, 0.5), got {self.val_fraction}")

    @classmethod
    def for_method(cls, name: str) -> TrainConfig:
        """Defaults with ``name``'s method config."""
        from coreg.methods import get_method

        return cls(method_name=name, method=get_method(name).config_cls())
