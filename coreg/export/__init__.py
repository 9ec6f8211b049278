"""ONNX export of a student (with a parity check) and static int8 quantization."""

from coreg.export.onnx import (
    ONNX_FORMAT,
    ExportReport,
    ParityResult,
    export_student,
    normalize_images,
    read_metadata,
)
from coreg.export.quantize import onnx_accuracy, quantize_int8

__all__ = ["ONNX_FORMAT", "ExportReport", "ParityResult", "export_student", "normalize_images", "read_metadata",
           "onnx_accuracy", "quantize_int8"]
