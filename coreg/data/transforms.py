"""Batched on-device augmentation of uint8 image tensors (spec section 3.4).

All views are made from a ``[B, C, H, W]`` uint8 tensor that already sits on the training device,
with per-sample random parameters drawn from a seeded :class:`torch.Generator` (on the CPU, then
moved), so augmentation is a handful of batched kernels instead of 2,048 PIL pipelines per
iteration, and never stalls the accelerator waiting for worker processes.

* ``weak``: zero-pad ``p`` pixels, random ``s x s`` crop, random horizontal flip (when the dataset
  allows flips) -- torchvision ``RandomCrop(s, padding=p)`` + ``RandomHorizontalFlip``.
* ``strong``: weak, then for RGB datasets the reference's one-op RandAugment (one of 14 ops drawn
  uniformly per image, its parameter uniform in the listed range) followed by the RGB cutout
  (fill (125, 123, 114), side ``v * width`` with ``v ~ U(0, 0.5)``); for grey datasets a 16x16
  zero cutout instead (FMNIST/FER2013 recipe). ``strong="torchvision"`` uses torchvision's
  RandAugment (per image, on the CPU) instead of the reference's ops.
* ``test``: normalisation only.

The ops are re-implementations of PIL's on tensors; rounding differs from PIL by at most about
one grey level for the colour ops (blend then round), and nearest-neighbour affine warps sample
the same pixel centres as PIL's ``Image.transform``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from coreg.data.datasets import ImageSpec

NUM_OPS = 14
OP_NAMES = ("AutoContrast", "Brightness", "Color", "Contrast", "Equalize", "Identity", "Posterize", "Rotate",
            "Sharpness", "ShearX", "ShearY", "Solarize", "TranslateX", "TranslateY")
CUTOUT_FILL = (125, 123, 114)


def _rand(n: int, g: torch.Generator, device: torch.device, lo: float = 0.0, hi: float = 1.0) -> Tensor:
    return (torch.rand(n, generator=g) * (hi - lo) + lo).to(device)


def random_crop_flip(x: Tensor, *, padding: int, flip: bool, generator: torch.Generator) -> Tensor:
    """Zero-pad, random crop back to the input size, optional random horizontal flip.

    Args:
        x: uint8 ``[B, C, H, W]``.
        padding: pixels of zero padding on every side.
        flip: apply a horizontal flip with probability 0.5.
        generator: CPU generator for the offsets and flips.
    """
    b, c, h, w = x.shape
    dev = x.device
    if padding > 0:
        xp = F.pad(x, (padding, padding, padding, padding))
        oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(dev)
        ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(dev)
        rows = (oy[:, None] + torch.arange(h, device=dev)[None, :])  # [B, H]
        cols = (ox[:, None] + torch.arange(w, device=dev)[None, :])  # [B, W]
        bi = torch.arange(b, device=dev)[:, None, None, None]
        ci = torch.arange(c, device=dev)[None, :, None, None]
        x = xp[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]
    if flip:
        m = (torch.rand(b, generator=generator) < 0.5).to(dev)
        x = torch.where(m[:, None, None, None], x.flip(-1), x)
    return x


# --------------------------------------------------------------------------- RandAugment ops (float 0..255)


def _grey(x: Tensor) -> Tensor:
    """PIL's ``L`` conversion: (299 R + 587 G + 114 B) / 1000, float ``[B, 1, H, W]``."""
    if x.shape[1] == 1:
        return x
    return (x[:, 0:1] * 299 + x[:, 1:2] * 587 + x[:, 2:3] * 114) / 1000.0


def _blend(img: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """PIL ``ImageEnhance``: ``other + factor * (img - other)``, clipped."""
    return (other + factor.view(-1, 1, 1, 1) * (img - other)).clamp(0, 255)


def _autocontrast(x: Tensor) -> Tensor:
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    scale = 255.0 / (hi - lo).clamp_min(1)
    out = ((x - lo) * scale).clamp(0, 255)
    return torch.where(hi > lo, out, x)


def _equalize(x: Tensor) -> Tensor:
    """Per-image, per-channel histogram equalisation with PIL's lookup-table rule."""
    b, c, h, w = x.shape
    xi = x.round().long().clamp(0, 255).view(b * c, h * w)
    hist = torch.zeros(b * c, 256, device=x.device, dtype=torch.float32)
    hist.scatter_add_(1, xi, torch.ones_like(xi, dtype=torch.float32))
    # PIL: step = (total - count of the last non-empty bin) // 255; identity when step == 0
    idx = torch.arange(256, device=x.device).expand_as(hist)
    last = torch.where(hist > 0, idx, torch.zeros_like(idx)).amax(1)
    last_count = hist.gather(1, last[:, None]).squeeze(1)
    step = torch.div(hist.sum(1) - last_count, 255, rounding_mode="floor")
    cum = torch.cumsum(hist, 1) - hist  # counts strictly below each value
    lut = torch.div(cum + torch.div(step, 2, rounding_mode="floor")[:, None], step.clamp_min(1)[:, None],
                    rounding_mode="floor").clamp(0, 255)
    out = lut.gather(1, xi).view(b, c, h, w)
    return torch.where((step > 0).view(b, c, 1, 1), out, x)


_SMOOTH = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0


def _sharpness(x: Tensor, factor: Tensor) -> Tensor:
    b, c, h, w = x.shape
    k = _SMOOTH.to(x.device, x.dtype).view(1, 1, 3, 3).repeat(c, 1, 1, 1)
    blur = F.conv2d(x, k, groups=c).round()
    degenerate = x.clone()
    degenerate[:, :, 1:-1, 1:-1] = blur  # PIL keeps the one-pixel border
    return _blend(x, degenerate, factor)


def _affine_nearest(x: Tensor, mats: Tensor, fill: float = 0.0) -> Tensor:
    """Warp with per-image inverse maps ``mats [B, 2, 3]`` in pixel coordinates (PIL convention:
    output pixel centre (i + 0.5, j + 0.5) samples input at ``mats @ (x, y, 1)``), nearest neighbour."""
    b, c, h, w = x.shape
    dev = x.device
    # float64 like PIL: samples that land exactly on a pixel edge must floor the same way
    ys, xs = torch.meshgrid(torch.arange(h, device=dev, dtype=torch.float64) + 0.5,
                            torch.arange(w, device=dev, dtype=torch.float64) + 0.5, indexing="ij")
    ones = torch.ones_like(xs)
    pts = torch.stack([xs, ys, ones], 0).view(3, -1)  # [3, HW]
    src = mats.double() @ pts  # [B, 2, HW]
    sx = torch.floor(src[:, 0]).long()
    sy = torch.floor(src[:, 1]).long()
    valid = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)
    flat = (sy.clamp(0, h - 1) * w + sx.clamp(0, w - 1))  # [B, HW]
    gathered = x.view(b, c, h * w).gather(2, flat[:, None, :].expand(b, c, h * w))
    out = torch.where(valid[:, None, :], gathered, torch.full_like(gathered, fill))
    return out.view(b, c, h, w)


def _affine_mats(op: Tensor, v: Tensor, h: int, w: int) -> Tensor:
    """Inverse maps for Rotate / ShearX / ShearY / TranslateX / TranslateY (identity otherwise)."""
    b = op.shape[0]
    v = v.double()
    m = torch.zeros(b, 2, 3, device=op.device, dtype=torch.float64)
    m[:, 0, 0] = 1
    m[:, 1, 1] = 1
    shx = op == OP_NAMES.index("ShearX")
    shy = op == OP_NAMES.index("ShearY")
    tx = op == OP_NAMES.index("TranslateX")
    ty = op == OP_NAMES.index("TranslateY")
    rot = op == OP_NAMES.index("Rotate")
    m[:, 0, 1] = torch.where(shx, v, m[:, 0, 1])
    m[:, 1, 0] = torch.where(shy, v, m[:, 1, 0])
    m[:, 0, 2] = torch.where(tx, v * w, m[:, 0, 2])
    m[:, 1, 2] = torch.where(ty, v * h, m[:, 1, 2])
    # PIL rotate(angle) (counter-clockwise, about the centre): its inverse map uses -angle.
    a = torch.deg2rad(-v)
    cx, cy = w / 2.0, h / 2.0
    cos, sin = torch.cos(a), torch.sin(a)
    r = torch.stack([torch.stack([cos, sin, cx - cos * cx - sin * cy], -1),
                     torch.stack([-sin, cos, cy + sin * cx - cos * cy], -1)], 1)
    return torch.where(rot[:, None, None], r, m)


_RANGES = torch.tensor([
    [0.0, 0.0],      # AutoContrast
    [0.05, 0.95],    # Brightness
    [0.05, 0.95],    # Color
    [0.05, 0.95],    # Contrast
    [0.0, 0.0],      # Equalize
    [0.0, 0.0],      # Identity
    [4.0, 8.0],      # Posterize
    [-30.0, 30.0],   # Rotate
    [0.05, 0.95],    # Sharpness
    [-0.3, 0.3],     # ShearX
    [-0.3, 0.3],     # ShearY
    [0.0, 256.0],    # Solarize
    [-0.3, 0.3],     # TranslateX
    [-0.3, 0.3],     # TranslateY
], dtype=torch.float64)


def rand_augment_one_op(x: Tensor, *, generator: torch.Generator, ops: Tensor | None = None,
                        values: Tensor | None = None) -> Tensor:
    """The reference's RandomAugment(n=1): one op per image, uniform parameter (spec 3.4 table).

    Args:
        x: uint8 ``[B, C, H, W]``.
        generator: CPU generator for op choice and parameter.
        ops, values: force the op indices ``[B]`` and parameters ``[B]`` (tests).

    Returns:
        uint8 ``[B, C, H, W]``.
    """
    b, c, h, w = x.shape
    dev = x.device
    if ops is None:
        ops = torch.randint(0, NUM_OPS, (b,), generator=generator)
    if values is None:
        u = torch.rand(b, generator=generator)
        rng = _RANGES[ops]
        values = rng[:, 0] + u.double() * (rng[:, 1] - rng[:, 0])
    ops, values = ops.to(dev), values.to(dev).double()
    xf = x.float()
    out = xf.clone()

    def sel(name: str) -> Tensor:
        return (ops == OP_NAMES.index(name)).view(b, 1, 1, 1)

    grey = _grey(xf)
    zero = torch.zeros_like(xf)
    out = torch.where(sel("AutoContrast"), _autocontrast(xf), out)
    out = torch.where(sel("Brightness"), _blend(xf, zero, values), out)
    out = torch.where(sel("Color"), _blend(xf, grey.round().expand_as(xf), values), out)
    mean = grey.round().mean(dim=(1, 2, 3), keepdim=True).add(0.5).floor()
    out = torch.where(sel("Contrast"), _blend(xf, mean.expand_as(xf), values), out)
    out = torch.where(sel("Equalize"), _equalize(xf), out)
    bits = values.floor().clamp(1, 8).long()
    mask = (255 - (2 ** (8 - bits) - 1)).view(b, 1, 1, 1)
    out = torch.where(sel("Posterize"), (x.long() & mask).float(), out)
    out = torch.where(sel("Sharpness"), _sharpness(xf, values), out)
    solar = torch.where(xf >= values.view(b, 1, 1, 1), 255.0 - xf, xf)
    out = torch.where(sel("Solarize"), solar, out)
    geo = sel("Rotate") | sel("ShearX") | sel("ShearY") | sel("TranslateX") | sel("TranslateY")
    if bool(geo.any()):
        warped = _affine_nearest(xf, _affine_mats(ops, values, h, w))
        out = torch.where(geo, warped, out)
    return out.round().clamp(0, 255).to(torch.uint8)


def rgb_cutout(x: Tensor, *, generator: torch.Generator, fill: tuple[int, ...] = CUTOUT_FILL) -> Tensor:
    """The reference's cutout inside RandAugment: side ``v * width``, ``v ~ U(0, 0.5)``, centre
    ``U(1, width]`` (the swapped ``uniform`` arguments), end points included, filled with ``fill``."""
    b, c, h, w = x.shape
    dev = x.device
    v = torch.rand(b, generator=generator) * 0.5
    side = v * w
    cx = 1 + torch.rand(b, generator=generator) * (w - 1)
    cy = 1 + torch.rand(b, generator=generator) * (h - 1)
    x0 = torch.floor((cx - side / 2).clamp_min(0))
    y0 = torch.floor((cy - side / 2).clamp_min(0))
    x1 = torch.minimum(torch.full_like(x0, float(w)), x0 + side)
    y1 = torch.minimum(torch.full_like(y0, float(h)), y0 + side)
    xs = torch.arange(w, dtype=torch.float32)
    ys = torch.arange(h, dtype=torch.float32)
    mx = (xs[None, :] >= x0[:, None]) & (xs[None, :] <= x1[:, None])
    my = (ys[None, :] >= y0[:, None]) & (ys[None, :] <= y1[:, None])
    m = (my[:, :, None] & mx[:, None, :]).to(dev)[:, None]
    fill_t = torch.tensor(fill[:c] if c == 3 else fill[:1], dtype=torch.uint8, device=dev).view(1, c, 1, 1)
    return torch.where(m, fill_t, x)


def grey_cutout(x: Tensor, *, generator: torch.Generator, size: int = 16) -> Tensor:
    """Tensor cutout of the grey recipe: a ``size x size`` zero square (clipped at the border)."""
    b, c, h, w = x.shape
    dev = x.device
    cy = torch.randint(0, h, (b,), generator=generator)
    cx = torch.randint(0, w, (b,), generator=generator)
    half = size // 2
    ys = torch.arange(h)
    xs = torch.arange(w)
    my = (ys[None] >= (cy - half).clamp(0, h)[:, None]) & (ys[None] < (cy + half).clamp(0, h)[:, None])
    mx = (xs[None] >= (cx - half).clamp(0, w)[:, None]) & (xs[None] < (cx + half).clamp(0, w)[:, None])
    m = (my[:, :, None] & mx[:, None, :]).to(dev)[:, None]
    return torch.where(m, torch.zeros_like(x), x)


class Augmenter:
    """Makes normalised float views of uint8 image batches for one :class:`ImageSpec`.

    Args:
        spec: the dataset's image spec (size, channels, mean/std, crop padding, flip, strong kind).
        strong: override the strong transform: ``reference`` (spec default: RandAug one-op + cutout
            for RGB, grey cutout for grey) or ``torchvision`` (torchvision RandAugment, CPU).
        channels_last: return views in channels-last memory format.
        cutout_size: side of the grey cutout (16 in the spec; scaled for small inputs by the caller).
    """

    def __init__(self, spec: ImageSpec, *, strong: str = "reference", channels_last: bool = False,
                 cutout_size: int | None = None) -> None:
        if strong not in ("reference", "torchvision"):
            raise ValueError(f"strong transform must be 'reference' or 'torchvision', got {strong!r}")
        self.spec = spec
        self.strong_kind = strong
        self.channels_last = channels_last
        self.cutout_size = cutout_size if cutout_size is not None else max(4, round(16 * spec.size / 28))
        self._mean: Tensor | None = None
        self._std: Tensor | None = None

    def _stats(self, device: torch.device) -> tuple[Tensor, Tensor]:
        if self._mean is None or self._std is None or self._mean.device != device:
            self._mean = torch.tensor(self.spec.mean, device=device).view(1, -1, 1, 1) * 255.0
            self._std = torch.tensor(self.spec.std, device=device).view(1, -1, 1, 1) * 255.0
        return self._mean, self._std

    def normalize(self, x: Tensor) -> Tensor:
        """uint8 ``[B, C, H, W]`` -> normalised float32 (the evaluation transform)."""
        mean, std = self._stats(x.device)
        out = (x.float() - mean) / std
        return out.contiguous(memory_format=torch.channels_last) if self.channels_last else out

    def weak_uint8(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return random_crop_flip(x, padding=self.spec.crop_padding, flip=self.spec.flip, generator=generator)

    def strong_uint8(self, x: Tensor, generator: torch.Generator) -> Tensor:
        x = self.weak_uint8(x, generator)
        if self.strong_kind == "torchvision":
            from torchvision.transforms import v2

            ra = v2.RandAugment()
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return torch.stack([ra(img) for img in x.cpu()]).to(x.device)
        if self.spec.strong == "cutout" or self.spec.channels == 1:
            return grey_cutout(x, generator=generator, size=self.cutout_size)
        return rgb_cutout(rand_augment_one_op(x, generator=generator), generator=generator)

    def weak(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Weak view (crop + flip), normalised float."""
        return self.normalize(self.weak_uint8(x, generator))

    def strong(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Strong view (crop + flip + RandAug/cutout), normalised float."""
        return self.normalize(self.strong_uint8(x, generator))

    def test(self, x: Tensor) -> Tensor:
        """Deterministic evaluation view."""
        return self.normalize(x)


def to_tensor_images(images: np.ndarray, device: torch.device | str = "cpu") -> Tensor:
    """uint8 ``[N, H, W, C]`` numpy -> uint8 ``[N, C, H, W]`` tensor on ``device``."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)

