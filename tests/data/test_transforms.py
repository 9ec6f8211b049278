"""Batched tensor augmentation matches PIL op by op (within one grey level) and the crop rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from coreg.data.datasets import ImageSpec
from coreg.data.transforms import (
    OP_NAMES,
    Augmenter,
    grey_cutout,
    rand_augment_one_op,
    random_crop_flip,
    rgb_cutout,
)

VALUES = {"Brightness": 0.3, "Color": 0.4, "Contrast": 0.6, "Posterize": 5.5, "Rotate": 17.0, "Sharpness": 0.3,
          "ShearX": 0.2137, "ShearY": -0.25, "Solarize": 128.0, "TranslateX": 0.2137, "TranslateY": -0.15}


def _pil(img: Image.Image, name: str, v: float) -> Image.Image:
    ops = {
        "AutoContrast": lambda: ImageOps.autocontrast(img),
        "Brightness": lambda: ImageEnhance.Brightness(img).enhance(v),
        "Color": lambda: ImageEnhance.Color(img).enhance(v),
        "Contrast": lambda: ImageEnhance.Contrast(img).enhance(v),
        "Equalize": lambda: ImageOps.equalize(img),
        "Identity": lambda: img,
        "Posterize": lambda: ImageOps.posterize(img, max(1, int(v))),
        "Rotate": lambda: img.rotate(v),
        "Sharpness": lambda: ImageEnhance.Sharpness(img).enhance(v),
        "ShearX": lambda: img.transform(img.size, Image.AFFINE, (1, v, 0, 0, 1, 0)),
        "ShearY": lambda: img.transform(img.size, Image.AFFINE, (1, 0, 0, v, 1, 0)),
        "Solarize": lambda: ImageOps.solarize(img, v),
        "TranslateX": lambda: img.transform(img.size, Image.AFFINE, (1, 0, v * img.size[0], 0, 1, 0)),
        "TranslateY": lambda: img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, v * img.size[1])),
    }
    return ops[name]()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack([np.asarray(Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).resize(
        (32, 32), Image.BILINEAR)) for _ in range(3)])


@pytest.mark.parametrize("k,name", list(enumerate(OP_NAMES)))
def test_op_matches_pil(images: np.ndarray, k: int, name: str) -> None:
    v = VALUES.get(name, 0.0)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    out = rand_augment_one_op(x, generator=torch.Generator(), ops=torch.full((3,), k),
                              values=torch.full((3,), v, dtype=torch.float64))
    got = out.permute(0, 2, 3, 1).numpy().astype(int)
    ref = np.stack([np.asarray(_pil(Image.fromarray(im), name, v)) for im in images]).astype(int)
    assert np.abs(got - ref).max() <= 1


def test_crop_matches_reference_loop() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 255, (5, 3, 8, 8), dtype=torch.uint8, generator=g)
    gen = torch.Generator().manual_seed(1)
    out = random_crop_flip(x, padding=2, flip=False, generator=gen)
    gen = torch.Generator().manual_seed(1)
    oy = torch.randint(0, 5, (5,), generator=gen)
    ox = torch.randint(0, 5, (5,), generator=gen)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b in range(5):
        assert torch.equal(out[b], padded[b, :, oy[b]: oy[b] + 8, ox[b]: ox[b] + 8])


def test_flip_is_a_mirror_or_identity() -> None:
    x = torch.randint(0, 255, (64, 1, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = random_crop_flip(x, padding=0, flip=True, generator=torch.Generator().manual_seed(2))
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x)])
    same = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert (flipped | same).all() and 10 < int(flipped.sum()) < 54


def test_cutouts() -> None:
    x = torch.full((200, 3, 32, 32), 7, dtype=torch.uint8)
    out = rgb_cutout(x, generator=torch.Generator().manual_seed(0))
    filled = (out != 7).any(1)
    frac = filled.float().mean((1, 2))
    assert frac.max() <= (17 / 32) ** 2 + 1e-6  # side at most half the width (+1: end point included)
    assert (out[:, 0][filled] == 125).all() and (out[:, 2][filled] == 114).all()
    g = grey_cutout(torch.full((50, 1, 28, 28), 9, dtype=torch.uint8), generator=torch.Generator().manual_seed(0))
    assert ((g == 0).sum((1, 2, 3)) <= 256).all() and ((g == 0).sum((1, 2, 3)) > 0).all()


def test_augmenter_views_are_seeded_and_normalised(digits) -> None:
    aug = Augmenter(digits.spec)
    x = torch.from_numpy(digits.train.images[:16]).permute(0, 3, 1, 2).contiguous()
    a = aug.strong(x, torch.Generator().manual_seed(0))
    b = aug.strong(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.dtype == torch.float32 and a.shape == (16, 1, 16, 16)
    t = aug.test(x)
    expect = (x.float() / 255 - digits.spec.mean[0]) / digits.spec.std[0]
    assert torch.allclose(t, expect, atol=1e-5)
    spec = ImageSpec(32, 3, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    y = torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8)
    cl = Augmenter(spec, channels_last=True).weak(y, torch.Generator().manual_seed(0))
    assert cl.is_contiguous(memory_format=torch.channels_last)
