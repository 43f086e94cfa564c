"""Project volumes (manual 5.7): who may see, create, change and mount them, and the capacity rules.

A volume's capacity is held in its project's quota ledger before its workflow starts (the project
workflow's `hold_storage` update answers at once, naming the numbers when it does not fit), so volumes and
anything else holding storage share the ledger's one storage line, and an approved quota application is
seen at once. Everything the storage itself does is the VolumeWorkflow's (workflows/volume.py).
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

from sqlmodel import Session, col, func, select
from temporalio.client import Client, WorkflowHandle

from activities.object_storage import bucket_name
from config import Settings
from models.accounts import User
from models.base import Page, utcnow
from models.database import release_connection
from models.lifecycle import AdmitRequest, ProjectStatus, Quota
from models.projects import Project, ProjectMember
from models.volumes import (
    LIVE_VOLUME_STATUSES,
    StorageSettings,
    Volume,
    VolumeClone,
    VolumeCreate,
    VolumeDelete,
    VolumeExpand,
    VolumeInput,
    VolumeLimits,
    VolumePermission,
    VolumePublic,
    VolumeResize,
    VolumeState,
    VolumeStatus,
    VolumeTimings,
    VolumeType,
    VolumeUpdate,
)
from services.access import (
    changes_everything_in,
    require_member,
    sees_everything_in,
    visible_project,
)
from services.errors import Unavailable, conflict, forbidden, invalid, not_found
from services.kinds import VOLUME
from services.projects import hold_storage, release_hold
from services.workloads import resource_id, run_update, start_recorded
from workflows.volume import VolumeWorkflow, volume_workflow_id


def public(row: Volume) -> VolumePublic:
    return VolumePublic.model_validate(row, from_attributes=True)


def _visible_to(row: Volume, user: User, members: list[ProjectMember]) -> bool:
    """Every member sees the project's volumes, but an owner-only one only its owner and project admins."""
    return (
        row.permission != VolumePermission.owner
        or row.owner_id == user.id
        or sees_everything_in(members, user)
    )


def readable_volume(
    session: Session, project_id: str, volume_id: str, user: User
) -> tuple[Volume, list[ProjectMember]]:
    _, members = visible_project(session, project_id, user)
    row = session.get(Volume, volume_id)
    if row is None or row.project_id != project_id or not _visible_to(row, user, members):
        raise not_found("volume", volume_id)
    return row, members


def changeable_volume(session: Session, project_id: str, volume_id: str, user: User) -> Volume:
    row, members = readable_volume(session, project_id, volume_id, user)
    if row.owner_id != user.id and not changes_everything_in(members, user):
        raise forbidden("only the volume's owner and the project's admins may change it")
    return row


def list_volumes(
    session: Session,
    project_id: str,
    user: User,
    *,
    status: VolumeStatus | None,
    type: VolumeType | None,
    name: str | None,
    limit: int,
    offset: int,
) -> Page[VolumePublic]:
    _, members = visible_project(session, project_id, user)
    query = select(Volume).where(Volume.project_id == project_id)
    if status is not None:
        query = query.where(Volume.status == status)
    else:
        query = query.where(Volume.status != VolumeStatus.deleted)
    if type is not None:
        query = query.where(Volume.type == type)
    if name:
        query = query.where(col(Volume.name).contains(name))
    if not sees_everything_in(members, user):
        query = query.where((Volume.permission != VolumePermission.owner) | (Volume.owner_id == user.id))
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(
        query.order_by(col(Volume.created_at).desc(), col(Volume.id)).offset(offset).limit(limit)
    )
    return Page(items=[public(row) for row in rows], total=total, limit=limit, offset=offset)


# ---- capacity rules ------------------------------------------------------------------------------


def storage_settings(session: Session) -> StorageSettings:
    return session.get(StorageSettings, 1) or StorageSettings()


def update_storage_settings(session: Session, max_volume_gb: float | None) -> StorageSettings:
    row = session.get(StorageSettings, 1) or StorageSettings()
    row.max_volume_gb, row.updated_at = max_volume_gb, utcnow()
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


def held_storage_gb(session: Session, project_id: str) -> float:
    """The capacities of the project's live s3 volumes: what its ledger holds for volumes."""
    total = session.exec(
        select(func.coalesce(func.sum(Volume.capacity_gb), 0.0)).where(
            Volume.project_id == project_id,
            Volume.type == VolumeType.s3,
            col(Volume.status).in_([*LIVE_VOLUME_STATUSES, VolumeStatus.deleting]),
        )
    ).one()
    return float(total or 0)


def limits(session: Session, project_id: str, user: User) -> VolumeLimits:
    project, _ = visible_project(session, project_id, user)
    maximum = storage_settings(session).max_volume_gb
    total = project.quota_storage_gb
    used = held_storage_gb(session, project_id)
    remaining = max(total - used, 0.0)
    if maximum is not None and remaining > maximum:
        largest, shown = maximum, "per_volume_maximum"  # the form shows only the largest it may take
    else:
        largest, shown = remaining, "project_total_and_remaining"
    return VolumeLimits(
        max_volume_gb=maximum,
        project_total_gb=total,
        project_used_gb=used,
        project_remaining_gb=remaining,
        largest_allowed_gb=largest,
        shown=shown,
    )


def _check_capacity(session: Session, capacity_gb: float) -> None:
    maximum = storage_settings(session).max_volume_gb
    if maximum is not None and capacity_gb > maximum:
        raise invalid(
            "capacity_gb", f"{capacity_gb:g} GB is above the platform's per-volume maximum of {maximum:g} GB"
        )


async def _hold(client: Client, project_id: str, volume_id: str, user: User, capacity_gb: float) -> None:
    request = AdmitRequest(
        resource_id=volume_id,
        kind=VOLUME.name,
        workflow_id=volume_workflow_id(volume_id),
        owner_id=user.id,
        request=Quota(storage_gb=capacity_gb),
    )
    await hold_storage(client, project_id, request)


# ---- create, clone ---------------------------------------------------------------------------------


def _new_name_free(session: Session, project_id: str, name: str) -> None:
    taken = session.exec(
        select(Volume.id).where(
            Volume.project_id == project_id, Volume.name == name, Volume.status != VolumeStatus.deleted
        )
    ).first()
    if taken is not None:
        raise conflict(f"the project already has a volume named {name!r}", "name")


def new_volume(
    project_id: str,
    volume_id: str,
    user: User,
    name: str,
    type: VolumeType,
    capacity_gb: float | None,
    permission: VolumePermission,
) -> VolumeState:
    """A volume's first state, owned by `user`; its capacity is what the ledger holds for it."""
    return VolumeState(
        id=volume_id,
        project_id=project_id,
        name=name,
        type=type,
        capacity_gb=capacity_gb,
        owner=user.username,
        owner_id=user.id,
        permission=permission,
        reserved_gb=capacity_gb or 0,
        bucket=bucket_name(project_id, volume_id) if type == VolumeType.s3 else "",
    )


async def create_volume(
    client: Client,
    session: Session,
    settings: Settings,
    project_id: str,
    user: User,
    body: VolumeCreate,
    idempotency_key: str | None,
) -> VolumePublic:
    project, members = visible_project(session, project_id, user)
    require_member(members, user, "create volumes")
    volume_id = resource_id(VOLUME, user.id, project_id, idempotency_key)
    existing = session.get(Volume, volume_id)
    if existing is not None:  # a retry with the same Idempotency-Key
        return public(existing)
    if body.type == VolumeType.s3 and body.capacity_gb is None:
        raise invalid("capacity_gb", "an s3 volume needs a capacity in GB")
    if body.type == VolumeType.nfs and body.capacity_gb is not None:
        raise invalid("capacity_gb", "only s3 volumes have a capacity: an nfs volume shares its export's")
    if body.capacity_gb is not None:
        _check_capacity(session, body.capacity_gb)
    _new_name_free(session, project_id, body.name)
    state = new_volume(project_id, volume_id, user, body.name, body.type, body.capacity_gb, body.permission)
    return await _start(client, session, settings, project, user, state)


async def clone_volume(
    client: Client,
    session: Session,
    settings: Settings,
    project_id: str,
    volume_id: str,
    user: User,
    body: VolumeClone,
    idempotency_key: str | None,
) -> VolumePublic:
    source, members = readable_volume(session, project_id, volume_id, user)
    require_member(members, user, "clone volumes")
    if source.status != VolumeStatus.available:
        raise conflict(f"volume {source.id} is {source.status}; only an available volume can be cloned")
    if not source.supports_clone:
        raise conflict(f"volume {source.id} does not support clone")
    clone_id = resource_id(VOLUME, user.id, project_id, idempotency_key)
    existing = session.get(Volume, clone_id)
    if existing is not None:
        return public(existing)
    _new_name_free(session, project_id, body.name)
    project = session.get(Project, project_id)
    assert project is not None
    state = new_volume(
        project_id, clone_id, user, body.name, source.type, source.capacity_gb, source.permission
    )
    state.cloned_from = source.id
    return await _start(client, session, settings, project, user, state)


async def _start(
    client: Client, session: Session, settings: Settings, project: Project, user: User, state: VolumeState
) -> VolumePublic:
    if project.status != ProjectStatus.active:
        raise conflict(
            f"project {project.id} is {project.status}; volumes can be created only while it is active"
        )
    release_connection(session)
    await _hold(client, project.id, state.id, user, state.reserved_gb)
    try:
        await start_recorded(
            client,
            VOLUME,
            VolumeInput(state=state, timings=VolumeTimings(usage_interval=_usage_interval(settings))),
            resource_id=state.id,
            task_queue=settings.temporal_task_queue,
            project_id=project.id,
            owner=user.username,
            status=state.status.value,
            summary=f"{state.type.value} volume {state.name} in project {project.id}",
            recorded=VolumeWorkflow.recorded,
        )
    except Unavailable:
        raise  # accepted: the workflow holds the capacity and gives it back
    except BaseException:
        await release_hold(client, project.id, state.id)  # nothing half-made: the hold goes back
        raise
    session.expire_all()
    row = session.get(Volume, state.id)
    if row is None:
        raise RuntimeError(f"volume {state.id} started but has no record")
    return public(row)


def _usage_interval(settings: Settings) -> timedelta:
    return timedelta(seconds=settings.volume_usage_interval_seconds)


# ---- change, expand, delete --------------------------------------------------------------------------


def update_volume(
    session: Session, project_id: str, volume_id: str, user: User, body: VolumeUpdate
) -> VolumePublic:
    row = changeable_volume(session, project_id, volume_id, user)
    if row.status not in LIVE_VOLUME_STATUSES:
        raise conflict(f"volume {row.id} is {row.status}")
    row.permission, row.updated_at = body.permission, utcnow()
    session.add(row)
    session.commit()
    session.refresh(row)
    return public(row)


async def expand_volume(
    client: Client, session: Session, project_id: str, volume_id: str, user: User, body: VolumeExpand
) -> VolumePublic:
    row = changeable_volume(session, project_id, volume_id, user)
    if row.type != VolumeType.s3 or row.capacity_gb is None:
        raise invalid("capacity_gb", "only s3 volumes have a capacity to expand")
    if body.capacity_gb < row.capacity_gb:
        raise invalid(
            "capacity_gb",
            f"a volume cannot shrink: it has {row.capacity_gb:g} GB and {body.capacity_gb:g} GB is less "
            "(create a smaller volume and copy the data instead)",
        )
    if body.capacity_gb == row.capacity_gb:
        raise invalid("capacity_gb", f"the volume already has {row.capacity_gb:g} GB")
    _check_capacity(session, body.capacity_gb)
    old = row.capacity_gb
    release_connection(session)
    await _hold(client, project_id, volume_id, user, body.capacity_gb)
    handle: WorkflowHandle[Any, Any] = client.get_workflow_handle(volume_workflow_id(volume_id))
    try:
        await run_update(
            handle,
            VolumeWorkflow.expand,
            VolumeResize(capacity_gb=body.capacity_gb, requested_by=user.username),
            ended=f"volume {volume_id}'s lifecycle has ended",
        )
    except BaseException:
        with contextlib.suppress(Exception):  # the ledger goes back to what the volume has
            await _hold(client, project_id, volume_id, user, old)
        raise
    session.expire_all()
    fresh = session.get(Volume, volume_id)
    assert fresh is not None
    return public(fresh)


def mounted_by(session: Session, project_id: str, volume_id: str) -> list[str]:
    """The live workloads mounting the volume, as `kind id (name)`."""
    from services.kinds import KINDS

    found = []
    for kind in KINDS:
        table: Any = kind.table
        rows = session.exec(
            select(table).where(table.project_id == project_id, col(table.status).not_in(kind.final_statuses))
        )
        found += [f"{kind.name} {row.id} ({row.name})" for row in rows if volume_id in (row.volume_ids or [])]
    return found


async def delete_volume(
    client: Client, session: Session, project_id: str, volume_id: str, user: User
) -> VolumePublic:
    row = changeable_volume(session, project_id, volume_id, user)
    if row.status == VolumeStatus.deleted:
        raise conflict(f"volume {row.id} is already deleted")
    users = mounted_by(session, project_id, volume_id)
    if users:
        raise conflict(f"volume {row.id} is mounted by live workloads: {', '.join(users)}; delete them first")
    release_connection(session)
    handle: WorkflowHandle[Any, Any] = client.get_workflow_handle(volume_workflow_id(volume_id))
    await run_update(
        handle,
        VolumeWorkflow.delete,
        VolumeDelete(requested_by=user.username),
        ended=f"volume {volume_id}'s lifecycle has ended ({row.status}: {row.message}); an operator can see "
        "why in the Temporal UI",
    )
    session.expire_all()
    fresh = session.get(Volume, volume_id)
    assert fresh is not None
    return public(fresh)
