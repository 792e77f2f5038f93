"""Training jobs: the job table service, runners (where jobs run) and the job process."""

from service.jobs.runner import InProcessJobRunner, JobRunner, create_job_runner
from service.jobs.service import JobService

__all__ = ["InProcessJobRunner", "JobRunner", "JobService", "create_job_runner"]
