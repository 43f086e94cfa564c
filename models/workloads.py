"""What crosses the runtime boundary: a workload to run and what became of it.

Both runtimes (Kubernetes and local processes) take and return exactly these models, so workflows
never know which one runs.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from models.lifecycle import Quota

# A workload kind's name: its label value, the prefix of its workflow IDs and of its runtime objects' names.
# Which kinds exist is the registry's business (services/kinds.py); a runtime refuses one it does not know.
KIND_PATTERN = r"^[a-z][a-z0-9]{1,23}$"


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


MAIN_ROLE = "main"

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
    """What one replica of a role holds while it runs; the project's ledger reserves it."""

    gpu: int = Field(0, ge=0, le=1024)
    gpu_model: str | None = None  # a catalog GPU model name; Kubernetes selects nodes labelled with it
    vcpu: float = Field(gt=0, le=100_000)
    ram_gb: float = Field(gt=0, le=1_000_000)
    shm_gb: float | None = Field(None, gt=0, description="Memory-backed /dev/shm of this size; None: default")
    storage_gb: float = Field(0, ge=0, description="Storage it reserves in the project's ledger")

    def quota(self, count: int = 1) -> Quota:
        return Quota(
            gpu=self.gpu * count,
            vcpu=self.vcpu * count,
            ram_gb=self.ram_gb * count,
            storage_gb=self.storage_gb * count,
        )


class Credentials(BaseModel):
    """Only what is safe to keep in workflow history: a password hash, public keys."""

    password_hash: str | None = None  # SHA-512 crypt, usable by chpasswd -e
    authorized_keys: list[str] = []


def check_mount_path(path: str, relative: bool = False) -> str:
    if not relative and not path.startswith("/"):
        raise ValueError("must be an absolute path")
    if relative and path.startswith("/"):
        raise ValueError("must be relative to the volume")
    parts = path.strip("/").split("/")
    if any(part in ("..", ".") for part in parts) or any(ord(char) < 32 for char in path):
        raise ValueError("must be a plain path: no '.', '..' or control characters")
    if not relative and path.rstrip("/") in RESERVED_MOUNT_PATHS:
        raise ValueError(f"{path} is the system's own; choose another path")
    return path


# Mounting over these would hide what the workload needs to run.
RESERVED_MOUNT_PATHS = frozenset(
    {"/", "/bin", "/dev", "/etc", "/lib", "/lib64", "/proc", "/sbin", "/sys", "/usr"}
)


class VolumeMount(BaseModel):
    """A project volume mounted into every replica of the workload. Where it lives is derived from its ID
    (on Kubernetes the claim `volume-<id>`, locally a folder under the home folder), never taken from input.
    An s3 volume reaches the workload through its bucket and the project's identity in the environment."""

    volume_id: str = Field(pattern=r"^[a-z][a-z0-9]{0,31}$")  # `home`: the owner's home (volume_type home)
    volume_type: str = Field("nfs", pattern=r"^(nfs|s3|home)$")
    mount_path: str = Field(min_length=2, max_length=1024, examples=["/data", "/home/alice"])
    sub_path: str = Field("", max_length=1024, description="A folder inside the volume; empty: all of it")
    read_only: bool = False
    workdir: bool = False  # the default Jupyter working directory
    nfs_server: str = ""  # a home on Kubernetes: where the runtime mounts it from (its settings)
    nfs_path: str = ""
    via_claim: bool = False  # an s3 volume on Kubernetes with an S3 CSI driver: its claim is mounted too

    @field_validator("mount_path", "sub_path")
    @classmethod
    def _plain_path(cls, path: str, info: ValidationInfo) -> str:
        return check_mount_path(path, relative=info.field_name == "sub_path") if path else path


class WorkloadRole(BaseModel):
    """One kind of replica: a container's single pod, a job's run, a cluster's launcher or its workers."""

    name: str = Field(MAIN_ROLE, pattern=r"^[a-z][a-z0-9]{0,15}$")
    count: int = Field(1, ge=0, le=256)
    image: str
    command: list[str] | None = None
    env: dict[str, str] = {}
    resources: ResourceRequest
    ports: list[ServicePort] = []
    # Whether users reach its ports (NodePort services on Kubernetes); a cluster's workers serve SSH to the
    # launcher alone, inside the project.
    expose: bool = True


class ClusterMembership(BaseModel):
    """A pod of a training cluster: which cluster (its shared objects: host names, SSH key, hostfile) and
    which member, `launcher` or `worker-NN`, which is also its host name."""

    cluster_id: str = Field(pattern=r"^[a-z0-9]{1,32}$")
    member: str = Field(pattern=r"^(launcher|worker-[0-9]{2,3})$")

    @property
    def is_launcher(self) -> bool:
        return self.member == "launcher"


class ImageChoice(BaseModel):
    """Which published or committed image a workload runs (its reference is the role's image), the CUDA
    version chosen from those it offers, and the warning given when the image's GPU stack and the spec's GPU
    vendor differ. Recorded and shown; the runtime acts on the reference and the environment alone."""

    image_id: str | None = None
    cuda_version: str | None = None
    warning: str = ""


class WorkloadSpec(BaseModel):
    project_id: str
    resource_id: str
    kind: str = Field(pattern=KIND_PATTERN)
    owner: str  # username, for labels
    name: str  # the user's name for it
    roles: list[WorkloadRole] = Field(min_length=1, max_length=8)
    mounts: list[VolumeMount] = []
    credentials: Credentials | None = None
    image_choice: ImageChoice = ImageChoice()
    cluster: ClusterMembership | None = None
    active_deadline_seconds: int | None = Field(None, gt=0, description="Jobs: killed after this long")

    @model_validator(mode="after")
    def _distinct_roles(self) -> WorkloadSpec:
        names = [role.name for role in self.roles]
        if len(set(names)) != len(names):
            raise ValueError("roles: each role needs its own name")
        return self

    @property
    def main(self) -> WorkloadRole:
        """The first role: the only one of a container or a job, a cluster's launcher."""
        return self.roles[0]

    def quota(self) -> Quota:
        """What the whole workload reserves: every replica of every role."""
        total = Quota()
        for role in self.roles:
            total = total + role.resources.quota(role.count)
        return total


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
