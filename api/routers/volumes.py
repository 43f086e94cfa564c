"""Volumes (儲存裝置, manual 5.7) and the platform's storage settings."""

from __future__ import annotations

from fastapi import APIRouter, Query

from api.deps import (
    AdminUser,
    CurrentUser,
    Limit,
    Offset,
    PathId,
    RuntimeDep,
    SessionDep,
    SettingsDep,
    TemporalDep,
)
from api.workload_routes import IdempotencyKey
from models.base import Page
from models.volumes import (
    StorageIdentityPublic,
    StorageSettingsPublic,
    StorageSettingsUpdate,
    VolumeClone,
    VolumeCreate,
    VolumeCredentials,
    VolumeExpand,
    VolumeLimits,
    VolumePublic,
    VolumeStatus,
    VolumeType,
    VolumeUpdate,
)
from services import storage_access, volumes
from services.runtimes import storage_for

router = APIRouter(tags=["volumes"])
PREFIX = "/api/v1/projects/{project_id}/volumes"


@router.post(
    PREFIX,
    response_model=VolumePublic,
    status_code=201,
    description="Create a volume (建立儲存裝置). An s3 volume needs capacity_gb; the capacities of "
    "a project's "
    "s3 volumes add up to at most its storage quota. Send an Idempotency-Key header to make retries safe.",
)
async def create_volume(
    project_id: PathId,
    body: VolumeCreate,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    idempotency_key: IdempotencyKey = None,
) -> VolumePublic:
    return await volumes.create_volume(client, session, settings, project_id, user, body, idempotency_key)


@router.get(PREFIX, response_model=Page[VolumePublic], description="The project's volumes, newest first.")
def list_volumes(
    project_id: PathId,
    user: CurrentUser,
    session: SessionDep,
    status: VolumeStatus | None = None,
    type: VolumeType | None = None,
    name: str | None = Query(None, max_length=63, description="Part of the name"),
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[VolumePublic]:
    return volumes.list_volumes(
        session, project_id, user, status=status, type=type, name=name, limit=limit, offset=offset
    )


@router.get(
    PREFIX + "/limits",
    response_model=VolumeLimits,
    description="What the create form shows (manual 5.7.1.2): the per-volume maximum, the project's total "
    "and remaining storage, and the largest capacity a new s3 volume may have now.",
)
def volume_limits(project_id: PathId, user: CurrentUser, session: SessionDep) -> VolumeLimits:
    return volumes.limits(session, project_id, user)


@router.get(PREFIX + "/{volume_id}", response_model=VolumePublic)
def get_volume(project_id: PathId, volume_id: PathId, user: CurrentUser, session: SessionDep) -> VolumePublic:
    row, _ = volumes.readable_volume(session, project_id, volume_id, user)
    return volumes.public(row)


@router.patch(
    PREFIX + "/{volume_id}",
    response_model=VolumePublic,
    description="Change the permission; the owner and project admins may. Workloads already running keep "
    "the mounts they were created with.",
)
def update_volume(
    project_id: PathId, volume_id: PathId, body: VolumeUpdate, user: CurrentUser, session: SessionDep
) -> VolumePublic:
    return volumes.update_volume(session, project_id, volume_id, user, body)


@router.delete(
    PREFIX + "/{volume_id}",
    response_model=VolumePublic,
    description="Delete the volume and its data (409 while a live workload mounts it).",
)
async def delete_volume(
    project_id: PathId, volume_id: PathId, user: CurrentUser, session: SessionDep, client: TemporalDep
) -> VolumePublic:
    return await volumes.delete_volume(client, session, project_id, volume_id, user)


@router.post(
    PREFIX + "/{volume_id}/expand",
    response_model=VolumePublic,
    description="Grow an s3 volume's capacity; shrinking is refused.",
)
async def expand_volume(
    project_id: PathId,
    volume_id: PathId,
    body: VolumeExpand,
    user: CurrentUser,
    session: SessionDep,
    client: TemporalDep,
) -> VolumePublic:
    return await volumes.expand_volume(client, session, project_id, volume_id, user, body)


@router.post(
    PREFIX + "/{volume_id}/clone",
    response_model=VolumePublic,
    status_code=201,
    description="A new volume with a copy of this one's files (the caller owns it).",
)
async def clone_volume(
    project_id: PathId,
    volume_id: PathId,
    body: VolumeClone,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    idempotency_key: IdempotencyKey = None,
) -> VolumePublic:
    return await volumes.clone_volume(
        client, session, settings, project_id, volume_id, user, body, idempotency_key
    )


@router.get(
    PREFIX + "/{volume_id}/credentials",
    response_model=VolumeCredentials,
    description="The endpoint, bucket and the project's S3 identity for an s3 volume. The secret key is in "
    "the answer only once, on the first call after the identity was made.",
)
def volume_credentials(
    project_id: PathId,
    volume_id: PathId,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    runtime: RuntimeDep,
) -> VolumeCredentials:
    storage = storage_for(settings, runtime)
    return storage_access.credentials(session, storage, settings, project_id, volume_id, user)


@router.post(
    "/api/v1/projects/{project_id}/storage-identity/rotate",
    response_model=StorageIdentityPublic,
    description="New keys for the project's S3 identity (project admins): the old keys stop working, and the "
    "next credentials call shows the new secret key once.",
)
def rotate_storage_identity(
    project_id: PathId, user: CurrentUser, session: SessionDep, settings: SettingsDep, runtime: RuntimeDep
) -> StorageIdentityPublic:
    identity = storage_access.rotate_identity(
        session, storage_for(settings, runtime), settings, project_id, user
    )
    return StorageIdentityPublic.model_validate(identity, from_attributes=True)


@router.get("/api/v1/admin/storage-settings", response_model=StorageSettingsPublic, tags=["admin"])
def get_storage_settings(admin: AdminUser, session: SessionDep) -> StorageSettingsPublic:
    row = volumes.storage_settings(session)
    return StorageSettingsPublic(max_volume_gb=row.max_volume_gb, updated_at=row.updated_at)


@router.put(
    "/api/v1/admin/storage-settings",
    response_model=StorageSettingsPublic,
    tags=["admin"],
    description="Platform admins set the per-volume maximum (null: unlimited).",
)
def put_storage_settings(
    body: StorageSettingsUpdate, admin: AdminUser, session: SessionDep
) -> StorageSettingsPublic:
    row = volumes.update_storage_settings(session, body.max_volume_gb)
    return StorageSettingsPublic(max_volume_gb=row.max_volume_gb, updated_at=row.updated_at)
