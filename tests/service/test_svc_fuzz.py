"""Fuzz every operation of the OpenAPI schema (schemathesis, in-process ASGI app): no input may
produce a 5xx, every response must conform to the schema (documented status, content type,
headers and body), and every schema-valid request must be accepted (``positive_data_acceptance``:
2xx, or a status that state explains, per operation, or a refusal by one of the listed rules that
JSON Schema cannot state). Bounded to a few examples per operation so it runs in about two
minutes."""

from __future__ import annotations

import collections
import functools
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
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig
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


_TABLE_MEDIA = ("application/vnd.apache.arrow.stream", "application/vnd.apache.parquet")
for _media in _TABLE_MEDIA:
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


#: Statuses besides 2xx that a schema-valid request may get, by operation, from state the schema
#: cannot know: ids the fuzzer makes up name nothing (404); a name already taken, a model
#: without an earlier version to roll back to, a model's schedules at their limit from the cases
#: before (409); a model's job queue already full from the cases before (429).
_STATE_STATUSES: dict[str, list[str]] = {
    **{
        op: ["2xx", "404"]
        for op in (
            "DELETE /v1/keys/{key_id}",
            "DELETE /v1/models/{name}",
            "DELETE /v1/models/{name}/channels/{channel_id}",
            "DELETE /v1/models/{name}/data",
            "DELETE /v1/models/{name}/labels/{label_id}",
            "DELETE /v1/models/{name}/stream",
            "DELETE /v1/models/{name}/streams/{series}",
            "DELETE /v1/models/{name}/versions/{version}",
            "DELETE /v1/schedules/{schedule_id}",
            "GET /v1/events/{event_id}",
            "GET /v1/jobs",
            "GET /v1/jobs/{job_id}",
            "GET /v1/models/{name}/channels/{channel_id}",
            "GET /v1/models/{name}/channels/{channel_id}/alerts",
            "GET /v1/models/{name}/labels/{label_id}",
            "GET /v1/models/{name}/versions/{version}",
            "GET /v1/schedules/{schedule_id}",
            "PATCH /v1/models/{name}/channels/{channel_id}",
            "POST /v1/events/{event_id}/acknowledge",
            "POST /v1/events/{event_id}/label",
            "POST /v1/jobs/{job_id}/cancel",
            "POST /v1/jobs/{job_id}/retry",
            "POST /v1/models/{name}/versions/{version}/promote",
            "POST /v1/schedules/{schedule_id}/pause",
            "POST /v1/schedules/{schedule_id}/resume",
            "POST /v1/schedules/{schedule_id}/run",
        )
    },
    "POST /v1/models": ["2xx", "409"],
    "POST /v1/models/{name}/channels": ["2xx", "409"],
    "POST /v1/models/{name}/schedules": ["2xx", "409"],
    "POST /v1/models/{name}/rollback": ["2xx", "409"],
    "POST /v1/models/{name}/jobs": ["2xx", "429"],
    # a pinned version that does not exist; no active version after the cases before
    "POST /v1/models/{name}/score": ["2xx", "404", "409"],
}

#: Refusals of schema-valid requests by rules JSON Schema cannot state, each (operation, status,
#: the start of the message that names the rule): two values in order or exclusive, values that
#: depend on the model or on stored data, a deployment limit, the clock, and the content of a
#: binary or CSV body (the fuzzer's random bytes are a valid ``format: binary``).
_UNSTATABLE: list[tuple[str, int, str]] = [
    *(
        (op, 422, "start must be before end")
        for op in (
            "DELETE /v1/models/{name}/data",
            "GET /v1/events",
            "GET /v1/models/{name}/data/export",
            "GET /v1/models/{name}/labels",
        )
    ),
    ("DELETE /v1/models/{name}/data", 422, "give 'start' and/or 'end', or all=true"),
    *(
        (op, 422, rule)
        for op in ("POST /v1/models", "PATCH /v1/models/{name}", "POST /v1/models/{name}/jobs")
        for rule in (
            "body.config: Value error, key_column cannot also be a feature",
            "this config asks for a network of",
        )
    ),
    ("POST /v1/models/{name}/jobs", 422, "body.end: Value error, the time"),
    ("POST /v1/models/{name}/jobs", 422, "body.last: Value error, a duration must be"),
    ("POST /v1/models/{name}/jobs", 422, "body.start: Value error, the time"),
    ("POST /v1/models/{name}/labels", 422, "body.start: Value error, the time"),
    ("POST /v1/models/{name}/labels", 422, "body.end: Value error, the time"),
    ("POST /v1/models/{name}/labels", 422, "model 'm1' has no key column"),
    ("POST /v1/keys", 422, "expires_at must be in the future"),
    ("POST /v1/models/{name}/schedules", 422, "body.window: Value error, a duration must be"),
    ("POST /v1/models/{name}/schedules", 422, "body.interval: Value error, a duration must be"),
    ("POST /v1/models/{name}/schedules", 422, "body: Value error, the cron expression"),
    # the stored columns and the model's features are state (cases change them: PATCH, data)
    ("POST /v1/models/{name}/data", 422, "columns ["),  # ... differ from the stored columns
    ("POST /v1/models/{name}/data", 422, "columns do not match the model's features"),
    ("POST /v1/models/{name}/data", 422, "this model's rows need the series key column"),
    ("POST /v1/models/{name}/data", 422, "rows[].timestamp"),  # a date-time out of range
    ("POST /v1/models/{name}/score", 422, "timestamps"),  # the same
    ("POST /v1/models/{name}/score", 422, "every values column must have the same length"),
    # an explicit-phase case without the body the schema requires
    ("POST /v1/models/{name}/stream", 400, "the request body is empty"),
    ("POST /v1/models/{name}/data", 422, "rows[].timestamp must all be ISO-8601 strings or"),
    ("POST /v1/models/{name}/data/upload", 422, "the uploaded file is empty"),
    ("POST /v1/models/{name}/data/upload", 422, "the file has no "),
    ("POST /v1/models/{name}/labels/import", 422, "the labels CSV"),
    ("POST /v1/models/{name}/score", 422, "windows must be a regular array"),
    ("POST /v1/models/{name}/score", 422, "windows have shape"),
    ("POST /v1/models/{name}/score", 422, "values lacks the feature"),
    ("POST /v1/models/{name}/score", 422, "values has unknown column"),
    ("POST /v1/models/{name}/score", 422, "got "),
]


def _config() -> SchemathesisConfig:
    operations = [
        {
            "include-name": name,
            "checks": {"positive_data_acceptance": {"expected-statuses": statuses}},
        }
        for name, statuses in _STATE_STATUSES.items()
    ]
    return SchemathesisConfig.from_dict(
        {
            "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx"]}},
            "operations": operations,
        }
    )


schema = schemathesis.openapi.from_dict(_openapi(), config=_config())


def _unstatable(response: Any, case: Any) -> bool:
    """Whether a refusal is one of :data:`_UNSTATABLE`."""
    try:
        detail = str(response.json().get("detail", ""))
    except ValueError:
        return False
    if case.media_type in _TABLE_MEDIA and response.status_code in (400, 422):
        return True  # a table's content is not in the schema (binary; _tables draws bad ones)
    name = f"{case.method.upper()} {case.path}"
    return any(
        op == name and status == response.status_code and detail.startswith(rule)
        for op, status, rule in _UNSTATABLE
    )


def accepts_schema_valid_data(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis' positive_data_acceptance, with its statuses per operation (``_config``),
    except for a refusal by a rule the schema cannot state."""
    if _unstatable(response, case):
        return None
    result: bool | None = positive_data_acceptance(ctx, response, case)
    return result


#: No 5xx, every response as documented (status, content type, headers, body), and every
#: schema-valid request accepted.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    accepts_schema_valid_data,
]


async def _without_lifespan(app: FastAPI, scope: Any, receive: Any, send: Any) -> None:
    """``app`` for requests; its lifespan answered here, since the fixture already runs it
    (schemathesis starts an app's lifespan once more and stops it after a test, which would
    stop the fixture's scoring threads under the cases that follow)."""
    if scope["type"] != "lifespan":
        await app(scope, receive, send)
        return
    while True:
        message = await receive()
        kind = message["type"].rsplit(".", 1)[-1]  # startup or shutdown
        await send({"type": f"lifespan.{kind}.complete"})
        if kind == "shutdown":
            return


#: Operations and cases sent (by generation mode), their 5xx answers and failed checks: the
#: figures of a run, printed at the end of the module (``pytest -s``).
_SEEN: collections.Counter[str] = collections.Counter()
_OPERATIONS: set[str] = set()


@pytest.fixture(scope="module", autouse=True)
def _figures() -> Iterator[None]:
    yield
    print(f"\nfuzz figures: {len(_OPERATIONS)} operations, {dict(_SEEN)}")


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
    # the fuzzer's own credentials (its security scheme) would be refused: this key replaces them
    headers = {"Authorization": f"Bearer {key}"}
    response = case.call(app=functools.partial(_without_lifespan, app), headers=headers)
    _OPERATIONS.add(case.operation.label)
    _SEEN["cases"] += 1
    _SEEN[case.meta.generation.mode.value if case.meta else "explicit"] += 1
    _SEEN["server errors"] += response.status_code >= 500
    try:
        case.validate_response(response, checks=CHECKS, headers=headers)
    except Exception:
        _SEEN["failed"] += 1
        raise
