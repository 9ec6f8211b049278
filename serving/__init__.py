"""Torch-free inference for exported coreg students: onnxruntime + numpy + Pillow only.

Install on the edge with ``pip install -r serving/requirements.txt`` (numpy, Pillow, onnxruntime)
and put this folder on the path. Never imports torch or coreg.

Modules, each importing only those above it (no cycles):

* :mod:`serving.preprocess`: the training-side image conversion and normalisation, reproduced.
* :mod:`serving.classifier`: :class:`~serving.classifier.OnnxClassifier` (model loading, inference, top-k).
* :mod:`serving.http`: the HTTP server (standard library ``socketserver`` / ``http.server``).
* :mod:`serving.runner`: the ``coreg-serve`` command line (``predict`` and ``http``).
"""

__all__ = ["preprocess", "classifier", "http", "runner"]
