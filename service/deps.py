"""FastAPI dependencies as ``Annotated`` aliases: services and API-key scopes.

Every dependency is ``async``, takes only the request and does no blocking work: FastAPI runs
plain ``def`` dependencies in its thread pool (a thread hop per dependency per request) and
solves each sub-dependency separately, which on the scoring path costs more than the model.
Key verification goes to a thread only when the key is not in the short-lived cache.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, Request
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase

from service.auth import AuthService, Principal, Scope
from service.context import AppContext
from service.data import DataService
from service.deletion import DeletionService
from service.jobs.service import JobService
from service.labels import LabelService
from service.live.service import LiveServices
from service.registry import ModelRegistry
from service.schedules import ScheduleService
from service.scoring import ScoringService
from service.settings import Settings

__all__ = [
    "APIKeyAuth",
    "AdminKey",
    "AnyKey",
    "AuthDep",
    "ContextDep",
    "DataDep",
    "DeletionDep",
    "JobsDep",
    "LabelsDep",
    "LiveDep",
    "RegistryDep",
    "SchedulesDep",
    "ScoreKey",
    "ScoringDep",
    "SettingsDep",
    "WriteKey",
    "authorize",
    "context_of",
]


def context_of(request: Request) -> AppContext:
    """The app's :class:`~service.context.AppContext`."""
    context: AppContext = request.app.state.context
    return context


async def _context(request: Request) -> AppContext:
    return context_of(request)


async def _settings(request: Request) -> Settings:
    return context_of(request).settings


async def _auth(request: Request) -> AuthService:
    return context_of(request).auth


async def _registry(request: Request) -> ModelRegistry:
    return context_of(request).registry


async def _jobs(request: Request) -> JobService:
    return context_of(request).jobs


async def _schedules(request: Request) -> ScheduleService:
    return context_of(request).schedules


async def _scoring(request: Request) -> ScoringService:
    return context_of(request).scoring


async def _data(request: Request) -> DataService:
    return context_of(request).data


async def _deletion(request: Request) -> DeletionService:
    return context_of(request).deletion


async def _live(request: Request) -> LiveServices:
    return context_of(request).live


async def _labels(request: Request) -> LabelService:
    return context_of(request).labels


ContextDep = Annotated[AppContext, Depends(_context)]
AuthDep = Annotated[AuthService, Depends(_auth)]
SettingsDep = Annotated[Settings, Depends(_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(_registry)]
JobsDep = Annotated[JobService, Depends(_jobs)]
SchedulesDep = Annotated[ScheduleService, Depends(_schedules)]
ScoringDep = Annotated[ScoringService, Depends(_scoring)]
DataDep = Annotated[DataService, Depends(_data)]
DeletionDep = Annotated[DeletionService, Depends(_deletion)]
LiveDep = Annotated[LiveServices, Depends(_live)]
LabelsDep = Annotated[LabelService, Depends(_labels)]


class APIKeyAuth(SecurityBase):
    """Checks the API key of a request and the scope it needs, in one dependency.

    The key comes from ``Authorization: Bearer <key>``, ``X-API-Key: <key>`` or
    ``Ocp-Apim-Subscription-Key: <key>`` (Azure clients); OpenAPI shows the bearer scheme.

    Parameters
    ----------
    needed
        The scope the route needs (``admin`` implies ``write`` implies ``score``).
    """

    def __init__(self, needed: Scope) -> None:
        self.needed: Scope = needed
        self.model = HTTPBearerModel(
            description="An API key as 'Authorization: Bearer <key>' (or 'X-API-Key: <key>'). "
            "`reconad keys create --scope score|write|admin` makes one."
        )
        self.scheme_name = "APIKey"

    async def __call__(self, request: Request) -> Principal:
        return await authorize(request, self.needed)


async def authorize(request: Request, needed: Scope) -> Principal:
    """Verify the request's API key and that its scope includes ``needed``.

    Raises
    ------
    service.errors.UnauthorizedError, service.errors.ForbiddenError
    """
    headers = request.headers
    # Ocp-Apim-Subscription-Key: what Azure Anomaly Detector clients send.
    key = headers.get("x-api-key") or headers.get("ocp-apim-subscription-key")
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            key = credentials.strip()
    auth: AuthService = context_of(request).auth
    principal = auth.cached(key)
    if principal is None:
        principal = await asyncio.to_thread(auth.verify, key)
    return AuthService.require(principal, needed)


AnyKey = Annotated[Principal, Depends(APIKeyAuth("score"))]
ScoreKey = Annotated[Principal, Depends(APIKeyAuth("score"))]
WriteKey = Annotated[Principal, Depends(APIKeyAuth("write"))]
AdminKey = Annotated[Principal, Depends(APIKeyAuth("admin"))]
