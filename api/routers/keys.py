"""SSH keys (金鑰, manual 5.9.2): your own, for containers' key login."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import CurrentUser, PathId, SessionDep
from models.keys import SshKeyCreate, SshKeyCreated, SshKeyImport, SshKeyPage, SshKeyPublic
from services import keys

router = APIRouter(prefix="/api/v1/users/me/keys", tags=["ssh keys"])


@router.get("", response_model=SshKeyPage, description="Your SSH keys (public halves only).")
def list_keys(user: CurrentUser, session: SessionDep) -> SshKeyPage:
    return keys.list_keys(session, user)


@router.post(
    "",
    response_model=SshKeyCreated,
    status_code=201,
    description="Make an ed25519 key pair. The private key is in this answer only: save it now "
    "(e.g. as ~/.ssh/mlcp_ed25519, mode 600); only the public key is kept.",
)
def create_key(
    body: SshKeyCreate, user: CurrentUser, session: SessionDep, response: Response
) -> SshKeyCreated:
    created = keys.create_key(session, user, body.name)
    response.headers["Cache-Control"] = "no-store"  # the private key must not linger in caches
    return created


@router.post(
    "/import",
    response_model=SshKeyPublic,
    status_code=201,
    description="Add a public key you have (the .pub line). A private key is refused and not kept.",
)
def import_key(body: SshKeyImport, user: CurrentUser, session: SessionDep) -> SshKeyPublic:
    return keys.import_key(session, user, body.name, body.public_key)


@router.get("/{key_id}", response_model=SshKeyPublic)
def get_key(key_id: PathId, user: CurrentUser, session: SessionDep) -> SshKeyPublic:
    return SshKeyPublic.model_validate(keys.own_key(session, user.id, key_id), from_attributes=True)


@router.delete("/{key_id}", status_code=204, description="Delete a key (409 while a live container uses it).")
def delete_key(key_id: PathId, user: CurrentUser, session: SessionDep) -> Response:
    keys.delete_key(session, user, key_id)
    return Response(status_code=204)
