"""Datasets: digits split, fingerprints, folder datasets and their errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from coreg.data import DatasetError, load_dataset
from coreg.data.datasets import to_uint8_image


def test_digits_split_is_seeded_stratified(digits) -> None:
    assert digits.train.images.dtype == np.uint8 and digits.train.images.shape[1:] == (16, 16, 1)
    assert len(digits.train) + len(digits.test) == 1797
    again = load_dataset("digits")
    assert again.fingerprint == digits.fingerprint
    assert load_dataset("digits", seed=1).fingerprint != digits.fingerprint
    tr = np.bincount(digits.train.labels) / len(digits.train)
    te = np.bincount(digits.test.labels) / len(digits.test)
    assert np.abs(tr - te).max() < 0.01
    assert not set(digits.train.ids) & set(digits.test.ids)
    assert digits.describe()["split"] == {"kind": "seeded", "seed": 0, "ratio": 0.8}


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(DatasetError, match="valid: .*cifar10.*digits"):
        load_dataset("imagenet-nope")


def test_missing_torchvision_dataset_says_where(tmp_path) -> None:
    with pytest.raises(DatasetError, match=r"cifar10 not found under .*cifar-10-batches-py"):
        load_dataset("cifar10", data_dir=tmp_path)


def _write_tree(root, classes, n, mode="RGB", size=(20, 20)):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = rng.integers(0, 255, (size[1], size[0], 3 if mode != "L" else 1), dtype=np.uint8)
            img = Image.fromarray(arr.squeeze())
            img.convert(mode).save(root / c / f"{i}.png")


def test_folder_train_test(tmp_path) -> None:
    _write_tree(tmp_path / "train", ["cat", "dog"], 4)
    _write_tree(tmp_path / "test", ["cat", "dog"], 2)
    b = load_dataset(f"folder:{tmp_path}")
    assert b.classes == ["cat", "dog"] and len(b.train) == 8 and len(b.test) == 4
    assert b.spec.size == 32 and b.spec.channels == 3
    assert b.train.ids[0] == "train/cat/0.png"
    assert b.split["kind"] == "official"


def test_folder_single_tree_seeded_split_and_modes(tmp_path) -> None:
    _write_tree(tmp_path, ["a", "b"], 5, mode="L", size=(40, 30))
    # palette and RGBA grey images convert consistently with the rest
    Image.new("LA", (40, 30), (128, 255)).save(tmp_path / "a" / "la.png")
    b = load_dataset(f"folder:{tmp_path}", seed=3, split_ratio=0.6)
    assert b.spec.channels == 1 and b.spec.size == 64
    assert b.split == {"kind": "seeded", "seed": 3, "ratio": 0.6}
    assert len(b.train) + len(b.test) == 11
    assert load_dataset(f"folder:{tmp_path}", seed=3, split_ratio=0.6).fingerprint == b.fingerprint


def test_folder_corrupt_image_is_named(tmp_path) -> None:
    _write_tree(tmp_path / "train", ["x", "y"], 2)
    (tmp_path / "train" / "y" / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DatasetError, match="broken.png"):
        load_dataset(f"folder:{tmp_path}")


def test_folder_mismatched_classes(tmp_path) -> None:
    _write_tree(tmp_path / "train", ["x", "y"], 1)
    _write_tree(tmp_path / "test", ["x", "z"], 1)
    with pytest.raises(DatasetError, match="differ"):
        load_dataset(f"folder:{tmp_path}")


def test_to_uint8_image_modes() -> None:
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent -> white
    assert (to_uint8_image(rgba, size=8, channels=3) == 255).all()
    grey = Image.new("L", (10, 10), 77)
    out = to_uint8_image(grey, size=8, channels=3)
    assert out.shape == (8, 8, 3) and (out == 77).all()
    pal = Image.new("RGB", (8, 8), (10, 20, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert to_uint8_image(pal, size=8, channels=3)[0, 0].tolist() == [10, 20, 30]


@pytest.mark.parametrize("side", [(20000, 20000), (8001, 8000)], ids=["over_pil_bomb_limit", "over_coreg_limit"])
def test_folder_decompression_bomb_is_named(tmp_path, side, png_claiming_size) -> None:
    from coreg.data.datasets import MAX_IMAGE_PIXELS

    assert side[0] * side[1] > MAX_IMAGE_PIXELS
    _write_tree(tmp_path / "train", ["x", "y"], 2)
    png_claiming_size(tmp_path / "train" / "y" / "bomb.png", *side)
    with pytest.raises(DatasetError, match=rf"image .*bomb.png .*limit of {MAX_IMAGE_PIXELS:,}") as e:
        load_dataset(f"folder:{tmp_path}")
    assert "\n" not in str(e.value)


def test_folder_empty_class_folder_is_refused(tmp_path) -> None:
    _write_tree(tmp_path, ["a", "b"], 3)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / ".DS_Store").write_bytes(b"")  # hidden files are not images
    with pytest.raises(DatasetError, match=r"class folder .*c holds no images"):
        load_dataset(f"folder:{tmp_path}")
    _write_tree(tmp_path / "split" / "train", ["a", "b"], 2)
    (tmp_path / "split" / "test" / "a").mkdir(parents=True)
    _write_tree(tmp_path / "split" / "test", ["b"], 1)
    with pytest.raises(DatasetError, match=r"test.a holds no images"):
        load_dataset(f"folder:{tmp_path / 'split'}")


def test_folder_single_class_is_refused(tmp_path) -> None:
    _write_tree(tmp_path, ["only"], 5)
    with pytest.raises(DatasetError, match="at least 2 classes"):
        load_dataset(f"folder:{tmp_path}")
