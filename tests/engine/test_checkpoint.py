"""Checkpoints and student files load with ``weights_only``: a crafted pickle runs nothing."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from coreg.engine.checkpoint import check_plain_state, load_checkpoint, save_checkpoint
from coreg.errors import CoregError
from coreg.student import Student


class _Touch:
    """Unpickling this calls ``os.system("touch MARKER")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


def malicious_files(tmp_path: Path) -> tuple[Path, list[Path]]:
    """The marker a successful attack would create, and two crafted files: torch's zip format
    (what ``torch.save`` writes) and a bare legacy pickle."""
    marker = tmp_path / "pwned"
    zipped = tmp_path / "zip" / "checkpoint.pt"
    zipped.parent.mkdir()
    torch.save({"epoch": 3, "method": {}, "extra": _Touch(marker)}, zipped)
    legacy = tmp_path / "legacy" / "checkpoint.pt"
    legacy.parent.mkdir()
    legacy.write_bytes(pickle.dumps({"epoch": _Touch(marker)}))
    # the payload is live: plain pickle would run it
    pickle.loads(pickle.dumps(_Touch(tmp_path / "control")))
    assert (tmp_path / "control").exists()
    return marker, [zipped, legacy]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker, files = malicious_files(tmp_path)
    for path in files:
        with pytest.raises(CoregError) as e:
            load_checkpoint(path.parent)
        msg = str(e.value)
        assert msg.startswith("refusing to load checkpoint") and "\n" not in msg, msg
        assert "weights_only" not in msg  # no advice to load it unsafely
        with pytest.raises(CoregError, match="refusing to load student file"):
            Student.load_file(path)
    assert not marker.exists()


def test_save_refuses_non_plain_state_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"state\['extra'\]\['history'\]\[0\] is a numpy.ndarray"):
        save_checkpoint(tmp_path / "checkpoint.pt", {"epoch": 0, "extra": {"history": [np.zeros(3)]}})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TypeError, match=r"state\['best'\]\['value'\] is a numpy.float64"):
        save_checkpoint(tmp_path / "checkpoint.pt", {"epoch": 0, "best": {"value": np.float64(0.5)}})
    check_plain_state({"a": [torch.zeros(2), 1, 2.5, None, "x", (True,)], 3: {"b": torch.float32}})


def test_plain_checkpoint_round_trip_and_not_a_checkpoint(tmp_path: Path) -> None:
    state = {"epoch": 2, "w": torch.arange(4.0), "history": [{"loss": 0.5}], "best": {"value": -float("inf")}}
    back = load_checkpoint(save_checkpoint(tmp_path / "checkpoint.pt", state))
    assert back["epoch"] == 2 and torch.equal(back["w"], state["w"]) and back["history"] == state["history"]
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CoregError, match="not a coreg training checkpoint"):
        load_checkpoint(tmp_path / "list.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    with pytest.raises(CoregError, match="refusing to load checkpoint .*junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    good = (tmp_path / "checkpoint.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(CoregError, match="cannot read checkpoint .*cut.pt"):
        load_checkpoint(tmp_path / "cut.pt")
