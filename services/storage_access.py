"""The project's S3 identity as members see it: the credentials of an s3 volume (the secret key shown once)
and the rotation a project admin asks for. The identity itself is made by the volume lifecycle."""

from __future__ import annotations

from sqlmodel import Session

from activities.object_storage import bucket_name
from activities.storage import VolumeStorage
from config import Settings
from models.accounts import User
from models.base import utcnow
from models.volumes import StorageIdentity, VolumeCredentials, VolumeType
from services.access import require_member, require_project_admin, visible_project
from services.errors import conflict
from services.runtimes import object_store
from services.volumes import readable_volume


def credentials(
    session: Session, storage: VolumeStorage, settings: Settings, project_id: str, volume_id: str, user: User
) -> VolumeCredentials:
    """The project's S3 identity for an s3 volume; the secret key only the first time it is asked for."""
    row, members = readable_volume(session, project_id, volume_id, user)
    require_member(members, user, "read storage credentials")
    if row.type != VolumeType.s3:
        raise conflict(f"volume {row.id} is an nfs volume: it has no S3 credentials; mount it instead")
    identity = session.get(StorageIdentity, project_id, with_for_update=True)
    if identity is None:
        raise conflict(
            f"the project's S3 identity is being made with volume {row.id}; ask again once it is available"
        )
    secret: str | None = None
    note = (
        "the secret key was shown once already; a project admin can rotate the keys "
        "(POST …/storage-identity/rotate) to see a new one"
    )
    if identity.secret_pending:
        keys = storage.identity(project_id)
        if keys is None:
            raise conflict("the project's S3 identity is not stored yet; ask again in a moment")
        secret, note = keys.secret_key, "store the secret key now: it is not shown again"
        identity.secret_pending = False
        session.add(identity)
        session.commit()
    return VolumeCredentials(
        endpoint=settings.s3_public_endpoint or settings.s3_endpoint,
        secure=settings.s3_secure,
        region=settings.s3_region,
        bucket=bucket_name(project_id, row.id),
        access_key=identity.access_key,
        secret_key=secret,
        note=note,
    )


def rotate_identity(
    session: Session, storage: VolumeStorage, settings: Settings, project_id: str, user: User
) -> StorageIdentity:
    """New keys for the project's S3 identity (project admins); the old ones stop working, and the new
    secret key is shown once, on the next credentials call."""
    _, members = visible_project(session, project_id, user)
    require_project_admin(members, user, "rotate the project's storage keys")
    identity = session.get(StorageIdentity, project_id, with_for_update=True)
    if identity is None:
        raise conflict("the project has no S3 identity yet: it is made with its first s3 volume")
    keys = object_store(settings).rotate_keys(project_id)
    storage.store_identity(project_id, keys)
    identity.access_key, identity.secret_pending, identity.rotated_at = keys.access_key, True, utcnow()
    session.add(identity)
    session.commit()
    session.refresh(identity)
    return identity
