"""Training jobs: start (202), list, show, cancel, retry."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status
from starlette.responses import Response

from service.deps import JobsDep, ScoreKey, WriteKey
from service.jobs.states import JobState
from service.routers.params import API_PREFIX, JobId, Limit, ModelName, Offset
from service.schemas import JobCreate, JobPublic, JobsPublic

router = APIRouter(prefix=API_PREFIX, tags=["jobs"])


@router.post("/models/{name}/jobs", response_model=JobPublic, status_code=status.HTTP_202_ACCEPTED)
def start_job(
    name: ModelName, body: JobCreate, jobs: JobsDep, response: Response, _key: WriteKey
) -> JobPublic:
    """Queue a training job; poll ``GET /v1/jobs/{id}`` for progress and the resulting version."""
    job = jobs.create(
        name,
        start=body.start,
        end=body.end,
        last_s=body.last,
        anchor=body.anchor,
        config=body.config,
        promote=body.promote,
        rows=None if body.data is None else body.data.rows,
    )
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobPublic.of(job, model=name)


@router.get("/models/{name}/jobs", response_model=JobsPublic)
def list_model_jobs(
    name: ModelName,
    jobs: JobsDep,
    _key: ScoreKey,
    state: Annotated[JobState | None, Query(alias="status")] = None,
    offset: Offset = 0,
    limit: Limit = 100,
) -> JobsPublic:
    """A model's jobs, newest first."""
    rows, count = jobs.list_jobs(name, state, offset, limit)
    return JobsPublic(data=[JobPublic.of(j, model=m) for j, m in rows], count=count)


@router.get("/jobs", response_model=JobsPublic)
def list_jobs(
    jobs: JobsDep,
    _key: ScoreKey,
    model: Annotated[str | None, Query(max_length=64)] = None,
    state: Annotated[JobState | None, Query(alias="status")] = None,
    offset: Offset = 0,
    limit: Limit = 100,
) -> JobsPublic:
    """All jobs (optionally of one model or in one state), newest first."""
    rows, count = jobs.list_jobs(model, state, offset, limit)
    return JobsPublic(data=[JobPublic.of(j, model=m) for j, m in rows], count=count)


@router.get("/jobs/{job_id}", response_model=JobPublic)
def get_job(job_id: JobId, jobs: JobsDep, _key: ScoreKey) -> JobPublic:
    """Status, progress (epoch, losses), timings, resulting version or error."""
    job, model = jobs.get(job_id)
    return JobPublic.of(job, model=model)


@router.post(
    "/jobs/{job_id}/cancel", response_model=JobPublic, status_code=status.HTTP_202_ACCEPTED
)
def cancel_job(job_id: JobId, jobs: JobsDep, _key: WriteKey) -> JobPublic:
    """Cancel a queued job, or stop a running one (it ends as ``cancelled``)."""
    job, model = jobs.cancel(job_id)
    return JobPublic.of(job, model=model)


@router.post("/jobs/{job_id}/retry", response_model=JobPublic, status_code=status.HTTP_202_ACCEPTED)
def retry_job(job_id: JobId, jobs: JobsDep, response: Response, _key: WriteKey) -> JobPublic:
    """Queue a new job with the parameters of a failed, cancelled or interrupted one."""
    job = jobs.retry(job_id)
    _, model = jobs.get(job.id)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobPublic.of(job, model=model)
