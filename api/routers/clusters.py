"""Training clusters (manual 6.2): the shared workload routes, plus scaling, the hostfile, and each pod's log
and events."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import Path, Query
from fastapi.responses import PlainTextResponse
from sqlmodel import Session

from api.deps import CurrentUser, PathId, RuntimeDep, SessionDep, TemporalDep
from api.routers.containers import endpoint_public
from api.workload_routes import CreateContext, KindRoutes, workload_router
from models.base import utcnow
from models.clusters import (
    Cluster,
    ClusterCreate,
    ClusterScale,
    ClusterScaleAnswer,
    HostfileView,
)
from models.workloads import RuntimeEvent
from services import clusters, monitoring
from services.access import changeable, readable
from services.kinds import CLUSTER
from services.workloads import recorded_row, resource_id

POD_NAME = r"^(launcher|worker-[0-9]{2,3})$"


def _extras(row: Cluster) -> dict[str, Any]:
    return {
        "services": [str(port["name"]) for port in row.ports],
        "endpoints": [endpoint_public(raw) for raw in row.endpoints],
        "pods": row.pods,
        "hosts": row.hosts,
        "slots": row.slots,
    }


def _pods_with_utilisation(session: Session, row: Cluster) -> dict[str, Any]:
    latest = monitoring.latest_values(session, row.id, utcnow())
    return {"pods": [pod | {"utilisation": latest.get(str(pod.get("name")), {})} for pod in row.pods]}


async def _start(context: CreateContext, body: ClusterCreate) -> Cluster:
    user = context.user
    cluster_id = resource_id(CLUSTER, user.id, context.project.id, context.idempotency_key)
    await clusters.start_cluster(
        context.client, context.session, context.settings, context.project, user, cluster_id, body
    )
    row: Cluster = recorded_row(context.session, CLUSTER, cluster_id)
    return row


ROUTES = KindRoutes(
    kind=CLUSTER,
    create_body=ClusterCreate,
    start=_start,
    extras=_extras,
    runtime_holds=lambda row: False,  # its pods speak for it: /pods/{pod}/log and /events
    detail_extras=_pods_with_utilisation,
    create_description="Create a distributed training cluster (建立分佈式訓練叢集): one launcher and "
    "containers-1 workers of one spec, each pod reserving its own quota. Only a SHA-512 crypt hash of the "
    "password is kept. Send an Idempotency-Key header to make retries safe.",
    detail_description="Status, launcher and worker counts, the pods with their status, start time and "
    "newest utilisation, the hosts in the hostfile, and the launcher's endpoints.",
)
router = workload_router(ROUTES)


@router.post(
    "/{resource_id}/scale",
    response_model=ClusterScaleAnswer,
    status_code=202,
    description="Scale to a new total of containers, launcher included (manual 6.2.4), while it runs. "
    "New workers join the hostfile once they run (one waiting for quota stays out); on scale-in the "
    "highest workers leave the hostfile before they are deleted. The last request wins.",
)
async def scale_cluster(
    project_id: PathId,
    resource_id: PathId,
    body: ClusterScale,
    user: CurrentUser,
    session: SessionDep,
    client: TemporalDep,
) -> ClusterScaleAnswer:
    row = changeable(session, Cluster, CLUSTER.name, project_id, resource_id, user)
    return await clusters.scale(client, row, body)


@router.get(
    "/{resource_id}/hostfile",
    response_model=HostfileView,
    description="The hostfile the launcher holds now (its ready workers) and its generation.",
)
def read_hostfile(
    project_id: PathId, resource_id: PathId, user: CurrentUser, session: SessionDep
) -> HostfileView:
    row, _ = readable(session, Cluster, CLUSTER.name, project_id, resource_id, user)
    return clusters.hostfile_view(row)


PodName = Annotated[str, Path(pattern=POD_NAME, description="launcher, worker-00, worker-01, ...")]


@router.get(
    "/{resource_id}/pods/{pod}/log",
    response_class=PlainTextResponse,
    description="The tail of one pod's log (launcher, worker-00, ...).",
)
async def read_pod_log(
    project_id: PathId,
    resource_id: PathId,
    pod: PodName,
    user: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
    lines: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> PlainTextResponse:
    row, _ = readable(session, Cluster, CLUSTER.name, project_id, resource_id, user)
    return PlainTextResponse(await asyncio.to_thread(clusters.pod_log, runtime, row, pod, lines))


@router.get(
    "/{resource_id}/pods/{pod}/events",
    response_model=list[RuntimeEvent],
    description="One pod's events from the runtime.",
)
async def read_pod_events(
    project_id: PathId,
    resource_id: PathId,
    pod: PodName,
    user: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
) -> list[RuntimeEvent]:
    row, _ = readable(session, Cluster, CLUSTER.name, project_id, resource_id, user)
    return await asyncio.to_thread(clusters.pod_events, runtime, row, pod)
