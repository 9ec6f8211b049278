"""An exported coreg student on onnxruntime: model loading, preprocessing, inference and top-k.

Shared by the command line (:mod:`serving.runner`) and the HTTP server (:mod:`serving.http`);
imports neither of them, and only numpy, Pillow, onnxruntime and the standard library (never
torch, never coreg).

The class names and the preprocessing come from the model's ``coreg.*`` metadata (written by
``coreg export``), or from ``labels.json`` / ``preprocess.json`` beside the model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from serving.preprocess import PreprocessSpec, preprocess_images

__all__ = ["OnnxClassifier", "ModelLoadError", "softmax", "top_k_from_logits", "PUBLIC_SOURCE_KEYS"]

# Provenance keys that are safe to show to anyone who can reach the server: no run ids, URIs or
# local paths (those are in the rest of ``coreg.source`` and appear only when asked for).
PUBLIC_SOURCE_KEYS = ("method", "members")


class ModelLoadError(ValueError):
    """The model file is missing, unreadable, or lacks the coreg metadata."""


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``[B, K]`` logits (float64 for stable scores)."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def top_k_from_logits(logits: np.ndarray, classes: Sequence[str], *, k: int = 5) -> list[list[dict[str, Any]]]:
    """Per row, the ``k`` best classes as ``{"class", "index", "score"}`` (softmax probability)."""
    probs = softmax(logits)
    k = max(1, min(int(k), probs.shape[1]))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[{"class": classes[int(i)], "index": int(i), "score": float(row[i])} for i in idx]
            for row, idx in zip(probs, order)]


def _read_sidecar(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot read {path}: {type(e).__name__}: {e}") from None


class OnnxClassifier:
    """An exported coreg student on onnxruntime (CPU).

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (default: onnxruntime's choice, usually all cores).

    Attributes:
        classes: class names in label order.
        spec: the preprocessing spec.
        metadata: the raw ``metadata_props`` (strings).
        input_name: the graph input name.

    Raises:
        ModelLoadError: missing/unreadable file, or no class names / spec in its metadata or beside it.
    """

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelLoadError(f"model file {self.path} does not exist")
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = int(threads)
            so.inter_op_num_threads = 1
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types for bad files
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise ModelLoadError(f"cannot load ONNX model {self.path}: {type(e).__name__}: {msg}") from None
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.input_name: str = self.session.get_inputs()[0].name
        self.classes: list[str] = self._load_classes()
        self.spec: PreprocessSpec = self._load_spec()
        out_dim = self.session.get_outputs()[0].shape[-1]
        if isinstance(out_dim, int) and out_dim != len(self.classes):
            raise ModelLoadError(f"{self.path}: {len(self.classes)} class names for {out_dim} outputs")

    def _load_classes(self) -> list[str]:
        if "coreg.classes" in self.metadata:
            classes = json.loads(self.metadata["coreg.classes"])
        elif (self.path.parent / "labels.json").is_file():
            classes = _read_sidecar(self.path.parent / "labels.json")
            classes = classes.get("classes", classes) if isinstance(classes, dict) else classes
        else:
            raise ModelLoadError(f"{self.path} has no coreg.classes metadata and no labels.json beside it")
        return [str(c) for c in classes]

    def _load_spec(self) -> PreprocessSpec:
        if "coreg.spec" in self.metadata:
            d = json.loads(self.metadata["coreg.spec"])
        elif (self.path.parent / "preprocess.json").is_file():
            d = _read_sidecar(self.path.parent / "preprocess.json")
        else:
            raise ModelLoadError(f"{self.path} has no coreg.spec metadata and no preprocess.json beside it")
        try:
            return PreprocessSpec.from_dict(d)
        except ValueError as e:
            raise ModelLoadError(f"{self.path}: {e}") from None

    @property
    def num_classes(self) -> int:
        """K."""
        return len(self.classes)

    def describe(self, *, provenance: bool = False) -> dict[str, Any]:
        """Model description for ``/metadata``: file name, format, classes, spec, input, quantization.

        Args:
            provenance: also give the full ``coreg.source`` (run id, model URI, annotation path, ...)
                and the training-data fingerprint. Off by default: these name local paths and
                tracking-server ids that a public endpoint should not reveal.
        """
        source: Any = self.metadata.get("coreg.source")
        try:
            source = json.loads(source) if source else {}
        except ValueError:
            source = {}
        if not isinstance(source, dict):
            source = {}
        quant = self.metadata.get("coreg.quantization")
        out = {"model": self.path.name, "format": self.metadata.get("coreg.format", "unknown"),
               "classes": self.classes, "spec": self.spec.to_dict(),
               "source": source if provenance else {k: source[k] for k in PUBLIC_SOURCE_KEYS if k in source},
               "quantization": json.loads(quant) if quant else None,
               "input": {"name": self.input_name, "layout": "NCHW", "dtype": "float32"}}
        if provenance:
            out["data_fingerprint"] = self.metadata.get("coreg.data_fingerprint")
        return out

    def preprocess(self, images: Sequence[Image.Image]) -> np.ndarray:
        """PIL images -> the network input float32 ``[B, C, H, W]``."""
        return preprocess_images(images, self.spec)

    def predict_array(self, x: np.ndarray) -> np.ndarray:
        """Logits ``[B, K]`` of a normalised float32 ``[B, C, H, W]`` batch (one onnxruntime call)."""
        if len(x) == 0:
            return np.zeros((0, self.num_classes), dtype=np.float32)
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    def predict(self, images: Sequence[Image.Image], *, batch_size: int = 64) -> np.ndarray:
        """Logits ``[B, K]`` of PIL images (any mode and size), in batches of ``batch_size``."""
        outs = [self.predict_array(self.preprocess(images[i: i + batch_size]))
                for i in range(0, len(images), max(1, batch_size))]
        return np.concatenate(outs) if outs else np.zeros((0, self.num_classes), dtype=np.float32)

    def top_k(self, images: Sequence[Image.Image], *, k: int = 5, batch_size: int = 64) -> list[list[dict[str, Any]]]:
        """Per image, the ``k`` best classes as ``{"class", "index", "score"}``."""
        return top_k_from_logits(self.predict(images, batch_size=batch_size), self.classes, k=k)
