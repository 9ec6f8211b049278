"""Run an exported coreg student with onnxruntime: a Python class and the ``coreg-serve`` command.

Imports only numpy, Pillow, onnxruntime and the standard library (never torch, never coreg), so
the edge install is ``pip install -r serving/requirements.txt``.

Usage::

    coreg-serve predict --model student.onnx img1.png img2.jpg photos/ [--top-k 3] [--json]
    coreg-serve http --model student.onnx --host 127.0.0.1 --port 8000

The class names and the preprocessing come from the model's ``coreg.*`` metadata (written by
``coreg export``), or from ``labels.json`` / ``preprocess.json`` beside the model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from serving.preprocess import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    PreprocessSpec,
    open_image,
    preprocess_images,
)

__all__ = ["OnnxClassifier", "ModelLoadError", "softmax", "top_k_from_logits", "main"]

ONNX_FORMAT = "coreg-onnx-v1"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


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

    def describe(self) -> dict[str, Any]:
        """Model description for ``/metadata``: classes, spec, source, format and file name."""
        source: Any = self.metadata.get("coreg.source")
        try:
            source = json.loads(source) if source else {}
        except ValueError:
            pass
        quant = self.metadata.get("coreg.quantization")
        return {"model": self.path.name, "format": self.metadata.get("coreg.format", "unknown"),
                "classes": self.classes, "spec": self.spec.to_dict(), "source": source,
                "data_fingerprint": self.metadata.get("coreg.data_fingerprint"),
                "quantization": json.loads(quant) if quant else None,
                "input": {"name": self.input_name, "layout": "NCHW", "dtype": "float32"}}

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


# --------------------------------------------------------------------------- command line


def _collect_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files as given; directories expanded to their image files (sorted, not recursive)."""
    paths: list[Path] = []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            paths.extend(sorted(c for c in p.iterdir() if c.is_file() and c.suffix.lower() in IMAGE_EXTENSIONS))
        elif p.exists():
            paths.append(p)
        else:
            raise ImageDecodeError(f"{p}: no such file or directory")
    return paths


def _parse_size(text: str) -> int:
    """``10MB``, ``512k``, ``1048576`` -> bytes (decimal units, ``KiB``/``MiB`` binary)."""
    t = text.strip().lower().replace(" ", "")
    units = {"kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3, "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3,
             "k": 1000, "m": 1000 ** 2, "g": 1000 ** 3, "b": 1}
    for u, f in units.items():
        if t.endswith(u):
            try:
                return int(float(t[: -len(u)]) * f)
            except ValueError:
                break
    try:
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 10MB, 512KiB, 1048576)") from None


def _parse_count(text: str) -> int:
    """``40M``, ``1.5k``, ``4000000`` -> a count (decimal multipliers)."""
    t = text.strip().lower()
    mult = {"k": 1000, "m": 1000 ** 2, "g": 1000 ** 3}.get(t[-1:], 1)
    try:
        return int(float(t[:-1] if mult > 1 else t) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a count: {text!r} (e.g. 40M, 4000000)") from None


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    """The ``coreg-serve`` argument parser (``predict`` and ``http`` subcommands)."""
    p = argparse.ArgumentParser(prog="coreg-serve", description="Run an exported coreg student (onnxruntime, no torch).")
    sub = p.add_subparsers(dest="command", required=True)

    pr = sub.add_parser("predict", help="Classify image files or folders of images.")
    pr.add_argument("--model", required=True, help="Exported .onnx file.")
    pr.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="Image files and/or folders (not recursive).")
    pr.add_argument("--top-k", type=_positive_int, default=1, help="Classes to print per image (default 1).")
    pr.add_argument("--json", action="store_true", help="Print one JSON document instead of text lines.")
    pr.add_argument("--batch-size", type=_positive_int, default=64, help="Images per onnxruntime call (default 64).")
    pr.add_argument("--threads", type=_positive_int, default=None, help="onnxruntime intra-op threads.")
    pr.add_argument("--max-pixels", type=_parse_count, default=DEFAULT_MAX_PIXELS,
                    help="Refuse images with more pixels than this (default 40M).")

    ht = sub.add_parser("http", help="Serve POST /predict, GET /health and GET /metadata over HTTP.")
    ht.add_argument("--model", required=True, help="Exported .onnx file.")
    ht.add_argument("--host", default="127.0.0.1", help="Address to bind (default 127.0.0.1, loopback only).")
    ht.add_argument("--port", type=int, default=8000, help="Port (default 8000; 0 picks a free one).")
    ht.add_argument("--max-body-bytes", type=_parse_size, default=10 * 1000 ** 2,
                    help="Largest request body (default 10MB); larger ones get 413.")
    ht.add_argument("--max-pixels", type=_parse_count, default=DEFAULT_MAX_PIXELS,
                    help="Largest image width x height (default 40M); larger ones get 413.")
    ht.add_argument("--max-batch", type=_positive_int, default=32, help="Most requests batched together (default 32).")
    ht.add_argument("--batch-wait-ms", type=float, default=5.0,
                    help="How long the worker waits to fill a batch (default 5 ms).")
    ht.add_argument("--timeout-s", type=float, default=30.0, help="Per-request inference timeout (default 30 s; 504).")
    ht.add_argument("--threads", type=_positive_int, default=None, help="onnxruntime intra-op threads.")
    return p


def _format_text(path: Path, top: list[dict[str, Any]]) -> str:
    return f"{path}\t" + "\t".join(f"{t['class']} ({t['score']:.4f})" for t in top)


def predict_command(args: argparse.Namespace) -> int:
    """``coreg-serve predict``: classify files/folders, print text lines or JSON; returns the exit code."""
    clf = OnnxClassifier(args.model, threads=args.threads)
    paths = _collect_inputs(args.inputs)
    if not paths:
        raise ImageDecodeError(f"no image files in {' '.join(args.inputs)}")
    results: list[dict[str, Any]] = []
    # Decode one batch at a time (bounded memory); print only when every input decoded, so a bad
    # file gives one error line and no partial output.
    for i in range(0, len(paths), args.batch_size):
        chunk = paths[i: i + args.batch_size]
        images = [open_image(p, max_pixels=args.max_pixels) for p in chunk]
        for p, top in zip(chunk, clf.top_k(images, k=args.top_k, batch_size=args.batch_size)):
            results.append({"path": str(p), "top_k": top})
    if args.json:
        print(json.dumps({"model": str(args.model), "predictions": results}, indent=2))
    else:
        for r in results:
            print(_format_text(Path(r["path"]), r["top_k"]))
    return 0


def http_command(args: argparse.Namespace) -> int:
    """``coreg-serve http``: serve until interrupted; returns the exit code."""
    from serving.http import serve

    clf = OnnxClassifier(args.model, threads=args.threads)
    serve(clf, host=args.host, port=args.port, max_body_bytes=args.max_body_bytes, max_pixels=args.max_pixels,
          max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms, timeout_s=args.timeout_s)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``coreg-serve``. Errors print one line to stderr and exit with code 2."""
    args = build_parser().parse_args(argv)
    try:
        code = predict_command(args) if args.command == "predict" else http_command(args)
    except (ImageDecodeError, ModelLoadError, OSError) as e:
        if os.environ.get("COREG_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"coreg-serve: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
