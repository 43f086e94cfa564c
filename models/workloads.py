"""What crosses the runtime boundary: a workload to run and what became of it.

Both runtimes (Kubernetes and local processes) take and return exactly these models, so workflows
never know which one runs.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from models.lifecycle import Quota


class WorkloadKind(StrEnum):
    container = "container"
    job = "job"


class WorkloadState(StrEnum):
    pending = "pending"  # accepted by the runtime, not yet scheduled (e.g. waiting for a GPU node)
    creating = "creating"  # scheduled, pulling the image or starting
    running = "running"
    succeeded = "succeeded"  # jobs only
    failed = "failed"  # exit code and reason say why; image pull errors and crash loops too
    gone = "gone"  # the runtime holds nothing for this workload


class ServicePort(BaseModel):
    """A port the image serves; containers get one reachable endpoint per port."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,14}$", examples=["ssh", "jupyter", "tensorboard"])
    port: int = Field(ge=1, le=65535)


# The manual's container services (5.4.2.1) and their usual ports inside the image.
STANDARD_PORTS: dict[str, int] = {
    "ssh": 22,
    "jupyter": 8888,
    "jupyterlab": 8889,
    "tensorboard": 6006,
    "webterminal": 7681,
    "codeserver": 8443,
}


class ResourceRequest(BaseModel):
    gpu: int = Field(0, ge=0)
    gpu_model: str | None = None  # a catalog GPU model name; Kubernetes selects nodes labelled with it
    vcpu: float = Field(gt=0)
    ram_gb: float = Field(gt=0)
    shm_gb: float | None = Field(None, gt=0, description="Memory-backed /dev/shm of this size; None: default")


class Credentials(BaseModel):
    """Only what is safe to keep in workflow history: a password hash, public keys."""

    password_hash: str | None = None  # SHA-512 crypt, usable by chpasswd -e
    authorized_keys: list[str] = []


class WorkloadSpec(BaseModel):
    project_id: str
    resource_id: str
    kind: WorkloadKind
    owner: str  # username, for labels
    name: str  # the user's name for it
    image: str
    command: list[str] | None = None
    env: dict[str, str] = {}
    resources: ResourceRequest
    ports: list[ServicePort] = []
    credentials: Credentials | None = None
    active_deadline_seconds: int | None = Field(None, gt=0, description="Jobs: killed after this long")


class Endpoint(BaseModel):
    name: str
    port: int  # inside the workload
    host: str  # where a user connects
    node_port: int | None = None  # Kubernetes NodePort; None on the local runtime


class RuntimeEvent(BaseModel):
    at: datetime | None
    type: str  # Normal | Warning
    reason: str
    message: str


class WorkloadStatus(BaseModel):
    state: WorkloadState
    reason: str = ""  # e.g. Unschedulable, ImagePullBackOff, CrashLoopBackOff, DeadlineExceeded, Error
    message: str = ""
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    endpoints: list[Endpoint] = []
    gpus: list[str] = []  # device IDs handed to it, where the runtime knows them
    unsupported: list[str] = []  # what this runtime could not honour, said plainly (local: image, node ports)


class ProjectEnvironment(BaseModel):
    """A project's place in the runtime: a namespace with quota and isolation on Kubernetes."""

    project_id: str
    quota: Quota
