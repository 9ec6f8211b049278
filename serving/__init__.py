"""Torch-free inference for exported coreg students: onnxruntime + numpy + Pillow only.

Install on the edge with ``pip install -r serving/requirements.txt`` (numpy, Pillow, onnxruntime)
and put this folder on the path. Never imports torch or coreg.

* :mod:`serving.preprocess`: the training-side image conversion and normalisation, reproduced.
* :mod:`serving.runner`: :class:`~serving.runner.OnnxClassifier` and the ``coreg-serve`` command.
* :mod:`serving.http`: the ``coreg-serve http`` server (standard library ``http.server``).
"""

__all__ = ["preprocess", "runner", "http"]
