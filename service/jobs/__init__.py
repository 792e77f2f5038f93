"""Training jobs: the job states (:mod:`~service.jobs.states`), the job table service
(:mod:`~service.jobs.service`), runners (:mod:`~service.jobs.runner`, where jobs run; Celery in
:mod:`~service.jobs.celery_backend`) and the job process (:mod:`~service.jobs.worker`).

The names below are imported on first use, so that :mod:`service.registry` can use the job
states without importing the job service (which uses the registry).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["InProcessJobRunner", "JobRunner", "JobService", "create_job_runner"]

_HOMES = {
    "InProcessJobRunner": "service.jobs.runner",
    "JobRunner": "service.jobs.runner",
    "create_job_runner": "service.jobs.runner",
    "JobService": "service.jobs.service",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'service.jobs' has no attribute {name!r}")
