"""The scoring machinery used directly: the request model, the loaded-version cache and the
micro-batcher (concurrent requests get what a direct ``Detector`` call gives)."""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import orjson
import pytest
from svc_helpers import TINY_CONFIG, make_frame

from detector import Detector, DetectorConfig, create_detector
from detector import errors as det_errors
from service.errors import InvalidInputError, PayloadTooLargeError
from service.observability import Metrics
from service.scoring import DetectorCache, LoadedVersion, MicroBatcher, ScoreRequest
from service.scoring.request import _FIELDS as REQUEST_FIELDS
from service.scoring.response import TopFeatures, derive


@pytest.fixture(scope="module")
def detector() -> Detector:
    """A tiny detector fitted once for the module (two features, window 16)."""
    return create_detector(DetectorConfig.model_validate(TINY_CONFIG)).fit(make_frame(600))


@pytest.fixture(scope="module")
def metrics() -> Metrics:
    return Metrics()


def _loaded(detector: Detector, model_id: str = "m", version: int = 1) -> LoadedVersion:
    return LoadedVersion.of(model_id, "model", version, detector)


def _body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


# --------------------------------------------------------------------------- request model


def test_request_parses_into_arrays() -> None:
    x = np.arange(2 * 16 * 2, dtype=float).reshape(2, 16, 2)
    req = ScoreRequest.from_body(_body(windows=x.tolist(), top_k=1), max_points=10_000)
    assert req.windows is not None and req.windows.dtype == np.float64
    np.testing.assert_array_equal(req.windows, x)
    assert (req.n_points, req.top_k, req.version, req.reconstruct) == (32, 1, None, False)

    series = ScoreRequest.from_body(
        _body(values={"a": [1, 2, None], "b": [0.5, 1.5, 2.5]}, timestamps=[0, 60, 120]),
        max_points=10_000,
    )
    assert series.values is not None and series.timestamps is not None
    assert np.isnan(series.values["a"][2]) and series.n_points == 3
    assert str(series.timestamps.tz) == "UTC"
    frame = series.frame_for(["a", "b"], None)
    assert list(frame.columns) == ["a", "b"] and frame.index.equals(series.timestamps)
    assert all(frame[c].dtype == np.float64 for c in frame.columns)

    keyed = ScoreRequest.from_body(
        _body(values={"a": [1, 2, 3, 4], "host": [7, 7, 8, 8]}, timestamps=[0, 0, 60, 60]),
        max_points=10_000,
    )
    frame = keyed.frame_for(["a"], "host")  # a numeric key keeps its spelling; stamps repeat
    assert frame["host"].tolist() == ["7", "7", "8", "8"] and frame["a"].dtype == np.float64


def test_request_refusals_say_what_to_fix() -> None:
    with pytest.raises(PayloadTooLargeError, match="max_points_per_request"):
        ScoreRequest.from_body(_body(windows=np.zeros((3, 16, 2)).tolist()), max_points=40)
    with pytest.raises(InvalidInputError, match="reconstruct"):
        ScoreRequest.from_body(_body(windows=[[[1.0]]], reconstruct="yes"), max_points=100)
    with pytest.raises(InvalidInputError, match="'timestamps' goes with 'values'"):
        ScoreRequest.from_body(_body(windows=[[[1.0]]], timestamps=[1]), max_points=100)
    with pytest.raises(InvalidInputError, match="NaN"):
        ScoreRequest.from_body(b'{"values": {"a": [1, NaN]}}', max_points=100)
    for stamps in ([0, True], [True, False], [0, "2024-01-01"], [0, None]):
        with pytest.raises(InvalidInputError, match="no nulls, no mixing"):
            ScoreRequest.from_body(_body(values={"a": [1, 2]}, timestamps=stamps), max_points=100)
    req = ScoreRequest.from_body(_body(values={"a": ["x", "y"]}), max_points=100)
    with pytest.raises(InvalidInputError, match="must hold numbers, not strings"):
        req.frame_for(["a"], None)


def test_request_schema_is_the_documented_one() -> None:
    # The documented properties, the model's fields and the envelope check's allowed names are
    # one list: a field added to the model is neither refused as unknown nor left undocumented.
    schema = ScoreRequest.model_json_schema()
    assert set(schema["properties"]) == set(ScoreRequest.model_fields) == set(REQUEST_FIELDS)
    assert {"windows", "values", "timestamps", "version", "reconstruct", "top_k"} <= set(
        REQUEST_FIELDS
    )
    assert schema["additionalProperties"] is False


# --------------------------------------------------------------------------- response model


@pytest.mark.parametrize(
    ("n_features", "k", "shape", "long"),
    [
        (2, 2, (20_000,), True),  # few distinct rows: spliced from a table of every code
        (9, 3, (40_000,), True),  # 504 rows possible: spliced from the distinct codes
        (3, 2, (300, 64), True),  # windows: nested once more
        (40, 4, (20_000,), False),  # rows mostly distinct: one list
        (3, 1, (10,), False),  # short: one list
    ],
)
def test_top_features_encode_as_their_lists(
    n_features: int, k: int, shape: tuple[int, ...], long: bool
) -> None:
    rng = np.random.default_rng(n_features)
    order = np.argsort(-rng.random((*shape, n_features)), axis=-1, kind="stable")[..., :k]
    names = np.asarray([f"feature {i}" for i in range(n_features)], dtype=object)
    top = TopFeatures(order, names)
    assert top.long == long
    listed = names[order].tolist()
    assert top.tolist() == listed
    assert top.to_json() == orjson.dumps(listed)  # byte for byte, spliced or not
    columns = top.columns()
    assert [c.to_pylist() for c in columns] == [
        names[order][..., j].ravel().tolist() for j in range(k)
    ]


def test_a_long_answer_spliced_is_the_answer_listed(detector: Detector) -> None:
    """The JSON of a long series with top features: spliced as it is, it parses to what one
    orjson call over plain lists writes, fields in the same order."""
    loaded = _loaded(detector)
    frame = make_frame(12_000, seed=5)
    details = detector.score_details(frame)
    contributions = details.contributions[loaded.features].to_numpy(dtype=np.float64)
    derived = derive(loaded, details.scores.to_numpy(dtype=np.float64), contributions, 2)
    for fields in (None, frozenset(["anomalous_indices"]), frozenset(["scores"])):
        response = derived.response(loaded, 2, slice(None), None, fields)
        assert response.top_features is not None and response.top_features.long
        plain = {
            name: value.tolist() if isinstance(value, np.ndarray | TopFeatures) else value
            for name, value in response.__dict__.items()
            if value is not None
        }
        encoded = response.to_json()
        assert list(orjson.loads(encoded)) == list(plain)
        assert encoded == orjson.dumps(plain)


# --------------------------------------------------------------------------- cache


def test_cache_is_lru_and_bounded(detector: Detector) -> None:
    sizes: list[int] = []
    cache = DetectorCache(2, on_size=sizes.append)
    loads: list[tuple[str, int]] = []

    def loader(key: tuple[str, int]) -> Any:
        def load() -> LoadedVersion:
            loads.append(key)
            return _loaded(detector, *key)

        return load

    async def scenario() -> None:
        for key in [("a", 1), ("b", 1), ("a", 1), ("c", 1), ("a", 1), ("b", 1)]:
            item = await cache.get(key, loader(key))
            assert (item.model_id, item.version) == key

    asyncio.run(scenario())
    # a and b load; the hit on a makes b the oldest, so c evicts b; a hits again, which makes
    # c the oldest, so b (loaded again) evicts c.
    assert loads == [("a", 1), ("b", 1), ("c", 1), ("b", 1)]
    assert len(cache) == 2 and max(sizes) == 2

    def unexpected() -> LoadedVersion:
        raise AssertionError("a cached entry was loaded again")

    async def hits() -> None:
        for key in [("a", 1), ("b", 1)]:
            await cache.get(key, unexpected)

    asyncio.run(hits())


def test_cache_loads_once_for_concurrent_misses_and_retries_after_a_failure(
    detector: Detector,
) -> None:
    cache = DetectorCache(4)
    calls = 0
    gate = threading.Event()

    def slow_load() -> LoadedVersion:
        nonlocal calls
        calls += 1
        gate.wait(5)
        return _loaded(detector)

    def failing_load() -> LoadedVersion:
        nonlocal calls
        calls += 1
        gate.wait(5)
        raise OSError("artifact store down")

    async def scenario() -> None:
        nonlocal calls
        waiters = [asyncio.create_task(cache.get(("m", 1), slow_load)) for _ in range(5)]
        await asyncio.sleep(0.05)
        gate.set()
        items = await asyncio.gather(*waiters)
        assert calls == 1 and all(item is items[0] for item in items)

        gate.clear()
        calls = 0
        failing = [asyncio.create_task(cache.get(("m", 2), failing_load)) for _ in range(3)]
        await asyncio.sleep(0.05)
        gate.set()
        results = await asyncio.gather(*failing, return_exceptions=True)
        assert calls == 1 and all(isinstance(r, OSError) for r in results)
        assert len(cache) == 1  # nothing cached for the failed load
        item = await cache.get(("m", 2), slow_load)  # the next request loads again
        assert calls == 2 and item.version == 1  # (slow_load builds version 1's entry)

    asyncio.run(scenario())


def test_cache_drop_and_drop_model(detector: Detector) -> None:
    sizes: list[int] = []
    cache = DetectorCache(8, on_size=sizes.append)

    async def fill() -> None:
        for model_id, version in [("a", 1), ("a", 2), ("b", 1)]:
            await cache.get(
                (model_id, version), functools.partial(_loaded, detector, model_id, version)
            )

    asyncio.run(fill())
    cache.drop("a", 2)
    assert len(cache) == 2 and sizes[-1] == 2
    cache.drop("a", 9)  # unknown: ignored
    cache.drop_model("a")
    assert len(cache) == 1 and sizes[-1] == 1
    loads = 0

    def load() -> LoadedVersion:
        nonlocal loads
        loads += 1
        return _loaded(detector, "a", 1)

    asyncio.run(cache.get(("a", 1), load))
    assert loads == 1  # a dropped entry is loaded again


# --------------------------------------------------------------------------- batcher


def _windows(seed: int, count: int) -> np.ndarray:
    frame = make_frame(count + 16, seed=seed)
    values = frame.to_numpy()
    return np.stack([values[i : i + 16] for i in range(count)])  # (count, 16, 2)


def test_concurrent_requests_score_as_a_direct_call(detector: Detector, metrics: Metrics) -> None:
    loaded = _loaded(detector)
    executor = ThreadPoolExecutor(1)
    batcher = MicroBatcher(executor, max_windows=64, wait_s=0.01, metrics=metrics)
    calls: list[int] = []
    original = detector.score_windows

    def counting(x: np.ndarray, **kwargs: Any) -> Any:
        calls.append(int(x.shape[0]))
        return original(x, **kwargs)

    inputs = [_windows(seed, count) for seed, count in enumerate([1, 3, 2, 5, 1, 4])]
    requests = [
        ScoreRequest.from_body(
            _body(windows=x.tolist(), top_k=2, reconstruct=i % 2 == 0), max_points=10_000
        )
        for i, x in enumerate(inputs)
    ]
    frame = make_frame(120, seed=42)
    series = ScoreRequest.from_body(
        _body(
            values={c: frame[c].tolist() for c in frame.columns},
            timestamps=[t.isoformat() for t in frame.index],
        ),
        max_points=10_000,
    )

    async def scenario() -> list[bytes]:
        submits = [batcher.submit(loaded, r) for r in requests]
        submits.append(batcher.submit(loaded, series, series.frame_for(loaded.features, None)))
        return await asyncio.gather(*submits)

    object.__setattr__(detector, "score_windows", counting)
    try:
        bodies = asyncio.run(scenario())
    finally:
        del detector.__dict__["score_windows"]
        executor.shutdown()
    assert len(calls) < len(inputs), f"the window requests were not batched: {calls}"
    for x, req, body in zip(inputs, requests, bodies, strict=False):
        out = json.loads(body)
        direct = detector.score_windows(x, reconstruct=req.reconstruct)
        np.testing.assert_allclose(out["scores"], direct.scores, rtol=0, atol=1e-6)
        np.testing.assert_allclose(
            out["normalized"], np.asarray(direct.scores) / detector.threshold_, atol=1e-6
        )
        assert out["n_points"] == x.shape[0] * 16
        assert np.asarray(out["top_features"]).shape == (x.shape[0], 16, 2)
        if req.reconstruct:
            assert direct.expected is not None
            np.testing.assert_allclose(out["expected"], direct.expected, atol=1e-6)
        else:
            assert "expected" not in out
    out = json.loads(bodies[-1])
    direct_series = detector.score_details(series.frame_for(loaded.features, None))
    np.testing.assert_allclose(
        np.asarray(out["scores"], dtype=float),
        direct_series.scores.to_numpy(dtype=float),
        atol=1e-6,
        equal_nan=True,
    )


def test_a_bad_request_fails_alone(detector: Detector, metrics: Metrics) -> None:
    loaded = _loaded(detector)
    executor = ThreadPoolExecutor(1)
    batcher = MicroBatcher(executor, max_windows=64, wait_s=0.01, metrics=metrics)
    good = ScoreRequest.from_body(_body(windows=_windows(1, 2).tolist()), max_points=10_000)
    # A NaN that skipped the service's checks: the batched call fails, then each runs alone.
    bad = ScoreRequest.from_body(_body(windows=_windows(2, 1).tolist()), max_points=10_000)
    assert bad.windows is not None
    bad.windows[0, 3, 1] = np.nan

    async def scenario() -> tuple[Any, ...]:
        return await asyncio.gather(
            batcher.submit(loaded, good), batcher.submit(loaded, bad), return_exceptions=True
        )

    try:
        results = asyncio.run(scenario())
    finally:
        executor.shutdown()
    assert isinstance(results[0], bytes)
    direct = detector.score_windows(_windows(1, 2))
    np.testing.assert_allclose(json.loads(results[0])["scores"], direct.scores, atol=1e-6)
    assert isinstance(results[1], det_errors.NonFiniteError)
