"""Containers (manual 5.4.1-5.4.3): create, list, detail with events and logs, delete one or several."""

from __future__ import annotations

import asyncio
import hashlib
import warnings
from datetime import datetime, timedelta
from typing import Annotated, Any, NamedTuple

from fastapi import APIRouter, Header, Query
from sqlalchemy import func
from sqlmodel import Session, col, select
from temporalio.client import Client, WorkflowHandle

from activities.runtime import runtime_from_settings
from api.deps import (
    CurrentUser,
    OptionalTemporalDep,
    SessionDep,
    SettingsDep,
    TemporalDep,
    release_connection,
)
from api.errors import ApiError, conflict, invalid
from api.project_access import (
    QueuePlace,
    changeable_workload,
    live_places_for,
    readable_workload,
    require_member,
    require_project_admin,
    sees_every_workload,
    visible_project,
)
from api.temporal import run_update, start_workload
from config import Settings
from models.accounts import User
from models.base import Page, new_id, utcnow
from models.catalog import GpuModel, Spec
from models.containers import (
    Container,
    ContainerBatchCreate,
    ContainerCreate,
    ContainerDelete,
    ContainerDeleteResult,
    ContainerDeleteResults,
    ContainerDetail,
    ContainerIds,
    ContainerInput,
    ContainerPublic,
    ContainerStatus,
    EndpointPublic,
)
from models.lifecycle import ProjectStatus
from models.projects import Project
from models.workloads import (
    STANDARD_PORTS,
    Credentials,
    ResourceRequest,
    ServicePort,
    WorkloadKind,
    WorkloadSpec,
)
from workflows.container import ContainerWorkflow, workflow_id

router = APIRouter(prefix="/api/v1/projects/{project_id}/containers", tags=["containers"])

NAME_MAX = 40


def hash_password(password: str) -> str:
    """SHA-512 crypt, what `chpasswd -e` takes inside the container."""
    with warnings.catch_warnings():
        # crypt is deprecated from 3.11 on, yet it is the standard library's only SHA-512 crypt.
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512))


def _container_id(user_id: str, project_id: str, idempotency_key: str | None) -> str:
    """A retried create with the same Idempotency-Key reaches the same container, never a second one."""
    if not idempotency_key:
        return new_id()
    return "c" + hashlib.sha256(f"{user_id}:{project_id}:{idempotency_key}".encode()).hexdigest()[:9]


def _endpoint(raw: dict[str, object]) -> EndpointPublic:
    name, host = str(raw["name"]), str(raw["host"])
    node_port, inner_port = raw.get("node_port"), raw["port"]
    port = int(str(node_port if node_port is not None else inner_port))
    connect = f"ssh root@{host} -p {port}" if name == "ssh" else f"http://{host}:{port}/"
    return EndpointPublic(name=name, host=host, port=port, connect=connect)


def to_public(row: Container, places: dict[str, QueuePlace] | None = None) -> ContainerPublic:
    """The row as the API shows it; `places` (the project's live queue) corrects a waiting one's place."""
    place = (places or {}).get(row.id) if row.status == ContainerStatus.waiting else None
    return ContainerPublic(
        id=row.id,
        project_id=row.project_id,
        owner=row.owner,
        name=row.name,
        spec_id=row.spec_id,
        image=row.image,
        gpu=row.gpu,
        gpu_model=row.gpu_model,
        vcpu=row.vcpu,
        ram_gb=row.ram_gb,
        shm_gb=row.shm_gb,
        services=[str(port["name"]) for port in row.ports],
        status=row.status,
        reason=row.reason,
        message=place.message if place else row.message,
        queue_position=place.position if place else row.queue_position,
        endpoints=[_endpoint(raw) for raw in row.endpoints],
        start_at=row.start_at,
        end_at=row.end_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _resources(session: Session, body: ContainerCreate) -> tuple[Spec, ResourceRequest]:
    spec = session.get(Spec, body.spec_id)
    if spec is None:
        raise invalid("spec_id", f"no spec {body.spec_id!r}")
    if not spec.is_active:
        raise invalid("spec_id", f"spec {spec.name!r} is retired")
    gpu_model = session.get(GpuModel, spec.gpu_model_id) if spec.gpu_model_id else None
    return spec, ResourceRequest(
        gpu=spec.gpu_count,
        gpu_model=gpu_model.name if gpu_model else None,
        vcpu=spec.vcpu,
        ram_gb=spec.ram_gb,
        shm_gb=body.shm_gb,
    )


def _credentials(body: ContainerCreate) -> Credentials:
    if body.password is None and body.ssh_public_key is None:
        raise invalid("password", "give a password, an ssh_public_key or both")
    return Credentials(
        password_hash=hash_password(body.password) if body.password is not None else None,
        authorized_keys=[body.ssh_public_key.strip()] if body.ssh_public_key else [],
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


class Owner(NamedTuple):
    id: str
    username: str


class Plan(NamedTuple):
    """What a create body means once checked: the same for every container a batch makes."""

    spec_id: str
    resources: ResourceRequest
    credentials: Credentials
    end_at: datetime | None


def _plan(session: Session, project: Project, body: ContainerCreate) -> Plan:
    if project.status != ProjectStatus.active:
        raise conflict(f"project {project.id} is {project.status}; containers need an active project")
    duration = _duration(body)
    spec, resources = _resources(session, body)
    end_at = body.end_at if duration is None else (body.start_at or utcnow()) + duration
    return Plan(spec_id=spec.id, resources=resources, credentials=_credentials(body), end_at=end_at)


async def _start(
    client: Client,
    settings: Settings,
    project_id: str,
    owner: Owner,
    name: str,
    container_id: str,
    body: ContainerCreate,
    plan: Plan,
) -> None:
    """Start the container's workflow and return once its row is recorded.

    A retried create (same Idempotency-Key, so the same ID) joins the running workflow instead; one that
    has finished already was recorded long ago.
    """
    workload = WorkloadSpec(
        project_id=project_id,
        resource_id=container_id,
        kind=WorkloadKind.container,
        owner=owner.username,
        name=name,
        image=body.image,
        resources=plan.resources,
        ports=[ServicePort(name=service, port=STANDARD_PORTS[service]) for service in body.services],
        credentials=plan.credentials,
    )
    request = ContainerInput(
        id=container_id,
        project_id=project_id,
        owner_id=owner.id,
        owner=owner.username,
        spec=workload,
        spec_id=plan.spec_id,
        start_at=body.start_at,
        end_at=plan.end_at,
        created_at=utcnow(),
    )
    await start_workload(
        client,
        ContainerWorkflow.run,
        request,
        workflow_id=workflow_id(container_id),
        task_queue=settings.temporal_task_queue,
        project_id=project_id,
        owner=owner.username,
        kind="container",
        status=ContainerStatus.scheduled.value,
        summary=f"Container “{name}” of {owner.username} ({body.image})",
    )


def _recorded_row(session: Session, container_id: str) -> Container:
    session.expire_all()
    row = session.get(Container, container_id)
    if row is None:  # the workflow records before it answers: only a lost row gets here
        raise ApiError(500, "internal_error", f"container {container_id} started but has no record")
    return row


@router.post(
    "",
    response_model=ContainerPublic,
    status_code=201,
    description="Create a container (建立容器) in an active project you are a member of. Only a SHA-512 "
    "crypt hash of the password is kept. Send an Idempotency-Key header to make retries safe.",
)
async def create_container(
    project_id: str,
    body: ContainerCreate,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
) -> ContainerPublic:
    project, members = visible_project(session, project_id, user)
    require_member(members, user, "create containers")
    plan = _plan(session, project, body)
    container_id = _container_id(user.id, project_id, idempotency_key)
    owner = Owner(id=user.id, username=user.username)
    release_connection(session)
    await _start(client, settings, project_id, owner, body.name, container_id, body, plan)
    return to_public(_recorded_row(session, container_id))


@router.post(
    "/batch",
    response_model=list[ContainerPublic],
    status_code=201,
    description="Project admins create count_per_member containers for each listed member, named "
    "<name>1, <name>2, ...; each is owned by its member. Idempotency-Key makes retries safe.",
)
async def create_containers_for_members(
    project_id: str,
    body: ContainerBatchCreate,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
) -> list[ContainerPublic]:
    project, members = visible_project(session, project_id, user)
    require_project_admin(members, user, "create containers for members")
    by_name = {member.username: member for member in members}
    for index, username in enumerate(body.members):
        if username not in by_name:
            raise invalid(f"members[{index}]", f"{username!r} is not a member of the project")
    if len(set(body.members)) != len(body.members):
        raise invalid("members", "a member is listed twice")
    if len(body.name) + len(str(body.count_per_member)) > NAME_MAX:
        raise invalid("name", f"with its number it must stay within {NAME_MAX} characters")
    plan = _plan(session, project, body)
    made: list[str] = []
    starts = []
    for username in body.members:
        owner = Owner(id=by_name[username].user_id, username=username)
        for number in range(1, body.count_per_member + 1):
            key = f"{idempotency_key}:{username}:{number}" if idempotency_key else None
            container_id = _container_id(user.id, project_id, key)
            name = f"{body.name}{number}"
            starts.append(_start(client, settings, project_id, owner, name, container_id, body, plan))
            made.append(container_id)
    release_connection(session)
    await asyncio.gather(*starts)
    return [to_public(_recorded_row(session, container_id)) for container_id in made]


@router.get(
    "",
    response_model=Page[ContainerPublic],
    description="Project admins see every member's containers, members their own. Deleted ones are "
    "hidden unless status asks for them.",
)
async def list_containers(
    project_id: str,
    user: CurrentUser,
    session: SessionDep,
    client: OptionalTemporalDep,
    status: Annotated[list[ContainerStatus] | None, Query(description="Repeat to match several")] = None,
    owner: Annotated[str | None, Query(max_length=64, description="Owner's username")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Page[ContainerPublic]:
    _, members = visible_project(session, project_id, user)
    statement = select(Container).where(Container.project_id == project_id)
    if not sees_every_workload(members, user):
        statement = statement.where(Container.owner_id == user.id)
    if status:
        statement = statement.where(col(Container.status).in_(status))
    else:
        statement = statement.where(Container.status != ContainerStatus.deleted)
    if owner:
        statement = statement.where(Container.owner == owner)
    total = session.exec(select(func.count()).select_from(statement.subquery())).one()
    rows = session.exec(
        statement.order_by(col(Container.created_at).desc(), col(Container.id)).offset(offset).limit(limit)
    ).all()
    places = await live_places_for(client, session, project_id, rows)
    return Page(items=[to_public(row, places) for row in rows], total=total, limit=limit, offset=offset)


@router.get(
    "/{container_id}",
    response_model=ContainerDetail,
    description="Status, queue position, endpoints ready to copy, and the runtime's events and log tail.",
)
async def read_container(
    project_id: str,
    container_id: str,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    client: OptionalTemporalDep,
) -> ContainerDetail:
    row, _ = readable_workload(session, Container, "container", project_id, container_id, user)
    places = await live_places_for(client, session, project_id, [row])
    runtime = runtime_from_settings(settings)
    events = await asyncio.to_thread(runtime.events, project_id, WorkloadKind.container, container_id)
    log_tail = await asyncio.to_thread(runtime.logs, project_id, WorkloadKind.container, container_id, 200)
    return ContainerDetail(**to_public(row, places).model_dump(), events=events, log_tail=log_tail)


async def _delete(client: Client, session: Session, row: Container, user: User) -> ContainerDeleteResult:
    handle: WorkflowHandle[Any, Any] = client.get_workflow_handle(workflow_id(row.id))
    release_connection(session)
    state = await run_update(
        handle,
        ContainerWorkflow.delete,
        ContainerDelete(user_id=user.id, username=user.username),
        ended=f"container {row.id} is already deleted",
    )
    return ContainerDeleteResult(id=row.id, ok=True, status=state.status, message=state.message)


@router.delete(
    "/{container_id}",
    response_model=ContainerDeleteResult,
    status_code=202,
    description="Delete a container (owner or project admin); it is gone once its status is deleted.",
)
async def delete_container(
    project_id: str, container_id: str, user: CurrentUser, session: SessionDep, client: TemporalDep
) -> ContainerDeleteResult:
    row = changeable_workload(session, Container, "container", project_id, container_id, user)
    return await _delete(client, session, row, user)


@router.post(
    "/delete",
    response_model=ContainerDeleteResults,
    description="Delete several containers; each is authorised on its own and reported by id.",
)
async def delete_containers(
    project_id: str, body: ContainerIds, user: CurrentUser, session: SessionDep, client: TemporalDep
) -> ContainerDeleteResults:
    visible_project(session, project_id, user)

    async def one(container_id: str) -> ContainerDeleteResult:
        try:
            row = changeable_workload(session, Container, "container", project_id, container_id, user)
            return await _delete(client, session, row, user)
        except ApiError as exc:
            return ContainerDeleteResult(id=container_id, ok=False, error=exc.code, message=exc.message)

    return ContainerDeleteResults(
        results=[await one(container_id) for container_id in dict.fromkeys(body.ids)]
    )
