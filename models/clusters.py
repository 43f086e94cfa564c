"""Distributed training clusters (manual 6): the read-model table and what crosses the ClusterWorkflow
boundary.

A cluster is one launcher and N-1 workers, every one a pod of the same catalog spec with its own reservation
in the project's ledger. Its members are named `launcher`, `worker-00`, `worker-01`, ...: stable ordinals, so
scale-in removes the highest first and a re-created worker comes back under its old name. The hostfile lists
the workers that run, never one still waiting for quota.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, Field, field_validator
from sqlalchemy import JSON, String
from sqlmodel import Field as SQLField

from models.base import UTCDateTime
from models.containers import SSH_KEY_PATTERN, EndpointPublic
from models.images import CUDA_VERSION_PATTERN
from models.inputs import ImageReference, Multiline, RequestModel
from models.usage import RunPeriod
from models.volumes import Mounts, check_mounts
from models.workload_lifecycle import (
    ResourceColumns,
    UpdatedAt,
    WorkloadDetailFields,
    WorkloadFields,
    WorkloadInput,
    WorkloadLifecycleState,
    WorkloadRecord,
    WorkloadTimings,
)
from models.workloads import ClusterMembership, Credentials, Endpoint, WorkloadSpec, WorkloadState

LAUNCHER = "launcher"
WORKER = "worker"  # the workers' role in the cluster's spec
WORKER_PREFIX = "worker-"
MAX_CONTAINERS = 64  # one launcher and up to 63 workers
NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"


def worker_name(ordinal: int) -> str:
    return f"{WORKER_PREFIX}{ordinal:02d}"


def member_resource_id(cluster_id: str, member: str) -> str:
    """A member's runtime resource ID and its reservation's key in the ledger: derived, never user input."""
    return f"{cluster_id}-{member}"


class ClusterType(StrEnum):
    horovod = "horovod"
    deepspeed = "deepspeed"


class ClusterStatus(StrEnum):
    scheduled = "scheduled"  # waiting for its start time
    waiting = "waiting"  # the launcher waits for quota (the reason says what is short)
    creating = "creating"  # 建立中: reserved, the pods start
    running = "running"  # 運行中: the launcher and at least one worker are ready
    scaling = "scaling"  # a scale request is being carried out
    failed = "failed"  # its pods could not run; what was created is removed, what was reserved released
    deleting = "deleting"
    deleted = "deleted"


class MemberPhase(StrEnum):
    queued = "queued"  # asked the ledger; waits for quota with its place
    reserved = "reserved"  # quota held, not yet created
    pending = "pending"  # created; the runtime schedules or starts it
    running = "running"  # ready; a worker in this phase is in the hostfile
    failed = "failed"  # the runtime reports a failure: a worker is re-created
    draining = "draining"  # scale-in: out of the hostfile, about to be deleted


class ClusterMember(BaseModel):
    """One pod of the cluster as the workflow keeps it."""

    name: str  # launcher | worker-00 ...
    ordinal: int | None = None  # workers only
    phase: MemberPhase = MemberPhase.queued
    requested: bool = False  # the ledger has its request
    admitted: bool = False
    applied: bool = False  # the runtime may hold a pod for it
    queue_position: int | None = None
    reason: str = ""
    message: str = ""
    started_at: datetime | None = None
    restarts: int = 0  # how often it was re-created after a loss
    reported: bool = False  # the ledger was told it runs
    endpoints: list[Endpoint] = []

    @property
    def is_launcher(self) -> bool:
        return self.name == LAUNCHER


class ClusterFields(WorkloadFields):
    status: ClusterStatus = SQLField(default=ClusterStatus.scheduled, sa_type=String(24), index=True)
    type: ClusterType = SQLField(sa_type=String(16), index=True)
    description: str = SQLField(default="", max_length=500)
    containers: int = 2  # what was asked for, launcher included
    launcher_ready: int = 0
    launcher_total: int = 1
    workers_ready: int = 0
    workers_total: int = 1
    hostfile_generation: int = 0
    start_at: datetime | None = SQLField(default=None, sa_type=UTCDateTime)
    end_at: datetime | None = SQLField(default=None, sa_type=UTCDateTime)
    ssh_key_id: str | None = SQLField(default=None, max_length=32, index=True)


class Cluster(ResourceColumns, UpdatedAt, WorkloadRecord, ClusterFields, table=True):
    pods: list[dict[str, Any]] = SQLField(default_factory=list, sa_type=JSON)
    hosts: list[str] = SQLField(default_factory=list, sa_type=JSON)  # the hostfile's, in its order
    ports: list[dict[str, Any]] = SQLField(default_factory=list, sa_type=JSON)
    endpoints: list[dict[str, Any]] = SQLField(default_factory=list, sa_type=JSON)  # the launcher's
    slots: int = 1  # per host: the spec's GPUs, or 1 for a CPU-only spec
    max_hours: float | None = None


class ClusterTimings(WorkloadTimings):
    check_interval: timedelta = timedelta(minutes=1)  # once running: lost workers are noticed this soon
    ready_max_poll: timedelta = timedelta(seconds=5)  # while members start or scale


class ClusterState(WorkloadLifecycleState, ClusterFields):
    """Everything the workflow owns; carried through continue-as-new. `spec` is the cluster's whole spec:
    role `launcher` (count 1) and role `worker` (count: the workers asked for)."""

    members: list[ClusterMember] = []
    public_key: str = ""  # the cluster's own SSH key, whose private half never leaves the runtime
    prepared: bool = False  # the cluster's shared objects exist
    hosts: list[str] = []  # what the launcher's hostfile lists now
    hosts_written_for: datetime | None = None  # the launcher start the hostfile was written into
    slots: int = 1
    scale_to: int | None = None  # a scale request not carried out yet; the last one wins

    def run_periods(self) -> list[RunPeriod]:
        """One per pod running now: a pod lost or scaled in drops out, and so its period closes."""
        roles = {role.name: role.resources for role in self.spec.roles}
        periods = []
        for member in self.members:
            if member.started_at is not None:
                resources = roles[LAUNCHER if member.is_launcher else WORKER]
                periods.append(
                    RunPeriod(
                        pod=member.name,
                        started_at=member.started_at,
                        gpu=resources.gpu,
                        gpu_model=resources.gpu_model,
                    )
                )
        return periods

    def record(self) -> dict[str, Any]:
        launcher = next((m for m in self.members if m.is_launcher), None)
        return {
            **ResourceColumns.of(self.spec),
            "pods": [pod_view(member, self.hosts).model_dump(mode="json") for member in self.members],
            "hosts": list(self.hosts),
            "ports": [port.model_dump() for port in self.spec.main.ports],
            "endpoints": [e.model_dump() for e in launcher.endpoints] if launcher else [],
            "slots": self.slots,
        }


class ClusterInput(WorkloadInput):
    type: ClusterType
    description: str = ""
    start_at: datetime | None = None
    end_at: datetime | None = None
    ssh_key_id: str | None = None
    timings: ClusterTimings = ClusterTimings()
    resume: ClusterState | None = None


# ---- the runtime boundary ------------------------------------------------------------------------


class ClusterPlace(BaseModel):
    """What a runtime makes once per cluster: its host names' domain, its SSH key, its hostfile's home."""

    project_id: str
    cluster_id: str
    owner: str
    name: str
    type: ClusterType


class ClusterHosts(BaseModel):
    """The hosts the launcher's hostfile lists (member names, in ordinal order) and its generation."""

    project_id: str
    cluster_id: str
    owner: str
    type: ClusterType
    hosts: list[str]
    slots: int = Field(ge=1)
    generation: int = Field(ge=1)


class ClusterRef(BaseModel):
    project_id: str
    cluster_id: str


# ---- API schemas (manual 6.2) ---------------------------------------------------------------------


class ClusterCreate(RequestModel):
    name: str = Field(
        pattern=NAME_PATTERN,
        description="Lowercase letters, digits and '-', starting and ending with a letter or digit; 1-40",
    )
    description: Annotated[str, Multiline] = Field("", max_length=500)
    type: ClusterType = Field(description="The framework: horovod or deepspeed")
    containers: int = Field(
        ge=2, le=MAX_CONTAINERS, description="Pods in all: one launcher, the rest workers"
    )
    spec_id: str = Field(max_length=32, description="A catalog spec; a GPU spec must hold whole GPUs")
    image: ImageReference | None = Field(None, description="A raw image reference; or give image_id")
    image_id: str | None = Field(
        None, max_length=32, description="A public or custom image offering the type"
    )
    cuda: str | None = Field(None, pattern=CUDA_VERSION_PATTERN, description="One the image offers")
    password: str | None = Field(
        None, min_length=8, max_length=128, description="The launcher's root password; only its hash is kept"
    )
    ssh_key_id: str | None = Field(None, max_length=32, description="One of your keys (/users/me/keys)")
    ssh_public_key: str | None = Field(None, max_length=16_384, pattern=SSH_KEY_PATTERN)
    shm_gb: float | None = Field(
        None, gt=0, le=1024, description="Shared memory per pod; at least 1 GB, at most 70% of the RAM"
    )
    shm: bool = Field(True, description="Memory-backed /dev/shm (on by default)")
    mount_home: bool = Field(True, description="Mount your home folder at /home/<username>")
    mounts: Mounts = Field(default_factory=list, description="Project volumes to mount in every pod")
    start_at: AwareDatetime | None = Field(None, description="Later start; None: now")
    end_at: AwareDatetime | None = Field(None, description="When it is deleted; or give hours")
    hours: float | None = Field(None, gt=0, le=24 * 366, description="Deleted after this many hours")

    _mounts = field_validator("mounts")(check_mounts)


class ClusterScale(RequestModel):
    containers: int = Field(ge=2, le=MAX_CONTAINERS, description="The new total, launcher included")


class ClusterScaleAnswer(BaseModel):
    containers: int
    status: str
    message: str = ""


class ClusterPod(BaseModel):
    """A pod as the detail page lists it (manual 6.2.2)."""

    name: str
    role: str  # launcher | worker
    status: str  # queued, reserved, pending, running, failed, draining
    ready: bool
    in_hostfile: bool = False
    queue_position: int | None = None
    started_at: datetime | None = None
    restarts: int = 0
    reason: str = ""
    message: str = ""
    # Its newest samples (GPU %, vCPU %, memory %...), in the detail only; the series are under /metrics.
    utilisation: dict[str, float] = {}


def pod_view(member: ClusterMember, hosts: list[str] | None = None) -> ClusterPod:
    return ClusterPod(
        name=member.name,
        role=LAUNCHER if member.is_launcher else WORKER,
        status=member.phase.value,
        ready=member.phase == MemberPhase.running,
        in_hostfile=member.name in (hosts or []),
        queue_position=member.queue_position,
        started_at=member.started_at,
        restarts=member.restarts,
        reason=member.reason,
        message=member.message,
    )


class ClusterPublic(ResourceColumns, UpdatedAt, ClusterFields):
    services: list[str]
    endpoints: list[EndpointPublic]  # the launcher's
    hosts: list[str]  # the hostfile's, in its order
    slots: int
    pods: list[ClusterPod]


class ClusterDetail(ClusterPublic, WorkloadDetailFields):
    pass


class HostfileView(BaseModel):
    type: ClusterType
    generation: int
    hosts: list[str]
    slots: int
    path: str  # where the launcher reads it on Kubernetes
    variable: str = "MLCP_HOSTFILE"  # names the path on every runtime
    hostfile: str  # DeepSpeed: `host slots=G` lines; Horovod: `host:G` lines
    discover_hosts: str  # the script horovodrun --host-discovery-script runs


MEMBER_STATE_PHASES: dict[WorkloadState, MemberPhase] = {
    WorkloadState.pending: MemberPhase.pending,
    WorkloadState.creating: MemberPhase.pending,
    WorkloadState.running: MemberPhase.running,
    WorkloadState.failed: MemberPhase.failed,
    WorkloadState.succeeded: MemberPhase.failed,  # a pod of a cluster is not meant to end
}


# ---- the hostfile, the same on every runtime ------------------------------------------------------------

HOSTFILE_FOLDER = "/etc/mlcp"  # on Kubernetes; the local runtime keeps it in the launcher's folder
HOSTFILE_ENV, HOSTS_ENV, DISCOVER_HOSTS_ENV = "MLCP_HOSTFILE", "MLCP_HOSTS", "MLCP_DISCOVER_HOSTS"
# Prints the current hosts (`host:slots`) each time horovodrun polls it, so elastic runs follow scaling.
DISCOVER_HOSTS_SCRIPT = '#!/bin/sh\nexec cat "$(dirname "$0")/hosts"\n'


def hostfile_text(cluster_type: ClusterType, hosts: list[str], slots: int) -> str:
    """DeepSpeed reads `host slots=G` lines; Horovod and mpirun `host:G` lines."""
    if cluster_type == ClusterType.deepspeed:
        return "".join(f"{host} slots={slots}\n" for host in hosts)
    return hosts_text(hosts, slots)


def hosts_text(hosts: list[str], slots: int) -> str:
    return "".join(f"{host}:{slots}\n" for host in hosts)


def hostfile_files(hosts: ClusterHosts) -> dict[str, str]:
    """The files of the launcher's hostfile folder; `generation` last, so a reader that sees it sees all."""
    return {
        "hostfile": hostfile_text(hosts.type, hosts.hosts, hosts.slots),
        "hosts": hosts_text(hosts.hosts, hosts.slots),
        "discover_hosts.sh": DISCOVER_HOSTS_SCRIPT,
        "generation": f"{hosts.generation}\n",
    }


def member_spec(state: ClusterState, member: ClusterMember) -> WorkloadSpec:
    """A member's own single-pod spec: the launcher with the user's services and logins, a worker with SSH
    for the launcher only; both trust the cluster's key."""
    cluster = state.spec
    role = cluster.roles[0] if member.is_launcher else cluster.roles[1]
    user = cluster.credentials or Credentials()
    credentials = Credentials(
        password_hash=user.password_hash if member.is_launcher else None,
        authorized_keys=(user.authorized_keys if member.is_launcher else []) + [state.public_key],
    )
    return cluster.model_copy(
        update={
            "resource_id": member_resource_id(cluster.resource_id, member.name),
            "name": f"{cluster.name}-{member.name}",
            "roles": [role.model_copy(update={"name": "main", "count": 1})],
            "credentials": credentials,
            "cluster": ClusterMembership(cluster_id=cluster.resource_id, member=member.name),
        }
    )
