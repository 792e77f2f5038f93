"""Object-storage backends (S3 and anything else fsspec reaches) for the two store interfaces.

Object stores have no atomic rename, so publication works by markers and single-object puts:

- an artifact's files are uploaded under ``<root>/<key>/`` and a completion marker
  ``<root>/<key>/.complete`` (listing the files) is written last; a key without its marker does
  not exist for :meth:`FsspecArtifactStore.exists` and :meth:`~FsspecArtifactStore.fetch`, so a
  loader never sees a partly uploaded version, and a version row is only inserted after
  :meth:`~FsspecArtifactStore.publish` returned;
- history keeps the local layout (``CURRENT`` -> generation -> ``manifest.json`` -> parts);
  parts are written before the manifest that lists them and generations before the ``CURRENT``
  object naming them, each a single atomic put. Writers of one model serialise on a lock given
  by the caller (a PostgreSQL advisory lock when several processes share the store).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from service.store import (
    ArtifactStore,
    HistoryStore,
    HistorySummary,
    LocalHistoryStore,
    LocalStaging,
    StoreError,
    _check_key,
)

__all__ = ["FsspecArtifactStore", "FsspecHistoryStore", "LockFactory", "open_filesystem"]

logger = logging.getLogger(__name__)

LockFactory = Callable[[str], contextlib.AbstractContextManager[None]]
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


def _thread_locks() -> LockFactory:
    guard = threading.Lock()
    locks: dict[str, threading.Lock] = {}

    @contextlib.contextmanager
    def lock(name: str) -> Iterator[None]:
        with guard:
            one = locks.setdefault(name, threading.Lock())
        with one:
            yield

    return lock


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
        return "/".join([self.root, *_check_key(key)])

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
        local = self.cache_dir.joinpath(*_check_key(key))
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
        shutil.rmtree(self.cache_dir.joinpath(*_check_key(key)), ignore_errors=True)

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


class FsspecHistoryStore(HistoryStore):
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
    """

    def __init__(self, url: str, endpoint_url: str = "", lock: LockFactory | None = None) -> None:
        self.url = url
        self.fs, self.root = open_filesystem(url, endpoint_url)
        self._lock = lock or _thread_locks()

    def _dir(self, model_id: str) -> str:
        LocalHistoryStore._check_model_id(model_id)
        return f"{self.root}/{model_id}"

    def _current(self, mdir: str) -> tuple[str, dict[str, Any]] | None:
        try:
            gen = self.fs.cat_file(f"{mdir}/CURRENT").decode().strip()
            manifest = json.loads(self.fs.cat_file(f"{mdir}/{gen}/manifest.json"))
        except FileNotFoundError:
            return None
        return f"{mdir}/{gen}", manifest

    def _write_part(self, gen: str, frame: pd.DataFrame, index: int) -> dict[str, Any]:
        name = f"p{index:06d}.parquet"
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=True), buffer)
        data = buffer.getvalue()
        self.fs.pipe_file(f"{gen}/{name}", data)
        idx = frame.index
        return {
            "file": name,
            "rows": len(frame),
            "start": idx.min().isoformat() if len(frame) else None,
            "end": idx.max().isoformat() if len(frame) else None,
            "bytes": len(data),
        }

    def _put_manifest(self, gen: str, manifest: dict[str, Any]) -> None:
        self.fs.pipe_file(f"{gen}/manifest.json", json.dumps(manifest).encode())

    def _new_generation(
        self, mdir: str, frame: pd.DataFrame, columns: list[str], key_column: str | None
    ) -> None:
        current = self._current(mdir)
        old = current[0] if current is not None else None
        gen = f"{mdir}/g{uuid.uuid4().hex[:12]}"
        parts = [self._write_part(gen, frame, 1)] if len(frame) else []
        self._put_manifest(gen, {"parts": parts, "columns": columns, "key_column": key_column})
        self.fs.pipe_file(f"{mdir}/CURRENT", gen.rsplit("/", 1)[-1].encode())
        if old is not None:  # readers holding the old manifest retry when its parts vanish
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(old, recursive=True)

    def _read_gen(self, gen: str, manifest: dict[str, Any], start: Any, end: Any) -> pd.DataFrame:
        def read_part(name: str) -> pd.DataFrame:
            table = pq.read_table(io.BytesIO(self.fs.cat_file(f"{gen}/{name}")))
            frame: pd.DataFrame = table.to_pandas()
            return frame

        return LocalHistoryStore._select_parts(manifest, start, end, read_part)

    # -- interface
    def append(self, model_id: str, frame: pd.DataFrame, key_column: str | None = None) -> int:
        if frame.empty:
            return 0
        frame = LocalHistoryStore._dedupe(LocalHistoryStore._normalise(frame), key_column)
        columns = [str(c) for c in frame.columns]
        mdir = self._dir(model_id)
        with self._lock(f"history:{model_id}"):
            current = self._current(mdir)
            if current is None or not current[1]["parts"]:
                self._new_generation(mdir, frame, columns, key_column)
                return len(frame)
            gen, manifest = current
            LocalHistoryStore._check_columns(manifest, columns)
            frame = frame[manifest["columns"]]
            stored_end = max(pd.Timestamp(p["end"]) for p in manifest["parts"])
            if frame.index.min() > stored_end and len(manifest["parts"]) < 64:
                manifest["parts"].append(self._write_part(gen, frame, len(manifest["parts"]) + 1))
                self._put_manifest(gen, manifest)
                return len(frame)
            merged = pd.concat([self._read_gen(gen, manifest, None, None), frame])
            merged = LocalHistoryStore._dedupe(merged, key_column)
            self._new_generation(mdir, merged, manifest["columns"], key_column)
            return len(frame)

    def read(
        self, model_id: str, start: datetime | None = None, end: datetime | None = None
    ) -> pd.DataFrame:
        mdir = self._dir(model_id)
        lo, hi = LocalHistoryStore._ts(start), LocalHistoryStore._ts(end)
        for _attempt in range(5):
            current = self._current(mdir)
            if current is None:
                return LocalHistoryStore._empty([])
            try:
                return self._read_gen(current[0], current[1], lo, hi)
            except FileNotFoundError:
                time.sleep(0.05)
        raise StoreError(f"history of model {model_id} kept changing while it was read")

    def summary(self, model_id: str) -> HistorySummary:
        current = self._current(self._dir(model_id))
        return LocalHistoryStore._summarise(None if current is None else current[1])

    def drop_range(self, model_id: str, start: datetime | None, end: datetime | None) -> int:
        lo, hi = LocalHistoryStore._ts(start), LocalHistoryStore._ts(end)
        mdir = self._dir(model_id)
        with self._lock(f"history:{model_id}"):
            current = self._current(mdir)
            if current is None:
                return 0
            frame = self._read_gen(current[0], current[1], None, None)
            keep = LocalHistoryStore._outside(frame, lo, hi)
            dropped = int((~keep).sum())
            if dropped:
                self._new_generation(
                    mdir, frame[keep], current[1]["columns"], current[1]["key_column"]
                )
            return dropped

    def delete(self, model_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self._dir(model_id), recursive=True)

    def check(self) -> None:
        probe = f"{self.root}/.probe-{uuid.uuid4().hex}"
        try:
            self.fs.pipe_file(probe, b"ok")
            self.fs.rm_file(probe)
        except Exception as exc:
            raise StoreError(f"history store at {self.url} is not usable: {exc}") from exc
