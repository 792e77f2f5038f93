"""Building the stores a deployment's settings name: a local folder or an object-store URL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from service.db import Database
from service.settings import Settings
from service.storage.artifacts import ArtifactStore, LocalArtifactStore
from service.storage.base import LockFactory, StoreError
from service.storage.history import HistoryStore, LocalHistoryStore, Retention

__all__ = ["create_artifact_store", "create_history_store", "open_stores"]


def _local_path(url: str) -> str | None:
    """The folder of a plain path or ``file://`` URL; ``None`` for any other scheme."""
    if url.startswith("file://"):
        return url[len("file://") :]
    return None if "://" in url else url


def create_artifact_store(
    url: str, cache_dir: Path | None = None, endpoint_url: str = ""
) -> ArtifactStore:
    """Build the artifact store for a URL: a plain path or ``file://`` URL (local), or an
    fsspec URL such as ``s3://bucket/prefix`` (object storage, fetched into ``cache_dir``).

    Raises
    ------
    StoreError
        For an object-store URL without ``cache_dir``, or a scheme fsspec does not know.
    """
    local = _local_path(url)
    if local is not None:
        return LocalArtifactStore(Path(local))
    from service.storage.objectstore import FsspecArtifactStore  # fsspec only when used

    if cache_dir is None:
        raise StoreError(f"artifact store {url!r} needs a local cache folder")
    return FsspecArtifactStore(url, cache_dir, endpoint_url)


def create_history_store(
    url: str,
    endpoint_url: str = "",
    lock: LockFactory | None = None,
    retention: Retention | None = None,
) -> HistoryStore:
    """Build the history store for a URL: a plain path or ``file://`` URL (local), or an fsspec
    URL such as ``s3://bucket/prefix`` whose writers serialise on ``lock(name)``; each model
    keeps what ``retention`` allows (default: 10,000,000 rows).

    Raises
    ------
    StoreError
        For a scheme fsspec does not know.
    """
    local = _local_path(url)
    if local is not None:
        return LocalHistoryStore(Path(local), retention)
    from service.storage.objectstore import FsspecHistoryStore  # fsspec only when used

    return FsspecHistoryStore(url, endpoint_url, lock, retention)


def open_stores(settings: Settings, db: Database) -> tuple[ArtifactStore, HistoryStore]:
    """The artifact and history stores named by ``settings`` (object-store history writers
    serialise on the database's named locks, so API replicas and workers can share it)."""
    artifacts = create_artifact_store(
        settings.artifact_url, settings.data_dir / "cache" / "artifacts", settings.s3_endpoint_url
    )
    age = settings.history_max_age_days
    retention = Retention(settings.history_max_points, timedelta(days=age) if age else None)
    history = create_history_store(
        settings.history_url, settings.s3_endpoint_url, db.named_lock, retention
    )
    return artifacts, history
