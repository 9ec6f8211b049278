"""Training methods: Co-Reg and the baselines, all on one engine (see ``base.Method``).

Importing this package registers every method (the ``register_method`` decorators run).
"""

from coreg.methods import baselines as _baselines  # noqa: F401,E402  (registration)
from coreg.methods import coreg as _coreg  # noqa: F401,E402  (registration)
from coreg.methods.base import (
           EpochContext,
           EpochPlan,
           Method,
           MethodConfig,
           StepContext,
           StepOutput,
           TrainData,
)
from coreg.methods.registry import create_method, get_method, list_methods, register_method

__all__ = ["Method", "MethodConfig", "EpochContext", "EpochPlan", "StepContext", "StepOutput", "TrainData",
           "create_method", "get_method", "list_methods", "register_method"]
