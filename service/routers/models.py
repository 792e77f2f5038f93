"""Models: create, list, show, update, delete."""

from __future__ import annotations

from fastapi import APIRouter, status
from starlette.responses import Response

from service.deps import AdminKey, DeletionDep, RegistryDep, ScoreKey, WriteKey
from service.routers.params import API_PREFIX, Limit, ModelName, Offset
from service.schemas import ModelCreate, ModelPublic, ModelsPublic, ModelUpdate

router = APIRouter(prefix=API_PREFIX + "/models", tags=["models"])


@router.post("", response_model=ModelPublic, status_code=status.HTTP_201_CREATED)
def create_model(body: ModelCreate, registry: RegistryDep, _key: WriteKey) -> ModelPublic:
    """Create a model from a name and a detector config."""
    row = registry.create_model(body.name, body.config, body.description, body.promotion_policy)
    return ModelPublic.of(row)


@router.get("", response_model=ModelsPublic)
def list_models(
    registry: RegistryDep, _key: ScoreKey, offset: Offset = 0, limit: Limit = 100
) -> ModelsPublic:
    """Models by name."""
    rows, count = registry.list_models(offset, limit)
    return ModelsPublic(data=[ModelPublic.of(r) for r in rows], count=count)


@router.get("/{name}", response_model=ModelPublic)
def get_model(name: ModelName, registry: RegistryDep, _key: ScoreKey) -> ModelPublic:
    """One model."""
    return ModelPublic.of(registry.get_model(name))


@router.patch("/{name}", response_model=ModelPublic)
def update_model(
    name: ModelName, body: ModelUpdate, registry: RegistryDep, _key: WriteKey
) -> ModelPublic:
    """Change the config (for future trainings), description or promotion policy."""
    row = registry.update_model(name, body.config, body.description, body.promotion_policy)
    return ModelPublic.of(row)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def delete_model(name: ModelName, deletion: DeletionDep, _key: AdminKey) -> Response:
    """Delete a model with its versions, jobs (running ones are stopped), schedules and data."""
    await deletion.delete_model(name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
