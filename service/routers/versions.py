"""Versions: list, show, promote, roll back, delete."""

from __future__ import annotations

from fastapi import APIRouter, status
from starlette.responses import Response

from service.deps import AdminKey, DeletionDep, RegistryDep, ScoreKey, WriteKey
from service.routers.params import API_PREFIX, Limit, ModelName, Offset, VersionNumber
from service.schemas import (
    ModelPublic,
    PromotionPublic,
    PromotionsPublic,
    VersionPublic,
    VersionsPublic,
)

router = APIRouter(prefix=API_PREFIX + "/models/{name}", tags=["versions"])


@router.get("/versions", response_model=VersionsPublic)
def list_versions(name: ModelName, registry: RegistryDep, _key: ScoreKey) -> VersionsPublic:
    """Every version of a model, newest first."""
    model, rows = registry.list_versions(name)
    return VersionsPublic(
        data=[VersionPublic.of_model(model, r) for r in rows],
        count=len(rows),
        active_version=model.active_version,
    )


@router.get("/versions/{version}", response_model=VersionPublic)
def get_version(
    name: ModelName, version: VersionNumber, registry: RegistryDep, _key: ScoreKey
) -> VersionPublic:
    """One version: metrics, threshold, calibration, training history, data range."""
    model, row = registry.get_version(name, version)
    return VersionPublic.of_model(model, row)


@router.post("/versions/{version}/promote", response_model=ModelPublic)
def promote_version(
    name: ModelName, version: VersionNumber, registry: RegistryDep, _key: WriteKey
) -> ModelPublic:
    """Make this version the active one (a single transaction)."""
    return ModelPublic.of(registry.promote(name, version))


@router.get("/promotions", response_model=PromotionsPublic)
def list_promotions(
    name: ModelName, registry: RegistryDep, _key: ScoreKey, offset: Offset = 0, limit: Limit = 100
) -> PromotionsPublic:
    """The promotion log: every change of the active version (promotions, automatic
    activations, roll-backs), newest first."""
    rows, count = registry.list_promotions(name, offset, limit)
    return PromotionsPublic(data=[PromotionPublic.of(r) for r in rows], count=count)


@router.post("/rollback", response_model=ModelPublic)
def rollback(name: ModelName, registry: RegistryDep, _key: WriteKey) -> ModelPublic:
    """Re-activate the version that was active before the current one."""
    return ModelPublic.of(registry.rollback(name))


@router.delete(
    "/versions/{version}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response
)
async def delete_version(
    name: ModelName, version: VersionNumber, deletion: DeletionDep, _key: AdminKey
) -> Response:
    """Delete a version that is not active (its number is never reused)."""
    await deletion.delete_version(name, version)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
