"""Containers (manual 5.4.1-5.4.3): the shared workload routes, with endpoints ready to copy, and the batch
create a project admin makes for members."""

from __future__ import annotations

import asyncio
from typing import Any

from api.deps import CurrentUser, PathId, SessionDep, SettingsDep, TemporalDep
from api.workload_routes import CreateContext, IdempotencyKey, KindRoutes, workload_router
from models.containers import (
    Container,
    ContainerBatchCreate,
    ContainerCreate,
    ContainerPublic,
    EndpointPublic,
)
from models.database import release_connection
from services.access import require_project_admin, visible_project
from services.containers import plan, start_container
from services.errors import invalid
from services.kinds import CONTAINER
from services.workloads import Owner, recorded_row, resource_id

NAME_MAX = 40


def endpoint_public(raw: dict[str, Any]) -> EndpointPublic:
    name, host = str(raw["name"]), str(raw["host"])
    node_port, inner_port = raw.get("node_port"), raw["port"]
    port = int(str(node_port if node_port is not None else inner_port))
    connect = f"ssh root@{host} -p {port}" if name == "ssh" else f"http://{host}:{port}/"
    return EndpointPublic(name=name, host=host, port=port, connect=connect)


def _extras(row: Container) -> dict[str, Any]:
    return {
        "services": [str(port["name"]) for port in row.ports],
        "endpoints": [endpoint_public(raw) for raw in row.endpoints],
    }


async def _start(context: CreateContext, body: ContainerCreate) -> Container:
    user, project_id = context.user, context.project.id
    checked = plan(context.session, context.project, body, [user.id])
    container_id = resource_id(CONTAINER, user.id, project_id, context.idempotency_key)
    release_connection(context.session)
    owner = Owner(id=user.id, username=user.username)
    await start_container(
        context.client, context.settings, project_id, owner, body.name, container_id, body, checked
    )
    row: Container = recorded_row(context.session, CONTAINER, container_id)
    return row


ROUTES = KindRoutes(
    kind=CONTAINER,
    create_body=ContainerCreate,
    start=_start,
    extras=_extras,
    create_description="Create a container (建立容器) in an active project you are a member of. Only a "
    "SHA-512 crypt hash of the password is kept. Send an Idempotency-Key header to make retries safe.",
    detail_description="Status, queue position, endpoints ready to copy, and the runtime's events and log "
    "tail.",
)
router = workload_router(ROUTES)


@router.post(
    "/batch",
    response_model=list[ContainerPublic],
    status_code=201,
    description="Project admins create count_per_member containers for each listed member, named "
    "<name>1, <name>2, ...; each is owned by its member. Idempotency-Key makes retries safe.",
)
async def create_containers_for_members(
    project_id: PathId,
    body: ContainerBatchCreate,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    idempotency_key: IdempotencyKey = None,
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
    checked = plan(session, project, body, [by_name[username].user_id for username in body.members])
    made: list[str] = []
    starts = []
    for username in body.members:
        owner = Owner(id=by_name[username].user_id, username=username)
        for number in range(1, body.count_per_member + 1):
            key = f"{idempotency_key}:{username}:{number}" if idempotency_key else None
            container_id = resource_id(CONTAINER, user.id, project_id, key)
            name = f"{body.name}{number}"
            starts.append(
                start_container(client, settings, project_id, owner, name, container_id, body, checked)
            )
            made.append(container_id)
    release_connection(session)
    await asyncio.gather(*starts)
    return [ROUTES.public(recorded_row(session, CONTAINER, container_id)) for container_id in made]
