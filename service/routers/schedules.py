"""Retraining schedules: create, list, pause, resume, run now, delete."""

from __future__ import annotations

from fastapi import APIRouter, status
from starlette.responses import Response

from service.deps import AdminKey, JobsDep, SchedulesDep, ScoreKey, WriteKey
from service.routers.params import API_PREFIX, ModelName, ScheduleId
from service.schemas import JobPublic, ScheduleCreate, SchedulePublic, SchedulesPublic

router = APIRouter(prefix=API_PREFIX, tags=["schedules"])


@router.post(
    "/models/{name}/schedules",
    response_model=SchedulePublic,
    status_code=status.HTTP_201_CREATED,
)
def create_schedule(
    name: ModelName, body: ScheduleCreate, schedules: SchedulesDep, _key: WriteKey
) -> SchedulePublic:
    """Retrain the model on a rolling range, by cron (UTC) or at an interval."""
    row, model = schedules.create(
        name, body.cron, body.interval, body.window, body.anchor, body.paused
    )
    return SchedulePublic.of(row, model=model)


@router.get("/models/{name}/schedules", response_model=SchedulesPublic)
def list_model_schedules(
    name: ModelName, schedules: SchedulesDep, _key: ScoreKey
) -> SchedulesPublic:
    """A model's schedules."""
    rows = schedules.list_schedules(name)
    return SchedulesPublic(data=[SchedulePublic.of(s, model=m) for s, m in rows], count=len(rows))


@router.get("/schedules", response_model=SchedulesPublic)
def list_schedules(schedules: SchedulesDep, _key: ScoreKey) -> SchedulesPublic:
    """Every schedule."""
    rows = schedules.list_schedules()
    return SchedulesPublic(data=[SchedulePublic.of(s, model=m) for s, m in rows], count=len(rows))


@router.get("/schedules/{schedule_id}", response_model=SchedulePublic)
def get_schedule(
    schedule_id: ScheduleId, schedules: SchedulesDep, _key: ScoreKey
) -> SchedulePublic:
    """One schedule, with its next and last run."""
    row, model = schedules.get(schedule_id)
    return SchedulePublic.of(row, model=model)


@router.post("/schedules/{schedule_id}/pause", response_model=SchedulePublic)
def pause_schedule(
    schedule_id: ScheduleId, schedules: SchedulesDep, _key: WriteKey
) -> SchedulePublic:
    """Stop firing until resumed."""
    row, model = schedules.set_paused(schedule_id, True)
    return SchedulePublic.of(row, model=model)


@router.post("/schedules/{schedule_id}/resume", response_model=SchedulePublic)
def resume_schedule(
    schedule_id: ScheduleId, schedules: SchedulesDep, _key: WriteKey
) -> SchedulePublic:
    """Fire again; the next run is computed from now."""
    row, model = schedules.set_paused(schedule_id, False)
    return SchedulePublic.of(row, model=model)


@router.post(
    "/schedules/{schedule_id}/run",
    response_model=JobPublic,
    status_code=status.HTTP_202_ACCEPTED,
)
def run_schedule(
    schedule_id: ScheduleId, schedules: SchedulesDep, jobs: JobsDep, _key: WriteKey
) -> JobPublic:
    """Queue the schedule's training job now (its timing is unchanged)."""
    job_id = schedules.run_now(schedule_id)
    job, model = jobs.get(job_id)
    return JobPublic.of(job, model=model)


@router.delete(
    "/schedules/{schedule_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response
)
def delete_schedule(schedule_id: ScheduleId, schedules: SchedulesDep, _key: AdminKey) -> Response:
    """Delete a schedule (the jobs it queued stay)."""
    schedules.delete(schedule_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
