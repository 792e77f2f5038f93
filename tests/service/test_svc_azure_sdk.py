"""Microsoft's Python SDK (``azure-ai-anomalydetector``) against a real ``reconad serve``.

The SDK's documented flows run unchanged except for the endpoint and the key: univariate entire,
last and change-point detection, and the multivariate train, poll, list, detect-batch, poll,
detect-last and delete. Every field the SDK's models declare is checked for presence (unless
the SDK marks it optional) and type, recursively.
"""

# The SDK types most response fields Optional; check_model asserts their presence first.
# mypy: disable-error-code="union-attr,arg-type,index,operator,assignment"

from __future__ import annotations

import datetime as dt
import json
import sys
import time
import typing
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from svc_helpers import TINY_CONFIG, ServerProcess, create_key

azure_ad = pytest.importorskip(
    "azure.ai.anomalydetector", reason="the Azure SDK is in the dev extra (pip install -e .[dev])"
)
from azure.ai.anomalydetector import AnomalyDetectorClient  # noqa: E402
from azure.ai.anomalydetector import models as m  # noqa: E402
from azure.core.credentials import AzureKeyCredential  # noqa: E402
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError  # noqa: E402

pytestmark = pytest.mark.timeout(600)


# --------------------------------------------------------------------------- field checks


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Union and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), True  # noqa: UP007
    return tp, False


def _check_value(value: Any, tp: Any, where: str) -> None:
    origin = typing.get_origin(tp)
    if origin in (list, typing.List):  # noqa: UP006 - the SDK's annotations
        assert isinstance(value, list), f"{where}: {type(value)} is not a list"
        (item,) = typing.get_args(tp)
        for i, v in enumerate(value):
            _check_value(v, item, f"{where}[{i}]")
    elif origin is typing.Union:  # Union[str, SomeEnum]: a string on the wire
        assert isinstance(value, str), f"{where}: {value!r} is not a string"
    elif isinstance(tp, type) and issubclass(tp, azure_ad._model_base.Model):
        check_model(value, tp, where)
    elif tp is bool:
        assert isinstance(value, bool), f"{where}: {value!r} is not a bool"
    elif tp is int:
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: {value!r}"
    elif tp is float:
        assert isinstance(value, int | float) and not isinstance(value, bool), f"{where}: {value!r}"
        assert np.isfinite(value), f"{where}: {value!r} is not finite"
    elif tp is str:
        assert isinstance(value, str), f"{where}: {value!r} is not a string"
    elif tp is dt.datetime:
        assert isinstance(value, dt.datetime), f"{where}: {value!r} is not a datetime"
    else:  # pragma: no cover - a type the SDK does not use
        raise AssertionError(f"{where}: unexpected annotation {tp!r}")


def check_model(obj: Any, cls: type, where: str = "") -> None:
    """Every field of the SDK model ``cls`` is present (unless Optional) and well typed."""
    assert isinstance(obj, cls), f"{where}: {type(obj)} is not {cls.__name__}"
    names = {**vars(sys.modules[cls.__module__]), "_models": m}  # imported for type checks only
    hints = typing.get_type_hints(cls, globalns=names)
    for attr, field in cls._attr_to_rest_field.items():  # type: ignore[attr-defined]
        tp, optional = _strip_optional(hints[attr])
        value = getattr(obj, attr)
        path = f"{where}.{field._rest_name}"
        if value is None:
            assert optional, f"{path} is required by the SDK but missing"
            continue
        _check_value(value, tp, path)


# --------------------------------------------------------------------------- data


def seasonal_series(n: int = 24 * 30, seed: int = 0) -> pd.Series:
    """An hourly metric: daily and weekly cycles, a slow trend and noise."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2024-03-01", periods=n, freq="h", tz="UTC")
    t = np.arange(n)
    values = (
        100
        + 0.02 * t
        + 15 * np.sin(2 * np.pi * t / 24)
        + 5 * np.sin(2 * np.pi * t / (24 * 7))
        + rng.normal(0, 1.0, n)
    )
    return pd.Series(values, index=index)


def points(series: pd.Series) -> list[m.TimeSeriesPoint]:
    return [
        m.TimeSeriesPoint(timestamp=pd.Timestamp(ts).to_pydatetime(), value=float(v))
        for ts, v in series.items()
    ]


def sensor_frame(n: int = 1500, seed: int = 0) -> pd.DataFrame:
    """Three correlated sensors on a minute index."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2024-05-01", periods=n, freq="min", tz="UTC", name="timestamp")
    t = np.arange(n)
    base = np.sin(2 * np.pi * t / 60)
    return pd.DataFrame(
        {
            "temperature": base + 0.05 * rng.standard_normal(n),
            "pressure": 0.8 * base
            + 0.2 * np.cos(2 * np.pi * t / 45)
            + 0.05 * rng.standard_normal(n),
            "flow": -base + 0.05 * rng.standard_normal(n),
        },
        index=index,
    )


# --------------------------------------------------------------------------- server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    root = tmp_path_factory.mktemp("azure")
    key = create_key(root / "data", "admin")
    config = {**TINY_CONFIG, "training": {"max_epochs": 3, "patience": 3}}
    config.pop("window")
    proc = ServerProcess(
        root / "data", root / "server.log", RECONAD_AZURE_MODEL_CONFIG=json.dumps(config)
    )
    try:
        proc.start(timeout=240)  # a busy machine imports torch slowly
        yield proc, key
    finally:
        proc.stop()


@pytest.fixture
def client(server: tuple[ServerProcess, str]) -> Iterator[AnomalyDetectorClient]:
    proc, key = server
    with AnomalyDetectorClient(proc.url, AzureKeyCredential(key)) as c:
        yield c


# --------------------------------------------------------------------------- univariate


def test_entire_detect_flags_injected_anomalies(client: AnomalyDetectorClient) -> None:
    series = seasonal_series()
    series.iloc[400] += 25  # a spike
    series.iloc[550] -= 25  # a dip
    request = m.UnivariateDetectionOptions(
        series=points(series), granularity=m.TimeGranularity.HOURLY
    )
    response = client.detect_univariate_entire_series(options=request)
    check_model(response, m.UnivariateEntireDetectionResult)
    n = len(series)
    for name in (
        "expected_values",
        "upper_margins",
        "lower_margins",
        "is_anomaly",
        "is_negative_anomaly",
        "is_positive_anomaly",
        "severity",
    ):
        assert len(getattr(response, name)) == n, name
    assert response.period == 24
    flagged = set(np.flatnonzero(response.is_anomaly))
    assert {400, 550} <= flagged
    assert response.is_positive_anomaly[400] and response.is_negative_anomaly[550]
    assert len(flagged) < 0.05 * n  # ordinary points are not flagged wholesale
    severity = np.array(response.severity)
    assert (severity[~np.array(response.is_anomaly)] == 0).all()
    assert severity[400] > 0 and severity[550] > 0
    # Expected values follow the daily cycle, within the noise.
    expected = np.array(response.expected_values)
    clean = np.delete(np.arange(n), [400, 550])
    assert np.median(np.abs(expected[clean] - series.to_numpy()[clean])) < 2.0


def test_entire_detect_without_timestamps_and_with_gaps(client: AnomalyDetectorClient) -> None:
    series = seasonal_series(24 * 10)
    kept = series.drop(series.index[100:110])  # ten missing hours: imputed, not returned
    request = m.UnivariateDetectionOptions(
        series=points(kept), granularity="hourly", impute_mode=m.ImputeMode.LINEAR, sensitivity=80
    )
    response = client.detect_univariate_entire_series(options=request)
    assert len(response.is_anomaly) == len(kept)
    bare = m.UnivariateDetectionOptions(
        series=[m.TimeSeriesPoint(value=float(v)) for v in series.to_numpy()]
    )
    check_model(
        client.detect_univariate_entire_series(options=bare), m.UnivariateEntireDetectionResult
    )


def test_last_detect(client: AnomalyDetectorClient) -> None:
    series = seasonal_series(24 * 14)
    normal = client.detect_univariate_last_point(
        options=m.UnivariateDetectionOptions(series=points(series), granularity="hourly")
    )
    check_model(normal, m.UnivariateLastDetectionResult)
    assert not normal.is_anomaly and normal.severity == 0
    assert normal.suggested_window >= 12
    assert abs(normal.expected_value - series.iloc[-1]) < normal.upper_margin
    spiked = series.copy()
    spiked.iloc[-1] += 30
    response = client.detect_univariate_last_point(
        options=m.UnivariateDetectionOptions(series=points(spiked), granularity="hourly")
    )
    assert response.is_anomaly and response.is_positive_anomaly and not response.is_negative_anomaly
    assert 0 < response.severity <= 1


def test_change_point_detect(client: AnomalyDetectorClient) -> None:
    series = seasonal_series(24 * 20)
    series.iloc[300:] += 20  # the level moves and stays
    request = m.UnivariateChangePointDetectionOptions(
        series=points(series), granularity=m.TimeGranularity.HOURLY
    )
    response = client.detect_univariate_change_point(options=request)
    check_model(response, m.UnivariateChangePointDetectionResult)
    found = np.flatnonzero(response.is_change_point)
    assert len(found) >= 1 and np.min(np.abs(found - 300)) <= 3
    assert len(found) <= 3  # noise alone does not make change points
    assert all(0 <= c <= 1 for c in response.confidence_scores)


def test_univariate_errors_use_the_azure_shape(
    client: AnomalyDetectorClient, server: tuple[ServerProcess, str]
) -> None:
    short = m.UnivariateDetectionOptions(series=points(seasonal_series(5)))
    with pytest.raises(HttpResponseError) as info:
        client.detect_univariate_entire_series(options=short)
    assert info.value.status_code == 400
    assert info.value.error.code == "InvalidSeries" and "12" in info.value.error.message
    bad = {"series": [{"value": 1.0}] * 20, "sensitivity": 120}
    proc, key = server
    url = f"{proc.url}/anomalydetector/v1.1/timeseries/entire/detect"
    headers = {"Ocp-Apim-Subscription-Key": key}
    answer = httpx.post(url, json=bad, headers=headers)
    assert answer.status_code == 400
    assert answer.json()["code"] == "InvalidModelArgument"
    assert answer.headers["x-ms-error-code"] == "InvalidModelArgument"
    answer = httpx.post(url, json={"granularity": "hourly"}, headers=headers)
    assert answer.json()["code"] == "RequiredSeries"
    answer = httpx.post(
        url, content=b"{not json", headers={**headers, "Content-Type": "application/json"}
    )
    assert (answer.status_code, answer.json()["code"]) == (400, "InvalidJsonFormat")
    answer = httpx.post(
        url, json=bad, headers={"Ocp-Apim-Subscription-Key": "rad_00000000_" + "x" * 40}
    )
    assert answer.status_code == 401 and set(answer.json()) == {"code", "message"}


def test_too_long_series_is_refused(client: AnomalyDetectorClient) -> None:
    values = [m.TimeSeriesPoint(value=float(v)) for v in np.sin(np.arange(8641) / 10)]
    with pytest.raises(HttpResponseError) as info:
        client.detect_univariate_entire_series(options=m.UnivariateDetectionOptions(series=values))
    assert info.value.status_code == 400 and "8640" in info.value.error.message


# --------------------------------------------------------------------------- multivariate


def _upload(proc: ServerProcess, key: str, name: str, frame: pd.DataFrame) -> str:
    body = frame.reset_index().to_csv(index=False).encode()
    answer = httpx.put(
        f"{proc.url}/anomalydetector/v1.1/files/{name}",
        content=body,
        headers={"Ocp-Apim-Subscription-Key": key},
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["dataSource"])


def _wait_model(client: AnomalyDetectorClient, model_id: str) -> m.AnomalyDetectionModel:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        model = client.get_multivariate_model(model_id)
        if model.model_info.status in (m.ModelStatus.READY, m.ModelStatus.FAILED):
            return model
        time.sleep(0.5)
    raise AssertionError(f"model {model_id} did not finish training")


def test_multivariate_flow(
    client: AnomalyDetectorClient, server: tuple[ServerProcess, str]
) -> None:
    proc, key = server
    frame = sensor_frame()
    frame.iloc[1300:1310, 0] += 4.0  # temperature leaves its relation with the others
    frame.iloc[200, 1] = np.nan  # a gap, filled by the align policy
    source = _upload(proc, key, "sensors.csv", frame)
    train_start, train_end = frame.index[0], frame.index[999]
    info = m.ModelInfo(
        data_source=source,
        start_time=train_start.to_pydatetime(),
        end_time=train_end.to_pydatetime(),
        sliding_window=28,
        align_policy=m.AlignPolicy(
            align_mode=m.AlignMode.OUTER, fill_n_a_method=m.FillNAMethod.LINEAR, padding_value=0
        ),
        display_name="sensors",
    )
    created = client.train_multivariate_model(info)
    check_model(created, m.AnomalyDetectionModel)
    assert created.model_info.status in ("CREATED", "RUNNING")
    model_id = created.model_id

    model = _wait_model(client, model_id)
    check_model(model, m.AnomalyDetectionModel)
    assert model.model_info.status == m.ModelStatus.READY, model.model_info.errors
    state = model.model_info.diagnostics_info.model_state
    assert len(state.epoch_ids) == len(state.train_losses) == len(state.validation_losses) >= 1
    assert all(loss > 0 for loss in state.train_losses)
    variables = {v.variable: v for v in model.model_info.diagnostics_info.variable_states}
    assert set(variables) == {"temperature", "pressure", "flow"}
    assert (
        variables["pressure"].effective_count == 999 and variables["pressure"].filled_n_a_ratio > 0
    )
    assert model.model_info.sliding_window == 28

    listed = list(client.list_multivariate_models(skip=0, top=10))
    assert model_id in {item.model_id for item in listed}
    for item in listed:
        check_model(item, m.AnomalyDetectionModel)

    options = m.MultivariateBatchDetectionOptions(
        data_source=source,
        top_contributor_count=2,
        start_time=frame.index[1000].to_pydatetime(),
        end_time=frame.index[-1].to_pydatetime(),
    )
    started = client.detect_multivariate_batch_anomaly(model_id, options)
    check_model(started, m.MultivariateDetectionResult)
    deadline = time.monotonic() + 120
    result = started
    while result.summary.status not in ("READY", "FAILED") and time.monotonic() < deadline:
        time.sleep(0.3)
        result = client.get_multivariate_batch_detection_result(started.result_id)
    check_model(result, m.MultivariateDetectionResult)
    assert result.summary.status == "READY", result.summary.errors
    assert len(result.results) == 500
    flagged = [i for i, r in enumerate(result.results) if r.value.is_anomaly]
    assert any(300 <= i < 330 for i in flagged)  # the injected stretch (index 1300-1309)
    assert len(flagged) < 0.2 * len(result.results)
    hit = result.results[flagged[0]] if flagged else None
    assert hit is not None and 0 < hit.value.severity < 1 and hit.value.score > 1
    injected = [result.results[i] for i in flagged if 300 <= i < 330]
    assert any(r.value.interpretation[0].variable == "temperature" for r in injected)
    assert all(len(r.value.interpretation) <= 2 for r in injected)
    shares = [x.contribution_score for x in injected[0].value.interpretation]
    assert all(0 <= s <= 1 for s in shares)
    # The detection scored with the model: it records its last scoring time (off the path).
    api = proc.client(key)
    for _ in range(100):
        scored = api.get(f"/v1/models/{model_id}").json()["last_scored_at"]
        if scored is not None:
            break
        time.sleep(0.1)
    assert scored is not None

    recent = frame.iloc[1250:1305]
    last = m.MultivariateLastDetectionOptions(
        variables=[
            m.VariableValues(
                variable=str(column),
                timestamps=[ts.isoformat() for ts in recent.index],
                values=[float(v) for v in recent[column]],
            )
            for column in recent.columns
        ],
        top_contributor_count=3,
    )
    response = client.detect_multivariate_last_anomaly(model_id, last)
    check_model(response, m.MultivariateLastDetectionResult)
    assert len(response.results) == 1
    assert response.results[0].timestamp == recent.index[-1].to_pydatetime()
    assert response.results[0].value.is_anomaly
    interpretation = response.results[0].value.interpretation
    assert 1 <= len(interpretation) <= 3
    assert {x.variable for x in interpretation} <= {"temperature", "pressure", "flow"}
    assert interpretation[0].variable == "temperature"  # the variable that was moved
    last_shares = [float(x.contribution_score) for x in interpretation]
    assert last_shares == sorted(last_shares, reverse=True)
    assert all(0 <= s <= 1 for s in last_shares)

    client.delete_multivariate_model(model_id)
    assert model_id not in {item.model_id for item in client.list_multivariate_models()}
    with pytest.raises(ResourceNotFoundError):
        client.get_multivariate_model(model_id)
    with pytest.raises(ResourceNotFoundError):
        client.get_multivariate_batch_detection_result(started.result_id)


def test_multivariate_errors(
    client: AnomalyDetectorClient, server: tuple[ServerProcess, str]
) -> None:
    with pytest.raises(ResourceNotFoundError) as info:
        client.get_multivariate_model("00000000-0000-0000-0000-000000000000")
    assert info.value.error.code == "ModelNotExist"
    bad_source = m.ModelInfo(
        data_source="https://example.blob.core.windows.net/data.zip",
        start_time=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        end_time=dt.datetime(2024, 1, 2, tzinfo=dt.UTC),
    )
    with pytest.raises(HttpResponseError) as info:
        client.train_multivariate_model(bad_source)
    assert info.value.status_code == 400 and info.value.error.code == "InvalidDataSource"
    assert "reconad://files/" in info.value.error.message
    proc, key = server
    source = _upload(proc, key, "empty-range.csv", sensor_frame(100))
    outside = m.ModelInfo(
        data_source=source,
        start_time=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
        end_time=dt.datetime(2030, 1, 2, tzinfo=dt.UTC),
    )
    with pytest.raises(HttpResponseError) as info:
        client.train_multivariate_model(outside)
    assert info.value.status_code == 400 and "no rows" in info.value.error.message


def test_score_key_cannot_train(server: tuple[ServerProcess, str]) -> None:
    proc, _ = server
    key = create_key(proc.data_dir, "score")
    with AnomalyDetectorClient(proc.url, AzureKeyCredential(key)) as c:
        # A score key detects ...
        c.detect_univariate_last_point(
            options=m.UnivariateDetectionOptions(series=points(seasonal_series(48)))
        )
        # ... but cannot create models.
        with pytest.raises(HttpResponseError) as info:
            c.train_multivariate_model(
                m.ModelInfo(
                    data_source="reconad://files/none.csv",
                    start_time=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
                    end_time=dt.datetime(2024, 1, 2, tzinfo=dt.UTC),
                )
            )
        assert info.value.status_code == 403


def test_model_list_pages_through_next_link(
    client: AnomalyDetectorClient, server: tuple[ServerProcess, str]
) -> None:
    proc, key = server
    frame = sensor_frame(300)
    source = _upload(proc, key, "paging.csv", frame)
    info = m.ModelInfo(
        data_source=source,
        start_time=frame.index[0].to_pydatetime(),
        end_time=frame.index[-1].to_pydatetime(),
        sliding_window=28,
    )
    created = [client.train_multivariate_model(info).model_id for _ in range(3)]
    # One model a page: the SDK follows nextLink until the last page, oldest first.
    listed = [item.model_id for item in client.list_multivariate_models(skip=0, top=1)]
    assert len(listed) == len(set(listed)) >= 3
    assert [i for i in listed if i in created] == created
    page = httpx.get(
        f"{proc.url}/anomalydetector/v1.1/multivariate/models",
        params={"skip": 0, "top": 1},
        headers={"Ocp-Apim-Subscription-Key": key},
    ).json()
    assert len(page["models"]) == 1 and page["currentCount"] == len(listed)
    assert page["nextLink"].endswith("/multivariate/models?skip=1&top=1")
