"""Shared test setup: offline, single-threaded, slow tests behind --runslow."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

import pytest  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: needs --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_mlflow(tmp_path: "os.PathLike[str]", monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own sqlite MLflow store, never the user's, and no state of the last one."""
    import sys

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    for var in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    if "mlflow" in sys.modules:
        import mlflow
        from mlflow.tracking import fluent

        while mlflow.active_run() is not None:
            mlflow.end_run()
        fluent._active_experiment_id = None  # cached from a previous test's store
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)


@pytest.fixture(scope="session")
def digits():
    """The embedded digits dataset (loaded once)."""
    from coreg.data import load_dataset

    return load_dataset("digits")


def _png_claiming_size(path: Path, width: int, height: int) -> None:
    """A valid few-hundred-byte PNG whose header claims ``width`` x ``height`` (CRC fixed up):
    decoding it would allocate width x height bytes, reading its header costs nothing."""
    import io
    import struct
    import zlib

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


@pytest.fixture
def png_claiming_size():  # noqa: ANN201
    """``png_claiming_size(path, width, height)``: write a tiny PNG whose header claims that size."""
    return _png_claiming_size


def write_image_folder(root: "os.PathLike[str]", *, classes: tuple[str, ...] = ("ant", "bee", "cat"),
                       train: int = 8, test: int = 3, size: int = 8, seed: int = 0) -> str:
    """A small ``folder:`` dataset (``train/<class>/*.png`` and ``test/<class>/*.png``); returns its name."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    for split, n in (("train", train), ("test", test)):
        for ci, c in enumerate(classes):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = rng.integers(0, 64, (size, size, 3), dtype=np.uint8) + np.uint8(60 * ci)
                Image.fromarray(arr).save(root / split / c / f"{i}.png")
    return f"folder:{root}"


@pytest.fixture(scope="session")
def make_image_folder():  # noqa: ANN201
    """``make_image_folder(root, classes=..., train=8, test=3)``: write a small ``folder:`` dataset."""
    return write_image_folder


@pytest.fixture
def image_folder(tmp_path: "os.PathLike[str]") -> str:
    """A fresh 3-class ``folder:`` dataset of 8x8 RGB PNGs (24 train, 9 test images) under ``tmp_path``."""
    return write_image_folder(Path(tmp_path) / "images")
