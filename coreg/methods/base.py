"""How a method plugs into the engine (STYLE section 3).

The engine owns device, autocast, seeding, optimiser stepping, LR schedule, checkpointing,
evaluation and tracking. A :class:`Method` owns its networks, losses and per-batch maths, plus one
epoch hook (:meth:`Method.on_epoch_start`) that returns an :class:`EpochPlan`: an ordered mapping
``{phase: iterable of batches}``; the engine steps ``optimizers[phase]`` on ``StepOutput.losses["loss"]``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from coreg.config import StageConfig
from coreg.data.datasets import ImageSpec
from coreg.data.transforms import Augmenter
from coreg.errors import CoregError


@dataclass(frozen=True)
class MethodConfig(StageConfig):
    """Base of every method's configuration (subclasses add their hyper-parameters)."""


@dataclass
class TrainData:
    """Everything a method trains on, already on the training device.

    Attributes:
        images: uint8 ``[N, C, H, W]`` training images (the selection hold-out excluded).
        candidates: float ``[N, K]`` binary candidate matrix.
        scores: float ``[N, K]`` annotator soft scores (rows sum to 1), or ``None``.
        noisy_labels: long ``[N]`` the annotator's single label per image.
        gold: long ``[N]`` gold labels for diagnostics only (never used for training), or ``None``.
        trusted: bool ``[N]``: images whose candidate set is a trusted gold label (few-shot), or ``None``.
        spec: image spec; ``augment`` makes the views.
        classes: class names.
    """

    images: Tensor
    candidates: Tensor
    scores: Tensor | None
    noisy_labels: Tensor
    gold: Tensor | None
    spec: ImageSpec
    augment: Augmenter
    classes: list[str]
    trusted: Tensor | None = None

    def __post_init__(self) -> None:
        # A NaN in the inputs would surface epochs later as a "diverged" loss and a hint to lower
        # the lr: name the input instead.
        for name in ("candidates", "scores"):
            t = getattr(self, name)
            if t is not None and t.is_floating_point():
                bad = (~torch.isfinite(t)).any(1).nonzero().flatten()
                if bad.numel():
                    raise CoregError(f"training {name} hold NaN or inf in {bad.numel()} rows (first: row "
                                     f"{int(bad[0])}): bad input, not a diverged run")

    @property
    def num_samples(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.candidates.shape[1])

    @property
    def device(self) -> torch.device:
        return self.images.device


@dataclass
class EpochContext:
    """What a method sees at the start/end of an epoch."""

    epoch: int
    num_epochs: int
    warmup: int
    data: TrainData
    generator: torch.Generator
    rng: np.random.Generator
    seed: int
    device: torch.device
    min_steps: int = 0  # each phase runs at least this many batches (repeated, reshuffled passes)


@dataclass
class StepContext:
    """What a method sees at every step."""

    epoch: int
    warmup: int
    phase: str
    batch_index: int
    num_batches: int
    generator: torch.Generator
    rng: np.random.Generator
    data: TrainData
    optimizer: torch.optim.Optimizer | None = None


@dataclass
class EpochPlan:
    """Ordered phases of one epoch, each an iterable of batches, plus a report to log."""

    phases: dict[str, Iterable[Any]]
    report: dict[str, float] = field(default_factory=dict)
    lengths: dict[str, int] = field(default_factory=dict)


@dataclass
class StepOutput:
    """``losses["loss"]`` is what the engine back-propagates; ``report`` holds log-only scalars."""

    losses: dict[str, Tensor]
    report: dict[str, Any] = field(default_factory=dict)  # floats or 0-d tensors (synced once per epoch)


class Method(nn.Module):
    """Base class of every training method.

    Args:
        cfg: the method's config.
        data: training data (used for sizes; methods keep what they need).
        model_factory: ``() -> nn.Module`` creating one fresh network (``forward -> (logits, z)``).
        optim: optimiser settings (``lr``, ``momentum``, ``weight_decay``).
    """

    name: ClassVar[str] = "base"
    config_cls: ClassVar[type[MethodConfig]] = MethodConfig
    uses_run_length: ClassVar[bool] = False
    """Whether epochs depend on ``EpochContext.num_epochs`` (a ramp over the run): a resumed run of such
    a method cannot grow its ``epochs`` (see :mod:`coreg.engine.resume`)."""

    def __init__(self, cfg: MethodConfig, *, data: TrainData, model_factory: Any, optim: dict[str, float]) -> None:
        super().__init__()
        self.cfg = cfg
        self.optim_args = dict(optim)
        self.num_classes = data.num_classes
        self.num_samples = data.num_samples

    # ----------------------------------------------------------------- required

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """One optimiser per phase name."""
        raise NotImplementedError

    def on_epoch_start(self, ctx: EpochContext) -> EpochPlan:
        """Epoch-level work (divisions, warm-up switch) and the batches of each phase."""
        raise NotImplementedError

    def training_step(self, batch: Any, ctx: StepContext) -> StepOutput:
        """Per-batch maths; returns the loss to back-propagate for ``ctx.phase``."""
        raise NotImplementedError

    def eval_nets(self) -> dict[str, nn.Module]:
        """The networks whose accuracy is reported individually (``{"net1": ..., "net2": ...}``)."""
        raise NotImplementedError

    # ----------------------------------------------------------------- optional

    def on_epoch_end(self, ctx: EpochContext) -> dict[str, float]:
        """Metrics to log after the epoch's training phases."""
        return {}

    def eval_module(self) -> nn.Module:
        """What evaluate/export/register see: logits ``[B, K]`` from normalised inputs."""
        from coreg.models import LogitSumEnsemble

        return LogitSumEnsemble(list(self.eval_nets().values()))

    def extra_state(self) -> dict[str, Any]:
        """Non-tensor state to checkpoint (histories, counters)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`extra_state`."""

    def sgd(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        """SGD with the engine's settings (spec 3.9: lr 0.01, momentum 0.9, wd 5e-4, no Nesterov)."""
        return torch.optim.SGD(list(params), lr=self.optim_args["lr"], momentum=self.optim_args["momentum"],
                               weight_decay=self.optim_args["weight_decay"])


def index_batches(indices: Tensor, batch_size: int, *, generator: torch.Generator | None,
                  drop_last: bool = False, min_batches: int = 0) -> list[Tensor]:
    """Split ``indices`` (shuffled with ``generator`` when given) into batches (last short kept).

    A last batch of a single sample is merged into the previous one: train-mode BatchNorm cannot
    normalise one value per channel. With ``min_batches``, further passes (each reshuffled) are
    appended until there are at least that many batches: a small dataset then still gets enough
    SGD steps per epoch (the budget is counted in steps, not only in passes). ``min_batches=0``
    draws exactly one permutation, as before.
    """
    out: list[Tensor] = []
    while True:
        perm = indices
        if generator is not None:
            perm = indices[torch.randperm(len(indices), generator=generator).to(indices.device)]
        part = list(torch.split(perm, batch_size))
        if drop_last and part and len(part[-1]) < batch_size:
            part = part[:-1]
        if len(part) >= 2 and len(part[-1]) == 1:
            last = part.pop()  # (popping inside the assignment's right side would overwrite part[-3])
            part[-1] = torch.cat([part[-1], last])
        out.extend(part)
        if len(out) >= min_batches or not part:
            return out


def labelled_unlabelled_batches(labelled: Tensor, batch_size: int, *, generator: torch.Generator,
                                min_batches: int = 0, use_unlabelled: bool = True) -> tuple[list[Tensor], list[Tensor]]:
    """Co-training batches (DivideMix / Co-Reg, spec 3.3): shuffled batches over the labelled set
    P = ``labelled.nonzero()`` (at least ``min_batches``), each paired with a batch of the
    unlabelled set U; the U loader restarts (reshuffled) whenever it runs out. Without U (empty,
    or ``use_unlabelled=False``) the U batches are empty.

    Returns:
        ``(labelled_batches, unlabelled_batches)`` of equal length.
    """
    p_idx = torch.nonzero(labelled).flatten()
    u_idx = torch.nonzero(~labelled).flatten()
    lab = index_batches(p_idx, batch_size, generator=generator, min_batches=min_batches) if len(p_idx) else []
    if not use_unlabelled or len(u_idx) == 0:
        empty = torch.empty(0, dtype=torch.long, device=labelled.device)
        return lab, [empty for _ in lab]
    unl: list[Tensor] = []
    pool: list[Tensor] = []
    for _ in lab:
        if not pool:
            pool = index_batches(u_idx, batch_size, generator=generator)[::-1]
        unl.append(pool.pop())
    return lab, unl


def config_fields(cfg: MethodConfig) -> dict[str, Any]:
    """The config as a plain dict (for docs and reports)."""
    return dataclasses.asdict(cfg)
