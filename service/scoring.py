"""Scoring: request parsing, a bounded cache of loaded versions, and a per-version micro-batcher.

The path of a score request:

1. :func:`parse_score_body` turns the raw JSON body into numpy arrays (in a worker thread for
   large bodies) and rejects what cannot be scored with a message that says what to fix:
   malformed JSON (400), NaN/Infinity tokens or out-of-range numbers, wrong shapes, ragged
   arrays, strings, unknown or missing features (422), too many points (413).
2. :class:`ScoringService` resolves the model's active (or pinned) version — the active version
   is cached for ``model_meta_ttl_s`` and dropped at once when this process promotes — and gets
   the loaded detector from :class:`DetectorCache` (LRU over ``(model_id, version)``).
3. :class:`MicroBatcher` queues the request behind others for the same version; one drain task
   per version concatenates every queued window request into a single ``score_windows`` call
   and runs it, plus any series requests, in the inference thread pool, so the event loop never
   runs model code. The response JSON is encoded in that thread too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pandas as pd

from detector import Detector, load_detector
from detector import errors as det_errors
from service.errors import InvalidInputError, PayloadTooLargeError
from service.observability import Metrics
from service.parsing import numeric_array, parse_json, parse_timestamps
from service.registry import ModelRegistry
from service.store import ArtifactStore

__all__ = [
    "DetectorCache",
    "LoadedVersion",
    "MicroBatcher",
    "ScoreInput",
    "ScoringService",
    "parse_score_body",
]

logger = logging.getLogger(__name__)

_INLINE_PARSE_BYTES = 256 * 1024
_ENVELOPE_KEYS = {"windows", "values", "timestamps", "version", "reconstruct", "top_k"}


# --------------------------------------------------------------------------- parsing


@dataclass
class ScoreInput:
    """A parsed score request."""

    version: int | None
    reconstruct: bool
    top_k: int
    windows: np.ndarray | None = None  # (B, W, F) float64
    values: dict[str, Any] | None = None
    timestamps: list[Any] | None = None
    n_points: int = 0


def parse_score_body(body: bytes, max_points: int) -> ScoreInput:
    """Validate a score request body and convert it to arrays.

    Parameters
    ----------
    body
        Raw JSON: ``{"windows": [[[...]]]}`` (shape (B, W, F)) or
        ``{"timestamps": [...], "values": {"feature": [...]}}``, plus optional ``version``,
        ``reconstruct`` and ``top_k``.
    max_points
        Most points allowed (a window of W points counts W).

    Raises
    ------
    BadRequestError, InvalidInputError, PayloadTooLargeError
    """
    data = parse_json(body)
    if not isinstance(data, dict):
        raise InvalidInputError("the body must be a JSON object with 'windows' or 'values'")
    unknown = sorted(set(data) - _ENVELOPE_KEYS)
    if unknown:
        raise InvalidInputError(f"unknown field(s) {unknown}; allowed: {sorted(_ENVELOPE_KEYS)}")
    version = data.get("version")
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or version < 1
    ):
        raise InvalidInputError(
            "version must be a positive integer (or omitted for the active one)"
        )
    reconstruct = data.get("reconstruct", False)
    if not isinstance(reconstruct, bool):
        raise InvalidInputError("reconstruct must be true or false")
    top_k = data.get("top_k", 3)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 0 <= top_k <= 1000:
        raise InvalidInputError("top_k must be an integer between 0 and 1000")
    has_windows, has_values = "windows" in data, "values" in data
    if has_windows == has_values:
        raise InvalidInputError(
            "send exactly one of 'windows' (array of shape (n_windows, window, n_features)) "
            "or 'values' (object: feature name -> list of numbers, with optional 'timestamps')"
        )
    out = ScoreInput(version=version, reconstruct=reconstruct, top_k=top_k)
    if has_windows:
        if "timestamps" in data:
            raise InvalidInputError("'timestamps' goes with 'values', not with 'windows'")
        raw = data["windows"]
        if not isinstance(raw, list) or not raw:
            raise InvalidInputError(
                "windows must be a non-empty array of shape (n_windows, window, n_features)"
            )
        arr = numeric_array(raw, "windows", allow_null=False)
        if arr.ndim != 3:
            raise InvalidInputError(
                f"windows must be 3-dimensional (n_windows, window, n_features); got "
                f"{arr.ndim} dimension(s) {tuple(arr.shape)} (wrap a single window in [ ])"
            )
        out.n_points = int(arr.shape[0] * arr.shape[1])
        if out.n_points > max_points:
            raise PayloadTooLargeError(
                f"the request holds {out.n_points} points; the limit is {max_points} "
                "(max_points_per_request): split it into several requests"
            )
        out.windows = arr
        return out
    values = data["values"]
    if not isinstance(values, dict) or not values:
        raise InvalidInputError(
            "values must be an object mapping each feature name to a list of numbers"
        )
    lengths = set()
    for name, column in values.items():
        if not isinstance(column, list) or not column:
            raise InvalidInputError(f"values[{name!r}] must be a non-empty list")
        lengths.add(len(column))
    if len(lengths) != 1:
        raise InvalidInputError(
            f"every values column must have the same length; got lengths {sorted(lengths)}"
        )
    n = lengths.pop()
    if n > max_points:
        raise PayloadTooLargeError(
            f"the request holds {n} points; the limit is {max_points} "
            "(max_points_per_request): split it into several requests"
        )
    timestamps = data.get("timestamps")
    if timestamps is not None and (not isinstance(timestamps, list) or len(timestamps) != n):
        raise InvalidInputError(f"timestamps must be a list with one entry per point ({n})")
    out.values, out.timestamps, out.n_points = values, timestamps, n
    return out


# --------------------------------------------------------------------------- loaded models


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


# --------------------------------------------------------------------------- batching


@dataclass
class _Item:
    inp: ScoreInput
    frame: pd.DataFrame | None
    future: asyncio.Future[bytes]
    windows: int = 0
    cells: int = 0


class MicroBatcher:
    """Per-version queues drained by one task each; inference runs in a thread pool.

    Parameters
    ----------
    executor
        Threads that run model code and encode responses.
    max_windows
        Most windows concatenated into one ``score_windows`` call.
    wait_s
        How long a drain waits for more requests before scoring (0: score what is queued).
    metrics
        Where scored points, anomalies and batch sizes are counted.
    """

    def __init__(
        self,
        executor: ThreadPoolExecutor,
        max_windows: int,
        wait_s: float,
        metrics: Metrics,
        inline_max_cells: int = 0,
    ) -> None:
        self.executor = executor
        self.inline_max_cells = inline_max_cells
        self.max_windows = max_windows
        self.wait_s = wait_s
        self.metrics = metrics
        self._queues: dict[tuple[str, int], list[_Item]] = {}
        self._drains: dict[tuple[str, int], asyncio.Task[None]] = {}

    async def submit(
        self, loaded: LoadedVersion, inp: ScoreInput, frame: pd.DataFrame | None
    ) -> bytes:
        """Queue a request and wait for its encoded JSON response."""
        loop = asyncio.get_running_loop()
        key = (loaded.model_id, loaded.version)
        windows = 0 if inp.windows is None else int(inp.windows.shape[0])
        cells = 0 if inp.windows is None else int(inp.windows.size)
        item = _Item(inp, frame, loop.create_future(), windows, cells)
        self._queues.setdefault(key, []).append(item)
        if key not in self._drains:
            self._drains[key] = loop.create_task(self._drain(key, loaded))
        return await item.future

    async def _drain(self, key: tuple[str, int], loaded: LoadedVersion) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queues.get(key):
                # Let requests that are already being parsed join this batch: one pass of the
                # event loop costs microseconds, a model call about a hundred.
                await asyncio.sleep(self.wait_s)
                queue = self._queues[key]
                batch: list[_Item] = []
                total = 0
                while queue and (not batch or total + queue[0].windows <= self.max_windows):
                    item = queue.pop(0)
                    total += item.windows
                    if not item.future.done():
                        batch.append(item)
                if not batch:
                    continue
                self.metrics.batch_size.observe(len(batch))
                cells = sum(item.cells for item in batch)
                results: list[bytes | BaseException]
                try:
                    if cells <= self.inline_max_cells and all(i.frame is None for i in batch):
                        results = self._run(loaded, batch)  # tiny: cheaper than a thread hop
                    else:
                        results = await loop.run_in_executor(
                            self.executor, self._run, loaded, batch
                        )
                except Exception as exc:  # never leave a request waiting
                    logger.exception("scoring batch failed")
                    results = [exc] * len(batch)
                for item, result in zip(batch, results, strict=True):
                    if item.future.done():
                        continue
                    if isinstance(result, BaseException):
                        item.future.set_exception(result)
                    else:
                        item.future.set_result(result)
        except BaseException as exc:  # pragma: no cover - cancelled at shutdown
            for item in self._queues.get(key, []):
                if not item.future.done():
                    item.future.set_exception(exc)
            raise
        finally:
            self._drains.pop(key, None)
            if not self._queues.get(key):
                self._queues.pop(key, None)

    # -- runs in the executor
    def _run(self, loaded: LoadedVersion, batch: list[_Item]) -> list[bytes | BaseException]:
        results: dict[int, bytes | BaseException] = {}
        windowed = [i for i, item in enumerate(batch) if item.inp.windows is not None]
        if windowed:
            self._run_windows(loaded, [batch[i] for i in windowed], windowed, results)
        for i, item in enumerate(batch):
            if item.inp.windows is None:
                try:
                    results[i] = self._series(loaded, item)
                except BaseException as exc:
                    results[i] = exc
        return [results[i] for i in range(len(batch))]

    def _run_windows(
        self,
        loaded: LoadedVersion,
        items: list[_Item],
        positions: list[int],
        results: dict[int, bytes | BaseException],
    ) -> None:
        det = loaded.detector
        reconstruct = any(item.inp.reconstruct for item in items)
        try:
            arrays = [item.inp.windows for item in items if item.inp.windows is not None]
            x = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]  # (sum B, W, F)
            scored = det.score_windows(x, reconstruct=reconstruct)
        except det_errors.ReconADError:
            if len(items) == 1:
                results[positions[0]] = _as_exception(loaded, items[0])
                return
            for item, pos in zip(items, positions, strict=True):
                self._run_windows(loaded, [item], [pos], results)
            return
        # Derive everything once for the whole batch, then slice per request.
        scores = np.asarray(scored.scores, dtype=np.float64)  # (B, W)
        k = min(max(item.inp.top_k for item in items), len(loaded.features))
        derived = _derive(loaded, scores, np.asarray(scored.contributions), k)
        bad_rows = np.asarray(~np.isfinite(scores).all(axis=1))  # (B,)
        offset = 0
        for item, pos in zip(items, positions, strict=True):
            part = slice(offset, offset + item.windows)
            offset += item.windows
            if bad_rows[part].any():
                results[pos] = _overflow()
                continue
            expected = None
            if scored.expected is not None and item.inp.reconstruct:
                expected = np.asarray(scored.expected[part])  # (b, W, F)
            results[pos] = self._dump(loaded, item.inp, derived, part, expected)

    def _series(self, loaded: LoadedVersion, item: _Item) -> bytes:
        assert item.frame is not None
        details = loaded.detector.score_details(item.frame, reconstruct=item.inp.reconstruct)
        features = loaded.features
        scores = details.scores.to_numpy(dtype=np.float64)  # (T,)
        observed = item.frame[features].notna().to_numpy().any(axis=1)  # (T,)
        with np.errstate(invalid="ignore"):
            if (np.isinf(scores) | (np.isnan(scores) & observed)).any():
                raise _overflow()
        expected = None
        if item.inp.reconstruct and details.expected is not None:
            values = details.expected[features].to_numpy()  # (T, F)
            expected = {name: values[:, j] for j, name in enumerate(features)}
        k = min(item.inp.top_k, len(features))
        derived = _derive(
            loaded, scores, details.contributions[features].to_numpy(dtype=np.float64), k
        )
        return self._dump(loaded, item.inp, derived, slice(None), expected)

    def _dump(
        self,
        loaded: LoadedVersion,
        inp: ScoreInput,
        derived: _Derived,
        part: slice,
        expected: Any,
    ) -> bytes:
        """Encode one request's share of a batch as the response JSON."""
        scores = derived.scores[part]
        anomalous = derived.anomalous[part]
        n_anomalous = int(anomalous.sum())
        n_points = int(scores.size)
        payload: dict[str, Any] = {
            "model": loaded.model_name,
            "version": loaded.version,
            "threshold": loaded.threshold,
            "window": loaded.window,
            "features": loaded.features,
            "n_points": n_points,
            "n_anomalous": n_anomalous,
            "scores": scores,
            "normalized": derived.normalized[part],
            "anomalous": anomalous,
        }
        k = min(inp.top_k, len(loaded.features))
        if k > 0 and derived.names is not None and derived.top_values is not None:
            payload["top_features"] = derived.names[part][..., :k].tolist()
            payload["top_contributions"] = derived.top_values[part][..., :k]
        if expected is not None:
            payload["expected"] = expected
        self.metrics.scored_points.inc(n_points)
        if n_anomalous:
            self.metrics.anomalies.inc(n_anomalous)
        return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


@dataclass
class _Derived:
    scores: np.ndarray  # (B, W) or (T,)
    normalized: np.ndarray  # same shape: score / threshold
    anomalous: np.ndarray  # same shape, bool
    names: np.ndarray | None  # (..., k) feature names (object)
    top_values: np.ndarray | None  # (..., k) their contributions


def _derive(
    loaded: LoadedVersion, scores: np.ndarray, contributions: np.ndarray, k: int
) -> _Derived:
    """Normalised scores, flags and the top-k contributing features.

    ``contributions`` has one more axis than ``scores`` (features, last).
    """
    threshold = loaded.threshold
    with np.errstate(invalid="ignore", divide="ignore"):
        normalized = scores / threshold if threshold > 0 else np.where(scores > 0, np.inf, 0.0)
        anomalous = np.greater(scores, threshold)  # NaN compares False: never flagged
    names = top_values = None
    if k > 0:
        filled = np.where(np.isnan(contributions), -np.inf, contributions)
        if k == 1:
            order = np.argmax(filled, axis=-1)[..., None]
        else:
            order = np.argsort(-filled, axis=-1, kind="stable")[..., :k]
        top_values = np.take_along_axis(contributions, order, axis=-1)
        names = loaded.feature_array[order]
    return _Derived(scores, normalized, anomalous, names, top_values)


def _overflow() -> InvalidInputError:
    return InvalidInputError(
        "values are too far from the range this model was trained on: the scores "
        "overflowed; check the units and scaling of the data"
    )


def _as_exception(loaded: LoadedVersion, item: _Item) -> BaseException:
    try:
        assert item.inp.windows is not None
        loaded.detector.score_windows(item.inp.windows, reconstruct=item.inp.reconstruct)
    except BaseException as exc:
        return exc
    return RuntimeError("scoring failed")  # pragma: no cover - the batch failed, so this does


# --------------------------------------------------------------------------- service


class ScoringService:
    """Resolves versions, keeps loaded detectors and scores requests.

    Parameters
    ----------
    registry
        Where models and versions are looked up.
    artifacts
        Where version artifacts are read from.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    cache_size, max_points, batch_max_windows, batch_wait_s, inference_threads, meta_ttl_s
        See :class:`service.settings.Settings`.
    metrics
        The app's metrics.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        artifacts: ArtifactStore,
        metrics: Metrics,
        *,
        device: str = "auto",
        cache_size: int = 8,
        max_points: int = 2_000_000,
        batch_max_windows: int = 4096,
        batch_wait_s: float = 0.0,
        inference_threads: int = 1,
        meta_ttl_s: float = 1.0,
        inline_max_cells: int = 0,
    ) -> None:
        self.registry = registry
        self.artifacts = artifacts
        self.device = device
        self.max_points = max_points
        self.meta_ttl_s = meta_ttl_s
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(inference_threads, thread_name_prefix="inference")
        self.cache = DetectorCache(cache_size, on_size=metrics.models_loaded.set)
        self.batcher = MicroBatcher(
            self.executor, batch_max_windows, batch_wait_s, metrics, inline_max_cells
        )
        self._meta: dict[str, tuple[float, str, int | None]] = {}
        registry.on_change(self.forget)

    def forget(self, name: str) -> None:
        """Drop the cached active version of a model (called when it changes here)."""
        self._meta.pop(name, None)

    def close(self) -> None:
        """Stop the inference threads."""
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def _model(self, name: str) -> tuple[str, int | None]:
        cached = self._meta.get(name)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1], cached[2]
        model = await asyncio.to_thread(self.registry.get_model, name)
        self._meta[name] = (now + self.meta_ttl_s, model.id, model.active_version)
        if len(self._meta) > 10_000:
            self._meta.clear()
        return model.id, model.active_version

    async def resolve(self, name: str, version: int | None) -> LoadedVersion:
        """The loaded detector of a model's active version or of a pinned version.

        Raises
        ------
        service.errors.NotFoundError
            For an unknown model or version.
        service.errors.ConflictError
            When the model has no active version and none is pinned.
        """
        model_id, active = await self._model(name)
        if version is None and active is None:
            # Make sure the answer is current before refusing.
            self.forget(name)
            model_id, active = await self._model(name)
        if version is None:
            if active is None:  # raises the explanatory ConflictError
                await asyncio.to_thread(self.registry.get_version, name, None)
            version = active
        assert version is not None
        number = version

        def load() -> LoadedVersion:
            model, row = self.registry.get_version(name, number)
            path = self.artifacts.fetch(row.artifact_key)
            detector = load_detector(path, device=self.device)
            cfg = row.config or {}
            logger.info("model version loaded", extra={"model": name, "version": number})
            return LoadedVersion(
                model_id=model.id,
                model_name=model.name,
                version=number,
                detector=detector,
                threshold=float(detector.threshold_),
                features=[str(f) for f in detector.feature_names_in_],
                window=int(detector.window_),
                key_column=cfg.get("key_column"),
                feature_array=np.asarray(
                    [str(f) for f in detector.feature_names_in_], dtype=object
                ),
            )

        return await self.cache.get((model_id, number), load)

    async def score(self, name: str, body: bytes) -> bytes:
        """Score a raw request body against a model; return the encoded JSON response.

        Raises
        ------
        BadRequestError, InvalidInputError, PayloadTooLargeError, NotFoundError, ConflictError,
        detector.errors.InputError
        """
        if len(body) > _INLINE_PARSE_BYTES:
            inp = await asyncio.to_thread(parse_score_body, body, self.max_points)
        else:
            inp = parse_score_body(body, self.max_points)
        loaded = await self.resolve(name, inp.version)
        frame: pd.DataFrame | None = None
        if inp.windows is not None:
            self._check_windows(loaded, inp.windows)
        elif inp.n_points > 50_000:
            frame = await asyncio.to_thread(self._frame, loaded, inp)
        else:
            frame = self._frame(loaded, inp)
        return await self.batcher.submit(loaded, inp, frame)

    @staticmethod
    def _check_windows(loaded: LoadedVersion, x: np.ndarray) -> None:
        w, f = loaded.window, len(loaded.features)
        if x.shape[1] != w or x.shape[2] != f:
            raise InvalidInputError(
                f"windows have shape {tuple(x.shape)}; this model needs (n_windows, {w}, {f}): "
                f"{w} points per window and the features {loaded.features} in that order"
            )
        finite = np.isfinite(x)
        if not finite.all():
            where = [int(i) for i in np.argwhere(~finite)[0]]
            raise InvalidInputError(
                f"windows{where} is not finite; windows must hold finite numbers"
            )

    @staticmethod
    def _frame(loaded: LoadedVersion, inp: ScoreInput) -> pd.DataFrame:
        assert inp.values is not None
        features = loaded.features
        allowed = set(features) | ({loaded.key_column} if loaded.key_column else set())
        missing = [f for f in features if f not in inp.values]
        if missing:
            raise InvalidInputError(
                f"values lacks the feature(s) {missing}; this model needs {features}"
            )
        extra = sorted(set(inp.values) - allowed)
        if extra:
            raise InvalidInputError(
                f"values has unknown column(s) {extra}; this model's features are {features}"
            )
        columns: dict[str, Any] = {}
        for name in features:
            columns[name] = numeric_array(inp.values[name], f"values[{name!r}]", allow_null=True)
            if columns[name].ndim != 1:
                raise InvalidInputError(f"values[{name!r}] must be a flat list of numbers")
        if loaded.key_column and loaded.key_column in inp.values:
            columns[loaded.key_column] = [str(v) for v in inp.values[loaded.key_column]]
        if inp.timestamps is not None:
            # Order and repeats follow the model's timestamp_order policy, in the library.
            index: pd.Index = parse_timestamps(inp.timestamps)
        else:
            index = pd.RangeIndex(inp.n_points)
        frame = pd.DataFrame(columns, index=index)
        return frame
