"""CLIP annotation through open_clip (spec 1.1): embeddings, per-template probabilities, candidates.

Pipeline of :func:`annotate_dataset`:

1. Load any open_clip model/pretrained tag (:func:`load_clip`); ``pretrained="none"`` gives
   seeded random weights (tests, benchmarks) and logs a warning that the annotations are random.
2. Text side, once per run: for every template t and class c the prompt ``t.format(name)`` for
   each of the class's prompt names; the L2-normalised embeddings of a class's names are averaged
   and renormalised, giving ``e[t, c]`` (``[P, K, D]``, :func:`encode_text_embeddings`).
3. Image side: the stored uint8 images go through PIL and the model's own preprocess transform in a
   ``DataLoader``; embeddings are L2-normalised and cached on disk in chunks keyed by (model,
   weights, precision, data fingerprint, split) (:class:`EmbeddingCache`), so a new template set or
   candidate mode reuses them and an interrupted run resumes at the first missing chunk.
4. Per-template probabilities ``P_t = softmax(s * <r(x), e[t, c]>)`` with ``s = exp(logit_scale)``
   of the model itself. Spec 1.1 hard-codes 100, which *is* ``exp(logit_scale)`` of the released
   OpenAI models, so the two agree there; using the model's own scale keeps other models (and
   random-init models, s = 1/0.07) calibrated as trained. The template average ``A`` (probability
   averaging, spec 1.1 step 7) and the per-template arg-maxes feed a candidate builder
   (:mod:`coreg.annotate.builders`).

On CUDA the encoders run under bf16 (or fp16) autocast; on CPU/MPS in float32. Probabilities are
always computed in float32 from float32 embeddings.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import io
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from coreg.annotate.builders import BuilderError, create_builder, list_builders
from coreg.annotate.classnames import default_class_names, describe_class_names, load_class_names
from coreg.annotate.prompts import TemplateSet, load_templates
from coreg.config import ConfigError, StageConfig
from coreg.data.annotations import Annotation, atomic_write_bytes
from coreg.errors import CoregError
from coreg.progress import progress_bar

logger = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
DEFAULT_CACHE_DIR = "~/.cache/coreg/embeddings"
DEVICES = ("auto", "cpu", "cuda", "mps")


class ClipLoadError(CoregError):
    """The open_clip model, its weights or the requested device are unavailable."""


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class AnnotateConfig(StageConfig):
    """Settings of the CLIP annotation stage.

    Attributes:
        model: open_clip architecture name (``ViT-B-32``, ``coreg-tiny``, ``hf-hub:...``).
        pretrained: open_clip pretrained tag or checkpoint path; ``none`` for random weights.
        templates: template set name (``paper``, ``paper-full``) or a text file path.
        mode: candidate builder name (:func:`coreg.annotate.builders.list_builders`).
        k: ``k`` of ``topk``/``prob_ratio`` (``None``: the mode's default).
        threshold: threshold of ``prob_ratio``/``prob_thres``/``accu_prob_thres`` (``None``: default).
        class_names: YAML file mapping each class to one prompt name or a list (``None``: the
            dataset's class names).
        batch_size: images (and prompts) per encoder call.
        workers: DataLoader worker processes (``None``: 0 on CPU, where workers compete with the
            encoder for cores, else ``min(8, cpu_count)``).
        device: ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda`` or ``mps``.
        cache_dir: embedding cache root (``None``: no cache).
        chunk_size: images per cache chunk (the unit of resumption).
        seed: seed of random weights (``pretrained=none``); recorded in the annotation.
    """

    model: str = "ViT-B-32"
    pretrained: str = "openai"
    templates: str = "paper"
    mode: str = "multi_prompt"
    k: int | None = None
    threshold: float | None = None
    class_names: str | None = None
    batch_size: int = 128
    workers: int | None = None
    device: str = "auto"
    cache_dir: str | None = DEFAULT_CACHE_DIR
    chunk_size: int = 4096
    seed: int = 0

    def validate(self) -> None:
        """Check values (and that the mode accepts ``k``/``threshold``).

        Raises:
            ConfigError: invalid value.
        """
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.chunk_size < 1:
            raise ConfigError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.mode not in list_builders():
            raise ConfigError(f"unknown candidate mode {self.mode!r}; valid: {', '.join(list_builders())}")
        try:
            create_builder(self.mode, k=self.k, threshold=self.threshold)
        except BuilderError as e:
            raise ConfigError(str(e)) from None


# --------------------------------------------------------------------------- model loading


@dataclass
class ClipModel:
    """A loaded vision-language model and what annotation needs from it.

    Anything with ``encode_image(x)`` and ``encode_text(tokens)`` works as ``model`` (tests use a
    stub); ``tokenizer`` maps a list of strings to a token tensor, ``preprocess`` a PIL image to
    a ``[C, H, W]`` tensor.

    Attributes:
        model: the model, in eval mode, on ``device``.
        preprocess: the model's inference transform.
        tokenizer: the model's tokenizer.
        name: architecture name.
        pretrained: the pretrained tag or path as given (``none`` for random weights).
        weights_id: identity of the weights in the embedding-cache key.
        device: where the model runs.
        logit_scale: ``exp(logit_scale)`` of the model (100 for the OpenAI models).
    """

    model: Any
    preprocess: Callable[[Image.Image], Tensor]
    tokenizer: Callable[[list[str]], Tensor]
    name: str
    pretrained: str
    weights_id: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    logit_scale: float = 100.0

    @property
    def precision(self) -> str:
        """``bf16``/``fp16`` autocast on CUDA, else ``fp32``."""
        if self.device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Autocast context for the encoders (GPU only)."""
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16)


_configs_registered = False


def register_model_configs() -> None:
    """Make coreg's model configs (``coreg-tiny``) known to open_clip (once per process)."""
    global _configs_registered
    if _configs_registered:
        return
    import open_clip

    if "coreg-tiny" not in open_clip.list_models():
        open_clip.add_model_config(MODEL_CONFIG_DIR)
    _configs_registered = True


def resolve_device(device: str) -> torch.device:
    """Turn ``auto|cpu|cuda|mps`` into a device.

    Raises:
        ClipLoadError: the requested accelerator is not available.
    """
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ClipLoadError("--device cuda was requested but CUDA is not available (use --device auto or cpu)")
    if device == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                and torch.backends.mps.is_available()):
        raise ClipLoadError("--device mps was requested but MPS is not available (use --device auto or cpu)")
    if device not in DEVICES:
        raise ClipLoadError(f"unknown device {device!r}; valid: {', '.join(DEVICES)}")
    return torch.device(device)


def _weights_id(pretrained: str | None, seed: int) -> str:
    if pretrained is None:
        return f"random-seed{seed}"
    p = Path(pretrained).expanduser()
    if p.is_file():
        st = p.stat()
        h = hashlib.blake2b(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode(), digest_size=6).hexdigest()
        return f"file-{p.stem}-{h}"
    return pretrained


class _DropOpenClipInfo(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "open_clip" not in record.pathname


@contextlib.contextmanager
def _quiet_open_clip() -> Iterator[None]:
    """Drop open_clip's INFO chatter, which it sends to the root logger (warnings still pass)."""
    root = logging.getLogger()
    flt = _DropOpenClipInfo()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0][:300] if s else type(e).__name__


def load_clip(model_name: str, pretrained: str | None, *, device: str = "auto", seed: int = 0,
              cache_dir: str | None = None) -> ClipModel:
    """Create an open_clip model with its inference transform and tokenizer.

    Args:
        model_name: open_clip architecture (``ViT-B-32``, ``coreg-tiny``, ``hf-hub:org/repo``...).
        pretrained: pretrained tag (``openai``, ``laion2b_s34b_b79k``...) or checkpoint path;
            ``None``/``"none"`` gives random weights drawn from ``seed`` (a WARNING is logged:
            annotations from random weights are random).
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        seed: seed of the random initialisation (the global RNG state is left untouched).
        cache_dir: open_clip's weight download cache (default: the Hugging Face cache).

    Raises:
        ClipLoadError: unknown model or tag, weights not downloadable (e.g. offline), no device.
    """
    import open_clip

    register_model_configs()
    dev = resolve_device(device)
    tag = None if pretrained is None or pretrained.strip().lower() in ("", "none") else pretrained
    if ":" not in model_name and model_name.replace("/", "-") not in open_clip.list_models():
        close = difflib.get_close_matches(model_name, open_clip.list_models(), n=5, cutoff=0.6)
        raise ClipLoadError(f"unknown open_clip model {model_name!r}"
                            + (f"; similar: {', '.join(close)}" if close else "")
                            + " (see open_clip.list_models())")
    if tag is None:
        logger.warning("pretrained=none: %s gets RANDOM weights (seed %d); its annotations are random and only "
                       "good for tests and benchmarks", model_name, seed)
    try:
        with _quiet_open_clip(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=tag, device=dev, cache_dir=cache_dir)
    except RuntimeError as e:
        msg = str(e)
        if "Failed to download" in msg or "offline" in msg.lower():
            raise ClipLoadError(
                f"weights {model_name}/{pretrained} could not be downloaded and are not in the local cache; "
                "download them once with internet access (they go to the Hugging Face cache, $HF_HOME), keep "
                "HF_HUB_OFFLINE=1 on offline machines to fail fast, or pass a local checkpoint path as --pretrained"
            ) from None
        if "not a known tag" in msg:
            tags = open_clip.list_pretrained_tags_by_model(model_name)
            raise ClipLoadError(f"unknown pretrained tag {pretrained!r} for {model_name}; known tags: "
                                f"{', '.join(tags) or 'none'} (or a checkpoint file path, or none)") from None
        raise ClipLoadError(f"cannot create open_clip model {model_name}/{pretrained}: {_first_line(e)}") from None
    except (OSError, ValueError) as e:
        raise ClipLoadError(f"cannot load weights {model_name}/{pretrained}: {_first_line(e)}") from None
    model.eval()
    with _quiet_open_clip():
        tokenizer = open_clip.get_tokenizer(model_name)
    scale = float(model.logit_scale.exp().item()) if hasattr(model, "logit_scale") else 100.0
    return ClipModel(model=model, preprocess=preprocess, tokenizer=tokenizer, name=model_name,
                     pretrained="none" if tag is None else tag, weights_id=_weights_id(tag, seed), device=dev,
                     logit_scale=scale)


# --------------------------------------------------------------------------- text side


def _causal_clip_text(model: Any) -> bool:
    """Whether ``model`` is an open_clip ``CLIP`` with a causal text mask and EOT (arg-max) pooling.

    For such models the text features do not depend on the padding after the end-of-text token,
    so the token matrix can be cut to the longest prompt (about 4-5x less text compute than the
    77-token context). Anything else is encoded with ``encode_text`` unchanged.
    """
    oc = sys.modules.get("open_clip")
    if oc is None or not isinstance(model, oc.CLIP):
        return False
    if getattr(model, "text_pool_type", None) != "argmax":
        return False
    mask = getattr(model, "attn_mask", None)
    if not isinstance(mask, Tensor) or mask.ndim != 2:
        return False
    upper = torch.triu(torch.ones_like(mask, dtype=torch.bool), diagonal=1)
    return bool(torch.isneginf(mask[upper]).all() and (mask[~upper] == 0).all())


def _encode_tokens(model: Any, tokens: Tensor) -> Tensor:
    if not _causal_clip_text(model):
        return model.encode_text(tokens)
    # Same computation as open_clip's CLIP.encode_text, on the first L positions only.
    length = int(tokens.argmax(dim=-1).max().item()) + 1
    tok = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tok).to(cast_dtype)
    x = x + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), tok.argmax(dim=-1)]
    proj = model.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
    return x


def encode_text_embeddings(clip: ClipModel, templates: Sequence[str], class_names: Sequence[Sequence[str]], *,
                           batch_size: int = 256) -> Tensor:
    """Text embeddings per template and class.

    For template t and class c with prompt names ``n_1..n_m`` the embedding is
    ``normalize(mean_i normalize(E(t.format(n_i))))``; with one name per class (the default) this
    is just the normalised embedding of ``t.format(name)``. Prompts reach the text encoder in
    template-major order, exactly ``t.format(n)``.

    Args:
        clip: the loaded model.
        templates: P templates with ``{}``.
        class_names: K lists of prompt names.
        batch_size: prompts per encoder call.

    Returns:
        float32 ``[P, K, D]``, unit norm along D.
    """
    prompts: list[str] = []
    owner: list[int] = []  # flat (t * K + c) group of each prompt
    num_classes = len(class_names)
    for t, template in enumerate(templates):
        for c, names in enumerate(class_names):
            for name in names:
                prompts.append(template.format(name))
                owner.append(t * num_classes + c)
    feats = []
    with torch.inference_mode(), clip.autocast():
        for i in range(0, len(prompts), batch_size):
            tokens = clip.tokenizer(prompts[i: i + batch_size])
            tokens = torch.as_tensor(tokens).to(clip.device)
            feats.append(F.normalize(_encode_tokens(clip.model, tokens).float(), dim=-1).cpu())
    emb = torch.cat(feats)
    groups = torch.tensor(owner)
    summed = torch.zeros((len(templates) * num_classes, emb.shape[1]), dtype=torch.float32)
    summed.index_add_(0, groups, emb)
    return F.normalize(summed, dim=-1).reshape(len(templates), num_classes, -1)


# --------------------------------------------------------------------------- image side


class _ArrayImages(torch.utils.data.Dataset):
    """uint8 ``[N, H, W, C]`` images -> PIL -> ``preprocess`` (the model's own transform)."""

    def __init__(self, images: np.ndarray, preprocess: Callable[[Image.Image], Tensor]) -> None:
        self.images = images
        self.preprocess = preprocess

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> Tensor:
        arr = self.images[i]
        # uint8 [H, W] -> mode L, [H, W, 3] -> RGB; the preprocess converts L to RGB like spec 1.1.
        img = Image.fromarray(np.ascontiguousarray(arr[..., 0] if arr.shape[-1] == 1 else arr))
        return self.preprocess(img)


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_")[:80] or "x"


@dataclass(frozen=True)
class CacheEntry:
    """The chunk files of one (model, weights, precision, data fingerprint, split) embedding set."""

    directory: Path
    num_images: int
    chunk_size: int

    @property
    def num_chunks(self) -> int:
        return (self.num_images + self.chunk_size - 1) // self.chunk_size

    def chunk_range(self, i: int) -> tuple[int, int]:
        return i * self.chunk_size, min(self.num_images, (i + 1) * self.chunk_size)

    def chunk_path(self, i: int) -> Path:
        return self.directory / f"chunk_{i:05d}.npy"

    def load_chunk(self, i: int) -> np.ndarray | None:
        """The cached rows of chunk ``i``, or ``None`` if missing or unreadable (then recomputed)."""
        p = self.chunk_path(i)
        if not p.exists():
            return None
        start, end = self.chunk_range(i)
        try:
            arr = np.load(p, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:  # EOFError: an empty (truncated) file
            logger.warning("ignoring unreadable cache chunk %s (%s)", p, e)
            return None
        if arr.ndim != 2 or arr.shape[0] != end - start:
            logger.warning("ignoring cache chunk %s of shape %s (expected %d rows)", p, arr.shape, end - start)
            return None
        return arr.astype(np.float32, copy=False)

    def save_chunk(self, i: int, arr: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(arr, dtype=np.float32))
        atomic_write_bytes(self.chunk_path(i), buf.getvalue())


class EmbeddingCache:
    """On-disk image-embedding cache, written in chunks so interrupted runs resume.

    Layout: ``root/<model>__<weights>__<precision>/<split>-<fingerprint>/chunk_00000.npy`` (float32
    ``[rows, D]``, unit norm, each written atomically) plus ``meta.json``.
    """

    def __init__(self, root: str | Path, *, chunk_size: int = 4096) -> None:
        self.root = Path(root).expanduser()
        self.chunk_size = chunk_size

    def entry(self, *, model: str, weights: str, precision: str, fingerprint: str, split: str,
              num_images: int) -> CacheEntry:
        """The entry for one embedding set; stale chunks of another layout are removed."""
        d = self.root / f"{_slug(model)}__{_slug(weights)}__{precision}" / f"{_slug(split)}-{_slug(fingerprint)}"
        meta = {"model": model, "weights": weights, "precision": precision, "fingerprint": fingerprint,
                "split": split, "num_images": num_images, "chunk_size": self.chunk_size}
        meta_path = d / "meta.json"
        old: Any = None
        if meta_path.exists():
            try:
                old = json.loads(meta_path.read_text())
            except (OSError, json.JSONDecodeError):
                old = None
        if old != meta:
            if old is not None or any(d.glob("chunk_*.npy")):
                logger.info("embedding cache %s was written with other settings; starting it afresh", d)
            for p in d.glob("chunk_*.npy"):
                p.unlink()
            atomic_write_bytes(meta_path, json.dumps(meta, indent=1).encode())
        return CacheEntry(directory=d, num_images=num_images, chunk_size=self.chunk_size)


def _default_workers(device: torch.device) -> int:
    # On CPU the encoder already uses every core; worker processes would only compete with it.
    return 0 if device.type == "cpu" else min(8, os.cpu_count() or 1)


def embed_images(clip: ClipModel, images: np.ndarray, *, cache: EmbeddingCache | None = None,
                 fingerprint: str | None = None, split: str = "train", batch_size: int = 128,
                 workers: int | None = None, chunk_size: int = 4096, progress: bool = True) -> np.ndarray:
    """L2-normalised image embeddings, computed once per image and cached in chunks.

    Args:
        clip: the loaded model.
        images: uint8 ``[N, H, W, C]`` (C = 1 or 3).
        cache: embedding cache, or ``None`` to compute everything in memory.
        fingerprint: the split's content fingerprint (required with a cache).
        split: split name in the cache key.
        batch_size: images per encoder call.
        workers: DataLoader workers (``None``: 0 on CPU, else up to 8).
        chunk_size: images per chunk without a cache (the cache's own chunk size wins otherwise).
        progress: show a tqdm bar.

    Returns:
        float32 ``[N, D]``.
    """
    n = int(images.shape[0])
    if cache is not None:
        if fingerprint is None:
            raise ValueError("embed_images: a cache needs the data fingerprint")
        entry: CacheEntry | None = cache.entry(model=clip.name, weights=clip.weights_id, precision=clip.precision,
                                               fingerprint=fingerprint, split=split, num_images=n)
        size = cache.chunk_size
    else:
        entry, size = None, chunk_size
    num_chunks = (n + size - 1) // size
    chunks: list[np.ndarray | None] = [entry.load_chunk(i) if entry is not None else None for i in range(num_chunks)]
    todo = [i for i, c in enumerate(chunks) if c is None]
    if entry is not None and len(todo) < num_chunks:
        logger.info("embedding cache %s: %d of %d chunks present", entry.directory, num_chunks - len(todo),
                    num_chunks)
    if todo:
        batches: list[list[int]] = []
        batch_chunk: list[int] = []
        for ci in todo:
            start, end = ci * size, min(n, (ci + 1) * size)
            for b in range(start, end, batch_size):
                batches.append(list(range(b, min(end, b + batch_size))))
                batch_chunk.append(ci)
        nw = _default_workers(clip.device) if workers is None else workers
        loader = torch.utils.data.DataLoader(_ArrayImages(images, clip.preprocess), batch_sampler=batches,
                                             num_workers=nw, pin_memory=clip.device.type == "cuda",
                                             persistent_workers=False)
        pending: dict[int, list[Tensor]] = {}
        remaining = sum(min(n, (ci + 1) * size) - ci * size for ci in todo)
        bar = progress_bar(total=remaining, desc=f"embed {split}", unit="img", disable=None if progress else True)
        try:
            with torch.inference_mode(), clip.autocast():
                for bi, x in enumerate(loader):
                    ci = batch_chunk[bi]
                    feats = clip.model.encode_image(x.to(clip.device, non_blocking=True))
                    pending.setdefault(ci, []).append(F.normalize(feats.float(), dim=-1).cpu())
                    bar.update(int(x.shape[0]))
                    last_of_chunk = bi + 1 == len(batches) or batch_chunk[bi + 1] != ci
                    if last_of_chunk:
                        arr = torch.cat(pending.pop(ci)).numpy()
                        chunks[ci] = arr
                        if entry is not None:
                            entry.save_chunk(ci, arr)
        finally:
            bar.close()
    return np.concatenate([c for c in chunks if c is not None]) if n else np.zeros((0, 0), np.float32)


# --------------------------------------------------------------------------- scoring


def score_embeddings(image_emb: Tensor | np.ndarray, text_emb: Tensor, *, logit_scale: float,
                     block: int = 4096) -> tuple[Tensor, Tensor]:
    """Template-averaged probabilities and per-template arg-maxes.

    ``P_t(x)_c = softmax_c(logit_scale * <r(x), e[t, c]>)``; ``A = mean_t P_t``.

    Args:
        image_emb: ``[N, D]`` unit-norm image embeddings.
        text_emb: ``[P, K, D]`` unit-norm text embeddings.
        logit_scale: the multiplier ``exp(logit_scale)``.
        block: rows per step (bounds memory at ``block * P * K`` floats).

    Returns:
        ``(A [N, K] float32, template_top1 [N, P] int64)``; arg-max ties go to the lowest class.
    """
    img = torch.as_tensor(image_emb, dtype=torch.float32)
    txt = text_emb.float()
    means, tops = [], []
    for i in range(0, img.shape[0], block):
        logits = logit_scale * torch.einsum("nd,pkd->npk", img[i: i + block], txt)
        probs = logits.softmax(-1)
        means.append(probs.mean(1))
        tops.append(probs.argmax(-1))
    if not means:
        return torch.zeros((0, txt.shape[1])), torch.zeros((0, txt.shape[0]), dtype=torch.long)
    return torch.cat(means), torch.cat(tops)


# --------------------------------------------------------------------------- the stage


@dataclass
class AnnotateResult:
    """What :func:`annotate_dataset` produced.

    Attributes:
        annotation: the annotation (saved to ``path`` when one was given).
        metrics: ``avg_set_size`` and, with gold labels, ``eta`` and the zero-shot accuracies.
        path: where the annotation was written, or ``None``.
        templates: the template set used.
        test_template_top1: ``[N_test, P]`` per-template arg-maxes on the test split, or ``None``.
    """

    annotation: Annotation
    metrics: dict[str, float]
    path: Path | None
    templates: TemplateSet
    test_template_top1: np.ndarray | None = None


def zero_shot_metrics(*, mean_probs: np.ndarray, template_top1: np.ndarray, labels: np.ndarray | None,
                      split: str) -> dict[str, float]:
    """Spec 1.5 zero-shot accuracies: t0 (first template's arg-max) and the template average.

    Returns:
        ``zero_shot_{split}_acc`` and ``zero_shot_avg_{split}_acc``; empty without labels.
    """
    if labels is None or len(labels) == 0:
        return {}
    labels = np.asarray(labels)
    return {f"zero_shot_{split}_acc": float((template_top1[:, 0] == labels).mean()),
            f"zero_shot_avg_{split}_acc": float((mean_probs.argmax(1) == labels).mean())}


def _iter_splits(bundle: Any) -> Iterator[tuple[str, Any]]:
    yield "train", bundle.train
    if bundle.test is not None and len(bundle.test) > 0:
        yield "test", bundle.test


def annotate_dataset(bundle: Any, config: AnnotateConfig, *, out: str | Path | None = None,
                     tracker: Any | None = None, clip: ClipModel | None = None,
                     progress: bool = True) -> AnnotateResult:
    """Annotate a dataset's training split with CLIP candidate sets (the ``coreg annotate`` stage).

    The train split gets candidates, ``scores`` (A) and ``template_preds``; a test split, if any,
    gets ``test_scores``. With gold labels the zero-shot accuracies of spec 1.5, eta and the average
    set size are returned (and logged to ``tracker`` with figures and the annotation file).

    Args:
        bundle: a :class:`coreg.data.DataBundle`.
        config: stage settings.
        out: annotation file to write atomically (``None``: do not write).
        tracker: a :class:`coreg.tracking.Tracker` (``None``: no tracking).
        clip: a loaded model to use instead of loading ``config.model``/``config.pretrained``.
        progress: show progress bars.

    Raises:
        CoregError: bad templates, class names, mode parameters, model or weights.
    """
    builder = create_builder(config.mode, k=config.k, threshold=config.threshold)
    templates = load_templates(config.templates)
    names = (load_class_names(config.class_names, bundle.classes) if config.class_names
             else default_class_names(bundle.name, list(bundle.classes)))
    if clip is None:
        clip = load_clip(config.model, config.pretrained, device=config.device, seed=config.seed)
    logger.info("annotating %s (%d train images, %d classes) with %s/%s, %d templates (%s), mode %s",
                bundle.name, len(bundle.train), len(bundle.classes), clip.name, clip.pretrained, len(templates),
                templates.name, builder.name)
    text_emb = encode_text_embeddings(clip, templates.templates, names, batch_size=max(config.batch_size, 64))
    cache = EmbeddingCache(config.cache_dir, chunk_size=config.chunk_size) if config.cache_dir else None

    scored: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, data in _iter_splits(bundle):
        emb = embed_images(clip, data.images, cache=cache, fingerprint=data.fingerprint(), split=split,
                           batch_size=config.batch_size, workers=config.workers, chunk_size=config.chunk_size,
                           progress=progress)
        mean, top1 = score_embeddings(emb, text_emb, logit_scale=clip.logit_scale)
        scored[split] = (mean.numpy(), top1.numpy())

    mean, top1 = scored["train"]
    candidates = builder(torch.from_numpy(mean), torch.from_numpy(top1)).numpy()
    annotator: dict[str, Any] = {
        "kind": "clip", "model": clip.name, "pretrained": clip.pretrained, "templates": templates.name,
        "templates_list": list(templates.templates), "mode": builder.name, **builder.params,
        "class_names": describe_class_names(names), "seed": config.seed, "logit_scale": clip.logit_scale,
        "precision": clip.precision,
    }
    ann = Annotation(candidates=candidates, classes=list(bundle.classes), annotator=annotator,
                     data=bundle.describe(), scores=mean, template_preds=top1.astype(np.int16),
                     test_scores=scored["test"][0] if "test" in scored else None)

    sizes = candidates.sum(1)
    metrics: dict[str, float] = {"avg_set_size": float(sizes.mean())}
    gold = bundle.train.labels
    if gold is not None:
        metrics["eta"] = float(1.0 - candidates[np.arange(len(gold)), gold].mean())
    metrics.update(zero_shot_metrics(mean_probs=mean, template_top1=top1, labels=gold, split="train"))
    if "test" in scored:
        metrics.update(zero_shot_metrics(mean_probs=scored["test"][0], template_top1=scored["test"][1],
                                         labels=bundle.test.labels, split="test"))
    path = ann.save(out) if out is not None else None
    if tracker is not None:
        from coreg.annotate.report import log_annotation

        params = {**config.to_params(), **builder.params, "data": bundle.name, "templates_count": len(templates)}
        log_annotation(tracker, ann, path=path, gold=gold, metrics=metrics, params=params)
        tracker.log_text(config.to_yaml(), "config.yaml")
    return AnnotateResult(annotation=ann, metrics=metrics, path=path, templates=templates,
                          test_template_top1=scored["test"][1] if "test" in scored else None)
