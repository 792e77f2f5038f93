"""The console's routes: HTML pages under ``/ui`` and their JSON calls under ``/ui/api``.

Pages render on the server (Jinja2); charts (uPlot, vendored) fetch downsampled JSON. Every
action calls the service method the matching API route calls and needs the same scope
(:mod:`service.ui.auth`); a page shows an action the key may not take as a disabled button
with the reason.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

import numpy as np
import orjson
from fastapi import APIRouter, File, Form, Header, Query, Request, UploadFile, status
from fastapi import Path as PathParam
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import RedirectResponse, Response

from service.data import frame_from_upload
from service.deps import ContextDep, context_of
from service.errors import InvalidInputError, ServiceError, UnauthorizedError
from service.live.schemas import EventPublic
from service.parsing import parse_duration
from service.routers.params import JobId, ModelName, ScheduleId, VersionNumber
from service.schedules import check_cron, next_run
from service.schemas import (
    DataAppended,
    DataSummary,
    Duration,
    EventLabel,
    JobPublic,
    LabelPublic,
    ModelPublic,
    ScheduleCreate,
    SchedulePublic,
)
from service.ui.auth import Console, PageUser
from service.ui.eventplot import event_plot
from service.ui.series import chart, explain_point
from service.ui.sessions import COOKIE, ConsoleUser

__all__ = ["router"]

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")


def _duration(seconds: float) -> str:
    """``90061`` -> ``1d 1h 1m 1s``: a duration as people write it."""
    left = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return " ".join(parts) or f"{seconds:g}s"


templates.env.filters["duration"] = _duration
router = APIRouter(prefix="/ui", include_in_schema=False)

_LOGIN_COOKIE = "reconad_login_csrf"
#: Pages may load only this origin's scripts and styles, and never sit in a frame.
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
#: An SVG opened on its own is a document: it may run nothing and load nothing.
_SVG_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "private, max-age=30",
}
#: Events the Events page lists at a time (their plots load as they scroll into view).
EVENTS_PER_PAGE = 50
_REASON = {
    "write": "needs a key with scope 'write' (yours: {scope})",
    "admin": "needs a key with scope 'admin' (yours: {scope})",
}


def _reason(user: ConsoleUser, needed: Literal["write", "admin"]) -> str:
    """Why a disabled button is disabled ('' when the key may use it)."""
    return "" if user.allows(needed) else _REASON[needed].format(scope=user.principal.scope)


def _json(payload: Any, status_code: int = 200) -> Response:
    return Response(
        orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status_code,
        media_type="application/json",
    )


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


async def _render(
    request: Request,
    user: ConsoleUser | None,
    template: str,
    build: Callable[[], dict[str, Any]] | None = None,
    **values: Any,
) -> Response:
    """Render a page for a signed-in user (else redirect to sign-in); errors become a page."""
    if user is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/ui/login?next={quote(target)}", status.HTTP_303_SEE_OTHER)
    code = 200
    try:
        if build is not None:
            values.update(await asyncio.to_thread(build))
    except ServiceError as exc:
        template, code = "error.html", exc.status_code
        values = {"message": exc.message}
    context = {
        "user": user,
        "scope": user.principal.scope,
        "csrf": user.csrf_token,
        "write_reason": _reason(user, "write"),
        "admin_reason": _reason(user, "admin"),
        **values,
    }
    return templates.TemplateResponse(
        request, template, context, status_code=code, headers=_HEADERS
    )


# --------------------------------------------------------------------------- sign-in


@router.get("")
async def home() -> Response:
    """The console starts at the models list."""
    return RedirectResponse("/ui/models", status.HTTP_303_SEE_OTHER)


def _safe_next(target: str | None) -> str:
    """Only a console path is a valid place to go after sign-in (no open redirect)."""
    if target and target.startswith("/ui/") and not target.startswith("//"):
        return target
    return "/ui/models"


def _login_page(request: Request, message: str, next_url: str, code: int = 200) -> Response:
    token = secrets.token_urlsafe(32)
    response = templates.TemplateResponse(
        request,
        "login.html",
        {"message": message, "next": next_url, "login_csrf": token, "user": None},
        status_code=code,
        headers=_HEADERS,
    )
    response.set_cookie(
        _LOGIN_COOKIE,
        token,
        max_age=3600,
        path="/ui",
        httponly=True,
        secure=_secure(request),
        samesite="strict",
    )
    return response


@router.get("/login")
async def login_form(
    request: Request, next: Annotated[str | None, Query(max_length=500)] = None
) -> Response:
    """The sign-in form: paste an API key."""
    return _login_page(request, "", _safe_next(next))


@router.post("/login")
async def login(
    request: Request,
    ctx: ContextDep,
    key: Annotated[str, Form(max_length=200)] = "",
    csrf_token: Annotated[str, Form(max_length=100)] = "",
    next: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    """Turn an API key into a session cookie (double-submit CSRF check on the form)."""
    expected = request.cookies.get(_LOGIN_COOKIE, "")
    if not expected or not secrets.compare_digest(expected, csrf_token):
        return _login_page(
            request, "The sign-in form expired: enter the key again.", _safe_next(next), 403
        )
    try:
        token, _user = await asyncio.to_thread(ctx.console.sign_in, key)
    except UnauthorizedError as exc:
        return _login_page(request, f"Sign-in refused: {exc.message}.", _safe_next(next), 401)
    response = RedirectResponse(_safe_next(next), status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(ctx.settings.ui_session_ttl_s),
        path="/ui",
        httponly=True,
        secure=_secure(request),
        samesite="strict",
    )
    response.delete_cookie(_LOGIN_COOKIE, path="/ui")
    return response


@router.post("/logout")
async def logout(
    request: Request,
    ctx: ContextDep,
    user: PageUser,
    csrf_token: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    """End the session (the form carries the CSRF token)."""
    if user is not None:
        if not secrets.compare_digest(user.csrf_token, csrf_token):
            return _json({"detail": "missing or wrong CSRF token: reload the page"}, 403)
        await asyncio.to_thread(ctx.console.sign_out, user)
    response = RedirectResponse("/ui/login", status.HTTP_303_SEE_OTHER)
    response.delete_cookie(COOKIE, path="/ui")
    return response


# --------------------------------------------------------------------------- pages


@router.get("/models")
async def models_page(request: Request, user: PageUser) -> Response:
    """Every model: kind, versions, data held, last scoring time, open anomaly events,
    schedules, last job."""
    ctx = context_of(request)

    def build() -> dict[str, Any]:
        rows, count = ctx.registry.list_models(0, 1000)
        events = ctx.live.events.counts()
        schedules: dict[str, list[Any]] = {}
        for schedule, model_name in ctx.schedules.list_schedules():
            schedules.setdefault(model_name, []).append(schedule)
        items = []
        for model in rows:
            jobs, _ = ctx.jobs.list_jobs(model.name, None, 0, 1)
            running = [s for s in schedules.get(model.name, []) if not s.paused]
            items.append(
                {
                    "model": model,
                    "kind": (model.config or {}).get("kind", "ae"),
                    "data": ctx.history.summary(model.id),
                    "open_events": events.get((model.name, "open"), 0),
                    "schedules": schedules.get(model.name, []),
                    "next_run": min((s.next_run_at for s in running), default=None),
                    "last_job": jobs[0][0] if jobs else None,
                }
            )
        return {"items": items, "count": count}

    return await _render(request, user, "models.html", build, page="models")


@router.get("/models/{name}")
async def model_page(request: Request, name: ModelName, user: PageUser) -> Response:
    """A model's series with expected band, score, threshold and flagged stretches."""
    ctx = context_of(request)

    def build() -> dict[str, Any]:
        model, versions = ctx.registry.list_versions(name)
        active = next((v for v in versions if v.version == model.active_version), None)
        return {
            "model": model,
            "versions": versions,
            "features": list(active.features) if active else [],
            "data": ctx.history.summary(model.id),
        }

    return await _render(request, user, "model.html", build, page="models")


@router.get("/models/{name}/versions")
async def versions_page(request: Request, name: ModelName, user: PageUser) -> Response:
    """Every version with data range, held-out metrics and threshold; promote, roll back."""
    ctx = context_of(request)

    def build() -> dict[str, Any]:
        model, versions = ctx.registry.list_versions(name)
        return {"model": model, "versions": versions}

    return await _render(request, user, "versions.html", build, page="models")


@router.get("/models/{name}/data")
async def data_page(request: Request, name: ModelName, user: PageUser) -> Response:
    """What the model holds, and a drop zone to upload more."""
    ctx = context_of(request)

    def build() -> dict[str, Any]:
        model = ctx.registry.get_model(name)
        return {"model": model, "data": ctx.history.summary(model.id)}

    return await _render(request, user, "data.html", build, page="models")


@router.get("/jobs")
async def jobs_page(
    request: Request,
    user: PageUser,
    model: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Queued, running and finished jobs, updating live."""
    ctx = context_of(request)

    def build() -> dict[str, Any]:
        rows, count = ctx.jobs.list_jobs(model, None, 0, 100)
        return {"jobs": [JobPublic.of(j, model=m) for j, m in rows], "count": count}

    return await _render(request, user, "jobs.html", build, page="jobs", model_filter=model)


@router.get("/jobs/{job_id}")
async def job_page(request: Request, job_id: JobId, user: PageUser) -> Response:
    """One job: its progress and loss curves, live while it runs."""
    ctx = context_of(request)

    def build() -> dict[str, Any]:
        job, model = ctx.jobs.get(job_id)
        return {"job": JobPublic.of(job, model=model)}

    return await _render(request, user, "job.html", build, page="jobs")


@router.get("/events")
async def events_page(
    request: Request,
    user: PageUser,
    model: Annotated[str | None, Query(max_length=64)] = None,
    state: Annotated[Literal["open", "closed"] | None, Query(alias="status")] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
) -> Response:
    """Anomaly events of the live streams, newest first, a page at a time, each with a small
    plot (loaded lazily); label (a real anomaly or not, with a note) and acknowledge."""
    ctx = context_of(request)

    def build() -> dict[str, Any]:
        offset = (page - 1) * EVENTS_PER_PAGE
        rows, count = ctx.live.events.list_events(
            model, None, state, None, None, offset, EVENTS_PER_PAGE
        )
        verdicts = ctx.labels.verdicts_of_events([ev.id for ev, _ in rows])
        return {
            "events": [EventPublic.from_row(ev, m) for ev, m in rows],
            "count": count,
            "verdicts": verdicts,
            "first": offset + 1,
            "pages": max(1, -(-count // EVENTS_PER_PAGE)),
        }

    filters = {k: v for k, v in (("model", model), ("status", state)) if v}
    return await _render(
        request,
        user,
        "events.html",
        build,
        page="events",
        model_filter=model,
        state=state,
        number=page,
        query=lambda **more: urlencode({**filters, **more}),
    )


@router.get("/api/events/{event_id}/plot.svg")
async def event_plot_svg(
    request: Request, event_id: Annotated[int, PathParam(ge=1, le=2**62)], _user: Console
) -> Response:
    """A small plot of the event's series around it, the event shaded (SVG, for the Events
    page's lazy images)."""
    ctx = context_of(request)
    svg = await asyncio.to_thread(
        event_plot, ctx.live.events, ctx.registry, ctx.live.streams, event_id
    )
    return Response(svg, media_type="image/svg+xml", headers=_SVG_HEADERS)


@router.post("/api/events/{event_id}/acknowledge")
async def acknowledge(
    request: Request, event_id: Annotated[int, PathParam(ge=1, le=2**62)], user: Console
) -> Any:
    """Acknowledge an event (as ``POST /v1/events/{id}/acknowledge``)."""
    events = context_of(request).live.events
    ev, model = await asyncio.to_thread(events.acknowledge, event_id, user.principal.key_id)
    return EventPublic.from_row(ev, model)


@router.post("/api/events/{event_id}/label")
async def label_event(
    request: Request,
    event_id: Annotated[int, PathParam(ge=1, le=2**62)],
    body: EventLabel,
    user: Console,
) -> Any:
    """Label an event (as ``POST /v1/events/{id}/label``)."""
    labels = context_of(request).labels
    row, model = await labels.label_event(event_id, body.verdict, body.note, user.principal.key_id)
    return LabelPublic.of(row, model=model)


@router.get("/schedules")
async def schedules_page(request: Request, user: PageUser) -> Response:
    """Every schedule; create one with a preview of its next runs; pause, resume, run now."""
    ctx = context_of(request)

    def build() -> dict[str, Any]:
        rows, _ = ctx.registry.list_models(0, 1000)
        return {
            "schedules": [SchedulePublic.of(s, model=m) for s, m in ctx.schedules.list_schedules()],
            "models": [m.name for m in rows],
        }

    return await _render(request, user, "schedules.html", build, page="schedules")


# --------------------------------------------------------------------------- chart data


SensitivityQ = Annotated[float, Query(ge=0, le=100, description="0-100; 50 = as calibrated.")]
WidthQ = Annotated[int, Query(ge=10, le=8000, description="Chart width in pixels.")]
KeyQ = Annotated[
    str | None,
    Query(
        max_length=200,
        description="The series, for a model with a key column (default: the first).",
    ),
]
EdgeQ = Annotated[float | None, Query(ge=-1e11, le=1e11, description="Seconds since epoch.")]


@router.get("/api/models/{name}/series")
async def series(
    request: Request,
    name: ModelName,
    _user: Console,
    version: Annotated[int | None, Query(ge=1, le=2_000_000_000)] = None,
    key: KeyQ = None,
    feature: Annotated[list[str] | None, Query(max_length=64)] = None,
    start: EdgeQ = None,
    end: EdgeQ = None,
    width: WidthQ = 1200,
    sensitivity: SensitivityQ = 50.0,
    if_none_match: Annotated[str | None, Header(max_length=1000)] = None,
) -> Response:
    """The model's stored history scored by a version, downsampled to the chart's width, with
    the live anomaly events in view.

    While the version scores the stored history in the background (the first view of it), the
    body has ``"scored": false`` and the stored values only; the page asks again. The response's
    ``ETag`` names the state shown: the page polls with ``If-None-Match`` and an unchanged view
    is a 304 without a body.
    """
    series = context_of(request).series
    body, tag = await series.chart(
        name, version, key, feature or [], start, end, width, sensitivity, if_none_match
    )
    return _tagged(body, tag)


def _tagged(body: dict[str, Any] | None, tag: str) -> Response:
    """A JSON body with its entity tag, or a bodiless 304 (``None``: the client has it)."""
    headers = {"ETag": tag, "Cache-Control": "private, no-cache"}
    if body is None:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    response = _json(body)
    response.headers.update(headers)
    return response


@router.get("/api/models/{name}/live")
async def live(
    request: Request,
    name: ModelName,
    _user: Console,
    version: Annotated[int | None, Query(ge=1, le=2_000_000_000)] = None,
    key: KeyQ = None,
    start: EdgeQ = None,
    end: EdgeQ = None,
    if_none_match: Annotated[str | None, Header(max_length=1000)] = None,
) -> Response:
    """The live anomaly events in view and the stored history's size and end, for the model
    page's poll once its chart is scored (``ETag``; an unchanged state is a bodiless 304). It
    starts no scoring: new data shows when the operator asks for it."""
    body, tag = await context_of(request).series.live(name, version, key, start, end, if_none_match)
    return _tagged(body, tag)


@router.get("/api/models/{name}/explain")
async def explain(
    request: Request,
    name: ModelName,
    _user: Console,
    at: Annotated[float, Query(ge=-1e11, le=1e11, description="Seconds since epoch.")],
    version: Annotated[int | None, Query(ge=1, le=2_000_000_000)] = None,
    key: KeyQ = None,
) -> Response:
    """The point nearest ``at``: its score and each feature's contribution."""
    scored = await context_of(request).series.scored(name, version, key)
    return _json(explain_point(scored, at))


@router.get("/api/models/{name}/compare")
async def compare(
    request: Request,
    name: ModelName,
    _user: Console,
    a: Annotated[int, Query(ge=1, le=2_000_000_000)],
    b: Annotated[int, Query(ge=1, le=2_000_000_000)],
    width: WidthQ = 600,
    key: KeyQ = None,
) -> Response:
    """Two versions' scores on the same stored data, each against its threshold."""
    service = context_of(request).series
    out = []
    for number in (a, b):
        scored = await service.scored(name, number, key)
        body = await asyncio.to_thread(chart, scored, [], None, None, width, 50.0)
        out.append(
            {
                key: body[key]
                for key in ("version", "threshold", "x", "score", "n_flagged", "n_stretches")
            }
        )
    return _json({"model": name, "versions": out})


@router.get("/api/jobs")
async def jobs_json(
    request: Request,
    _user: Console,
    model: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    """Jobs newest first, for the live jobs table."""
    rows, count = await asyncio.to_thread(context_of(request).jobs.list_jobs, model, None, 0, limit)
    data = [JobPublic.of(j, model=m).model_dump(mode="json") for j, m in rows]
    return _json({"data": data, "count": count})


@router.get("/api/jobs/{job_id}")
async def job_json(request: Request, job_id: JobId, _user: Console) -> Response:
    """One job, for the live progress and loss curve."""
    jobs = context_of(request).jobs
    job, model = await asyncio.to_thread(jobs.get, job_id)
    public = JobPublic.of(job, model=model).model_dump(mode="json")
    if job.version is not None and job.status == "succeeded":
        _, version = await asyncio.to_thread(jobs.registry.get_version, model, job.version)
        public["history"] = version.history
    return _json(public)


@router.get("/api/schedules/preview")
async def schedule_preview(
    _user: Console,
    cron: Annotated[str | None, Query(max_length=100)] = None,
    interval: Annotated[str | None, Query(max_length=32)] = None,
    count: Annotated[int, Query(ge=1, le=20)] = 5,
) -> Response:
    """The next run times of a cron expression or an interval, before saving it."""
    if (cron is None) == (interval is None):
        raise InvalidInputError("give exactly one of 'cron' and 'interval'")
    try:
        interval_s = None if interval is None else parse_duration(interval)
    except ValueError as exc:
        raise InvalidInputError(f"interval: {exc}") from None
    if cron is not None:
        check_cron(cron)
    elif interval_s is not None and interval_s < 1:
        raise InvalidInputError("interval must be at least 1 second")
    times: list[datetime] = []
    at = datetime.now(UTC)
    for _ in range(count):
        at = next_run(cron, interval_s, at)
        times.append(at)
    return _json({"next_runs": [t.isoformat() for t in times]})


# --------------------------------------------------------------------------- actions


class ConsoleTrain(BaseModel):
    """A training request from the console: the last duration of stored history, or all."""

    model_config = ConfigDict(extra="forbid")

    last: Duration | None = Field(None, description="Train on this much recent history.")
    anchor: Literal["now", "latest"] = "latest"
    promote: bool | None = None


@router.post("/api/models/{name}/train", status_code=status.HTTP_202_ACCEPTED)
async def train(request: Request, name: ModelName, body: ConsoleTrain, _user: Console) -> Any:
    """Queue a training job (as ``POST /v1/models/{name}/jobs``)."""
    jobs = context_of(request).jobs
    job = await asyncio.to_thread(
        lambda: jobs.create(name, last_s=body.last, anchor=body.anchor, promote=body.promote)
    )
    return JobPublic.of(job, model=name)


@router.post("/api/jobs/{job_id}/cancel", status_code=status.HTTP_202_ACCEPTED)
async def cancel(request: Request, job_id: JobId, _user: Console) -> Any:
    """Cancel a job (as ``POST /v1/jobs/{id}/cancel``)."""
    job, model = await asyncio.to_thread(context_of(request).jobs.cancel, job_id)
    return JobPublic.of(job, model=model)


@router.post("/api/jobs/{job_id}/retry", status_code=status.HTTP_202_ACCEPTED)
async def retry(request: Request, job_id: JobId, _user: Console) -> Any:
    """Retry a job (as ``POST /v1/jobs/{id}/retry``)."""
    jobs = context_of(request).jobs
    job = await asyncio.to_thread(jobs.retry, job_id)
    _, model = await asyncio.to_thread(jobs.get, job.id)
    return JobPublic.of(job, model=model)


@router.post("/api/models/{name}/versions/{version}/promote")
async def promote(request: Request, name: ModelName, version: VersionNumber, _user: Console) -> Any:
    """Activate a version (as ``POST /v1/models/{name}/versions/{v}/promote``)."""
    registry = context_of(request).registry
    return ModelPublic.of(await asyncio.to_thread(registry.promote, name, version))


@router.post("/api/models/{name}/rollback")
async def rollback(request: Request, name: ModelName, _user: Console) -> Any:
    """Re-activate the previous version (as ``POST /v1/models/{name}/rollback``)."""
    registry = context_of(request).registry
    return ModelPublic.of(await asyncio.to_thread(registry.rollback, name))


@router.post("/api/models/{name}/versions/{version}/delete")
async def delete_version(
    request: Request, name: ModelName, version: VersionNumber, _user: Console
) -> Any:
    """Delete an inactive version (as ``DELETE /v1/models/{name}/versions/{v}``)."""
    await context_of(request).deletion.delete_version(name, version)
    return {"deleted": version}


@router.post("/api/models/{name}/schedules", status_code=status.HTTP_201_CREATED)
async def create_schedule(
    request: Request, name: ModelName, body: ScheduleCreate, _user: Console
) -> Any:
    """Create a schedule (as ``POST /v1/models/{name}/schedules``)."""
    schedules = context_of(request).schedules
    row, model = await asyncio.to_thread(
        schedules.create, name, body.cron, body.interval, body.window, body.anchor, body.paused
    )
    return SchedulePublic.of(row, model=model)


@router.post("/api/schedules/{schedule_id}/delete")
async def delete_schedule(request: Request, schedule_id: ScheduleId, _user: Console) -> Any:
    """Delete a schedule (as ``DELETE /v1/schedules/{id}``)."""
    await asyncio.to_thread(context_of(request).schedules.delete, schedule_id)
    return {"deleted": schedule_id}


@router.post("/api/schedules/{schedule_id}/{action}")
async def schedule_action(
    request: Request,
    schedule_id: ScheduleId,
    action: Literal["pause", "resume", "run"],
    _user: Console,
) -> Any:
    """Pause, resume or run a schedule now (as the ``/v1/schedules/{id}/...`` routes)."""
    ctx = context_of(request)
    if action == "run":
        job_id = await asyncio.to_thread(ctx.schedules.run_now, schedule_id)
        job, model = await asyncio.to_thread(ctx.jobs.get, job_id)
        return JobPublic.of(job, model=model)
    row, model = await asyncio.to_thread(ctx.schedules.set_paused, schedule_id, action == "pause")
    return SchedulePublic.of(row, model=model)


@router.post("/api/models/{name}/data/{step}")
async def upload(
    request: Request,
    name: ModelName,
    step: Literal["preview", "store"],
    _user: Console,
    file: Annotated[UploadFile, File(description="A CSV or Parquet file.")],
    timestamp_column: Annotated[str, Form(max_length=128)] = "timestamp",
) -> Any:
    """Preview (check, store nothing) or store an uploaded file (as ``.../data/upload``)."""
    data = context_of(request).data
    content = await file.read()

    def work() -> dict[str, Any]:
        frame = frame_from_upload(
            content, file.filename, file.content_type, timestamp_column, data.key_column(name)
        )
        if step == "store":
            count, summary = data.append(name, frame)
            return DataAppended(
                appended=count, summary=DataSummary.from_summary(summary)
            ).model_dump(mode="json")
        data.check(name, frame)
        head = frame.head(10)
        return {
            "rows": len(frame),
            "columns": [str(c) for c in frame.columns],
            "start": frame.index[0].isoformat(),
            "end": frame.index[-1].isoformat(),
            "missing": {str(c): int(n) for c, n in frame.isna().sum().items()},
            "head": [
                [ts.isoformat(), *[None if _nan(v) else v for v in row]]
                for ts, row in zip(head.index, head.to_numpy().tolist(), strict=True)
            ],
        }

    return _json(await asyncio.to_thread(work))


def _nan(value: Any) -> bool:
    return isinstance(value, float) and bool(np.isnan(value))
