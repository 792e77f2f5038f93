"""Fuzz every operation of the OpenAPI schema (schemathesis, in-process ASGI app): no input may
produce a 5xx, and every response must conform to the schema (documented status, content type,
headers and body). Bounded to a few examples per operation so it runs in about a minute."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from svc_helpers import TINY_CONFIG, make_frame, register_trained_version

from service.app import create_app
from service.context import AppContext
from service.settings import Settings

# Hypothesis raises the recursion limit while it runs a test, and CPython 3.11.7 then refuses to
# compile a module imported lazily from inside the test ("AST constructor recursion depth
# mismatch"). schemathesis's negative cases draw st.randoms(), whose module hypothesis imports
# on first use: validate that strategy once here, at import time, so no import happens mid-test.
st.randoms().validate()


@st.composite
def _tables(draw: st.DrawFn, media: str) -> bytes:
    """Bodies of the columnar media types: random bytes, or a table of 'timestamp' and the
    fuzz model's features with random values (NaN, huge, repeated timestamps included)."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=256))
    n = draw(st.integers(1, 40))
    floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
    start = draw(st.integers(-(10**10), 10**10))
    table = pa.table(
        {
            "timestamp": pa.array(
                [start + 60 * draw(st.integers(0, 3)) * i for i in range(n)], pa.int64()
            ),
            "a": pa.array(draw(st.lists(floats, min_size=n, max_size=n))),
            "b": pa.array(draw(st.lists(floats, min_size=n, max_size=n))),
        }
    )
    sink = io.BytesIO()
    if media == "application/vnd.apache.parquet":
        pq.write_table(table, sink)
    else:
        with ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    return sink.getvalue()


for _media in ("application/vnd.apache.arrow.stream", "application/vnd.apache.parquet"):
    schemathesis.openapi.media_type(_media, _tables(_media))


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FastAPI, str]]:
    """An app with one trained model 'm1'; jobs stay queued (no child processes)."""
    app = create_app(
        Settings(
            data_dir=tmp_path_factory.mktemp("fuzz") / "data",
            max_concurrent_jobs=0,
            bootstrap_admin_key=False,
            log_level="ERROR",
            max_points_per_request=50_000,
        )
    )
    with TestClient(app):  # runs the lifespan: migrations, runner, scheduler
        ctx: AppContext = app.state.context
        _, key = ctx.auth.create("admin", "fuzz")
        from detector import DetectorConfig

        ctx.registry.create_model("m1", DetectorConfig.model_validate(TINY_CONFIG), "", "always")
        ctx.history.append(ctx.registry.get_model("m1").id, make_frame(300))
        register_trained_version(ctx, "m1")
        yield app, key


def _openapi() -> dict[str, Any]:
    # The schema does not depend on settings; build it from a throwaway app at collection time.
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(data_dir=Path(tmp), log_level="ERROR"))
        document = app.openapi()
        app.state.context.db.dispose()
        app.state.context.scoring.close()
        return document


schema = schemathesis.openapi.from_dict(_openapi())

#: No 5xx, and every response as documented: its status, content type, headers and body.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors(case: Any, fuzz_app: tuple[FastAPI, str]) -> None:
    params = case.path_parameters or {}
    if "name" in params and case.method.upper() != "DELETE":
        params["name"] = "m1"  # reach past the 404 into the real handlers
    app, key = fuzz_app
    case.call_and_validate(app=app, headers={"X-API-Key": key}, checks=CHECKS)
