"""Object-storage backends (S3 and anything else fsspec reaches) for the two store interfaces.

Object stores have no atomic rename, so publication works by markers and single-object puts:

- an artifact's files are uploaded under ``<root>/<key>/`` and a completion marker
  ``<root>/<key>/.complete`` (listing the files) is written last; a key without its marker does
  not exist for :meth:`FsspecArtifactStore.exists` and :meth:`~FsspecArtifactStore.fetch`, so a
  loader never sees a partly uploaded version, and a version row is only inserted after
  :meth:`~FsspecArtifactStore.publish` returned;
- history is the local store's logic (:class:`service.storage.history.GenerationHistoryStore`) over
  object puts, each atomic; writers of one model serialise on a lock given by the caller (a
  PostgreSQL advisory lock when several processes share the store).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from service.storage.artifacts import ArtifactStore, LocalStaging
from service.storage.base import LockFactory, StoreError, check_key, thread_locks
from service.storage.history import GenerationHistoryStore, Retention

__all__ = ["FsspecArtifactStore", "FsspecHistoryStore", "open_filesystem"]

logger = logging.getLogger(__name__)

_MARKER = ".complete"


def open_filesystem(url: str, endpoint_url: str = "") -> tuple[Any, str]:
    """An fsspec filesystem for ``url`` and the root path inside it (no trailing slash).

    Listing caches are off: other processes change the store.
    """
    import fsspec

    protocol, _, path = url.partition("://")
    options: dict[str, Any] = {"skip_instance_cache": True}
    if protocol in {"s3", "s3a"}:
        options["use_listings_cache"] = False
        if endpoint_url:
            options["client_kwargs"] = {"endpoint_url": endpoint_url}
    try:
        fs = fsspec.filesystem(protocol, **options)
    except (ImportError, ValueError) as exc:
        raise StoreError(
            f"no storage backend for {url!r}: {exc} (pip install 'reconad[scale]')"
        ) from exc
    return fs, path.rstrip("/")


class FsspecArtifactStore(LocalStaging, ArtifactStore):
    """Artifacts as object prefixes with a completion marker, fetched into a local cache.

    Parameters
    ----------
    url
        ``s3://bucket/prefix`` (or another fsspec URL).
    cache_dir
        Local folder for staging and for fetched artifacts (immutable, so never stale).
    endpoint_url
        S3 endpoint (MinIO); empty for AWS.
    """

    def __init__(self, url: str, cache_dir: Path, endpoint_url: str = "") -> None:
        self.url = url
        self.fs, self.root = open_filesystem(url, endpoint_url)
        self.cache_dir = Path(cache_dir)
        self._init_staging(self.cache_dir / ".staging")

    def _path(self, key: str) -> str:
        return "/".join([self.root, *check_key(key)])

    def publish(self, local_dir: Path, key: str) -> None:
        target = self._path(key)
        if self.fs.exists(f"{target}/{_MARKER}"):
            raise StoreError(f"artifact {key!r} already exists; versions are immutable")
        local_dir = Path(local_dir)
        files = sorted(
            p.relative_to(local_dir).as_posix() for p in local_dir.rglob("*") if p.is_file()
        )
        for name in files:
            self.fs.put_file(str(local_dir / name), f"{target}/{name}")
        self.fs.pipe_file(f"{target}/{_MARKER}", json.dumps({"files": files}).encode())

    def _files(self, key: str) -> list[str] | None:
        try:
            marker = self.fs.cat_file(f"{self._path(key)}/{_MARKER}")
        except FileNotFoundError:
            return None
        files: list[str] = json.loads(marker)["files"]
        return files

    def fetch(self, key: str) -> Path:
        local = self.cache_dir.joinpath(*check_key(key))
        if local.is_dir():
            return local
        files = self._files(key)
        if files is None:
            raise StoreError(f"artifact {key!r} is missing")
        with self.staging() as tmp:
            for name in files:
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(f"{self._path(key)}/{name}", str(tmp / name))
            local.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):  # another fetch of the same key won the race
                os.rename(tmp, local)
        if not local.is_dir():  # pragma: no cover - defensive
            raise StoreError(f"artifact {key!r} could not be cached")
        return local

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(f"{self._path(key)}/{_MARKER}"))

    def delete(self, key: str) -> None:
        path = self._path(key)
        # The marker goes first, so a half-deleted artifact is never seen as published.
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(f"{path}/{_MARKER}")
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(path, recursive=True)
        shutil.rmtree(self.cache_dir.joinpath(*check_key(key)), ignore_errors=True)

    def list(self, prefix: str) -> list[str]:
        try:
            entries = self.fs.ls(self._path(prefix), detail=True)
        except FileNotFoundError:
            return []
        names = {
            str(e["name"]).rstrip("/").rsplit("/", 1)[-1]
            for e in entries
            if e.get("type") == "directory"
        }
        return sorted(f"{prefix}/{n}" for n in names if not n.startswith("."))

    def put_bytes(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(self._path(key), data)

    def get_bytes(self, key: str) -> bytes:
        try:
            data: bytes = self.fs.cat_file(self._path(key))
        except FileNotFoundError as exc:
            raise StoreError(f"blob {key!r} is missing") from exc
        return data

    def check(self) -> None:
        probe = f"{self.root}/.probe-{uuid.uuid4().hex}"
        try:
            self.fs.pipe_file(probe, b"ok")
            self.fs.rm_file(probe)
        except Exception as exc:
            raise StoreError(f"artifact store at {self.url} is not usable: {exc}") from exc


class FsspecHistoryStore(GenerationHistoryStore):
    """History as Parquet parts in generation prefixes of an object store.

    Parameters
    ----------
    url
        ``s3://bucket/prefix`` (or another fsspec URL).
    endpoint_url
        S3 endpoint (MinIO); empty for AWS.
    lock
        ``lock(name)`` returns a context manager held while a model's history is written; the
        default only serialises the threads of this process.
    retention
        How much history each model keeps (default: 10,000,000 rows).
    """

    def __init__(
        self,
        url: str,
        endpoint_url: str = "",
        lock: LockFactory | None = None,
        retention: Retention | None = None,
    ) -> None:
        self.url = url
        self.fs, self.root = open_filesystem(url, endpoint_url)
        super().__init__(self.root, url, retention)
        self._lock = lock or thread_locks()

    def _locked(self, model_id: str) -> contextlib.AbstractContextManager[None]:
        return self._lock(f"history:{model_id}")

    def _get(self, path: str) -> bytes:
        data: bytes = self.fs.cat_file(path)
        return data

    def _put(self, path: str, data: bytes) -> None:
        self.fs.pipe_file(path, data)  # one object put: atomic

    def _names(self, path: str) -> list[str]:
        try:
            return [str(n).rstrip("/").rsplit("/", 1)[-1] for n in self.fs.ls(path, detail=False)]
        except FileNotFoundError:
            return []

    def _remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(path, recursive=True)
