"""Atomic writes: temporary files of a killed writer are removed by the next write in the folder;
those of a live writer, and unrelated files, are kept; a failed write leaves nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from coreg import _fs
from coreg._fs import atomic_write_bytes, remove_stale_temp_files, temp_path_beside
from coreg.engine.checkpoint import save_checkpoint

KILLED_WRITER = """
import os, signal, sys
from coreg._fs import temp_path_beside
tmp = temp_path_beside(sys.argv[1])
tmp.write_bytes(b"half a checkpoint")
print(tmp, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no finally, no atexit: what a crash or an OOM kill leaves
"""


def _killed_write(target: Path) -> Path:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target)], capture_output=True, text=True, env=env)
    assert r.returncode == -9, r.stderr
    left = Path(r.stdout.strip())
    assert left.exists() and left.parent == target.parent
    return left


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_killed_checkpoint_write_is_cleaned_by_the_next_save(tmp_path: Path) -> None:
    left = _killed_write(tmp_path / "checkpoint.pt")
    assert left.name.startswith(".checkpoint.pt.tmp-")
    save_checkpoint(tmp_path / "checkpoint.pt", {"epoch": 0, "w": torch.zeros(2)})
    assert not left.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_live_writers_unrelated_files_and_fresh_legacy_temps_are_kept(tmp_path: Path) -> None:
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        mine = temp_path_beside(tmp_path / "student.pt")  # this process: alive
        other = tmp_path / f".student.pt.tmp-{_fs._HOST}-{live.pid}-abcdefgh.tmp"
        other.write_bytes(b"being written")
        keep = [mine, other, tmp_path / ".gitignore", tmp_path / "notes.tmp", tmp_path / ".checkpoint.pt.a1b2c3d4.tmp"]
        for p in keep[2:]:
            p.write_bytes(b"x")
        old_legacy = tmp_path / ".checkpoint.pt.zz9yy8xx.tmp"  # an older coreg's name: no pid, so by age
        old_legacy.write_bytes(b"x")
        old = time.time() - _fs.STALE_AFTER_S - 60
        os.utime(old_legacy, (old, old))
        foreign = tmp_path / ".labels.json.tmp-00000000-1-abcdefgh.tmp"  # another host: by age too
        foreign.write_bytes(b"x")
        os.utime(foreign, (old, old))
        stale_dir = tmp_path / f".m.int8.onnx.tmp-{_fs._HOST}-{_dead_pid()}-qwertyui"  # quantize's temp folder
        stale_dir.mkdir()
        (stale_dir / "pre.onnx").write_bytes(b"x")
        removed = remove_stale_temp_files(tmp_path)
        assert sorted(removed) == sorted([old_legacy, foreign, stale_dir])
        assert all(p.exists() for p in keep)
    finally:
        live.kill()
        live.wait()
    assert other in remove_stale_temp_files(tmp_path)  # its writer is gone now


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_failed_write_leaves_no_temp_and_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "mlflow_run.json"
    atomic_write_bytes(target, b"old")

    def boom(*a: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="No space"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["mlflow_run.json"]
