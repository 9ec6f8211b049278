"""The annotation stage: CLIP candidate labels through open_clip, and import of other VLMs' labels.

* :func:`annotate_dataset` runs the whole stage (what ``coreg annotate`` calls);
  :func:`load_clip`, :func:`encode_text_embeddings`, :func:`embed_images` and
  :func:`score_embeddings` are its steps.
* Candidate modes are a registry (:func:`register_builder`, :func:`create_builder`,
  :func:`list_builders`): ``multi_prompt``, ``topk``, ``prob_ratio``, ``prob_thres``,
  ``accu_prob_thres``.
* Prompt templates are data (:func:`load_templates`: ``paper``, ``paper-full`` or a file); class
  names come from the dataset or a YAML file (:func:`load_class_names`).
* :func:`import_jsonl` / :func:`export_jsonl` read and write the JSON Lines exchange format.

``open_clip`` itself is imported only when a model is loaded.
"""

from __future__ import annotations

from coreg.annotate.builders import (
    BuilderError,
    CandidateBuilder,
    build_candidates,
    builder_defaults,
    create_builder,
    list_builders,
    register_builder,
)
from coreg.annotate.classnames import SPEC_CLASS_NAMES, ClassNamesError, default_class_names, load_class_names
from coreg.annotate.clip import (
    AnnotateConfig,
    AnnotateResult,
    ClipLoadError,
    ClipModel,
    EmbeddingCache,
    annotate_dataset,
    embed_images,
    encode_text_embeddings,
    load_clip,
    register_model_configs,
    score_embeddings,
)
from coreg.annotate.importer import ImportFormatError, export_jsonl, import_jsonl
from coreg.annotate.prompts import (
    TemplateError,
    TemplateSet,
    build_prompts,
    list_template_sets,
    load_templates,
)

__all__ = [
    "AnnotateConfig", "AnnotateResult", "BuilderError", "CandidateBuilder", "ClassNamesError", "ClipLoadError",
    "ClipModel", "EmbeddingCache", "ImportFormatError", "SPEC_CLASS_NAMES", "TemplateError", "TemplateSet",
    "annotate_dataset", "build_candidates", "build_prompts", "builder_defaults", "create_builder",
    "default_class_names", "embed_images", "encode_text_embeddings", "export_jsonl", "import_jsonl",
    "list_builders", "list_template_sets", "load_class_names", "load_clip", "load_templates",
    "register_builder", "register_model_configs", "score_embeddings",
]
