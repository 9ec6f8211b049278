"""Datasets by name, one interface: uint8 images in memory, class names, gold labels, fingerprint.

A dataset is loaded with :func:`load_dataset` from a name:

* ``digits``: scikit-learn's bundled handwritten digits (real data, shipped with scikit-learn, no
  download), upsampled from 8x8 to 16x16 grey, seeded stratified 80/20 split. The offline default.
* ``cifar10``, ``cifar100``, ``svhn``, ``fmnist``, ``eurosat``, ``gtsrb``, ``fer2013``: through
  torchvision under ``data_dir`` (downloaded where torchvision can; ``fer2013`` also reads the
  image-folder layout ``train/<emotion>/*.jpg``). Input sizes and channels follow spec 3.4.
* ``folder:PATH``: an image-folder tree with ``train/`` and ``test/`` class folders, or a single
  tree of class folders split by a seeded ratio.

Splits with no official test set (EuroSAT, FER2013 in torchvision's layout, single-tree folders) are
drawn with a seeded generator, and the split seed/ratio are part of :class:`DataSpec`, which is
stored in every annotation file, so a split is never redrawn silently.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from coreg.errors import CoregError
from coreg.progress import progress_bar

logger = logging.getLogger(__name__)

DECODE_BAR_MIN = 2000
"""Image folders with at least this many images show a decode progress bar."""
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
MAX_IMAGE_PIXELS = 64_000_000
"""Largest image (width x height) a ``folder:`` dataset decodes: 8000 x 8000, above any camera
photo a 32/64 px student needs, and about 190 MB as RGB. A larger file (a 20000 x 20000 PNG can be a
few KB) is refused by name instead of exhausting memory (PIL's own bomb limit is 179 MP)."""


class DatasetError(CoregError):
    """Dataset missing, unknown or unreadable (one-line message for users)."""


@dataclass(frozen=True)
class ImageSpec:
    """How network inputs are made from the stored uint8 images (spec 3.4).

    Attributes:
        size: network input side in pixels (images are stored at this size).
        channels: 1 (grey) or 3 (RGB).
        mean: per-channel normalisation mean (in [0, 1] units).
        std: per-channel normalisation std.
        crop_padding: zero padding of the random crop of the weak/strong views.
        flip: whether weak/strong views use random horizontal flips.
        strong: ``randaug`` (one-op RandAugment + RGB cutout) or ``cutout`` (grey tensor cutout).
        resize_rule: how a raw image of any size reaches ``size`` x ``size`` (exported with the model).
        setting: the backbone stem setting, ``32x32`` (stride-1 first stage) or ``64x64`` (stride 2).
    """

    size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int = 4
    flip: bool = True
    strong: str = "randaug"
    resize_rule: str = "bilinear"
    setting: str = "32x32"

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping (lists for tuples), for JSON metadata."""
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d


@dataclass
class ImageSplit:
    """One split held in memory.

    Attributes:
        images: uint8 array ``[N, H, W, C]`` at the network input size.
        labels: gold labels ``[N]`` (int64) or ``None`` when unknown.
        ids: per-image identifiers (relative file paths for folder data, else ``str(index)``).
    """

    images: np.ndarray
    labels: np.ndarray | None
    ids: list[str]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def fingerprint(self) -> str:
        """Hash of the image content and order (and ids), 16 hex digits."""
        h = hashlib.blake2b(digest_size=8)
        h.update(str(self.images.shape).encode())
        h.update(np.ascontiguousarray(self.images).data)
        h.update("\n".join(self.ids).encode())
        return h.hexdigest()


@dataclass
class DataBundle:
    """A dataset: class names, train/test splits, image spec and split description."""

    name: str
    classes: list[str]
    train: ImageSplit
    test: ImageSplit | None
    spec: ImageSpec
    split: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the training split (what an annotation file is bound to)."""
        return self.train.fingerprint()

    def describe(self) -> dict[str, Any]:
        """Description stored with annotations and models (name, split, sizes, spec)."""
        return {
            "name": self.name,
            "classes": list(self.classes),
            "num_train": len(self.train),
            "num_test": len(self.test) if self.test is not None else 0,
            "fingerprint": self.fingerprint,
            "test_fingerprint": self.test.fingerprint() if self.test is not None else None,
            "split": dict(self.split),
            "spec": self.spec.to_dict(),
        }


# --------------------------------------------------------------------------- registry

_DATASETS: dict[str, Callable[..., DataBundle]] = {}


def register_dataset(name: str) -> Callable[[Callable[..., DataBundle]], Callable[..., DataBundle]]:
    """Register a dataset loader under ``name`` (duplicate names are an error)."""

    def deco(fn: Callable[..., DataBundle]) -> Callable[..., DataBundle]:
        if name in _DATASETS:
            raise ValueError(f"dataset {name!r} registered twice")
        _DATASETS[name] = fn
        return fn

    return deco


def list_datasets() -> list[str]:
    """Registered dataset names plus the ``folder:PATH`` form."""
    return sorted(_DATASETS) + ["folder:PATH"]


def load_dataset(
    name: str, *, data_dir: str | Path | None = None, download: bool = False, seed: int = 0,
    split_ratio: float = 0.8,
) -> DataBundle:
    """Load a dataset by name.

    Args:
        name: a registered name or ``folder:PATH``.
        data_dir: where torchvision datasets live (default ``$COREG_DATA_DIR`` or ``~/.cache/coreg/data``).
        download: let torchvision download missing files.
        seed: seed of any split that the dataset does not ship (stored in ``bundle.split``).
        split_ratio: train share of such a split.

    Raises:
        DatasetError: unknown name, missing files, unreadable images.
    """
    if not 0.0 < split_ratio < 1.0:
        raise DatasetError(f"split ratio must be in (0, 1), got {split_ratio}")
    root = Path(data_dir or os.environ.get("COREG_DATA_DIR") or Path.home() / ".cache" / "coreg" / "data")
    if name.startswith("folder:"):
        return load_folder(name[len("folder:"):], seed=seed, split_ratio=split_ratio)
    if name not in _DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; valid: {', '.join(list_datasets())}")
    return _DATASETS[name](root=root, download=download, seed=seed, split_ratio=split_ratio)


# --------------------------------------------------------------------------- helpers


def _stratified_split(labels: np.ndarray, ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split: per class, the first ``round(ratio*n_c)`` of a permutation go to train."""
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        k = int(round(ratio * len(idx)))
        train_idx.append(idx[:k])
        test_idx.append(idx[k:])
    return np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(test_idx))


def _mean_std(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    x = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    std = np.maximum(x.std(0), 1e-3)
    return tuple(round(float(v), 4) for v in x.mean(0)), tuple(round(float(v), 4) for v in std)


def to_uint8_image(img: Image.Image, *, size: int, channels: int) -> np.ndarray:
    """Convert a PIL image of any mode to ``[size, size, channels]`` uint8.

    Transparent images (RGBA, LA, palette with transparency) are composited on a white background
    first; then the image is converted to ``L`` or ``RGB`` and resized bilinearly. ``serving/``
    applies the same rule at inference.
    """
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, img)
    img = img.convert("L" if channels == 1 else "RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr


def _read_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:  # reads the header only
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS:
                raise DatasetError(f"image {path} is {w}x{h} = {w * h:,} pixels, over the limit of "
                                   f"{MAX_IMAGE_PIXELS:,} (a decompression bomb or a wrong file); resize it or remove it")
            im.load()
            return im.copy()
    except DatasetError:
        raise
    except Image.DecompressionBombError as e:  # PIL refuses at open (over twice its own limit)
        raise DatasetError(f"image {path} is too large to decode, over the limit of {MAX_IMAGE_PIXELS:,} pixels "
                           f"(a decompression bomb or a wrong file; PIL: {str(e).rstrip('.')})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"cannot read image {path}: {type(e).__name__}: {e}") from None


def _scan_classes(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """Class folders of ``root`` and their files.

    Raises:
        DatasetError: a class folder holds no files (the class could never be predicted correctly,
            and its test accuracy would be reported over the other classes only).
    """
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    items: list[tuple[str, int]] = []
    for ci, c in enumerate(classes):
        before = len(items)
        for dirpath, _, files in sorted(os.walk(root / c)):
            for f in sorted(files):
                if f.startswith("."):
                    continue
                items.append((str(Path(dirpath, f).relative_to(root)), ci))
        if len(items) == before:
            raise DatasetError(f"class folder {root / c} holds no images; add images or remove the folder")
    return classes, items


def _decode_items(root: Path, items: Sequence[tuple[str, int]], *, size: int, channels: int,
                  desc: str) -> ImageSplit:
    images = np.empty((len(items), size, size, channels), dtype=np.uint8)
    for i, (rel, _) in enumerate(progress_bar(items, desc=desc, leave=False, disable=len(items) < DECODE_BAR_MIN)):
        path = root / rel
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise DatasetError(f"not an image file (unknown extension): {path}")
        images[i] = to_uint8_image(_read_image(path), size=size, channels=channels)
    labels = np.array([c for _, c in items], dtype=np.int64)
    return ImageSplit(images=images, labels=labels, ids=[rel for rel, _ in items])


def _probe_folder(root: Path, items: Sequence[tuple[str, int]]) -> tuple[int, int]:
    """Decide input size and channels from (at most 200 of) the images."""
    step = max(1, len(items) // 200)
    max_side, grey = 0, True
    for rel, _ in items[::step]:
        im = _read_image(root / rel)
        max_side = max(max_side, *im.size)
        if im.mode not in ("L", "1", "I", "I;16", "F", "LA"):
            if im.mode == "P":
                grey = grey and im.convert("RGB").getextrema() == tuple(im.convert("L").getextrema() for _ in range(3))
            else:
                grey = False
    return (32 if max_side <= 32 else 64), (1 if grey else 3)


def load_folder(path: str, *, seed: int = 0, split_ratio: float = 0.8) -> DataBundle:
    """Load ``folder:PATH`` (``train/``+``test/`` class folders, or one tree split by a seeded ratio).

    Images of at most 32 px keep the 32x32 setting; larger ones are resized to 64x64 (spec 3.4's
    Resize64). Grey images stay one-channel unless some image is colour. Normalisation statistics
    are computed from the training images.

    Raises:
        DatasetError: missing folder, no class folders, a class folder without images, a single
            class, class lists differ, an unreadable image or one over :data:`MAX_IMAGE_PIXELS`.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetError(f"folder dataset {root} does not exist (expected class folders, or train/ and test/)")
    if (root / "train").is_dir():
        classes, tr_items = _scan_classes(root / "train")
        te_items: list[tuple[str, int]] = []
        if (root / "test").is_dir():
            te_classes, te_items = _scan_classes(root / "test")
            if te_classes != classes:
                raise DatasetError(f"{root}: test/ class folders {te_classes} differ from train/ {classes}")
        tr_items = [(str(Path("train", r)), c) for r, c in tr_items]
        te_items = [(str(Path("test", r)), c) for r, c in te_items]
        split = {"kind": "official", "seed": None, "ratio": None}
    else:
        classes, items = _scan_classes(root)
        labels = np.array([c for _, c in items])
        if len(items) == 0:
            raise DatasetError(f"{root} holds no class folders with images")
        tr, te = _stratified_split(labels, split_ratio, seed)
        tr_items = [items[i] for i in tr]
        te_items = [items[i] for i in te]
        split = {"kind": "seeded", "seed": seed, "ratio": split_ratio}
    if not classes or not tr_items:
        raise DatasetError(f"{root} holds no class folders with images")
    if len(classes) < 2:
        raise DatasetError(f"{root} holds one class folder ({classes[0]!r}); a classifier needs at least 2 classes")
    size, channels = _probe_folder(root, tr_items)
    train = _decode_items(root, tr_items, size=size, channels=channels, desc="decode train")
    test = _decode_items(root, te_items, size=size, channels=channels, desc="decode test") if te_items else None
    mean, std = _mean_std(train.images)
    spec = ImageSpec(size=size, channels=channels, mean=mean, std=std,
                     crop_padding=4 if size == 32 else 8, flip=True,
                     strong="randaug" if channels == 3 else "cutout",
                     setting="32x32" if size == 32 else "64x64")
    return DataBundle(name=f"folder:{root}", classes=classes, train=train, test=test, spec=spec, split=split)


# --------------------------------------------------------------------------- digits


@register_dataset("digits")
def load_digits(*, root: Path | None = None, download: bool = False, seed: int = 0,
                split_ratio: float = 0.8) -> DataBundle:
    """scikit-learn's 1,797 handwritten digits (8x8, 17 grey levels) upsampled to 16x16.

    The split is seeded and stratified (``split_ratio`` to train). No flips (digits are not mirror
    symmetric); grey cutout as the strong transform (the FMNIST recipe of spec 3.4).
    """
    from sklearn.datasets import load_digits as _sk_digits

    d = _sk_digits()
    raw = (d.images * (255.0 / 16.0)).round().clip(0, 255).astype(np.uint8)
    up = np.stack([np.asarray(Image.fromarray(im).resize((16, 16), Image.BILINEAR)) for im in raw])[..., None]
    labels = d.target.astype(np.int64)
    tr, te = _stratified_split(labels, split_ratio, seed)
    train = ImageSplit(images=up[tr], labels=labels[tr], ids=[str(i) for i in tr])
    test = ImageSplit(images=up[te], labels=labels[te], ids=[str(i) for i in te])
    mean, std = _mean_std(train.images)
    spec = ImageSpec(size=16, channels=1, mean=mean, std=std, crop_padding=2, flip=False,
                     strong="cutout", setting="32x32")
    return DataBundle(name="digits", classes=[str(i) for i in range(10)], train=train, test=test, spec=spec,
                      split={"kind": "seeded", "seed": seed, "ratio": split_ratio})


# --------------------------------------------------------------------------- torchvision datasets

SVHN_CLASSES = [f"number {i}" for i in range(10)]
FER_CLASSES = [f"{e} Facial Expression" for e in ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")]
FER_FOLDERS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
FMNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                  "Ankle boot"]
GTSRB_CLASSES = [f"German Traffic Sign: {n}" for n in (
    "Speed limit 20", "Speed limit 30", "Speed limit 50", "Speed limit 60", "Speed limit 70", "Speed limit 80",
    "Speed limit 80 cancelled", "Speed limit 100", "Speed limit 120", "No passing", "No truck overtaking",
    "Only have priority at the next intersection", "Priority road", "Give way", "Stop",
    "All vehicles prohibited", "Trucks prohibited", "No entry", "Caution!", "Curve (to the left)",
    "Curve (to the right)", "Continuous curves", "Rough road", "Slippery road",
    "The road narrows on the right", "Construction site", "Signal light", "Pay attention to pedestrians",
    "Pay attention to children", "Watch out for bikes", "Watch out for snow/ice on the road", "Deer ahead",
    "Unlimited speed", "Turn right", "Turn left", "Go straight", "Go straight and turn right",
    "Go straight and turn left", "Drive on the right", "Drive on the left", "Driving around the island",
    "Lift ban on no passing", "Lift ban on truck overtaking")]

_SPECS = {
    "cifar10": ImageSpec(32, 3, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ImageSpec(32, 3, (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "svhn": ImageSpec(32, 3, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), flip=False),
    "fmnist": ImageSpec(28, 1, (0.1307,), (0.3081,), strong="cutout"),
    "eurosat": ImageSpec(64, 3, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), crop_padding=8, setting="64x64"),
    "fer2013": ImageSpec(64, 1, (0.5,), (0.5,), crop_padding=8, strong="cutout", setting="64x64"),
    "gtsrb": ImageSpec(64, 3, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), crop_padding=8, flip=False, setting="64x64"),
}

_EXPECTED = {
    "cifar10": "cifar-10-batches-py/ (torchvision CIFAR10)",
    "cifar100": "cifar-100-python/ (torchvision CIFAR100)",
    "svhn": "train_32x32.mat and test_32x32.mat (torchvision SVHN)",
    "fmnist": "FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte (torchvision FashionMNIST)",
    "eurosat": "eurosat/2750/<class>/*.jpg (torchvision EuroSAT)",
    "gtsrb": "gtsrb/GTSRB/Training and gtsrb/GTSRB/Final_Test (torchvision GTSRB)",
    "fer2013": "fer2013/train.csv (torchvision FER2013) or fer2013/train/<emotion>/*.jpg + test/",
}


def _missing(name: str, root: Path, err: Exception) -> DatasetError:
    return DatasetError(
        f"dataset {name} not found under {root}: expected {_EXPECTED[name]}; pass --data-dir DIR, or "
        f"--download on a machine with internet ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    )


def _tv_to_split(ds: Any, spec: ImageSpec, desc: str) -> ImageSplit:
    """Materialise a torchvision dataset of PIL images as a uint8 split at the spec size."""
    n = len(ds)
    images = np.empty((n, spec.size, spec.size, spec.channels), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    for i in progress_bar(range(n), desc=desc, leave=False):
        img, y = ds[i]
        images[i] = to_uint8_image(img, size=spec.size, channels=spec.channels)
        labels[i] = int(y)
    return ImageSplit(images=images, labels=labels, ids=[str(i) for i in range(n)])


def _array_split(data: np.ndarray, labels: Any, spec: ImageSpec) -> ImageSplit:
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim == 3:
        data = data[..., None]
    if data.shape[1:3] != (spec.size, spec.size):
        data = np.stack([to_uint8_image(Image.fromarray(im.squeeze()), size=spec.size, channels=spec.channels)
                         for im in data])
    labels = np.asarray(labels, dtype=np.int64)
    return ImageSplit(images=np.ascontiguousarray(data), labels=labels, ids=[str(i) for i in range(len(data))])


def _bundle(name: str, classes: list[str], train: ImageSplit, test: ImageSplit | None,
            split: dict[str, Any]) -> DataBundle:
    return DataBundle(name=name, classes=classes, train=train, test=test, spec=_SPECS[name], split=split)


def _cifar(name: str, root: Path, download: bool) -> DataBundle:
    from torchvision import datasets as tvd

    cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
    try:
        tr = cls(str(root), train=True, download=download)
        te = cls(str(root), train=False, download=download)
    except (RuntimeError, OSError) as e:
        raise _missing(name, root, e) from None
    spec = _SPECS[name]
    return _bundle(name, list(tr.classes), _array_split(tr.data, tr.targets, spec),
                   _array_split(te.data, te.targets, spec), {"kind": "official"})


@register_dataset("cifar10")
def load_cifar10(*, root: Path, download: bool = False, seed: int = 0, split_ratio: float = 0.8) -> DataBundle:
    """CIFAR-10 through torchvision (official split)."""
    return _cifar("cifar10", root, download)


@register_dataset("cifar100")
def load_cifar100(*, root: Path, download: bool = False, seed: int = 0, split_ratio: float = 0.8) -> DataBundle:
    """CIFAR-100 through torchvision (official split; the fine label names of its metadata)."""
    return _cifar("cifar100", root, download)


@register_dataset("svhn")
def load_svhn(*, root: Path, download: bool = False, seed: int = 0, split_ratio: float = 0.8) -> DataBundle:
    """SVHN through torchvision (official train/test; class names ``number k``)."""
    from torchvision import datasets as tvd

    try:
        tr = tvd.SVHN(str(root), split="train", download=download)
        te = tvd.SVHN(str(root), split="test", download=download)
    except (RuntimeError, OSError) as e:
        raise _missing("svhn", root, e) from None
    spec = _SPECS["svhn"]
    return _bundle("svhn", SVHN_CLASSES, _array_split(tr.data.transpose(0, 2, 3, 1), tr.labels, spec),
                   _array_split(te.data.transpose(0, 2, 3, 1), te.labels, spec), {"kind": "official"})


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@register_dataset("fmnist")
def load_fmnist(*, root: Path, download: bool = False, seed: int = 0, split_ratio: float = 0.8) -> DataBundle:
    """Fashion-MNIST: torchvision's layout, or the four idx files (``.gz`` or not) directly in ``root``."""
    spec = _SPECS["fmnist"]
    for base in (root, root / "FashionMNIST" / "raw", root / "fashion-mnist"):
        files = {}
        for key, stem in (("xtr", "train-images-idx3-ubyte"), ("ytr", "train-labels-idx1-ubyte"),
                          ("xte", "t10k-images-idx3-ubyte"), ("yte", "t10k-labels-idx1-ubyte")):
            for cand in (base / stem, base / (stem + ".gz")):
                if cand.exists():
                    files[key] = cand
        if len(files) == 4:
            return _bundle("fmnist", FMNIST_CLASSES, _array_split(_read_idx(files["xtr"]), _read_idx(files["ytr"]), spec),
                           _array_split(_read_idx(files["xte"]), _read_idx(files["yte"]), spec),
                           {"kind": "official"})
    from torchvision import datasets as tvd

    try:
        tr = tvd.FashionMNIST(str(root), train=True, download=download)
        te = tvd.FashionMNIST(str(root), train=False, download=download)
    except (RuntimeError, OSError) as e:
        raise _missing("fmnist", root, e) from None
    return _bundle("fmnist", FMNIST_CLASSES, _array_split(tr.data.numpy(), tr.targets.numpy(), spec),
                   _array_split(te.data.numpy(), te.targets.numpy(), spec), {"kind": "official"})


def _seeded_split_of(name: str, full: ImageSplit, classes: list[str], seed: int, ratio: float) -> DataBundle:
    assert full.labels is not None
    tr, te = _stratified_split(full.labels, ratio, seed)
    pick = lambda idx: ImageSplit(full.images[idx], full.labels[idx], [full.ids[i] for i in idx])  # noqa: E731
    return _bundle(name, classes, pick(tr), pick(te), {"kind": "seeded", "seed": seed, "ratio": ratio})


@register_dataset("eurosat")
def load_eurosat(*, root: Path, download: bool = False, seed: int = 0, split_ratio: float = 0.8) -> DataBundle:
    """EuroSAT RGB (no official split: seeded stratified ``split_ratio`` split, stored with the data)."""
    from torchvision import datasets as tvd

    try:
        ds = tvd.EuroSAT(str(root), download=download)
    except (RuntimeError, OSError) as e:
        raise _missing("eurosat", root, e) from None
    full = _tv_to_split(ds, _SPECS["eurosat"], "decode eurosat")
    full.ids = [str(Path(p).relative_to(root)) for p, _ in ds.samples]
    return _seeded_split_of("eurosat", full, list(ds.classes), seed, split_ratio)


@register_dataset("gtsrb")
def load_gtsrb(*, root: Path, download: bool = False, seed: int = 0, split_ratio: float = 0.8) -> DataBundle:
    """GTSRB through torchvision (official splits), resized to 64x64 once at load."""
    from torchvision import datasets as tvd

    try:
        tr = tvd.GTSRB(str(root), split="train", download=download)
        te = tvd.GTSRB(str(root), split="test", download=download)
    except (RuntimeError, OSError) as e:
        raise _missing("gtsrb", root, e) from None
    spec = _SPECS["gtsrb"]
    return _bundle("gtsrb", GTSRB_CLASSES, _tv_to_split(tr, spec, "decode gtsrb train"),
                   _tv_to_split(te, spec, "decode gtsrb test"), {"kind": "official"})


@register_dataset("fer2013")
def load_fer2013(*, root: Path, download: bool = False, seed: int = 0, split_ratio: float = 0.8) -> DataBundle:
    """FER2013: an image-folder copy (``fer2013/train/<emotion>/``, official train/test), else
    torchvision's CSV ``train`` split with a seeded ``split_ratio`` split (the reference's protocol)."""
    for base in (root / "fer2013", root):
        if (base / "train").is_dir() and {d.name.lower() for d in (base / "train").iterdir()} >= set(FER_FOLDERS):
            b = load_folder(str(base), seed=seed, split_ratio=split_ratio)
            order = [b.classes.index(f) if f in b.classes else [c.lower() for c in b.classes].index(f)
                     for f in FER_FOLDERS]
            remap = np.empty(len(order), dtype=np.int64)
            remap[order] = np.arange(len(order))
            for s in (b.train, b.test):
                if s is not None and s.labels is not None:
                    s.labels = remap[s.labels]
            return DataBundle(name="fer2013", classes=FER_CLASSES, train=b.train, test=b.test,
                              spec=_SPECS["fer2013"] if b.spec.size == 64 else b.spec, split=b.split)
    from torchvision import datasets as tvd

    try:
        ds = tvd.FER2013(str(root), split="train")
    except (RuntimeError, OSError) as e:
        raise _missing("fer2013", root, e) from None
    full = _tv_to_split(ds, _SPECS["fer2013"], "decode fer2013")
    return _seeded_split_of("fer2013", full, FER_CLASSES, seed, split_ratio)
