"""The transfer service (傳輸容器, manual 5.7.2): each member's own SFTP service over the volumes."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CurrentUser, PathId, SessionDep, SettingsDep, TemporalDep
from models.transfers import TransferCreate, TransferPublic
from services import transfers

router = APIRouter(prefix="/api/v1/projects/{project_id}/transfer", tags=["transfer service"])


@router.post(
    "",
    response_model=TransferPublic,
    status_code=201,
    description="Start your SFTP service over every NFS volume you may reach in the project (read-only where "
    "the volume's permission says so), with the password you give (only its hash is kept). The answer's "
    "`connect` is the line to copy once it runs. One per member and project: 409 while yours lives.",
)
async def start_transfer(
    project_id: PathId,
    body: TransferCreate,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
) -> TransferPublic:
    return await transfers.start_transfer(client, session, settings, project_id, user, body)


@router.get("", response_model=TransferPublic, description="Your transfer service: status and the sftp line.")
def my_transfer(project_id: PathId, user: CurrentUser, session: SessionDep) -> TransferPublic:
    return transfers.public(session, transfers.mine(session, project_id, user))


@router.delete("", response_model=TransferPublic, description="Stop your transfer service.")
async def delete_transfer(
    project_id: PathId, user: CurrentUser, session: SessionDep, client: TemporalDep
) -> TransferPublic:
    return await transfers.delete_transfer(client, session, project_id, user)
