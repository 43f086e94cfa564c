"""The transfer service (manual 5.7.2): one per member and project, an SFTP server over every NFS volume the
member may reach, read-only where the volume's permission says so. It runs as a workload of its own kind
(TransferWorkflow), so it is admitted, watched and removed as containers are, and ends when deleted or when
its project enters grace."""

from __future__ import annotations

import json
import socket
import sys

from argon2 import PasswordHasher
from sqlmodel import Session, col, select
from temporalio.client import Client

from config import Settings
from models.accounts import User
from models.base import new_id, utcnow
from models.containers import ContainerInput
from models.database import release_connection
from models.lifecycle import ProjectStatus
from models.transfers import (
    SFTP_PORT,
    VOLUMES_ROOT,
    Transfer,
    TransferCreate,
    TransferPublic,
    TransferStatus,
    TransferVolume,
)
from models.volumes import Volume, VolumePermission, VolumeStatus, VolumeType
from models.workloads import (
    Credentials,
    ResourceRequest,
    ServicePort,
    VolumeMount,
    WorkloadRole,
    WorkloadSpec,
)
from services.access import require_member, visible_project
from services.errors import conflict, not_found
from services.kinds import TRANSFER
from services.workloads import delete, recorded_row, start_recorded

# What the SFTP server holds while it runs; the project's ledger reserves it like any workload's.
TRANSFER_RESOURCES = ResourceRequest(vcpu=0.25, ram_gb=0.5)
SERVER_MODULE = "activities.transfer_server"


def reachable_volumes(session: Session, project_id: str, user: User) -> list[tuple[Volume, bool]]:
    """The NFS volumes the member may reach, each with whether it is read-only for them."""
    rows = session.exec(
        select(Volume)
        .where(
            Volume.project_id == project_id,
            Volume.type == VolumeType.nfs,
            Volume.status == VolumeStatus.available,
        )
        .order_by(col(Volume.name))
    ).all()
    reachable = []
    for row in rows:
        if row.permission == VolumePermission.owner and row.owner_id != user.id:
            continue
        reachable.append((row, row.permission == VolumePermission.project_read and row.owner_id != user.id))
    return reachable


def live_transfer(session: Session, project_id: str, user_id: str) -> Transfer | None:
    return session.exec(
        select(Transfer).where(
            Transfer.project_id == project_id,
            Transfer.owner_id == user_id,
            Transfer.status != TransferStatus.deleted,
        )
    ).first()


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def transfer_spec(
    settings: Settings,
    project_id: str,
    transfer_id: str,
    user: User,
    volumes: list[tuple[Volume, bool]],
    password: str,
) -> WorkloadSpec:
    local = settings.runtime == "local"
    port = _free_loopback_port() if local else SFTP_PORT
    roots = [
        {"name": row.name, "path": f"{VOLUMES_ROOT}/{row.name}", "read_only": read_only}
        for row, read_only in volumes
    ]
    config = {
        "username": user.username,
        "roots": roots,
        # Locally the working folder is the workload's own; in a pod, a writable place the image has.
        "host_key": "transfer_host_key" if local else "/tmp/mlcp-transfer-host-key",
        "host": "127.0.0.1" if local else "0.0.0.0",
        "port": port,
    }
    python = sys.executable if local else "python"
    return WorkloadSpec(
        project_id=project_id,
        resource_id=transfer_id,
        kind=TRANSFER.name,
        owner=user.username,
        name=f"transfer-{user.username}"[:40],
        roles=[
            WorkloadRole(
                image=settings.platform_image,
                command=[python, "-m", SERVER_MODULE],
                env={"MLCP_TRANSFER_CONFIG": json.dumps(config)},
                resources=TRANSFER_RESOURCES,
                ports=[ServicePort(name="sftp", port=port)],
            )
        ],
        mounts=[
            VolumeMount(
                volume_id=row.id, volume_type="nfs", mount_path=f"{VOLUMES_ROOT}/{row.name}", read_only=ro
            )
            for row, ro in volumes
        ],
        credentials=Credentials(password_hash=PasswordHasher().hash(password)),
    )


async def start_transfer(
    client: Client, session: Session, settings: Settings, project_id: str, user: User, body: TransferCreate
) -> TransferPublic:
    project, members = visible_project(session, project_id, user)
    require_member(members, user, "start a transfer service")
    if project.status != ProjectStatus.active:
        raise conflict(
            f"project {project.id} is {project.status}; the transfer service needs an active project"
        )
    existing = live_transfer(session, project_id, user.id)
    if existing is not None:
        raise conflict(
            f"you have a transfer service in this project already ({existing.id}); "
            "delete it first to change it"
        )
    volumes = reachable_volumes(session, project_id, user)
    transfer_id = new_id()
    spec = transfer_spec(settings, project_id, transfer_id, user, volumes, body.password)
    request = ContainerInput(
        id=transfer_id,
        project_id=project_id,
        owner_id=user.id,
        owner=user.username,
        spec=spec,
        created_at=utcnow(),
    )
    release_connection(session)
    await start_recorded(
        client,
        TRANSFER,
        request,
        resource_id=transfer_id,
        task_queue=settings.temporal_task_queue,
        project_id=project_id,
        owner=user.username,
        status=TransferStatus.scheduled.value,
        summary=f"SFTP transfer service of {user.username} over {len(volumes)} volume(s)",
    )
    return public(session, recorded_row(session, TRANSFER, transfer_id))


def mine(session: Session, project_id: str, user: User) -> Transfer:
    visible_project(session, project_id, user)
    row = live_transfer(session, project_id, user.id)
    if row is None:
        raise not_found("transfer service of", user.username)
    return row


def public(session: Session, row: Transfer) -> TransferPublic:
    by_id = {v.id: v for v in session.exec(select(Volume).where(col(Volume.id).in_(row.volume_ids or [])))}
    volumes = []
    for volume_id in row.volume_ids or []:
        volume = by_id.get(volume_id)
        if volume is not None:
            read_only = volume.permission == VolumePermission.project_read and volume.owner_id != row.owner_id
            volumes.append(TransferVolume(id=volume.id, name=volume.name, read_only=read_only))
    endpoint = row.endpoints[0] if row.endpoints else None
    host = port = connect = None
    if endpoint is not None:
        host = str(endpoint["host"])
        port = int(endpoint.get("node_port") or endpoint["port"])
        connect = f"sftp -P {port} {row.owner}@{host}"
    return TransferPublic(
        id=row.id,
        project_id=row.project_id,
        owner=row.owner,
        status=row.status,
        reason=row.reason,
        message=row.message,
        volumes=volumes,
        host=host,
        port=port,
        connect=connect,
    )


async def delete_transfer(client: Client, session: Session, project_id: str, user: User) -> TransferPublic:
    row = mine(session, project_id, user)
    answer = await delete(client, session, TRANSFER, row, user)
    session.expire_all()
    fresh = session.get(Transfer, row.id)
    assert fresh is not None
    return public(session, fresh).model_copy(update={"status": answer.status, "message": answer.message})
