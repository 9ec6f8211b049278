"""Atomic file writes whose temporary files never outlive a crash for long.

Every temporary file (or folder) is created beside its target as
``.<target name>.tmp-<host>-<pid>-<random><suffix>``, so a later process can tell a temporary
file of a writer that died (same host, pid no longer running: a SIGKILL or power loss skips every
``finally``) from one that is still being written. :func:`remove_stale_temp_files` deletes the
former; every atomic write calls it for its folder first, so the next run in a folder cleans up
after a killed one. Temporary files of unknown owner (another host, or the ``.<name>.<random>.tmp``
names of older coreg versions) are removed once older than :data:`STALE_AFTER_S`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)

STALE_AFTER_S = 3600.0
"""Age after which a temporary file whose writer cannot be checked counts as abandoned."""

_HOST = hashlib.blake2b(socket.gethostname().encode(), digest_size=4).hexdigest()
_OURS = re.compile(r"^\..+\.tmp-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[^.]*")
_LEGACY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\.onnx)?$")


def temp_prefix(target: Path) -> str:
    """The name prefix of this process's temporary files for ``target``."""
    return f".{target.name}.tmp-{_HOST}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OSError:
        return True
    return True


def _is_stale(entry: os.DirEntry[str], now: float) -> bool:
    m = _OURS.match(entry.name)
    if m is not None:
        pid = int(m.group("pid"))
        if m.group("host") == _HOST:
            return pid != os.getpid() and not _pid_alive(pid)
    elif not _LEGACY.match(entry.name):
        return False
    try:
        return now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S
    except OSError:
        return False


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete temporary files (and folders) left in ``folder`` by atomic writes that were killed.

    Returns:
        The removed paths (each also logged).
    """
    folder = Path(folder)
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(".") or not _is_stale(entry, now):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except FileNotFoundError:
            continue  # another process cleaned it first
        except OSError as e:
            logger.warning("could not remove stale temporary file %s: %s", entry.path, e)
            continue
        removed.append(Path(entry.path))
        logger.info("removed %s, left by an interrupted write", entry.path)
    return removed


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def temp_path_beside(target: str | Path, suffix: str = ".tmp") -> Path:
    """A new empty file beside ``target`` (ordinary umask permissions, not mkstemp's 0600), after
    removing stale temporary files of that folder. The caller renames or deletes it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(target.parent)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=temp_prefix(target), suffix=suffix)
    os.close(fd)
    os.chmod(name, _umask_mode())
    return Path(name)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (same-directory temporary file, fsync, then rename)."""
    path = Path(path)
    tmp = temp_path_beside(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
