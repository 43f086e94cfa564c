"""Starting containers: one from a member's create, or a batch a project admin makes for members."""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol

from sqlmodel import Session
from temporalio.client import Client

from config import Settings
from models.base import utcnow
from models.containers import ContainerCreate, ContainerInput, ContainerStatus
from models.lifecycle import ProjectStatus
from models.projects import Project
from models.workloads import (
    STANDARD_PORTS,
    Credentials,
    ResourceRequest,
    ServicePort,
    VolumeMount,
    WorkloadRole,
    WorkloadSpec,
)
from services.errors import conflict, invalid
from services.images import ImageUse, choose_image
from services.keys import own_key
from services.kinds import CONTAINER
from services.mounts import resolve_mounts, s3_environment
from services.workloads import Owner, catalog_resources, start_recorded


def hash_password(password: str) -> str:
    """SHA-512 crypt, what `chpasswd -e` takes inside the container."""
    with warnings.catch_warnings():
        # crypt is deprecated from 3.11 on, yet it is the standard library's only SHA-512 crypt.
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512))


class Plan(NamedTuple):
    """What a create body means once checked: the same for every container a batch makes."""

    spec_id: str
    resources: ResourceRequest
    credentials: Credentials
    end_at: datetime | None
    mounts: dict[str, list[VolumeMount]]  # by owner ID: a volume's permission depends on who mounts it
    image: ImageUse
    ports: list[ServicePort]


DEFAULT_SERVICES = ("ssh", "jupyter")  # a raw image's, unless the request names others


def _ports(body: ContainerCreate, image: ImageUse) -> list[ServicePort]:
    """The services the container runs: the image's (or some of them), or standard ones for a raw image."""
    if image.services is None:
        names = body.services if body.services is not None else list(DEFAULT_SERVICES)
        unknown = [name for name in names if name not in STANDARD_PORTS]
        if unknown:
            raise invalid(
                "services", f"unknown service {unknown[0]!r}; choose from {', '.join(STANDARD_PORTS)}"
            )
        return [ServicePort(name=name, port=STANDARD_PORTS[name]) for name in names]
    offered = {port.name: port for port in image.services}
    if body.services is None:
        return list(image.services)
    missing = [name for name in body.services if name not in offered]
    if missing:
        raise invalid(
            "services",
            f"the image offers {', '.join(offered) or 'no services'}; {missing[0]!r} is not one of them",
        )
    return [offered[name] for name in body.services]


class Logins(Protocol):
    """A create body's login fields: containers' and clusters' alike."""

    password: str | None
    ssh_public_key: str | None
    ssh_key_id: str | None


def check_login(body: Logins, image: ImageUse) -> None:
    if body.password is not None and "password" not in image.login_methods:
        raise invalid("password", "the image does not allow password login; give an ssh_key_id")
    if (body.ssh_key_id or body.ssh_public_key) and "key" not in image.login_methods:
        field = "ssh_key_id" if body.ssh_key_id else "ssh_public_key"
        raise invalid(field, "the image does not allow key login; give a password")


def credentials_for(session: Session, body: Logins, owner_ids: list[str]) -> Credentials:
    if body.password is None and body.ssh_public_key is None and body.ssh_key_id is None:
        raise invalid("password", "give a password, an ssh_key_id, an ssh_public_key, or more than one")
    authorized = [body.ssh_public_key.strip()] if body.ssh_public_key else []
    if body.ssh_key_id is not None:
        # Keys are personal: every owner of what is made must hold it (a batch gives ssh_public_key).
        keys = {
            own_key(session, owner, body.ssh_key_id, field="ssh_key_id").public_key for owner in owner_ids
        }
        authorized += sorted(keys)
    return Credentials(
        password_hash=hash_password(body.password) if body.password is not None else None,
        authorized_keys=authorized,
    )


def _duration(body: ContainerCreate) -> timedelta | None:
    now = utcnow()
    if body.start_at is not None and body.start_at <= now:
        raise invalid("start_at", "must be in the future")
    if body.end_at is not None and body.hours is not None:
        raise invalid("hours", "give end_at or hours, not both")
    begins = body.start_at or now
    if body.end_at is not None and body.end_at <= begins:
        raise invalid("end_at", "must come after the start")
    return timedelta(hours=body.hours) if body.hours is not None else None


def plan(session: Session, project: Project, body: ContainerCreate, owner_ids: list[str]) -> Plan:
    """Check a create body against the project, the catalog and the volumes each owner may mount; raises
    Conflict or Invalid."""
    if project.status != ProjectStatus.active:
        raise conflict(f"project {project.id} is {project.status}; containers need an active project")
    duration = _duration(body)
    resources = catalog_resources(session, body.spec_id, body.shm_gb)
    image = choose_image(
        session,
        project.id,
        owner_ids[0],
        image_id=body.image_id,
        reference=body.image,
        cuda_version=body.cuda_version,
        resources=resources,
    )
    for owner in owner_ids[1:]:  # a batch: every owner must be allowed the image
        choose_image(
            session,
            project.id,
            owner,
            image_id=body.image_id,
            reference=body.image,
            cuda_version=body.cuda_version,
            resources=resources,
        )
    check_login(body, image)
    end_at = body.end_at if duration is None else (body.start_at or utcnow()) + duration
    mounts = {owner: resolve_mounts(session, project.id, owner, body.mounts) for owner in owner_ids}
    return Plan(
        spec_id=body.spec_id,
        resources=resources,
        credentials=credentials_for(session, body, owner_ids),
        end_at=end_at,
        mounts=mounts,
        image=image,
        ports=_ports(body, image),
    )


async def start_container(
    client: Client,
    settings: Settings,
    project_id: str,
    owner: Owner,
    name: str,
    container_id: str,
    body: ContainerCreate,
    checked: Plan,
) -> None:
    """Start the container's workflow and return once its row is recorded."""
    workload = WorkloadSpec(
        project_id=project_id,
        resource_id=container_id,
        kind=CONTAINER.name,
        owner=owner.username,
        name=name,
        roles=[
            WorkloadRole(
                image=checked.image.reference,
                env={**s3_environment(settings, project_id, checked.mounts[owner.id]), **checked.image.env},
                resources=checked.resources,
                ports=checked.ports,
            )
        ],
        mounts=checked.mounts[owner.id],
        credentials=checked.credentials,
        image_choice=checked.image.choice,
    )
    request = ContainerInput(
        id=container_id,
        project_id=project_id,
        owner_id=owner.id,
        owner=owner.username,
        spec=workload,
        spec_id=checked.spec_id,
        start_at=body.start_at,
        end_at=checked.end_at,
        created_at=utcnow(),
        ssh_key_id=body.ssh_key_id,
    )
    await start_recorded(
        client,
        CONTAINER,
        request,
        resource_id=container_id,
        task_queue=settings.temporal_task_queue,
        project_id=project_id,
        owner=owner.username,
        status=ContainerStatus.scheduled.value,
        summary=f"Container “{name}” of {owner.username} ({checked.image.reference})",
    )
