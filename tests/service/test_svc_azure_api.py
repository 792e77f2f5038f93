"""The Azure-compatible API in process: what the SDK flows cannot reach (unexpected errors)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.azure.service import AzureService

Client = tuple[TestClient, dict[str, str]]

_SERIES = {"series": [{"value": float(i % 7)} for i in range(48)]}


def _boom(*_args: object, **_kwargs: object) -> None:
    raise RuntimeError("an unexpected failure inside the service")


@pytest.mark.parametrize(
    ("method", "path", "body", "target"),
    [
        ("POST", "/timeseries/entire/detect", _SERIES, "detect_entire"),
        ("GET", "/multivariate/models", None, "list_models"),
    ],
)
def test_unexpected_error_is_a_500_in_the_azure_shape(
    app_client: Client,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    body: dict[str, object] | None,
    target: str,
) -> None:
    client, headers = app_client
    monkeypatch.setattr(AzureService, target, _boom)
    with caplog.at_level(logging.ERROR):
        answer = client.request(method, f"/anomalydetector/v1.1{path}", json=body, headers=headers)
    assert answer.status_code == 500
    payload = answer.json()
    assert set(payload) == {"code", "message"} and payload["code"] == "InternalServerError"
    assert answer.headers["x-ms-error-code"] == "InternalServerError"
    request_id = answer.headers["x-request-id"]
    assert request_id in payload["message"]
    assert "unexpected failure" not in payload["message"]  # no internals in the answer
    # Logged once, with the traceback and the request id.
    logged = [r for r in caplog.records if r.exc_info and "unhandled error" in r.getMessage()]
    assert len(logged) == 1
    assert getattr(logged[0], "request_id", None) == request_id


# --------------------------------------------------------------------------- flag quality


def _hourly(n: int, seed: int) -> np.ndarray:
    """A generated hourly metric: a daily cycle and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 100 + 10 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 1.0, n)


def _stretches(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A series with two injected anomalous stretches: a level shift of 40 points and a
    flattened day (the cycle stops at its mean); the mask marks them."""
    values = _hourly(24 * 60, seed)
    mask = np.zeros(len(values), dtype=bool)
    values[600:640] += 8.0
    mask[600:640] = True
    values[1000:1024] = 100 + np.random.default_rng(seed + 1).normal(0, 1.0, 24)
    mask[1000:1024] = True
    return values, mask


def _entire(client: Client, values: np.ndarray) -> dict[str, list[Any]]:
    test_client, headers = client
    body = {"series": [{"value": float(v)} for v in values], "period": 24}
    answer = test_client.post(
        "/anomalydetector/v1.1/timeseries/entire/detect", json=body, headers=headers
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, list[Any]] = answer.json()
    return result


@pytest.mark.parametrize("seed", [0, 1])
def test_entire_detect_flags_whole_anomalous_stretches(app_client: Client, seed: int) -> None:
    values, mask = _stretches(seed)
    result = _entire(app_client, values)
    flagged = np.array(result["isAnomaly"])
    severity = np.array(result["severity"])
    # Most of each stretch is flagged, not just its sharpest points (the default sensitivity).
    assert flagged[600:640].mean() >= 0.8
    assert flagged[1000:1024].mean() >= 0.6
    # Nothing beyond one discord window (128 points) of them: the windows that hold a stretch
    # are what its score lends to the points around it. Severity is 0 on normal points.
    near = np.convolve(mask, np.ones(2 * 128 + 1), mode="same") > 0
    assert flagged[~near].mean() <= 0.01
    assert (severity[~flagged] == 0).all() and (severity[flagged] > 0).all()
    # A flagged point is positive or negative by the sign of its residual.
    positive, negative = (
        np.array(result["isPositiveAnomaly"]),
        np.array(result["isNegativeAnomaly"]),
    )
    assert ((positive | negative) == flagged).all() and not (positive & negative).any()
    residual = values - np.array(result["expectedValues"])
    assert (residual[positive] >= -1e-6).all() and (residual[negative] <= 1e-6).all()
    # A random flag set of the same size covers the stretches only at its base rate.
    random_flags = np.zeros(len(values), dtype=bool)
    random_flags[np.random.default_rng(seed).permutation(len(values))[: flagged.sum()]] = True
    assert random_flags[mask].mean() < 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_entire_detect_keeps_a_clean_series_clean(app_client: Client, seed: int) -> None:
    result = _entire(app_client, _hourly(24 * 60, seed + 10))
    assert np.mean(result["isAnomaly"]) <= 0.02


def test_an_anomaly_that_occurs_twice_is_flagged_both_times(app_client: Client) -> None:
    """The same small level shift (3 noise sd, a day long) twice in a series: each shift's
    windows are the nearest neighbours of its twin's, so the nearest neighbour's distance
    alone misses most of them (44% of their points flagged over these six series); with the
    twin's isolation taken into account three quarters are. The twins lie far enough apart
    that the events of the windows holding them do not meet."""
    spans = [(300, 324), (1100, 1124)]
    covered = []
    for seed in range(6):
        values = _hourly(24 * 60, seed)
        mask = np.zeros(len(values), dtype=bool)
        for a, b in spans:
            values[a:b] += 3.0
            mask[a:b] = True
        flagged = np.array(_entire(app_client, values)["isAnomaly"])
        covered += [flagged[a:b].mean() for a, b in spans]
        near = np.convolve(mask, np.ones(2 * 128 + 1), mode="same") > 0
        assert flagged[~near].mean() <= 0.01
    assert np.mean(covered) >= 0.7, covered


def test_max_anomaly_ratio_caps_the_stretches(app_client: Client) -> None:
    values, _ = _stretches(0)
    test_client, headers = app_client
    body = {"series": [{"value": float(v)} for v in values], "period": 24, "maxAnomalyRatio": 0.01}
    answer = test_client.post(
        "/anomalydetector/v1.1/timeseries/entire/detect", json=body, headers=headers
    )
    assert answer.status_code == 200
    assert 0 < sum(answer.json()["isAnomaly"]) <= 0.01 * len(values)


def test_last_detect_agrees_with_entire_detect_inside_a_stretch(app_client: Client) -> None:
    values, _ = _stretches(0)
    test_client, headers = app_client
    for end in (630, 500):  # inside the level shift (flagged), on ordinary points (not)
        body = {"series": [{"value": float(v)} for v in values[:end]], "period": 24}
        last = test_client.post(
            "/anomalydetector/v1.1/timeseries/last/detect", json=body, headers=headers
        ).json()
        entire = _entire(app_client, values[:end])
        assert last["isAnomaly"] == entire["isAnomaly"][-1] == (end == 630)
