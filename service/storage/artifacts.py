"""The artifact store interface and its local implementation: immutable directories (one per
model version) under string keys such as ``"<model_id>/<artifact_id>"``."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path

from detector.persistence import fsync_path
from service.storage.base import StoreError, atomic_write_bytes, check_key, fsync_tree

__all__ = ["ArtifactStore", "LocalArtifactStore", "LocalStaging"]

logger = logging.getLogger(__name__)


class ArtifactStore(ABC):
    """Immutable directories under keys such as ``"<model_id>/<artifact_id>"``."""

    @abstractmethod
    def staging(self) -> contextlib.AbstractContextManager[Path]:
        """A fresh local directory to build an artifact in; removed on exit."""

    @abstractmethod
    def publish(self, local_dir: Path, key: str) -> None:
        """Publish a complete directory under ``key`` atomically (all or nothing).

        Raises
        ------
        StoreError
            If ``key`` already exists or is invalid.
        """

    @abstractmethod
    def fetch(self, key: str) -> Path:
        """Return a local directory holding the artifact's files.

        Raises
        ------
        StoreError
            If the key does not exist.
        """

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether ``key`` holds a published artifact."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete an artifact or every artifact under a prefix; missing keys are ignored."""

    def discard(self, keys: Iterable[str], what: str) -> None:
        """Delete the artifacts of rows already deleted (after their transaction committed):
        a failure is logged, not raised, and leaves a file, never a row. ``what`` names
        them in the log."""
        for key in keys:
            try:
                self.delete(key)
            except Exception:
                logger.exception("%s could not be removed: %s", what, key)

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Keys directly under ``prefix``."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Store a small blob (job inputs) atomically."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Read a blob written by :meth:`put_bytes`."""

    @abstractmethod
    def check(self) -> None:
        """Raise :class:`StoreError` when the store is not usable (readiness)."""

    def sweep_staging(self, older_than_s: float = 0.0) -> int:
        """Remove abandoned staging directories; return how many were removed."""
        return 0


class LocalStaging:
    """Staging directories in a local folder, shared by every artifact store.

    Subclasses call :meth:`_init_staging` with the folder (created if missing).
    """

    _staging_root: Path

    def _init_staging(self, root: Path) -> None:
        self._staging_root = root
        self._staging_root.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh local directory to build an artifact in; removed on exit."""
        path = Path(tempfile.mkdtemp(dir=self._staging_root, prefix="s-"))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def sweep_staging(self, older_than_s: float = 0.0) -> int:
        """Remove staging entries older than ``older_than_s``; return how many were removed."""
        removed = 0
        now = time.time()
        for entry in self._staging_root.iterdir():
            try:
                if now - entry.stat().st_mtime < older_than_s:
                    continue
            except FileNotFoundError:
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
        return removed


class LocalArtifactStore(LocalStaging, ArtifactStore):
    """Artifacts as directories under a local root; publishing is a rename on one filesystem.

    Parameters
    ----------
    root
        Folder holding every artifact (created if missing).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._init_staging(self.root / ".staging")

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key))

    def publish(self, local_dir: Path, key: str) -> None:
        target = self._path(key)
        if target.exists():
            raise StoreError(f"artifact {key!r} already exists; versions are immutable")
        target.parent.mkdir(parents=True, exist_ok=True)
        local_dir = Path(local_dir)
        try:
            same_fs = local_dir.resolve().is_relative_to(self.root.resolve())
        except OSError:  # pragma: no cover - defensive
            same_fs = False
        if not same_fs:
            with self.staging() as tmp:
                copy = tmp / "copy"
                shutil.copytree(local_dir, copy)
                self._rename_in(copy, target)
            return
        self._rename_in(local_dir, target)

    @staticmethod
    def _rename_in(source: Path, target: Path) -> None:
        fsync_tree(source)
        os.rename(source, target)
        fsync_path(target.parent)

    def fetch(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_dir():
            raise StoreError(f"artifact {key!r} is missing")
        return path

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.is_dir():
            # Rename first so a half-deleted directory is never visible under its key.
            trash = self._staging_root / f"trash-{uuid.uuid4().hex}"
            try:
                os.rename(path, trash)
            except FileNotFoundError:
                return
            shutil.rmtree(trash, ignore_errors=True)
        elif path.exists():
            path.unlink(missing_ok=True)

    def list(self, prefix: str) -> list[str]:
        path = self._path(prefix)
        if not path.is_dir():
            return []
        return sorted(f"{prefix}/{p.name}" for p in path.iterdir() if not p.name.startswith("."))

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise StoreError(f"blob {key!r} is missing") from exc

    def check(self) -> None:
        probe = self._staging_root / f"probe-{uuid.uuid4().hex}"
        try:
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise StoreError(f"artifact store at {self.root} is not writable: {exc}") from exc
