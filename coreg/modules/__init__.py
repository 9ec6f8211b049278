"""Stateful building blocks of Co-Reg: the labelled MoCo queue, the prototypes and EMA helpers."""

from coreg.modules.labeled_queue import LabeledQueue
from coreg.modules.momentum import copy_parameters, update_momentum
from coreg.modules.prototypes import PrototypeModule

__all__ = ["LabeledQueue", "PrototypeModule", "copy_parameters", "update_momentum"]
