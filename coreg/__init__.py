"""coreg: turn a vision-language model's noisy candidate labels into a small, fast student.

Layers: ``coreg.data`` (datasets, annotation files, synthetic labels), ``coreg.annotate`` (CLIP
through open_clip), ``coreg.models``, ``coreg.losses``, ``coreg.modules``, ``coreg.methods``
(Co-Reg and baselines), ``coreg.engine`` (training loop), ``coreg.tracking`` (MLflow),
``coreg.tuning`` (Optuna), ``coreg.export`` (ONNX). Heavy modules are imported lazily.
"""

from coreg.config import ConfigError, StageConfig
from coreg.data import Annotation, AnnotationError, DataBundle, DatasetError, load_dataset

__version__ = "0.1.0"

__all__ = ["ConfigError", "StageConfig", "Annotation", "AnnotationError", "DataBundle", "DatasetError",
           "load_dataset", "__version__"]
