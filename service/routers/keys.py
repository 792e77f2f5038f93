"""API keys over HTTP, for admins: create (with scope and expiry), list, revoke."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path, status

from service.deps import AdminKey, AuthDep
from service.errors import InvalidInputError
from service.routers.params import API_PREFIX
from service.schemas import KeyCreate, KeyCreated, KeyPublic, KeysPublic
from service.tables import utcnow

router = APIRouter(prefix=API_PREFIX + "/keys", tags=["keys"])

KeyId = Annotated[str, Path(pattern=r"^[0-9a-f]{8}$", description="The key id (8 hex digits).")]


@router.post("", response_model=KeyCreated, status_code=status.HTTP_201_CREATED)
def create_key(body: KeyCreate, auth: AuthDep, _key: AdminKey) -> KeyCreated:
    """Create a key; the response holds the key itself, shown only this once."""
    now = utcnow()
    expires = None if body.expires_in is None else now + timedelta(seconds=body.expires_in)
    try:
        row, plain = auth.create(body.scope, body.name, expires)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    public = KeyPublic.at(row, now)
    return KeyCreated(**public.model_dump(), key=plain)


@router.get("", response_model=KeysPublic)
def list_keys(auth: AuthDep, _key: AdminKey) -> KeysPublic:
    """Every key, revoked and expired ones included (never the keys themselves)."""
    now = utcnow()
    rows = auth.list_keys()
    return KeysPublic(data=[KeyPublic.at(r, now) for r in rows], count=len(rows))


@router.delete("/{key_id}", response_model=KeyPublic)
def revoke_key(key_id: KeyId, auth: AuthDep, _key: AdminKey) -> KeyPublic:
    """Revoke a key (it stops working within RECONAD_AUTH_CACHE_TTL_S on other replicas)."""
    return KeyPublic.at(auth.revoke(key_id), utcnow())
