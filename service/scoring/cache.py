"""Loaded model versions and the bounded cache that keeps them in memory."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from detector import Detector
from service.live.monitoring import LabelRefit

__all__ = ["DetectorCache", "LoadedVersion"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedVersion:
    """A version's detector in memory, with what responses repeat."""

    model_id: str
    model_name: str
    version: int
    detector: Detector
    threshold: float
    features: list[str]
    window: int
    key_column: str | None
    feature_array: np.ndarray = field(repr=False)  # (F,) object: names, for fancy indexing
    #: What labels re-fitted for the live decisions (``metrics.label_refit``); live monitors
    #: of this version apply it (``service.feedback``).
    label_refit: LabelRefit = field(default_factory=LabelRefit)

    @classmethod
    def of(
        cls,
        model_id: str,
        model_name: str,
        version: int,
        detector: Detector,
        key_column: str | None = None,
        label_refit: LabelRefit | None = None,
    ) -> LoadedVersion:
        """What responses repeat, read once from a loaded detector."""
        features = [str(f) for f in detector.feature_names_in_]
        return cls(
            model_id=model_id,
            model_name=model_name,
            version=version,
            detector=detector,
            threshold=float(detector.threshold_),
            features=features,
            window=int(detector.window_),
            key_column=key_column,
            feature_array=np.asarray(features, dtype=object),
            label_refit=label_refit or LabelRefit(),
        )


class DetectorCache:
    """A bounded LRU of loaded versions keyed by ``(model_id, version)``.

    Versions are immutable, so an entry never goes stale; concurrent requests for a version not
    yet loaded wait for one load.
    """

    def __init__(self, capacity: int, on_size: Callable[[int], None] | None = None) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, int], LoadedVersion] = OrderedDict()
        self._loading: dict[tuple[str, int], asyncio.Future[LoadedVersion]] = {}
        self._on_size = on_size or (lambda n: None)

    def __len__(self) -> int:
        return len(self._items)

    async def get(self, key: tuple[str, int], load: Callable[[], LoadedVersion]) -> LoadedVersion:
        """The entry for ``key``, loading it with ``load`` (run in a thread) on a miss."""
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
            return item
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[LoadedVersion] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            item = await asyncio.to_thread(load)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            self._loading.pop(key, None)
        future.set_result(item)
        self._items[key] = item
        while len(self._items) > self.capacity:
            old_key, _ = self._items.popitem(last=False)
            logger.info("model version unloaded", extra={"cache_key": list(old_key)})
        self._on_size(len(self._items))
        return item

    def drop(self, model_id: str, version: int) -> None:
        """Forget one version (after it was deleted)."""
        self._items.pop((model_id, version), None)
        self._on_size(len(self._items))

    def drop_model(self, model_id: str) -> None:
        """Forget every version of a model (after it was deleted)."""
        for key in [k for k in self._items if k[0] == model_id]:
            del self._items[key]
        self._on_size(len(self._items))
