"""Template sets as data (spec 1.2) and class names (spec 1.3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from coreg.annotate.classnames import (
    CIFAR100_CLASSES,
    SPEC_CLASS_NAMES,
    ClassNamesError,
    default_class_names,
    load_class_names,
)
from coreg.annotate.prompts import TemplateError, build_prompts, list_template_sets, load_templates


def test_shipped_sets() -> None:
    assert list_template_sets() == ["paper", "paper-full"]
    paper = load_templates("paper").templates
    assert len(paper) == 27
    assert paper[0] == "a photo of a {}"  # t0 of spec 1.5
    assert paper[16] == "a rendition of the {}"
    assert paper[-1] == "a photo of a small {}"
    assert not any(t.endswith(".") for t in paper)
    full = load_templates("paper-full").templates
    assert len(full) == 80 and len(set(full)) == 80
    assert full[0] == "a bad photo of a {}." and full[35] == "a {} in a video game."
    assert full[79] == "a tattoo of the {}."
    assert all(t.endswith(".") and t.count("{}") == 1 for t in full)


def test_template_file(tmp_path: Path) -> None:
    f = tmp_path / "t.txt"
    f.write_text("a {} photo\n\n  itap of a {}  \n")
    ts = load_templates(str(f))
    assert ts.templates == ("a {} photo", "  itap of a {}  ")
    assert ts.name == str(f)


@pytest.mark.parametrize(("text", "match"), [
    ("a {} photo\nno placeholder\n", r"t.txt:2: .*no '\{\}'"),
    ("a {} {0}\n", r"t.txt:1: .*not a valid format string"),
    ("\n\n", "no templates"),
])
def test_bad_template_file(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / "t.txt"
    f.write_text(text)
    with pytest.raises(TemplateError, match=match):
        load_templates(str(f))


def test_unknown_template_set() -> None:
    with pytest.raises(TemplateError, match="paper, paper-full"):
        load_templates("small")


def test_prompts_are_plain_substitution_template_major() -> None:
    assert build_prompts(["a {}", "the {}."], ["lawn_mower", "T-shirt/top"]) == [
        "a lawn_mower", "a T-shirt/top", "the lawn_mower.", "the T-shirt/top."]


def test_spec_class_names_match_the_dataset_loaders() -> None:
    from coreg.data import datasets

    assert len(CIFAR100_CLASSES) == 100 and len(set(CIFAR100_CLASSES)) == 100
    # torchvision's fine_label_names are alphabetical: the spec list must be in that order
    assert CIFAR100_CLASSES == sorted(CIFAR100_CLASSES)
    assert SPEC_CLASS_NAMES["svhn"] == datasets.SVHN_CLASSES
    assert SPEC_CLASS_NAMES["fmnist"] == datasets.FMNIST_CLASSES
    assert SPEC_CLASS_NAMES["fer2013"] == datasets.FER_CLASSES
    assert SPEC_CLASS_NAMES["gtsrb"] == datasets.GTSRB_CLASSES
    assert len(SPEC_CLASS_NAMES["gtsrb"]) == 43
    assert SPEC_CLASS_NAMES["gtsrb"][6] == "German Traffic Sign: Speed limit 80 cancelled"


@pytest.mark.slow
def test_cifar100_names_equal_torchvision_metadata() -> None:
    from coreg.data import DatasetError, load_dataset

    try:
        bundle = load_dataset("cifar100")
    except DatasetError:
        pytest.skip("CIFAR-100 not available locally")
    assert bundle.classes == CIFAR100_CLASSES


def test_default_names_are_the_dataset_classes() -> None:
    assert default_class_names("digits", ["0", "1"]) == [["0"], ["1"]]


def test_class_name_yaml(tmp_path: Path) -> None:
    f = tmp_path / "names.yaml"
    f.write_text("cat: [cat, kitten, cat]\ndog: puppy\nfrog: frog\n")
    assert load_class_names(f, ["cat", "dog", "frog"]) == [["cat", "kitten"], ["puppy"], ["frog"]]
    g = tmp_path / "digits.yaml"
    g.write_text("0: zero\n1: [one, 'the number one']\n")
    assert load_class_names(g, ["0", "1"]) == [["zero"], ["one", "the number one"]]


@pytest.mark.parametrize(("text", "match"), [
    ("cat: cat\ndog: dog\n", r"missing classes \['frog'\]"),
    ("cat: cat\ndog: dog\nfrog: frog\nbird: bird\n", r"extra classes \['bird'\]"),
    ("cat: cat\ndog: dog\n bird: x\n", "not valid YAML"),
    ("- cat\n- dog\n", "must hold a mapping"),
    ("cat: []\ndog: dog\nfrog: frog\n", "'cat' needs a non-empty name"),
])
def test_bad_class_name_yaml(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / "names.yaml"
    f.write_text(text)
    with pytest.raises(ClassNamesError, match=match) as e:
        load_class_names(f, ["cat", "dog", "frog"])
    assert "\n" not in str(e.value)
