"""What a workload may mount: the volume permission rules, free of any workflow so every service that
builds a workload spec (containers, jobs, templates, schedules) can use them."""

from __future__ import annotations

from sqlmodel import Session

from activities.object_storage import bucket_name
from config import Settings
from models.user_setup import HOME_VOLUME, SetupStatus, UserSetup
from models.volumes import MountRequest, Volume, VolumePermission, VolumeStatus, s3_bucket_variable
from models.workloads import VolumeMount
from services.errors import invalid


def resolve_mounts(
    session: Session, project_id: str, owner_id: str, mounts: list[MountRequest], field: str = "mounts"
) -> list[VolumeMount]:
    """What a workload owned by `owner_id` may mount, as the runtime takes it; 422 naming the mount.

    The permission decides (manual 5.7.1): an `owner` volume mounts for its owner only; a `project_read`
    one mounts read-only for everyone but its owner; `project_write` mounts as asked.
    """
    resolved = []
    for index, mount in enumerate(mounts):
        where = f"{field}[{index}].volume_id"
        if mount.volume_id == HOME_VOLUME:
            resolved.append(_home_mount(session, owner_id, mount, where))
            continue
        row = session.get(Volume, mount.volume_id)
        if row is None or row.project_id != project_id or row.status == VolumeStatus.deleted:
            raise invalid(where, f"the project has no volume {mount.volume_id!r}")
        if row.permission == VolumePermission.owner and row.owner_id != owner_id:
            raise invalid(where, f"volume {row.name!r} is its owner's only (僅個人可讀寫)")
        if row.status != VolumeStatus.available:
            raise invalid(where, f"volume {row.name!r} is {row.status}; mount it once it is available")
        read_only = mount.read_only or (
            row.permission == VolumePermission.project_read and row.owner_id != owner_id
        )
        resolved.append(
            VolumeMount(
                volume_id=row.id,
                volume_type=str(row.type),
                mount_path=mount.path,
                read_only=read_only,
                workdir=mount.workdir,
            )
        )
    return resolved


def _home_mount(session: Session, owner_id: str, mount: MountRequest, where: str) -> VolumeMount:
    setup = session.get(UserSetup, owner_id)
    if setup is None or setup.status != SetupStatus.ready:
        state = "not set up" if setup is None else f"{setup.status}: {setup.message}"
        raise invalid(where, f"the owner's home is not ready ({state}); a platform admin can retry the setup")
    return VolumeMount(
        volume_id=HOME_VOLUME,
        volume_type="home",
        mount_path=mount.path,
        read_only=mount.read_only,
        workdir=mount.workdir,
    )


def s3_environment(settings: Settings, project_id: str, mounts: list[VolumeMount]) -> dict[str, str]:
    """Where a workload finds its s3 mounts: the endpoint and one bucket variable per mount. The project's
    keys are added by the runtime from where it keeps them (never in a spec, which workflow history holds)."""
    buckets = [mount for mount in mounts if mount.volume_type == "s3"]
    if not buckets:
        return {}
    endpoint = settings.s3_public_endpoint or settings.s3_endpoint
    env = {
        "AWS_ENDPOINT_URL": f"{'https' if settings.s3_secure else 'http'}://{endpoint}",
        "AWS_REGION": settings.s3_region,
        "MLCP_S3_BUCKET": bucket_name(project_id, buckets[0].volume_id),
    }
    for mount in buckets:
        env[s3_bucket_variable(mount.mount_path)] = bucket_name(project_id, mount.volume_id)
    return env
