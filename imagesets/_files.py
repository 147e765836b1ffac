"""Atomic writes and one lock, for every writer of KB, store and checkpoint files.

A reader must never see half a file, and two writers must never share a temp
name: each write goes to a unique temp file in the destination folder (pid +
random suffix), is fsynced, then ``os.replace``d over the target. ``file_lock``
is :class:`filelock.FileLock` on ``<path>.lock``, for read-modify-write sequences
(a KB folder, a claim table) that a rename alone cannot make safe.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "file_lock", "unique_tmp"]


def unique_tmp(path: str | os.PathLike) -> Path:
    """A temp name beside ``path`` that no other process or thread will pick."""
    p = Path(path)
    return p.with_name(f".{p.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, mode: int = 0o644) -> Iterator[Path]:
    """Yield a unique temp path; on success fsync it and rename it onto ``path``.

    For writers that want a file name (``DataFrame.to_csv``, ``safetensors.save_file``).
    On an exception the temp file is removed and ``path`` is untouched.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_tmp(dest)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> Path:
    with atomic_path(path, mode) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, mode: int = 0o644) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), mode)


def file_lock(path: str | os.PathLike, timeout: float = 120.0):  # noqa: ANN201 (filelock.FileLock)
    """An inter-process lock on ``<path>.lock`` (the folder is created if needed).

    One instance per path in a process (``is_singleton``), so a holder that calls another
    locked writer of the same file re-enters instead of deadlocking."""
    from filelock import FileLock

    lock = Path(f"{path}.lock").resolve()
    lock.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(lock), timeout=timeout, is_singleton=True)
