"""Path and query parameters shared by the routers (bounded, so no value reaches the database
that it cannot hold)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from service.parsing import MAX_VERSION
from service.registry import NAME_PATTERN

__all__ = ["API_PREFIX", "JobId", "Limit", "ModelName", "Offset", "ScheduleId", "VersionNumber"]

API_PREFIX = "/v1"

ModelName = Annotated[
    str,
    Path(
        pattern=NAME_PATTERN,
        max_length=64,
        description="Model name: 1-64 letters, digits, '-' or '_'.",
    ),
]
VersionNumber = Annotated[int, Path(ge=1, le=MAX_VERSION, description="Version number.")]
JobId = Annotated[str, Path(min_length=1, max_length=64, description="Job id.")]
ScheduleId = Annotated[str, Path(min_length=1, max_length=64, description="Schedule id.")]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000, description="Items to skip.")]
Limit = Annotated[int, Query(ge=1, le=1000, description="Most items to return.")]
