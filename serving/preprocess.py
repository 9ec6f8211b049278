"""Inference preprocessing, identical to training's: decode, composite, convert, resize, normalise.

This module reproduces ``coreg.data.datasets.to_uint8_image`` and the evaluation transform
(``x / 255``, per-channel ``(x - mean) / std``, ``[C, H, W]``) with numpy and Pillow only, so the
edge install needs no torch. The rules, in order:

1. transparent images (``RGBA``, ``LA``, palette with a ``transparency`` entry) are composited
   on a white background;
2. the image is converted to ``L`` (1 channel) or ``RGB`` (3 channels) with Pillow's conversions;
3. if it is not ``size`` x ``size`` it is resized with Pillow's bilinear filter (the aspect ratio
   is not kept, as in training);
4. float32 ``(x / 255 - mean) / std`` per channel (computed as ``(x - 255 mean) / (255 std)``,
   exactly as training's evaluation transform), laid out ``[B, C, H, W]``.

EXIF orientation is not applied, because training does not apply it either.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["PreprocessSpec", "ImageDecodeError", "ImageFormatError", "ImageTooLargeError", "to_uint8_image", "normalize",
           "preprocess_images", "open_image", "DEFAULT_MAX_PIXELS"]

DEFAULT_MAX_PIXELS = 40_000_000


class ImageDecodeError(ValueError):
    """The bytes or file are not a decodable image (message names the input)."""


class ImageFormatError(ImageDecodeError):
    """The bytes are not in any image format Pillow recognises."""


class ImageTooLargeError(ImageDecodeError):
    """The image's declared dimensions exceed the pixel limit (checked before decoding)."""


@dataclass(frozen=True)
class PreprocessSpec:
    """The inference part of a coreg image spec (``coreg.spec`` metadata / ``preprocess.json``).

    Attributes:
        size: network input side in pixels.
        channels: 1 (grey) or 3 (RGB).
        mean: per-channel mean in [0, 1] units.
        std: per-channel std.
        resize_rule: how a raw image reaches ``size`` x ``size`` (only ``"bilinear"`` exists).
    """

    size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize_rule: str = "bilinear"

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"mean/std need {self.channels} values, got {self.mean} / {self.std}")
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")
        if self.resize_rule != "bilinear":
            raise ValueError(f"unsupported resize rule {self.resize_rule!r} (this runner knows 'bilinear')")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PreprocessSpec:
        """Build from a ``coreg.spec`` / ``preprocess.json`` mapping (extra keys are ignored)."""
        try:
            return cls(size=int(d["size"]), channels=int(d["channels"]),
                       mean=tuple(float(v) for v in d["mean"]), std=tuple(float(v) for v in d["std"]),
                       resize_rule=str(d.get("resize_rule", "bilinear")))
        except (KeyError, TypeError) as e:
            raise ValueError(f"incomplete preprocessing spec {dict(d)!r}: {type(e).__name__}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly mapping."""
        return {"size": self.size, "channels": self.channels, "mean": list(self.mean), "std": list(self.std),
                "resize_rule": self.resize_rule}


def to_uint8_image(img: Image.Image, *, size: int, channels: int) -> np.ndarray:
    """Any PIL image -> uint8 ``[size, size, channels]`` (the training conversion, see module doc)."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, img)
    mode = "L" if channels == 1 else "RGB"
    if img.mode != mode:  # convert() to the same mode would copy the full-size image for nothing
        img = img.convert(mode)
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr


def normalize(images: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """uint8 ``[B, H, W, C]`` -> normalised float32 ``[B, C, H, W]``."""
    # (x - 255 mean) / (255 std) in float32, the same operations as training's evaluation transform
    # (coreg.data.transforms.Augmenter.normalize), so the results agree to the last bit.
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(1, -1, 1, 1) * np.float32(255.0)
    std = np.asarray(spec.std, dtype=np.float32).reshape(1, -1, 1, 1) * np.float32(255.0)
    x = images.astype(np.float32).transpose(0, 3, 1, 2)
    return np.ascontiguousarray((x - mean) / std, dtype=np.float32)


def preprocess_images(images: Sequence[Image.Image], spec: PreprocessSpec | Mapping[str, Any]) -> np.ndarray:
    """PIL images of any mode and size -> the network input, float32 ``[B, C, H, W]``."""
    if not isinstance(spec, PreprocessSpec):
        spec = PreprocessSpec.from_dict(spec)
    if len(images) == 0:
        return np.zeros((0, spec.channels, spec.size, spec.size), dtype=np.float32)
    batch = np.stack([to_uint8_image(im, size=spec.size, channels=spec.channels) for im in images])
    return normalize(batch, spec)


def open_image(source: bytes | str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               name: str | None = None) -> Image.Image:
    """Decode an image fully, refusing oversized ones before their pixels are decoded.

    Pillow reads only the header in ``Image.open``, so the declared width x height is checked
    against ``max_pixels`` before ``load()`` allocates and decodes anything. A file is read into
    memory first and decoded from there; the decoded image is returned without a copy, so decoding
    costs about one image of memory (``width * height * bands`` bytes).

    Args:
        source: encoded bytes or a file path.
        max_pixels: largest allowed width x height (``None``: no limit beyond Pillow's own).
        name: how to name the input in error messages (default: the path, or ``"image"``).

    Returns:
        The loaded image (independent of the source file).

    Raises:
        ImageTooLargeError: declared dimensions above ``max_pixels`` (or a Pillow decompression bomb).
        ImageFormatError: not in a format Pillow recognises.
        ImageDecodeError: truncated or otherwise undecodable.
    """
    label = name or (str(source) if isinstance(source, (str, Path)) else "image")
    try:
        # Decode from memory: the compressed bytes are small, no file handle outlives the call
        # (multi-frame formats keep theirs open otherwise), and no full-size copy is needed.
        data = Path(source).read_bytes() if isinstance(source, (str, Path)) else source
        with warnings.catch_warnings():
            # Our own limit decides; Pillow's warning (above its MAX_IMAGE_PIXELS) would only be noise.
            # Pillow still raises DecompressionBombError above twice its limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if max_pixels is not None and w * h > max_pixels:
                raise ImageTooLargeError(f"{label}: image is {w}x{h} = {w * h} pixels, over the limit of "
                                         f"{max_pixels}")
            im.load()
            return im
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(f"{label}: {e}") from None
    except UnidentifiedImageError:
        raise ImageFormatError(f"{label}: not a recognised image format") from None
    except FileNotFoundError:
        raise ImageDecodeError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise ImageDecodeError(f"{label}: is a directory, not an image file") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageDecodeError(f"{label}: cannot decode image ({type(e).__name__}: {e})") from None
