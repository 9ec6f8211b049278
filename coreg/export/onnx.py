"""Export a :class:`~coreg.student.Student` to one ONNX file, with a parity check against torch.

The exported graph maps a normalised float32 ``[B, C, H, W]`` batch (input ``"input"``, dynamic
batch axis) to logits ``[B, K]`` (output ``"logits"``): the logit-sum ensemble of the student's
networks, or its first network with ``single=True``.

Everything a runtime needs travels inside the file as ``metadata_props``:

* ``coreg.format``: ``"coreg-onnx-v1"``
* ``coreg.classes``: JSON list of class names in label order
* ``coreg.spec``: JSON ``{size, channels, mean, std, resize_rule}``
* ``coreg.source``: JSON provenance (``run_id``, ``model_version``, ``method``, ...)
* ``coreg.data_fingerprint``: fingerprint of the training split

and, for tools that do not read ONNX metadata, beside the model as ``preprocess.json`` and
``labels.json`` (STYLE section 7). ``serving/`` reads only these.

The export is written to a temporary file in the target folder and renamed to ``out`` only when
``onnx.checker`` and the parity check (onnxruntime vs torch on real images) pass, so a bad export
never replaces a good one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from coreg._fs import temp_path_beside
from coreg.errors import CoregError

if TYPE_CHECKING:
    import onnx
    import torch

    from coreg.data.datasets import ImageSpec
    from coreg.student import Student

logger = logging.getLogger(__name__)

ONNX_FORMAT = "coreg-onnx-v1"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
PREPROCESS_FILE = "preprocess.json"
LABELS_FILE = "labels.json"
_SPEC_KEYS = ("size", "channels", "mean", "std", "resize_rule")


@dataclass
class ParityResult:
    """onnxruntime vs torch on the same batch.

    Attributes:
        num_images: images compared.
        images: ``"given"`` (real images passed in) or ``"random"`` (seeded noise; no images given).
        max_abs_diff: largest absolute logit difference.
        mean_abs_diff: mean absolute logit difference.
        top1_agreement: share of images whose argmax class is the same in both.
        tolerance: the allowed ``max_abs_diff``.
        passed: ``max_abs_diff <= tolerance``.
    """

    num_images: int
    images: str
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    tolerance: float
    passed: bool


@dataclass
class ExportReport:
    """What :func:`export_student` wrote.

    Attributes:
        path: the ONNX file.
        size_bytes: its size.
        exporter: ``"dynamo"`` or ``"legacy"`` (TorchScript fallback).
        opset: the default-domain opset of the graph.
        single: whether only the first network was exported.
        num_classes: K.
        parity: the parity check result.
        parity_path: ``<out>.parity.json``.
        preprocess_path: ``preprocess.json`` beside the model.
        labels_path: ``labels.json`` beside the model.
        metadata: the ``metadata_props`` written into the model.
    """

    path: Path
    size_bytes: int
    exporter: str
    opset: int
    single: bool
    num_classes: int
    parity: ParityResult
    parity_path: Path
    preprocess_path: Path
    labels_path: Path
    metadata: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (paths as strings)."""
        d = asdict(self)
        for k in ("path", "parity_path", "preprocess_path", "labels_path"):
            d[k] = str(d[k])
        return d


# --------------------------------------------------------------------------- preprocessing


def spec_metadata(spec: ImageSpec | Mapping[str, Any]) -> dict[str, Any]:
    """The inference part of an image spec: ``{size, channels, mean, std, resize_rule}``."""
    d = spec.to_dict() if hasattr(spec, "to_dict") else dict(spec)
    out = {k: d[k] for k in _SPEC_KEYS if k in d}
    out.setdefault("resize_rule", "bilinear")
    out["mean"] = [float(v) for v in out["mean"]]
    out["std"] = [float(v) for v in out["std"]]
    return out


def normalize_images(images: np.ndarray, spec: ImageSpec | Mapping[str, Any]) -> np.ndarray:
    """The training evaluation transform on uint8 images: per channel ``(x / 255 - mean) / std``.

    Args:
        images: uint8 ``[N, H, W, C]`` at the spec size.
        spec: image spec (or its metadata mapping).

    Returns:
        float32 ``[N, C, H, W]``.

    Raises:
        CoregError: wrong dtype, rank or channel count.
    """
    s = spec_metadata(spec)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != s["channels"]:
        raise CoregError(f"expected uint8 images [N, H, W, {s['channels']}], got {images.dtype} {images.shape}")
    # The operations of coreg.data.transforms.Augmenter.normalize, in numpy: (x - 255 mean) / (255 std).
    mean = np.asarray(s["mean"], dtype=np.float32).reshape(1, -1, 1, 1) * np.float32(255.0)
    std = np.asarray(s["std"], dtype=np.float32).reshape(1, -1, 1, 1) * np.float32(255.0)
    x = images.astype(np.float32).transpose(0, 3, 1, 2)
    return np.ascontiguousarray((x - mean) / std, dtype=np.float32)


# --------------------------------------------------------------------------- metadata


def build_metadata(student: Student, *, single: bool = False) -> dict[str, str]:
    """The ``metadata_props`` of an exported student (see module docstring)."""
    source = dict(student.source)
    source["members"] = 1 if single else len(student.nets)
    return {
        "coreg.format": ONNX_FORMAT,
        "coreg.classes": json.dumps(list(student.classes)),
        "coreg.spec": json.dumps(spec_metadata(student.spec)),
        "coreg.source": json.dumps(source, default=str, sort_keys=True),
        "coreg.data_fingerprint": str(student.data.get("fingerprint") or ""),
    }


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict (values are strings; JSON where documented).

    Raises:
        CoregError: missing or unreadable file.
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise CoregError(f"ONNX file {path} does not exist")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf/onnx raise several types for a bad file
        raise CoregError(f"cannot read ONNX file {path}: {type(e).__name__}: {e}") from None
    return {p.key: p.value for p in model.metadata_props}


def _set_metadata(model: onnx.ModelProto, metadata: Mapping[str, str]) -> None:
    existing = {p.key: p for p in model.metadata_props}
    for k, v in metadata.items():
        if k in existing:
            existing[k].value = v
        else:
            p = model.metadata_props.add()
            p.key, p.value = k, v


def _temp_path(target: Path, suffix: str) -> Path:
    """A new empty file beside ``target`` (stale ones of killed exports are removed first)."""
    return temp_path_beside(target, suffix)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (temporary file, then rename)."""
    tmp = _temp_path(path, ".tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def _quiet_exporter_logs() -> Iterator[None]:
    """The dynamo exporter's helpers log every optimisation pass at INFO: keep them to warnings."""
    names = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export", "torch._export")
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        if saved[n] == logging.NOTSET:
            logging.getLogger(n).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


def write_sidecars(folder: Path, *, spec: ImageSpec | Mapping[str, Any], classes: Sequence[str]) -> tuple[Path, Path]:
    """Write ``preprocess.json`` and ``labels.json`` into ``folder``; returns their paths."""
    pre = dict(spec_metadata(spec))
    pre.update({"format": ONNX_FORMAT, "input_name": INPUT_NAME, "output_name": OUTPUT_NAME, "layout": "NCHW",
                "dtype": "float32", "scale": 1.0 / 255.0, "background": [255, 255, 255]})
    pre_path, lab_path = folder / PREPROCESS_FILE, folder / LABELS_FILE
    write_json(pre_path, pre)
    write_json(lab_path, list(classes))
    return pre_path, lab_path


# --------------------------------------------------------------------------- export


def _logits_module(module: torch.nn.Module) -> torch.nn.Module:
    """Wrap ``module`` so it returns logits only (networks return ``(logits, z)``)."""
    import torch

    class _Logits(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.inner(x)
            return out[0] if isinstance(out, (tuple, list)) else out

    return _Logits(module).eval()


def _torch_export(module: torch.nn.Module, example: torch.Tensor, path: Path, *, opset: int | None) -> str:
    """Export with the dynamo exporter, falling back to the legacy one; returns which one worked."""
    import torch

    kwargs: dict[str, Any] = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME]}
    if opset is not None:
        kwargs["opset_version"] = opset
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), str(path), dynamo=True, external_data=False, verbose=False,
                              dynamic_shapes=({0: torch.export.Dim("batch")},), **kwargs)
        return "dynamo"
    except Exception as e:  # noqa: BLE001 - the dynamo exporter raises many types; the fallback decides
        logger.warning("dynamo ONNX export failed (%s: %s); falling back to the legacy TorchScript exporter",
                       type(e).__name__, str(e).splitlines()[0] if str(e) else "")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), str(path), dynamo=False,
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, **kwargs)
    except Exception as e:  # noqa: BLE001 - report any exporter failure as one user-facing line
        raise CoregError(f"ONNX export failed with both exporters: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}") from e
    return "legacy"


def ort_session(path: str | Path, *, threads: int | None = None) -> Any:
    """A CPU onnxruntime session for ``path`` (``threads`` intra-op threads, default onnxruntime's)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def run_onnx(session: Any, x: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
    """Logits ``[N, K]`` of a normalised float32 ``[N, C, H, W]`` array, in batches."""
    name = session.get_inputs()[0].name
    outs = [session.run(None, {name: x[i: i + batch_size]})[0] for i in range(0, len(x), batch_size)]
    return np.concatenate(outs, axis=0)


def check_parity(path: str | Path, module: torch.nn.Module, x: np.ndarray, *, tolerance: float = 1e-3,
                 images: str = "given") -> ParityResult:
    """Compare onnxruntime and torch logits on the normalised batch ``x`` (float32 ``[N, C, H, W]``)."""
    import torch

    ort_logits = run_onnx(ort_session(path), x)
    with torch.no_grad():
        ref = module(torch.from_numpy(x)).detach().cpu().numpy()
    diff = np.abs(ort_logits.astype(np.float64) - ref.astype(np.float64))
    max_abs = float(diff.max()) if diff.size else 0.0
    return ParityResult(
        num_images=int(len(x)), images=images, max_abs_diff=max_abs,
        mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
        top1_agreement=float((ort_logits.argmax(1) == ref.argmax(1)).mean()) if len(x) else 1.0,
        tolerance=float(tolerance), passed=bool(max_abs <= tolerance))


def export_outputs(out: str | Path) -> list[Path]:
    """The files :func:`export_student` writes for ``out``: the model, its parity report, and the
    folder's ``preprocess.json`` / ``labels.json`` (shared by every model in that folder)."""
    out = Path(out)
    return [out, out.with_name(out.name + ".parity.json"), out.parent / PREPROCESS_FILE, out.parent / LABELS_FILE]


def refuse_overwrite(paths: Sequence[str | Path]) -> None:
    """Refuse to replace existing export files (serving reads the sidecars beside a model: another
    model's ``labels.json`` overwritten by mistake would silently mislabel its predictions).

    Raises:
        CoregError: some of ``paths`` exist (named in the message).
    """
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing:
        raise CoregError(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; "
                         "pass --force to overwrite, or choose another --out folder")


def export_student(
    student: Student, out: str | Path, *, single: bool = False, parity_images: np.ndarray | None = None,
    tolerance: float = 1e-3, opset: int | None = None, overwrite: bool = False,
) -> ExportReport:
    """Export ``student`` to a single ONNX file and check it against torch.

    Args:
        student: the trained student.
        out: the ``.onnx`` file to write (its folder also receives ``preprocess.json``,
            ``labels.json`` and ``<out>.parity.json``).
        single: export the first network alone instead of the logit-sum ensemble.
        parity_images: real uint8 ``[N, H, W, C]`` images at the spec size for the parity check;
            ``None`` checks on 8 seeded random images (logged as a warning).
        tolerance: the largest allowed absolute logit difference between onnxruntime and torch.
        opset: ONNX opset to request (default: the exporter's).
        overwrite: replace existing files (see :func:`export_outputs`); without it they are refused
            before anything is exported.

    Returns:
        The :class:`ExportReport` (also written, minus metadata, to ``<out>.parity.json``).

    Raises:
        CoregError: existing outputs without ``overwrite``, export or ``onnx.checker`` failure, bad
            parity images, or a parity difference above ``tolerance`` (``out`` is then left untouched).
    """
    import onnx
    import torch

    if tolerance <= 0:
        raise CoregError(f"tolerance must be > 0, got {tolerance}")
    out = Path(out)
    if not overwrite:
        refuse_overwrite(export_outputs(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    spec = student.spec
    if parity_images is None:
        logger.warning("no parity images given: checking ONNX parity on 8 seeded random images")
        rng = np.random.default_rng(0)
        parity_images = rng.integers(0, 256, size=(8, spec.size, spec.size, spec.channels), dtype=np.uint8)
        kind = "random"
    else:
        kind = "given"
        if parity_images.shape[1:3] != (spec.size, spec.size) or len(parity_images) == 0:
            raise CoregError(f"parity images must be [N>0, {spec.size}, {spec.size}, {spec.channels}], "
                             f"got {parity_images.shape}")
    x = normalize_images(np.asarray(parity_images), spec)

    module = _logits_module(student.eval_module(single=single)).cpu().eval()
    # Batch 2, not 1: an example of size 1 lets the exporter specialise the batch dimension.
    example = torch.from_numpy(x[:2] if len(x) >= 2 else np.concatenate([x, x]))

    tmp = _temp_path(out, ".tmp.onnx")
    try:
        with _quiet_exporter_logs():
            exporter = _torch_export(module, example, tmp, opset=opset)
        model = onnx.load(str(tmp))
        metadata = build_metadata(student, single=single)
        _set_metadata(model, metadata)
        model.doc_string = f"coreg student ({'single network' if single else 'logit-sum ensemble'})"
        onnx.save_model(model, str(tmp), save_as_external_data=False)
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except onnx.checker.ValidationError as e:
            raise CoregError(f"exported ONNX model fails onnx.checker: {str(e).splitlines()[0]}") from None
        opset_used = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        parity = check_parity(tmp, module, x, tolerance=tolerance, images=kind)
        parity_path = out.with_name(out.name + ".parity.json")
        report_json = {"model": str(out), "exporter": exporter, "opset": opset_used, "single": single,
                       "parity": asdict(parity)}
        write_json(parity_path, report_json)
        if not parity.passed:
            raise CoregError(f"ONNX parity check failed: max abs logit difference {parity.max_abs_diff:.3g} > "
                             f"tolerance {tolerance:g} (top-1 agreement {parity.top1_agreement:.4f}); "
                             f"{out} not written, see {parity_path}")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    pre_path, lab_path = write_sidecars(out.parent, spec=spec, classes=student.classes)
    report = ExportReport(path=out, size_bytes=out.stat().st_size, exporter=exporter, opset=int(opset_used),
                          single=single, num_classes=len(student.classes), parity=parity, parity_path=parity_path,
                          preprocess_path=pre_path, labels_path=lab_path, metadata=metadata)
    logger.info("exported %s (%s exporter, opset %d, %.1f KiB): parity max abs diff %.2e, top-1 agreement %.4f "
                "on %d %s images", out, exporter, report.opset, report.size_bytes / 1024, parity.max_abs_diff,
                parity.top1_agreement, parity.num_images, kind)
    return report
