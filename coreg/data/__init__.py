"""Data layer: datasets, annotation files, synthetic candidate sets, transforms."""

from coreg.data.annotations import Annotation, AnnotationError, annotation_stats, load_annotation_for
from coreg.data.candidates import flip_candidates, instance_candidates
from coreg.data.datasets import (
    DataBundle,
    DatasetError,
    ImageSpec,
    ImageSplit,
    list_datasets,
    load_dataset,
)

__all__ = [
    "Annotation", "AnnotationError", "annotation_stats", "load_annotation_for", "flip_candidates",
    "instance_candidates", "DataBundle", "DatasetError", "ImageSpec", "ImageSplit", "list_datasets",
    "load_dataset",
]
