"""Class names used in the prompts.

By default the prompt name of class k is the dataset's ``classes[k]`` (spec 1.3: the names are
whatever the dataset exposes; coreg's loaders already use the spec's names for SVHN, FER2013 and
GTSRB). :data:`SPEC_CLASS_NAMES` holds the spec's lists, checked against the loaders in the tests.

A user YAML file can replace them: a mapping from every dataset class to one name or a list of
names, e.g.::

    airplane: [airplane, aeroplane, jet]
    automobile: car

With several names for one class, the class's text embedding for a template is the L2-normalised
mean of the L2-normalised embeddings of ``template.format(name)`` over its names (see
:func:`coreg.annotate.clip.encode_text_embeddings`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from coreg.errors import CoregError

logger = logging.getLogger(__name__)


class ClassNamesError(CoregError):
    """A class-name file is unreadable or does not match the dataset's classes."""


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# torchvision's CIFAR100 ``fine_label_names`` (alphabetical, underscores kept), as listed in spec 1.3.
CIFAR100_CLASSES = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl",
    "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair",
    "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin",
    "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp",
    "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck",
    "pine_tree", "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger",
    "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
]

SVHN_CLASSES = [f"number {i}" for i in range(10)]
FMNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                  "Ankle boot"]
EUROSAT_CLASSES = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
                   "PermanentCrop", "Residential", "River", "SeaLake"]
FER2013_CLASSES = [f"{e} Facial Expression" for e in
                   ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")]
_GTSRB_SIGNS = (
    "Speed limit 20", "Speed limit 30", "Speed limit 50", "Speed limit 60", "Speed limit 70", "Speed limit 80",
    "Speed limit 80 cancelled", "Speed limit 100", "Speed limit 120", "No passing", "No truck overtaking",
    "Only have priority at the next intersection", "Priority road", "Give way", "Stop",
    "All vehicles prohibited", "Trucks prohibited", "No entry", "Caution!", "Curve (to the left)",
    "Curve (to the right)", "Continuous curves", "Rough road", "Slippery road", "The road narrows on the right",
    "Construction site", "Signal light", "Pay attention to pedestrians", "Pay attention to children",
    "Watch out for bikes", "Watch out for snow/ice on the road", "Deer ahead", "Unlimited speed", "Turn right",
    "Turn left", "Go straight", "Go straight and turn right", "Go straight and turn left", "Drive on the right",
    "Drive on the left", "Driving around the island", "Lift ban on no passing", "Lift ban on truck overtaking",
)
GTSRB_CLASSES = [f"German Traffic Sign: {s}" for s in _GTSRB_SIGNS]

#: The prompt class names of spec 1.3, per dataset, in label order.
SPEC_CLASS_NAMES: dict[str, list[str]] = {
    "cifar10": CIFAR10_CLASSES,
    "cifar100": CIFAR100_CLASSES,
    "svhn": SVHN_CLASSES,
    "fmnist": FMNIST_CLASSES,
    "eurosat": EUROSAT_CLASSES,
    "fer2013": FER2013_CLASSES,
    "gtsrb": GTSRB_CLASSES,
}


def default_class_names(dataset: str, classes: list[str]) -> list[list[str]]:
    """One prompt name per class: the dataset's own class names.

    Args:
        dataset: the dataset name (only used to compare with :data:`SPEC_CLASS_NAMES`).
        classes: the dataset's K class names, in label order.

    Returns:
        ``[[classes[0]], ..., [classes[K-1]]]``.
    """
    spec = SPEC_CLASS_NAMES.get(dataset)
    if spec is not None and list(spec) != list(classes):
        logger.warning("dataset %s exposes class names that differ from spec 1.3 (%s...); prompts use the "
                       "dataset's names", dataset, [c for c, s in zip(classes, spec) if c != s][:3])
    return [[c] for c in classes]


def _key(k: Any) -> str:
    # YAML reads `0:` as an int; class names are strings.
    return k if isinstance(k, str) else str(k)


def parse_class_names(data: Any, classes: list[str], *, source: str) -> list[list[str]]:
    """Check a ``{class: name | [names]}`` mapping against the dataset classes.

    Args:
        data: the parsed YAML.
        classes: the dataset's K class names, in label order.
        source: where the mapping came from, for error messages.

    Returns:
        K lists of prompt names (at least one each), in label order.

    Raises:
        ClassNamesError: not a mapping, classes missing or extra, empty or non-string names.
    """
    if not isinstance(data, dict):
        raise ClassNamesError(f"{source} must hold a mapping from each class to a name or a list of names")
    mapping = {_key(k): v for k, v in data.items()}
    missing = [c for c in classes if c not in mapping]
    extra = [k for k in mapping if k not in set(classes)]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing classes {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        if extra:
            parts.append(f"extra classes {extra[:10]}{' ...' if len(extra) > 10 else ''}")
        raise ClassNamesError(f"{source} does not match the dataset's {len(classes)} classes: " + "; ".join(parts))
    out: list[list[str]] = []
    for c in classes:
        v = mapping[c]
        names = [v] if isinstance(v, str) else v
        if (not isinstance(names, list) or not names
                or not all(isinstance(n, str) and n.strip() for n in names)):
            raise ClassNamesError(f"{source}: class {c!r} needs a non-empty name or a non-empty list of names, "
                                  f"got {v!r}")
        out.append(list(dict.fromkeys(names)))
    return out


def load_class_names(path: str | Path, classes: list[str]) -> list[list[str]]:
    """Read a class-name YAML file (see the module docstring).

    Raises:
        ClassNamesError: unreadable, not YAML, or not matching ``classes``.
    """
    path = Path(path).expanduser()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ClassNamesError(f"cannot read class-name file {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ClassNamesError(f"class-name file {path} is not valid YAML: "
                              f"{' '.join(str(e).split())}") from None
    return parse_class_names(data, classes, source=str(path))


def describe_class_names(names: list[list[str]]) -> list[str | list[str]]:
    """Compact form for the annotator description: a string per class, a list where several."""
    return [n[0] if len(n) == 1 else list(n) for n in names]
