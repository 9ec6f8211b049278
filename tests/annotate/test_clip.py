"""CLIP scoring, text/image encoding, the embedding cache and the whole stage (stub model + coreg-tiny)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from coreg.annotate import (
    AnnotateConfig,
    ClipLoadError,
    ClipModel,
    annotate_dataset,
    embed_images,
    encode_text_embeddings,
    load_clip,
    load_templates,
    score_embeddings,
)
from coreg.annotate.clip import EmbeddingCache, _encode_tokens
from coreg.config import ConfigError
from coreg.data import load_annotation_for
from coreg.tracking.base import RecordingTracker


def _cfg(tmp_path: Path, **kw: Any) -> AnnotateConfig:
    base = {"model": "stub", "pretrained": "stub", "cache_dir": str(tmp_path / "cache"), "batch_size": 4,
            "chunk_size": 8}
    base.update(kw)
    return AnnotateConfig(**base)


# --------------------------------------------------------------------------- text side


def test_prompts_reaching_the_text_encoder_are_exactly_template_x_class(make_stub: Callable[..., ClipModel]) -> None:
    clip = make_stub()
    templates = ["a photo of a {}", "itap of the {}."]
    emb = encode_text_embeddings(clip, templates, [["cat"], ["lawn_mower"], ["T-shirt/top"]], batch_size=4)
    assert clip.tokenizer.seen == ["a photo of a cat", "a photo of a lawn_mower", "a photo of a T-shirt/top",
                                   "itap of the cat.", "itap of the lawn_mower.", "itap of the T-shirt/top."]
    assert emb.shape == (2, 3, 8)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2, 3))


def test_several_names_per_class_average_normalised_embeddings(make_stub: Callable[..., ClipModel]) -> None:
    clip = make_stub()
    emb = encode_text_embeddings(clip, ["a {}"], [["cat", "kitten"], ["dog"]])
    table, vocab = clip.model.table, clip.tokenizer.vocab
    e = lambda s: F.normalize(table[vocab[s]], dim=-1)  # noqa: E731
    assert torch.allclose(emb[0, 0], F.normalize(e("a cat") + e("a kitten"), dim=-1), atol=1e-6)
    assert torch.allclose(emb[0, 1], e("a dog"), atol=1e-6)


def test_trimmed_text_forward_equals_open_clip_encode_text() -> None:
    clip = load_clip("coreg-tiny", "none", device="cpu")
    tokens = clip.tokenizer(["a photo of a cat", "a rendering of a very large aquarium_fish", "x"])
    with torch.inference_mode():
        want = clip.model.encode_text(tokens)
        got = _encode_tokens(clip.model, tokens)
    assert torch.allclose(got, want, atol=1e-5)


# --------------------------------------------------------------------------- scoring


def test_scores_match_the_per_template_softmax_formula() -> None:
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(7, 4, generator=g), dim=-1)
    txt = F.normalize(torch.randn(3, 5, 4, generator=g), dim=-1)
    mean, top1 = score_embeddings(img, txt, logit_scale=100.0, block=3)
    per_t = torch.stack([(100.0 * img @ txt[t].T).softmax(-1) for t in range(3)])  # [P, N, K]
    assert torch.allclose(mean, per_t.mean(0), atol=1e-6)
    assert torch.equal(top1, per_t.argmax(-1).T)
    # the KD soft labels (spec 8.2): non-negative rows summing to 1
    assert (mean >= 0).all() and torch.allclose(mean.sum(1), torch.ones(7), atol=1e-6)


# --------------------------------------------------------------------------- image side and cache


def test_image_embeddings_use_the_preprocess_and_are_unit_norm(make_stub: Callable[..., ClipModel]) -> None:
    clip = make_stub()
    imgs = np.random.default_rng(0).integers(0, 255, (10, 4, 4, 3), dtype=np.uint8)
    emb = embed_images(clip, imgs, batch_size=3, progress=False)
    x = torch.from_numpy(imgs.astype(np.float32) / 255.0).permute(0, 3, 1, 2) - 0.5
    want = F.normalize(x.flatten(1) @ clip.model.proj, dim=-1)
    assert np.allclose(emb, want.numpy(), atol=1e-5)
    grey = imgs[..., :1]
    emb_grey = embed_images(clip, grey, batch_size=4, progress=False)  # 1-channel images become RGB
    assert emb_grey.shape == (10, 8)


def test_cache_hit_and_new_template_set_reuse(make_stub: Callable[..., ClipModel], folder_bundle: Any,
                                              tmp_path: Path) -> None:
    clip = make_stub()
    n_images = len(folder_bundle.train) + len(folder_bundle.test)
    first = annotate_dataset(folder_bundle, _cfg(tmp_path), clip=clip, progress=False)
    assert clip.model.images_seen == n_images
    calls = clip.model.image_calls
    again = annotate_dataset(folder_bundle, _cfg(tmp_path), clip=clip, progress=False)
    assert clip.model.image_calls == calls  # image encoder not called again
    assert np.array_equal(again.annotation.candidates, first.annotation.candidates)
    other = annotate_dataset(folder_bundle, _cfg(tmp_path, templates="paper-full", mode="topk", k=2), clip=clip,
                             progress=False)
    assert clip.model.image_calls == calls
    assert other.annotation.template_preds.shape == (len(folder_bundle.train), 80)
    # a fresh stub with the same identity (e.g. a new process) also hits the cache
    fresh = make_stub()
    annotate_dataset(folder_bundle, _cfg(tmp_path), clip=fresh, progress=False)
    assert fresh.model.image_calls == 0


def test_resume_after_interrupted_run(make_stub: Callable[..., ClipModel], tmp_path: Path) -> None:
    imgs = np.random.default_rng(1).integers(0, 255, (20, 4, 4, 3), dtype=np.uint8)
    cache = EmbeddingCache(tmp_path / "cache", chunk_size=8)  # chunks of 8, 8, 4 images
    crashing = make_stub()
    crashing.model.fail_after = 2  # batch 4: the first chunk (two batches) completes, then a crash
    with pytest.raises(RuntimeError, match="simulated crash"):
        embed_images(crashing, imgs, cache=cache, fingerprint="fp", split="train", batch_size=4, progress=False)
    entry_dir = next((tmp_path / "cache").glob("*/train-fp"))
    assert sorted(p.name for p in entry_dir.glob("chunk_*.npy")) == ["chunk_00000.npy"]
    resumed = make_stub()
    emb = embed_images(resumed, imgs, cache=cache, fingerprint="fp", split="train", batch_size=4, progress=False)
    assert resumed.model.images_seen == 12  # only the two missing chunks
    reference = embed_images(make_stub(), imgs, batch_size=4, progress=False)
    assert np.allclose(emb, reference, atol=1e-6)


def test_cache_key_separates_data_and_weights(make_stub: Callable[..., ClipModel], tmp_path: Path) -> None:
    imgs = np.zeros((4, 4, 4, 3), dtype=np.uint8)
    cache = EmbeddingCache(tmp_path, chunk_size=8)
    clip = make_stub()
    embed_images(clip, imgs, cache=cache, fingerprint="a", split="train", progress=False)
    embed_images(clip, imgs, cache=cache, fingerprint="b", split="train", progress=False)
    embed_images(clip, imgs, cache=cache, fingerprint="a", split="test", progress=False)
    clip.weights_id = "other"
    embed_images(clip, imgs, cache=cache, fingerprint="a", split="train", progress=False)
    assert clip.model.image_calls == 4


def test_corrupt_chunk_is_recomputed(make_stub: Callable[..., ClipModel], tmp_path: Path) -> None:
    imgs = np.random.default_rng(2).integers(0, 255, (6, 4, 4, 3), dtype=np.uint8)
    cache = EmbeddingCache(tmp_path, chunk_size=8)
    first = embed_images(make_stub(), imgs, cache=cache, fingerprint="f", split="train", progress=False)
    chunk = next(tmp_path.glob("*/train-f/chunk_00000.npy"))
    for bad in (b"garbage", b""):  # b"": an empty file (crash between create and write) raises EOFError
        chunk.write_bytes(bad)
        clip = make_stub()
        again = embed_images(clip, imgs, cache=cache, fingerprint="f", split="train", progress=False)
        assert clip.model.image_calls == 1 and np.allclose(first, again)


# --------------------------------------------------------------------------- the stage


def test_annotation_content_and_metrics(make_stub: Callable[..., ClipModel], folder_bundle: Any,
                                        tmp_path: Path) -> None:
    clip = make_stub()
    out = tmp_path / "ann.npz"
    res = annotate_dataset(folder_bundle, _cfg(tmp_path, cache_dir=None), clip=clip, out=out, progress=False)
    ann = load_annotation_for(out, folder_bundle)
    n, k = len(folder_bundle.train), len(folder_bundle.classes)
    assert ann.candidates.shape == (n, k) and ann.template_preds.shape == (n, 27)
    assert ann.test_scores.shape == (len(folder_bundle.test), k)
    assert np.allclose(ann.scores.sum(1), 1.0, atol=1e-5)
    # multi_prompt = union of the stored per-template top-1s
    union = np.zeros((n, k), bool)
    np.put_along_axis(union, ann.template_preds.astype(np.int64), True, axis=1)
    assert np.array_equal(ann.candidates, union)
    assert np.array_equal(ann.single_labels(), ann.scores.argmax(1))
    a = ann.annotator
    assert a["kind"] == "clip" and a["templates"] == "paper" and len(a["templates_list"]) == 27
    assert a["mode"] == "multi_prompt" and a["class_names"] == folder_bundle.classes and a["seed"] == 0
    gold = folder_bundle.train.labels
    m = res.metrics
    assert m["avg_set_size"] == pytest.approx(ann.candidates.sum(1).mean())
    assert m["eta"] == pytest.approx(1 - ann.candidates[np.arange(n), gold].mean())
    assert m["zero_shot_train_acc"] == pytest.approx((ann.template_preds[:, 0] == gold).mean())
    assert m["zero_shot_avg_train_acc"] == pytest.approx((ann.scores.argmax(1) == gold).mean())
    assert m["zero_shot_avg_test_acc"] == pytest.approx(
        (ann.test_scores.argmax(1) == folder_bundle.test.labels).mean())
    assert "zero_shot_test_acc" in m


def test_modes_and_parameters_are_recorded(make_stub: Callable[..., ClipModel], folder_bundle: Any,
                                           tmp_path: Path) -> None:
    res = annotate_dataset(folder_bundle, _cfg(tmp_path, mode="prob_ratio", threshold=0.3), clip=make_stub(),
                           progress=False)
    assert res.annotation.annotator["mode"] == "prob_ratio"
    assert res.annotation.annotator["k"] == 5 and res.annotation.annotator["threshold"] == 0.3


def test_tracker_gets_metrics_and_figures(make_stub: Callable[..., ClipModel], folder_bundle: Any,
                                          tmp_path: Path) -> None:
    tracker = RecordingTracker()
    annotate_dataset(folder_bundle, _cfg(tmp_path), clip=make_stub(), out=tmp_path / "a.npz", tracker=tracker,
                     progress=False)
    assert tracker.params["mode"] == "multi_prompt" and tracker.params["model"] == "stub"
    logged = {k for _, m in tracker.metrics for k in m}
    assert {"avg_set_size", "eta", "zero_shot_train_acc", "zero_shot_avg_train_acc", "zero_shot_test_acc",
            "zero_shot_avg_test_acc"} <= logged
    assert {"figures/set_size_hist.png", "figures/per_class_eta.png",
            "figures/per_template_acc.png"} <= set(tracker.artifacts)
    assert str(tmp_path / "a.npz") in tracker.artifacts


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="does not take k"):
        AnnotateConfig(mode="multi_prompt", k=3)
    with pytest.raises(ConfigError, match="unknown candidate mode"):
        AnnotateConfig(mode="kd2")
    with pytest.raises(ConfigError, match="device"):
        AnnotateConfig(device="tpu")


def test_templates_are_resolved_before_any_model_work(folder_bundle: Any, tmp_path: Path) -> None:
    from coreg.annotate import TemplateError

    with pytest.raises(TemplateError):
        annotate_dataset(folder_bundle, _cfg(tmp_path, templates=str(tmp_path / "missing.txt")), clip=None)


# --------------------------------------------------------------------------- open_clip loading


def test_coreg_tiny_random_weights_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="coreg.annotate.clip"):
        clip = load_clip("coreg-tiny", "none", device="cpu", seed=3)
    assert any("RANDOM weights" in r.getMessage() for r in caplog.records)
    assert clip.pretrained == "none" and clip.weights_id == "random-seed3"
    assert 3.0e6 < sum(p.numel() for p in clip.model.parameters()) < 3.8e6
    assert clip.logit_scale == pytest.approx(1 / 0.07, rel=1e-5)
    again = load_clip("coreg-tiny", "none", device="cpu", seed=3)
    assert torch.equal(clip.model.visual.conv1.weight, again.model.visual.conv1.weight)


def test_real_model_on_folder_data_with_coreg_tiny(folder_bundle: Any, tmp_path: Path) -> None:
    cfg = AnnotateConfig(model="coreg-tiny", pretrained="none", cache_dir=None, templates="paper", batch_size=8)
    res = annotate_dataset(folder_bundle, cfg, progress=False)
    ann = res.annotation
    assert ann.candidates.any(1).all() and np.allclose(ann.scores.sum(1), 1, atol=1e-5)
    assert ann.annotator["pretrained"] == "none" and ann.annotator["logit_scale"] == pytest.approx(1 / 0.07, 1e-5)


def test_missing_weights_offline_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        load_clip("ViT-B-32", "openai", device="cpu")
    except ClipLoadError as e:
        assert "could not be downloaded" in str(e) and "HF_HUB_OFFLINE" in str(e) and "\n" not in str(e)
    else:  # pragma: no cover - the weights happen to be cached on this machine
        pytest.skip("ViT-B-32/openai weights are cached locally")


@pytest.mark.parametrize(("model", "pretrained", "match"), [
    ("ViT-B-99", "openai", "unknown open_clip model"),
    ("coreg-tiny", "nonsense_tag", "unknown pretrained tag"),
])
def test_bad_model_or_tag(model: str, pretrained: str, match: str) -> None:
    with pytest.raises(ClipLoadError, match=match):
        load_clip(model, pretrained, device="cpu")


def test_unavailable_device() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ClipLoadError, match="CUDA is not available"):
        load_clip("coreg-tiny", "none", device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_autocast_matches_cpu(folder_bundle: Any) -> None:
    cpu = load_clip("coreg-tiny", "none", device="cpu")
    gpu = load_clip("coreg-tiny", "none", device="cuda")
    a = embed_images(cpu, folder_bundle.train.images, progress=False)
    b = embed_images(gpu, folder_bundle.train.images, progress=False)
    assert np.abs(a - b).max() < 0.05


@pytest.mark.slow
def test_real_vit_b_32_openai_if_cached(tmp_path: Path) -> None:
    try:
        clip = load_clip("ViT-B-32", "openai", device="auto")
    except ClipLoadError:
        pytest.skip("ViT-B-32/openai weights are not in the local cache")
    assert clip.logit_scale == pytest.approx(100.0, rel=1e-3)  # spec 1.1's constant
    templates = load_templates("paper").templates
    # Zero-shot sanity on synthetic colour patches: 'red' vs 'green' vs 'blue'.
    imgs = np.zeros((3, 64, 64, 3), dtype=np.uint8)
    for i in range(3):
        imgs[i, ..., i] = 255
    txt = encode_text_embeddings(clip, templates, [["red"], ["green"], ["blue"]])
    mean, _ = score_embeddings(embed_images(clip, imgs, progress=False), txt, logit_scale=clip.logit_scale)
    assert mean.argmax(1).tolist() == [0, 1, 2]
