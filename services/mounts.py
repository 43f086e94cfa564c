"""What a workload may mount: the volume permission rules, free of any workflow so every service that
builds a workload spec (containers, jobs, templates, schedules) can use them."""

from __future__ import annotations

from sqlmodel import Session

from models.volumes import MountRequest, Volume, VolumePermission, VolumeStatus
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
        row = session.get(Volume, mount.volume_id)
        if row is None or row.project_id != project_id or row.status == VolumeStatus.deleted:
            raise invalid(where, f"the project has no volume {mount.volume_id!r}")
        if row.permission == VolumePermission.owner and row.owner_id != owner_id:
            raise invalid(where, f"volume {row.name!r} is its owner's only (僅個人可讀寫)")
        if row.status != VolumeStatus.available:
            raise invalid(where, f"volume {row.name!r} is {row.status.value}; mount it once it is available")
        read_only = mount.read_only or (
            row.permission == VolumePermission.project_read and row.owner_id != owner_id
        )
        resolved.append(
            VolumeMount(
                volume_id=row.id,
                volume_type=row.type.value,
                mount_path=mount.path,
                read_only=read_only,
                workdir=mount.workdir,
            )
        )
    return resolved
