"""What every storage backend shares: the error, key checks, atomic local writes and the
per-name locks that serialise writers."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from detector.persistence import fsync_path

__all__ = [
    "LockFactory",
    "StoreError",
    "atomic_write_bytes",
    "check_key",
    "fsync_tree",
    "thread_locks",
]

_KEY_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

LockFactory = Callable[[str], contextlib.AbstractContextManager[None]]
"""``lock(name)``: a context manager held while the writers of ``name`` must not overlap."""


class StoreError(RuntimeError):
    """A storage operation failed or was given an invalid key."""


def check_key(key: str) -> list[str]:
    """The ``/``-separated parts of a storage key.

    Raises
    ------
    StoreError
        If a part is empty, ``.``/``..`` or holds characters outside ``[A-Za-z0-9_.-]``.
    """
    parts = key.split("/")
    if not parts or any(not _KEY_PART.match(p) or p in {".", ".."} for p in parts):
        raise StoreError(f"invalid storage key {key!r}")
    return parts


def fsync_tree(path: Path) -> None:
    """Flush every file and folder under ``path`` to disk."""
    for root, _dirs, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as fh:
                os.fsync(fh.fileno())
        fsync_path(Path(root))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new content, never half."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def thread_locks() -> LockFactory:
    """``lock(name)``: a lock per name, shared by the threads of this process only."""
    guard = threading.Lock()
    locks: dict[str, threading.Lock] = {}

    @contextlib.contextmanager
    def lock(name: str) -> Iterator[None]:
        with guard:
            one = locks.setdefault(name, threading.Lock())
        with one:
            yield

    return lock
