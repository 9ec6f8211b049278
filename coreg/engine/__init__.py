"""Training engine: one loop for every method (device, autocast, LR, checkpoints, evaluation)."""

from coreg.engine.config import ModelConfig, TrainConfig
from coreg.engine.trainer import EpochCallback, FitResult, Trainer, fit, prepare_data

__all__ = ["ModelConfig", "TrainConfig", "Trainer", "fit", "prepare_data", "FitResult", "EpochCallback"]
