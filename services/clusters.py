"""Training clusters (manual 6.2): checking a create body, starting the cluster's workflow, scaling it, and
what its routes read (the hostfile, a pod's log and events)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session
from temporalio.client import Client, WorkflowHandle

from activities.runtime import WorkloadRuntime
from config import Settings
from models.accounts import User
from models.base import utcnow
from models.catalog import GpuModel, Spec
from models.clusters import (
    DISCOVER_HOSTS_SCRIPT,
    HOSTFILE_FOLDER,
    LAUNCHER,
    WORKER,
    Cluster,
    ClusterCreate,
    ClusterInput,
    ClusterScale,
    ClusterScaleAnswer,
    ClusterStatus,
    HostfileView,
    hostfile_text,
    member_resource_id,
)
from models.database import release_connection
from models.lifecycle import ProjectStatus
from models.projects import Project
from models.user_setup import HOME_VOLUME
from models.volumes import MountRequest
from models.workloads import (
    STANDARD_PORTS,
    RuntimeEvent,
    ServicePort,
    VolumeMount,
    WorkloadRole,
    WorkloadSpec,
)
from services.containers import DEFAULT_SERVICES, check_login, credentials_for
from services.errors import Invalid, conflict, invalid, not_found
from services.images import choose_image
from services.kinds import CLUSTER
from services.mounts import resolve_mounts, s3_environment
from services.workloads import catalog_resources, run_update, start_recorded
from workflows.cluster import ClusterWorkflow

SHM_MIN_GB = 1.0
SHM_MAX_SHARE = 0.7  # of the spec's RAM (manual 6.2.1)
WORKER_PORTS = [ServicePort(name="ssh", port=22)]


def _whole_gpus(session: Session, spec_id: str) -> None:
    spec = session.get(Spec, spec_id)
    model = session.get(GpuModel, spec.gpu_model_id) if spec is not None and spec.gpu_model_id else None
    if model is not None and model.shareable:
        raise invalid(
            "spec_id",
            f"spec {spec.name!r} uses {model.name}, a shareable GPU model; a cluster's pods need whole GPUs",  # type: ignore[union-attr]
        )


def _shared_memory(body: ClusterCreate, ram_gb: float) -> float | None:
    if not body.shm:
        if body.shm_gb is not None:
            raise invalid("shm_gb", "shared memory is off (shm false); leave shm_gb out")
        return None
    ceiling = round(ram_gb * SHM_MAX_SHARE, 2)
    if ceiling < SHM_MIN_GB:
        raise invalid("shm", f"the spec's {ram_gb:g} GB of RAM leaves no room for 1 GB of shared memory")
    size = body.shm_gb if body.shm_gb is not None else min(ceiling, max(SHM_MIN_GB, ram_gb / 2))
    if size < SHM_MIN_GB:
        raise invalid("shm_gb", f"shared memory is at least {SHM_MIN_GB:g} GB")
    if size > ceiling:
        raise invalid("shm_gb", f"shared memory is at most 70% of the spec's RAM: {ceiling:g} GB")
    return size


def _schedule(settings: Settings, body: ClusterCreate) -> tuple[datetime | None, datetime]:
    """Its start and end: the end is never further than the platform's maximum from the start."""
    now = utcnow()
    if body.start_at is not None and body.start_at <= now:
        raise invalid("start_at", "must be in the future")
    if body.end_at is not None and body.hours is not None:
        raise invalid("hours", "give end_at or hours, not both")
    begins = body.start_at or now
    longest = timedelta(hours=settings.cluster_max_hours)
    if body.hours is not None:
        if body.hours > settings.cluster_max_hours:
            raise invalid("hours", f"at most {settings.cluster_max_hours:g} hours (the platform's maximum)")
        return body.start_at, begins + timedelta(hours=body.hours)
    if body.end_at is not None:
        if body.end_at <= begins:
            raise invalid("end_at", "must come after the start")
        if body.end_at - begins > longest:
            raise invalid("end_at", f"at most {settings.cluster_max_hours:g} hours after the start")
        return body.start_at, body.end_at
    return body.start_at, begins + longest


def _home(session: Session, body: ClusterCreate, owner: User) -> list[VolumeMount]:
    """The owner's home at /home/<username> in every pod, unless mounts already place it."""
    if not body.mount_home or any(m.volume_id == HOME_VOLUME for m in body.mounts):
        return []
    request = MountRequest(volume_id=HOME_VOLUME, path=f"/home/{owner.username}")
    try:
        return resolve_mounts(session, "", owner.id, [request], field="mount_home")
    except Invalid as exc:
        raise invalid("mount_home", f"{exc.message}; or create the cluster with mount_home false") from exc


def cluster_spec(
    session: Session, settings: Settings, project: Project, body: ClusterCreate, owner: User, cluster_id: str
) -> WorkloadSpec:
    """The cluster's whole spec once every rule holds; 422 naming the field otherwise."""
    if project.status != ProjectStatus.active:
        raise conflict(f"project {project.id} is {project.status}; clusters need an active project")
    resources = catalog_resources(session, body.spec_id, None)
    _whole_gpus(session, body.spec_id)
    resources = resources.model_copy(update={"shm_gb": _shared_memory(body, resources.ram_gb)})
    image = choose_image(
        session,
        project.id,
        owner.id,
        image_id=body.image_id,
        reference=body.image,
        cuda_version=body.cuda,
        resources=resources,
    )
    if image.frameworks is not None and body.type.value not in image.frameworks:
        offered = ", ".join(image.frameworks) or "none"
        raise invalid("image_id", f"the image does not offer {body.type.value} (it offers: {offered})")
    check_login(body, image)
    mounts = resolve_mounts(session, project.id, owner.id, list(body.mounts)) + _home(session, body, owner)
    ports = image.services
    if ports is None:
        ports = [ServicePort(name=name, port=STANDARD_PORTS[name]) for name in DEFAULT_SERVICES]
    env = {**s3_environment(settings, project.id, mounts), **image.env}
    workers = body.containers - 1
    return WorkloadSpec(
        project_id=project.id,
        resource_id=cluster_id,
        kind=CLUSTER.name,
        owner=owner.username,
        name=body.name,
        roles=[
            WorkloadRole(name=LAUNCHER, image=image.reference, env=env, resources=resources, ports=ports),
            WorkloadRole(
                name=WORKER,
                count=workers,
                image=image.reference,
                env=env,
                resources=resources,
                ports=WORKER_PORTS,
                expose=False,
            ),
        ],
        mounts=mounts,
        credentials=credentials_for(session, body, [owner.id]),
        image_choice=image.choice,
    )


async def start_cluster(
    client: Client,
    session: Session,
    settings: Settings,
    project: Project,
    owner: User,
    cluster_id: str,
    body: ClusterCreate,
) -> None:
    spec = cluster_spec(session, settings, project, body, owner, cluster_id)
    start_at, end_at = _schedule(settings, body)
    release_connection(session)
    request = ClusterInput(
        id=cluster_id,
        project_id=project.id,
        owner_id=owner.id,
        owner=owner.username,
        spec=spec,
        spec_id=body.spec_id,
        created_at=utcnow(),
        type=body.type,
        description=body.description,
        start_at=start_at,
        end_at=end_at,
        ssh_key_id=body.ssh_key_id,
    )
    await start_recorded(
        client,
        CLUSTER,
        request,
        resource_id=cluster_id,
        task_queue=settings.temporal_task_queue,
        project_id=project.id,
        owner=owner.username,
        status=ClusterStatus.scheduled.value,
        summary=f"{body.type.value} cluster “{body.name}” of {owner.username}: {body.containers} containers",
    )


async def scale(client: Client, row: Cluster, body: ClusterScale) -> ClusterScaleAnswer:
    """The workflow's validator decides whether it may scale now (409 when it does not run)."""
    handle: WorkflowHandle[Any, Any] = client.get_workflow_handle(CLUSTER.workflow_id(row.id))
    answer: ClusterScaleAnswer = await run_update(
        handle, ClusterWorkflow.scale, body, ended=f"cluster {row.id} is {row.status}; it cannot be scaled"
    )
    return answer


def hostfile_view(row: Cluster) -> HostfileView:
    return HostfileView(
        type=row.type,
        generation=row.hostfile_generation,
        hosts=list(row.hosts),
        slots=row.slots,
        path=f"{HOSTFILE_FOLDER}/hostfile",
        hostfile=hostfile_text(row.type, list(row.hosts), row.slots),
        discover_hosts=DISCOVER_HOSTS_SCRIPT,
    )


def pod_resource(row: Cluster, pod: str) -> str:
    """A pod of the cluster by its name (launcher, worker-00, ...): 404 for one it does not have."""
    names = {entry["name"] for entry in row.pods}
    if pod not in names:
        raise not_found("pod", pod)
    return member_resource_id(row.id, pod)


def pod_log(runtime: WorkloadRuntime, row: Cluster, pod: str, lines: int) -> str:
    return runtime.logs(row.project_id, CLUSTER.name, pod_resource(row, pod), lines)


def pod_events(runtime: WorkloadRuntime, row: Cluster, pod: str) -> list[RuntimeEvent]:
    return runtime.events(row.project_id, CLUSTER.name, pod_resource(row, pod))
