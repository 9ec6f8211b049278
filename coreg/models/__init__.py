"""Student networks and the model registry.

Importing this package imports every implementation module, so their ``@register_model``
decorators run (the timm pattern). Registered: ``"preact_resnet18"`` (the paper's backbone) and
``"tiny_cnn"`` (for tests and smoke runs).
"""

from coreg.models import cnn, ensemble, resnet  # noqa: F401  (registration side effects)
from coreg.models.cnn import TinyCNN
from coreg.models.ensemble import LogitsOnly, LogitSumEnsemble
from coreg.models.registry import create_model, list_models, register_model
from coreg.models.resnet import PreActResNet18

__all__ = ["create_model", "list_models", "register_model", "LogitSumEnsemble", "LogitsOnly",
           "PreActResNet18", "TinyCNN"]
