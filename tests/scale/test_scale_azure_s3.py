"""The Azure-compatible multivariate API on an ``s3://`` data source, through Microsoft's SDK.

The data source is a CSV object on a real S3-compatible server (moto, over loopback HTTP) read
with the service's S3 settings: create a model from it, train, detect-batch and poll, as a
client that kept its data in object storage would.
"""

# The SDK types most response fields Optional; check_model asserts their presence first.
# mypy: disable-error-code="union-attr,arg-type,index,operator"

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from scale_infra import S3_ENV
from svc_helpers import TINY_CONFIG, ServerProcess, create_key

pytest.importorskip(
    "azure.ai.anomalydetector", reason="the Azure SDK is in the dev extra (pip install -e .[dev])"
)
from azure.ai.anomalydetector import AnomalyDetectorClient
from azure.ai.anomalydetector import models as m
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError
from test_svc_azure_sdk import _wait_model, check_model, sensor_frame

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def server(s3_endpoint: str, tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    key = create_key(tmp_path / "data", "admin")
    config = {**TINY_CONFIG, "training": {"max_epochs": 3, "patience": 3}}
    config.pop("window")
    proc = ServerProcess(
        tmp_path / "data",
        tmp_path / "server.log",
        RECONAD_S3_ENDPOINT_URL=s3_endpoint,
        RECONAD_AZURE_MODEL_CONFIG=json.dumps(config),
        **S3_ENV,
    )
    try:
        proc.start(timeout=240)
        yield proc, key
    finally:
        proc.stop()


def test_train_and_detect_batch_from_an_s3_object(
    s3_endpoint: str, server: tuple[ServerProcess, str]
) -> None:
    import boto3

    proc, key = server
    frame = sensor_frame()
    frame.iloc[1300:1310, 0] += 4.0  # temperature leaves its relation with the others
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.put_object(
        Bucket="reconad", Key="azure/sensors.csv", Body=frame.reset_index().to_csv(index=False)
    )
    source = "s3://reconad/azure/sensors.csv"
    with AnomalyDetectorClient(proc.url, AzureKeyCredential(key)) as client:
        created = client.train_multivariate_model(
            m.ModelInfo(
                data_source=source,
                start_time=frame.index[0].to_pydatetime(),
                end_time=frame.index[999].to_pydatetime(),
                sliding_window=28,
            )
        )
        model = _wait_model(client, created.model_id)
        check_model(model, m.AnomalyDetectionModel)
        assert model.model_info.status == "READY", model.model_info.errors
        assert model.model_info.data_source == source
        states = {v.variable: v for v in model.model_info.diagnostics_info.variable_states}
        assert set(states) == {"temperature", "pressure", "flow"}
        assert states["flow"].effective_count == 1000

        started = client.detect_multivariate_batch_anomaly(
            created.model_id,
            m.MultivariateBatchDetectionOptions(
                data_source=source,
                top_contributor_count=2,
                start_time=frame.index[1000].to_pydatetime(),
                end_time=frame.index[-1].to_pydatetime(),
            ),
        )
        result = started
        deadline = time.monotonic() + 120
        while result.summary.status not in ("READY", "FAILED"):
            assert time.monotonic() < deadline, "the batch detection did not finish"
            time.sleep(0.3)
            result = client.get_multivariate_batch_detection_result(started.result_id)
        check_model(result, m.MultivariateDetectionResult)
        assert result.summary.status == "READY", result.summary.errors
        assert len(result.results) == 500
        flagged = np.flatnonzero([r.value.is_anomaly for r in result.results])
        assert ((flagged >= 300) & (flagged < 330)).any()  # the injected stretch
        assert len(flagged) < 0.2 * len(result.results)

        # An object that is not there: a 400 that names the URL, before any job starts.
        with pytest.raises(HttpResponseError) as info:
            client.train_multivariate_model(
                m.ModelInfo(
                    data_source="s3://reconad/azure/missing.csv",
                    start_time=frame.index[0].to_pydatetime(),
                    end_time=frame.index[999].to_pydatetime(),
                )
            )
        assert info.value.status_code == 400
        assert info.value.error.code == "InvalidDataSource"
        assert "s3://reconad/azure/missing.csv" in info.value.error.message
