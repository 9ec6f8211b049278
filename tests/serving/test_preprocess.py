"""serving.preprocess reproduces the training conversion (to_uint8_image) and the eval transform."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from coreg.data.datasets import ImageSpec, to_uint8_image
from coreg.data.transforms import Augmenter, to_tensor_images
from serving.preprocess import (
    ImageDecodeError,
    ImageFormatError,
    ImageTooLargeError,
    PreprocessSpec,
    open_image,
    preprocess_images,
)


def _images() -> dict[str, Image.Image]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, rng.integers(0, 256, size=(16, 16, 1), dtype=np.uint8)], axis=2)
    rgba[:4, :, 3] = 0  # fully transparent rows
    pal = Image.fromarray(rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)).convert("P", palette=Image.ADAPTIVE,
                                                                                          colors=16)
    pal_t = pal.copy()
    pal_t.info["transparency"] = 3
    big = rng.integers(0, 256, size=(37, 50, 3), dtype=np.uint8)
    return {
        "L": Image.fromarray(rng.integers(0, 256, size=(16, 16), dtype=np.uint8), "L"),
        "L_resize": Image.fromarray(rng.integers(0, 256, size=(23, 41), dtype=np.uint8), "L"),
        "RGB": Image.fromarray(rgb, "RGB"),
        "RGBA": Image.fromarray(rgba, "RGBA"),
        "LA": Image.fromarray(rgba[:, :, [0, 3]], "LA"),
        "P": pal,
        "P_transparent": pal_t,
        "RGB_large": Image.fromarray(big, "RGB"),
    }


SPECS = [ImageSpec(16, 1, (0.3,), (0.25,)), ImageSpec(32, 3, (0.49, 0.48, 0.45), (0.2, 0.19, 0.21))]


@pytest.mark.parametrize("spec", SPECS, ids=["grey16", "rgb32"])
def test_preprocess_equals_training_conversion_and_eval_transform(spec):
    imgs = _images()
    ref_u8 = np.stack([to_uint8_image(im, size=spec.size, channels=spec.channels) for im in imgs.values()])
    ref = Augmenter(spec).test(to_tensor_images(ref_u8)).numpy()
    got = preprocess_images(list(imgs.values()), PreprocessSpec.from_dict(spec.to_dict()))
    assert got.shape == (len(imgs), spec.channels, spec.size, spec.size) and got.dtype == np.float32
    assert float(np.abs(got - ref).max()) <= 1e-6


def test_transparency_is_composited_on_white():
    im = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    spec = PreprocessSpec(size=4, channels=3, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    np.testing.assert_allclose(preprocess_images([im], spec), 1.0)


def test_open_image_round_trip_png_bytes():
    im = _images()["RGBA"]
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    back = open_image(buf.getvalue())
    assert back.mode == "RGBA" and np.array_equal(np.asarray(back), np.asarray(im))


def test_open_image_errors(tmp_path):
    with pytest.raises(ImageFormatError):
        open_image(b"definitely not an image")
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, format="PNG")
    with pytest.raises(ImageDecodeError):
        open_image(buf.getvalue()[:60])  # truncated
    big = io.BytesIO()
    Image.new("L", (2000, 1000)).save(big, format="PNG")
    with pytest.raises(ImageTooLargeError, match="2000x1000"):
        open_image(big.getvalue(), max_pixels=1_000_000)
    bad = tmp_path / "notes.png"
    bad.write_text("hello")
    with pytest.raises(ImageFormatError, match="notes.png"):
        open_image(bad)


def test_spec_validation():
    with pytest.raises(ValueError):
        PreprocessSpec(size=16, channels=2, mean=(0.1, 0.1), std=(1.0, 1.0))
    with pytest.raises(ValueError):
        PreprocessSpec.from_dict({"size": 16, "channels": 1})
