"""Per-method Optuna search spaces: ``suggest(method, trial) -> ["key=value", ...]`` overrides.

Each entry of :data:`SPACES` maps a trial to ``--set``-style override strings for
:meth:`coreg.engine.TrainConfig.with_overrides` (``"lr=0.02"``, ``"method.lambda_u=0.5"``). Every
registered method has an entry (a test checks it). The engine-level warm-up length ``warmup`` is
deliberately absent: the tuner sets it. Ranges follow the papers' reported grids where they give
one, widened moderately for the VLM-noise setting.

Optuna is imported only for type checking, so importing this module stays cheap; the spaces only
call ``trial.suggest_*``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

__all__ = ["SPACES", "suggest", "register_space"]

Space = Callable[["optuna.Trial"], list[str]]
SPACES: dict[str, Space] = {}


def register_space(name: str) -> Callable[[Space], Space]:
    """Decorator adding a search space under a method name (duplicates are an error)."""

    def deco(fn: Space) -> Space:
        if name in SPACES:
            raise ValueError(f"search space {name!r} registered twice")
        SPACES[name] = fn
        return fn

    return deco


def suggest(method: str, trial: optuna.Trial) -> list[str]:
    """Overrides for ``method`` suggested by ``trial``.

    Raises:
        ValueError: no space for ``method`` (the message lists the valid names).
    """
    if method not in SPACES:
        raise ValueError(f"no search space for method {method!r}; valid: {', '.join(sorted(SPACES))}")
    return SPACES[method](trial)


def _lr(trial: optuna.Trial, low: float = 3e-3, high: float = 0.1) -> str:
    return f"lr={trial.suggest_float('lr', low, high, log=True)!r}"


def _wd(trial: optuna.Trial) -> str:
    return f"weight_decay={trial.suggest_float('weight_decay', 1e-5, 1e-3, log=True)!r}"


def _bs(trial: optuna.Trial, choices: tuple[int, ...] = (64, 128, 256)) -> str:
    return f"method.batch_size={trial.suggest_categorical('batch_size', list(choices))!r}"


@register_space("coreg")
def _coreg(trial: optuna.Trial) -> list[str]:
    return [
        _lr(trial),
        f"method.lambda_u={trial.suggest_float('lambda_u', 0.1, 50.0, log=True)!r}",
        f"method.T={trial.suggest_float('T', 0.25, 1.0)!r}",
        f"method.p_threshold={trial.suggest_float('p_threshold', 0.3, 0.8)!r}",
        f"method.alpha={trial.suggest_categorical('alpha', [0.5, 1.0, 4.0])!r}",
        f"method.proto_weight={trial.suggest_float('proto_weight', 0.0, 1.0)!r}",
        f"method.cont_weight={trial.suggest_float('cont_weight', 0.0, 1.0)!r}",
        f"model.proj_dim={trial.suggest_categorical('proj_dim', [64, 128, 256])!r}",
    ]


@register_space("zero_shot")
def _zero_shot(trial: optuna.Trial) -> list[str]:
    # Nothing is trained; the space is empty on purpose (one trial is enough).
    return []


@register_space("kd")
def _kd(trial: optuna.Trial) -> list[str]:
    return [_lr(trial), _wd(trial), _bs(trial),
            f"method.temperature={trial.suggest_float('temperature', 0.5, 4.0, log=True)!r}"]


@register_space("warmup_only")
def _warmup_only(trial: optuna.Trial) -> list[str]:
    return [_lr(trial), _bs(trial, (128, 256, 512)),
            f"method.neg_entropy_weight={trial.suggest_float('neg_entropy_weight', 0.0, 2.0)!r}"]


@register_space("proden")
def _proden(trial: optuna.Trial) -> list[str]:
    return [_lr(trial), _wd(trial), _bs(trial)]


@register_space("cc")
def _cc(trial: optuna.Trial) -> list[str]:
    return [_lr(trial), _wd(trial), _bs(trial)]


@register_space("rc")
def _rc(trial: optuna.Trial) -> list[str]:
    return [_lr(trial), _wd(trial), _bs(trial),
            f"method.update={trial.suggest_categorical('update', ['batch', 'epoch'])!r}"]


@register_space("lws")
def _lws(trial: optuna.Trial) -> list[str]:
    return [_lr(trial), _wd(trial), _bs(trial),
            f"method.beta={trial.suggest_float('beta', 0.5, 2.0)!r}"]


@register_space("cr_dpll")
def _cr_dpll(trial: optuna.Trial) -> list[str]:
    return [_lr(trial), _wd(trial),
            f"method.lam={trial.suggest_float('lam', 0.1, 2.0, log=True)!r}",
            f"method.ramp_epochs={trial.suggest_int('ramp_epochs', 5, 100, log=True)!r}"]


@register_space("pico")
def _pico(trial: optuna.Trial) -> list[str]:
    return [_lr(trial), _wd(trial),
            f"method.lam={trial.suggest_float('lam', 0.05, 1.0, log=True)!r}",
            f"method.proto_m={trial.suggest_categorical('proto_m', [0.9, 0.99, 0.999])!r}",
            f"method.phi_end={trial.suggest_float('phi_end', 0.5, 0.95)!r}",
            f"method.prot_start={trial.suggest_int('prot_start', 0, 10)!r}",
            f"model.proj_dim={trial.suggest_categorical('proj_dim', [64, 128, 256])!r}"]


@register_space("dividemix")
def _dividemix(trial: optuna.Trial) -> list[str]:
    return [_lr(trial),
            f"method.lambda_u={trial.suggest_float('lambda_u', 0.0, 150.0)!r}",
            f"method.p_threshold={trial.suggest_float('p_threshold', 0.3, 0.8)!r}",
            f"method.T={trial.suggest_float('T', 0.25, 1.0)!r}",
            f"method.alpha={trial.suggest_categorical('alpha', [0.5, 1.0, 4.0])!r}",
            f"method.penalty={trial.suggest_categorical('penalty', [False, True])!r}"]


@register_space("alim")
def _alim(trial: optuna.Trial) -> list[str]:
    mode = trial.suggest_categorical("lambda_mode", ["fixed", "adaptive"])
    out = [_lr(trial), _wd(trial),
           f"method.variant={trial.suggest_categorical('variant', ['onehot', 'scale'])!r}",
           f"method.lambda_mode={mode!r}",
           f"method.mixup_weight={trial.suggest_float('mixup_weight', 0.0, 2.0)!r}"]
    if mode == "fixed":
        out.append(f"method.lam={trial.suggest_float('lam', 0.0, 1.0)!r}")
    else:
        out.append(f"method.noise_rate={trial.suggest_float('noise_rate', 0.05, 0.5)!r}")
    return out
