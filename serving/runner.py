"""The ``coreg-serve`` command: classify image files, or serve an exported coreg student over HTTP.

The model side lives in :mod:`serving.classifier`, the server in :mod:`serving.http`; this module
is only the command line. Imports only numpy, Pillow, onnxruntime and the standard library (never
torch, never coreg), so the edge install is ``pip install -r serving/requirements.txt``.

Usage::

    coreg-serve predict --model student.onnx img1.png img2.jpg photos/ [--top-k 3] [--json]
    coreg-serve http --model student.onnx --host 127.0.0.1 --port 8000

Errors (bad arguments, a missing model, an undecodable image, a port in use) print one
``Error: ...`` line to stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from serving.classifier import ModelLoadError, OnnxClassifier, softmax, top_k_from_logits
from serving.http import ServerConfig, ServerStartError, make_server
from serving.preprocess import DEFAULT_MAX_PIXELS, ImageDecodeError, open_image

# The classifier names are re-exported for code written against the single-module runner.
__all__ = ["main", "build_parser", "OnnxClassifier", "ModelLoadError", "softmax", "top_k_from_logits"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


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


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return v


def _port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"must be in 0-65535 (0 picks a free port), got {v}")
    return v


class _Parser(argparse.ArgumentParser):
    """Usage errors as one ``Error: ...`` line (exit 2), like every other coreg-serve error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"Error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``coreg-serve`` argument parser (``predict`` and ``http`` subcommands)."""
    p = _Parser(prog="coreg-serve", description="Run an exported coreg student (onnxruntime, no torch).")
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

    d = ServerConfig()
    ht = sub.add_parser("http", help="Serve POST /predict, GET /health and GET /metadata over HTTP.")
    ht.add_argument("--model", required=True, help="Exported .onnx file.")
    ht.add_argument("--host", default="127.0.0.1", help="Address to bind (default 127.0.0.1, loopback only).")
    ht.add_argument("--port", type=_port, default=8000, help="Port (default 8000; 0 picks a free one).")
    ht.add_argument("--max-body-bytes", type=_parse_size, default=d.max_body_bytes,
                    help="Largest request body (default 10MB); larger ones get 413.")
    ht.add_argument("--max-pixels", type=_parse_count, default=d.max_pixels,
                    help="Largest image width x height (default 40M), checked before decoding; larger ones get 413.")
    ht.add_argument("--max-decodes", type=_positive_int, default=d.max_decodes,
                    help=f"Images decoded at once (default {d.max_decodes}: the CPU cores, at most 4). Peak decode "
                         "memory is about this x max-pixels x 4 bytes.")
    ht.add_argument("--max-parts", type=_positive_int, default=d.max_parts,
                    help=f"Most parts in a multipart/form-data body (default {d.max_parts}); more get 413.")
    ht.add_argument("--max-batch", type=_positive_int, default=d.max_batch,
                    help=f"Most requests batched together (default {d.max_batch}).")
    ht.add_argument("--batch-wait-ms", type=float, default=d.batch_wait_ms,
                    help=f"How long the inference thread waits to fill a batch (default {d.batch_wait_ms:g} ms).")
    ht.add_argument("--timeout-s", type=_positive_float, default=d.timeout_s,
                    help=f"Per-request wait for a decode slot / inference (default {d.timeout_s:g} s; 503 / 504).")
    ht.add_argument("--workers", type=_positive_int, default=d.workers,
                    help=f"Connection-handling threads (default {d.workers}).")
    ht.add_argument("--backlog", type=_positive_int, default=d.backlog,
                    help=f"Listen backlog (default {d.backlog}; the kernel may cap it).")
    ht.add_argument("--idle-timeout-s", type=_positive_float, default=d.idle_timeout_s,
                    help=f"Close connections that send no request headers for this long (default "
                         f"{d.idle_timeout_s:g} s).")
    ht.add_argument("--read-timeout-s", type=_positive_float, default=d.read_timeout_s,
                    help=f"Close connections whose request body takes longer (default {d.read_timeout_s:g} s).")
    ht.add_argument("--expose-provenance", action="store_true",
                    help="Show run ids, model URIs, local paths and the data fingerprint in GET /metadata "
                         "(hidden by default).")
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
    clf = OnnxClassifier(args.model, threads=args.threads)
    config = ServerConfig(max_body_bytes=args.max_body_bytes, max_pixels=args.max_pixels,
                          max_decodes=args.max_decodes, max_parts=args.max_parts, max_batch=args.max_batch,
                          batch_wait_ms=args.batch_wait_ms, timeout_s=args.timeout_s, workers=args.workers,
                          backlog=args.backlog, idle_timeout_s=args.idle_timeout_s,
                          read_timeout_s=args.read_timeout_s, expose_provenance=args.expose_provenance)
    server = make_server(clf, host=args.host, port=args.port, config=config)
    try:
        h, p = server.server_address[:2]
        print(f"coreg-serve: {clf.path.name} ({clf.num_classes} classes) on http://{h}:{p} "
              "(POST /predict, GET /health, GET /metadata)", flush=True)
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``coreg-serve``. Errors print one ``Error: ...`` line to stderr; the exit code is 2."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # usage errors (already printed as one line) and --help
        return e.code if isinstance(e.code, int) else 2
    try:
        code = predict_command(args) if args.command == "predict" else http_command(args)
    except (ImageDecodeError, ModelLoadError, ServerStartError, ValueError, OSError) as e:
        if os.environ.get("COREG_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"Error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
