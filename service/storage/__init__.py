"""Storage behind two small interfaces: model artifacts and stored observation history.

Modules (none imports the web stack; imports run one way, base <- artifacts, history <-
objectstore <- factories, so there is no import circle):

- :mod:`~service.storage.base`: :class:`StoreError`, key checks, atomic local writes, locks;
- :mod:`~service.storage.artifacts`: :class:`ArtifactStore` (immutable directories, one per
  model version) and the local directory store;
- :mod:`~service.storage.history`: :class:`HistoryStore` (each model's observations as a
  time-indexed table), the generation layout every backend shares, the local store;
- :mod:`~service.storage.objectstore`: both stores on S3-compatible object storage (fsspec);
- :mod:`~service.storage.factories`: the stores a URL or the settings name.
"""

from service.storage.artifacts import ArtifactStore, LocalArtifactStore, LocalStaging
from service.storage.base import LockFactory, StoreError
from service.storage.factories import create_artifact_store, create_history_store, open_stores
from service.storage.history import (
    TIMESTAMP,
    GenerationHistoryStore,
    HistoryStore,
    HistorySummary,
    LocalHistoryStore,
    Retention,
)

__all__ = [
    "TIMESTAMP",
    "ArtifactStore",
    "GenerationHistoryStore",
    "HistoryStore",
    "HistorySummary",
    "LocalArtifactStore",
    "LocalHistoryStore",
    "LocalStaging",
    "LockFactory",
    "Retention",
    "StoreError",
    "create_artifact_store",
    "create_history_store",
    "open_stores",
]
