"""The routes every workload kind has, built from its registry entry: create (update-with-start, with an
Idempotency-Key), list (who sees what, filters, paging, live queue places), detail (with the runtime's
events and log tail), delete one and delete several. A kind's API module adds only what is its own.

This module does not use postponed annotations: FastAPI reads each route's parameter types from the
function, and here they are the kind's own models, known only when the router is built.
"""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from pydantic import BaseModel
from sqlalchemy import func
from sqlmodel import Session, col, select
from temporalio.client import Client

from activities.runtime import WorkloadRuntime
from api.deps import (
    CurrentUser,
    Limit,
    Offset,
    OptionalTemporalDep,
    PathId,
    RuntimeDep,
    SessionDep,
    SettingsDep,
    TemporalDep,
)
from api.monitoring_routes import add_monitoring_routes
from config import Settings
from models.accounts import User
from models.base import Page
from models.projects import Project, ProjectMember
from models.workload_lifecycle import WorkloadDeleteResult, WorkloadDeleteResults, WorkloadIds
from services import workloads
from services.access import changeable, readable, require_member, sees_everything_in, visible_project
from services.errors import DomainError
from services.kinds import WorkloadKind
from services.projects import QueuePlace, live_places_for

DETAIL_LOG_LINES = 200
IdempotencyKey = Annotated[
    str | None, Header(max_length=128, description="Repeat it to make a retried create safe")
]


@dataclass(frozen=True)
class CreateContext:
    session: Session
    client: Client
    settings: Settings
    project: Project
    members: list[ProjectMember]
    user: User
    idempotency_key: str | None


@dataclass(frozen=True)
class ListContext:
    session: Session
    client: Client | None
    project_id: str
    members: list[ProjectMember]
    user: User
    owner: str | None
    filtered: bool  # a status filter or a later page: only the workloads themselves


@dataclass(frozen=True)
class KindRoutes:
    """What a kind's routes need beyond its registry entry."""

    kind: WorkloadKind
    create_body: type[BaseModel]
    # Checks the body and starts the workload; answers with its recorded row.
    start: Callable[[CreateContext, Any], Awaitable[Any]]
    create_description: str
    # Fields of the public model that are not columns of the table, from the row.
    extras: Callable[[Any], dict[str, Any]] = lambda row: {}
    # Whether the runtime still holds the workload (so its events and live log are worth asking for).
    runtime_holds: Callable[[Any], bool] = lambda row: True
    # The log tail once the runtime holds it no more (a kept copy), or "".
    kept_log: Callable[[Session, Any, int], str] = lambda session, row, lines: ""
    # What the detail shows beyond the public model, read when it is asked for (e.g. the newest samples).
    detail_extras: Callable[[Session, Any], dict[str, Any]] = lambda session, row: {}
    page: type[Page[Any]] | None = None  # the list's answer, if more than a page of the public model
    page_extras: Callable[[ListContext], Awaitable[dict[str, Any]]] | None = None
    before_delete: Callable[[Session, str, str, User], None] = lambda session, project, row_id, user: None
    list_description: str = ""
    detail_description: str = ""

    def public(self, row: Any, places: dict[str, QueuePlace] | None = None) -> Any:
        """The row as the API shows it; `places` (the project's live queue) corrects a waiting one's place."""
        values = {name: getattr(row, name) for name in self.kind.public.model_fields if hasattr(row, name)}
        place = (places or {}).get(row.id) if row.status == "waiting" else None
        if place is not None:
            values |= {"message": place.message, "queue_position": place.position}
        return self.kind.public.model_validate(values | self.extras(row))

    async def log_tail(self, session: Session, runtime: WorkloadRuntime, row: Any, lines: int) -> str:
        """From the runtime while it holds the workload; from the kept copy afterwards."""
        if self.runtime_holds(row):
            live = await _in_thread(runtime.logs, row.project_id, self.kind.name, row.id, lines)
            if live:
                return str(live)
        return self.kept_log(session, row, lines)


async def _in_thread(function: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(function, *args)


def workload_router(routes: KindRoutes) -> APIRouter:
    kind = routes.kind
    noun, Create, Public, Detail = kind.name, routes.create_body, kind.public, kind.detail
    Status = kind.status
    PageModel = routes.page or Page[Public]  # type: ignore[valid-type]
    router = APIRouter(prefix=f"/api/v1/projects/{{project_id}}/{kind.plural}", tags=[kind.plural])

    async def create(
        project_id: PathId,
        body: Create,  # type: ignore[valid-type]
        user: CurrentUser,
        session: SessionDep,
        settings: SettingsDep,
        client: TemporalDep,
        idempotency_key: IdempotencyKey = None,
    ) -> Any:
        project, members = visible_project(session, project_id, user)
        require_member(members, user, f"create {kind.plural}")
        context = CreateContext(session, client, settings, project, members, user, idempotency_key)
        return routes.public(await routes.start(context, body))

    async def list_all(
        project_id: PathId,
        user: CurrentUser,
        session: SessionDep,
        client: OptionalTemporalDep,
        status: Annotated[
            list[Status] | None,  # type: ignore[valid-type]
            Query(max_length=len(Status), description="Repeat to match several"),
        ] = None,
        owner: Annotated[str | None, Query(max_length=64, description="Owner's username")] = None,
        name: Annotated[str | None, Query(max_length=64, description="Part of the name")] = None,
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> Any:
        _, members = visible_project(session, project_id, user)
        table: Any = kind.table
        statement = select(table).where(table.project_id == project_id)
        if not sees_everything_in(members, user):
            statement = statement.where(table.owner_id == user.id)
        if status:
            statement = statement.where(col(table.status).in_(status))
        else:
            statement = statement.where(col(table.status).not_in(kind.hidden_statuses))
        if owner:
            statement = statement.where(table.owner == owner)
        if name:
            statement = statement.where(func.lower(table.name).contains(name.lower(), autoescape=True))
        total = session.exec(select(func.count()).select_from(statement.subquery())).one()
        rows = session.exec(
            statement.order_by(col(table.created_at).desc(), col(table.id)).offset(offset).limit(limit)
        ).all()
        places = await live_places_for(client, session, project_id, rows)
        extras: dict[str, Any] = {}
        if routes.page_extras is not None:
            context = ListContext(session, client, project_id, members, user, owner, bool(status or offset))
            extras = await routes.page_extras(context)
        items = [routes.public(row, places) for row in rows]
        return PageModel(items=items, total=total, limit=limit, offset=offset, **extras)

    async def read(
        project_id: PathId,
        resource_id: PathId,
        user: CurrentUser,
        session: SessionDep,
        runtime: RuntimeDep,
        client: OptionalTemporalDep,
    ) -> Any:
        row, _ = readable(session, kind.table, noun, project_id, resource_id, user)
        places = await live_places_for(client, session, project_id, [row])
        events = []
        if routes.runtime_holds(row):
            events = await _in_thread(runtime.events, project_id, noun, resource_id)
        log_tail = await routes.log_tail(session, runtime, row, DETAIL_LOG_LINES)
        fields = {"events": events, "log_tail": log_tail} | routes.detail_extras(session, row)
        return Detail.model_validate(routes.public(row, places).model_dump() | fields)

    async def delete_one(
        project_id: PathId, resource_id: PathId, user: CurrentUser, session: SessionDep, client: TemporalDep
    ) -> WorkloadDeleteResult:
        routes.before_delete(session, project_id, resource_id, user)
        row = changeable(session, kind.table, noun, project_id, resource_id, user)
        return await workloads.delete(client, session, kind, row, user)

    async def delete_several(
        project_id: PathId, body: WorkloadIds, user: CurrentUser, session: SessionDep, client: TemporalDep
    ) -> WorkloadDeleteResults:
        visible_project(session, project_id, user)
        results = []
        for resource_id in dict.fromkeys(body.ids):
            try:
                routes.before_delete(session, project_id, resource_id, user)
                row = changeable(session, kind.table, noun, project_id, resource_id, user)
                results.append(await workloads.delete(client, session, kind, row, user))
            except DomainError as exc:
                results.append(
                    WorkloadDeleteResult(id=resource_id, ok=False, error=exc.code, message=exc.message)
                )
        return WorkloadDeleteResults(results=results)

    router.add_api_route(
        "",
        create,
        methods=["POST"],
        name=f"create_{noun}",
        response_model=Public,
        status_code=201,
        description=routes.create_description,
    )
    router.add_api_route(
        "",
        list_all,
        methods=["GET"],
        name=f"list_{kind.plural}",
        response_model=PageModel,
        description=routes.list_description
        or f"Project admins see every member's {kind.plural}, members their own; newest first. Deleted "
        "ones are hidden unless status asks for them.",
    )
    router.add_api_route(
        "/delete",
        delete_several,
        methods=["POST"],
        name=f"delete_{kind.plural}",
        response_model=WorkloadDeleteResults,
        description=f"Delete several {kind.plural}; each is authorised on its own and reported by id.",
    )
    router.add_api_route(
        "/{resource_id}",
        read,
        methods=["GET"],
        name=f"read_{noun}",
        response_model=Detail,
        description=routes.detail_description
        or "Status, queue position, the runtime's events and the log tail.",
    )
    router.add_api_route(
        "/{resource_id}",
        delete_one,
        methods=["DELETE"],
        name=f"delete_{noun}",
        response_model=WorkloadDeleteResult,
        status_code=202,
        description=f"Delete a {noun} (owner or project admin); it is gone once its status is deleted.",
    )
    add_monitoring_routes(router, kind)
    return router
