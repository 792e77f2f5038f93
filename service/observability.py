"""Logs, metrics and request ids.

- :func:`configure_logging` sets up one handler on stderr: JSON lines (``ts``, ``level``,
  ``logger``, ``msg``, ``request_id`` and any ``extra`` fields) or plain text.
- :class:`Metrics` owns a Prometheus registry per app (so test apps do not collide): request
  latency by route template, scored points, anomalies, jobs by state, loaded models.
- :class:`RequestContextMiddleware` (pure ASGI) gives every request an id (the caller's
  ``X-Request-ID`` when it is sane), echoes it, times the request and writes one access log line.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import secrets
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "Metrics",
    "RequestContextMiddleware",
    "configure_logging",
    "request_id_var",
]

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}
access_logger = logging.getLogger("service.access")
error_logger = logging.getLogger("service.errors")


async def _send_internal_error(send: Send, request_id: str) -> None:
    body = json.dumps(
        {
            "detail": "internal error; the request id identifies it in the server log",
            "request_id": request_id,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the current request id and ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            payload["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in payload:
                payload[key] = value
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        # orjson: a tenth of json.dumps's time, and one line per request is the access log
        return orjson.dumps(payload, default=str).decode()


class _RequestIdFilter(logging.Filter):
    def __init__(self, static: dict[str, str] | None = None) -> None:
        super().__init__()
        self.static = static or {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get() or "-"
        for key, value in self.static.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def configure_logging(
    level: str = "INFO", as_json: bool = True, static: dict[str, str] | None = None
) -> None:
    """Send the service's and uvicorn's logs to stderr in one format.

    Parameters
    ----------
    level
        Level of the ``service`` and ``detector`` loggers.
    as_json
        JSON lines (True) or plain text.
    static
        Fields added to every record (a job process adds its ``job_id``).
    """
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    handler.addFilter(_RequestIdFilter(static))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_reconad", False):
            root.removeHandler(old)
    handler._reconad = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    if root.level > logging.WARNING or root.level == logging.NOTSET:
        root.setLevel(logging.WARNING)
    for name in ("service", "detector"):
        logging.getLogger(name).setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers = []
        lg.propagate = True
        lg.setLevel(level)
    logging.getLogger("uvicorn.access").disabled = True


class _JobsCollector(Collector):
    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Any:
        family = GaugeMetricFamily("reconad_jobs", "Training jobs by state.", labels=["state"])
        try:
            counts = self._counts()
        except Exception:  # the database being down must not break /metrics
            counts = {}
        for state, count in sorted(counts.items()):
            family.add_metric([state], float(count))
        yield family


class Metrics:
    """Prometheus metrics of one app, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_latency = Histogram(
            "reconad_http_request_duration_seconds",
            "HTTP request latency by route template.",
            ["method", "route", "status"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.scored_points = Counter(
            "reconad_scored_points", "Points scored.", registry=self.registry
        )
        self.anomalies = Counter(
            "reconad_anomalous_points", "Points flagged anomalous.", registry=self.registry
        )
        self.batch_size = Histogram(
            "reconad_score_batch_requests",
            "Requests served by one inference micro-batch.",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
        )
        self.models_loaded = Gauge(
            "reconad_models_loaded", "Model versions loaded in memory.", registry=self.registry
        )
        self.schedule_runs = Counter(
            "reconad_schedule_runs", "Jobs queued by schedules.", registry=self.registry
        )
        self.schedule_failures = Counter(
            "reconad_schedule_failures",
            "Due schedule runs that could not queue a job (the schedule shows last_error).",
            registry=self.registry,
        )

    def track_jobs(self, counts: Callable[[], dict[str, int]]) -> None:
        """Expose ``reconad_jobs{state}`` computed by ``counts`` at scrape time."""
        self.registry.register(_JobsCollector(counts))


class RequestContextMiddleware:
    """Request id, latency histogram and access log for every HTTP request (pure ASGI).

    Parameters
    ----------
    app
        The wrapped application.
    metrics
        Where latencies are recorded; the ``route`` label is the matched route's template
        (``/v1/models/{name}``), or ``unmatched``.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                supplied = value.decode("latin-1")
                break
        if supplied is None or not _REQUEST_ID_RE.match(supplied):
            supplied = secrets.token_hex(16)  # 32 hex digits like uuid4().hex, in a third the time
        request_id = supplied
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.perf_counter()
        header = (b"x-request-id", request_id.encode("latin-1"))

        started_response = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status = int(message["status"])
                started_response = True
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            # The one place an unexpected error is logged: with its traceback and this request's
            # id (outer middlewares run after the id is reset), and not raised again, so the
            # server does not log it a second time.
            status = 500
            error_logger.exception(
                "unhandled error on %s %s", scope.get("method", ""), scope.get("path", "")
            )
            if not started_response:
                await _send_internal_error(send_wrapper, request_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.request_latency.labels(
                scope.get("method", ""), template, str(status)
            ).observe(elapsed)
            access_logger.info(
                "%s %s %d %.1fms",
                scope.get("method", ""),
                template,
                status,
                elapsed * 1000,
                extra={"status": status, "duration_ms": round(elapsed * 1000, 2)},
            )
            request_id_var.reset(token)
