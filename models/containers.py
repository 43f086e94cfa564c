"""Containers (manual 5.4): the read-model table and what crosses the ContainerWorkflow boundary."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, Field, field_validator
from sqlalchemy import JSON, String
from sqlmodel import Field as SQLField

from models.base import UTCDateTime
from models.images import CUDA_VERSION_PATTERN
from models.inputs import ImageReference, RequestModel
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
from models.workloads import Endpoint


class ContainerStatus(StrEnum):
    scheduled = "scheduled"  # waiting for its start time
    waiting = "waiting"  # queued in the project's quota ledger
    creating = "creating"  # admitted; the runtime is scheduling, pulling or starting it
    running = "running"
    failed = "failed"  # refused at admission, or the runtime reports a failure (reservation kept)
    deleting = "deleting"
    deleted = "deleted"


class ContainerFields(WorkloadFields):
    status: ContainerStatus = SQLField(default=ContainerStatus.scheduled, sa_type=String(24), index=True)
    start_at: datetime | None = SQLField(default=None, sa_type=UTCDateTime)
    end_at: datetime | None = SQLField(default=None, sa_type=UTCDateTime)


class Container(ResourceColumns, UpdatedAt, WorkloadRecord, ContainerFields, table=True):
    ports: list[dict[str, Any]] = SQLField(default_factory=list, sa_type=JSON)
    endpoints: list[dict[str, Any]] = SQLField(default_factory=list, sa_type=JSON)
    ssh_key_id: str | None = SQLField(default=None, max_length=32, index=True)  # its login key, if any


class ContainerTimings(WorkloadTimings):
    check_interval: timedelta = timedelta(hours=1)  # once running or failed: rare looks keep history small


class ContainerState(WorkloadLifecycleState, ContainerFields):
    """Everything the workflow owns; carried through continue-as-new."""

    endpoints: list[Endpoint] = []
    ssh_key_id: str | None = None  # the owner's key installed as authorized_keys

    def record(self) -> dict[str, Any]:
        """The read model's columns for this state."""
        return {
            **ResourceColumns.of(self.spec),
            "ports": [port.model_dump() for port in self.spec.main.ports],
            "endpoints": [endpoint.model_dump() for endpoint in self.endpoints],
        }


class ContainerInput(WorkloadInput):
    start_at: datetime | None = None  # None: now
    end_at: datetime | None = None  # None: runs until deleted or the project shuts it down
    timings: ContainerTimings = ContainerTimings()
    resume: ContainerState | None = None
    ssh_key_id: str | None = None


# ---- API schemas (manual 5.4.1-5.4.3) ------------------------------------------------------------

SSH_KEY_PATTERN = (
    r"^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)"
    r" [A-Za-z0-9+/]+={0,3}( [^\r\n]*)?$"
)


class ContainerCreate(RequestModel):
    name: str = Field(pattern=r"^[a-z0-9]{1,40}$", description="Lowercase letters and digits, 1-40")
    spec_id: str = Field(max_length=32, description="A catalog spec: GPU model and count, vCPU, RAM")
    image: ImageReference | None = Field(None, description="A raw image reference; or give image_id")
    image_id: str | None = Field(None, max_length=32, description="A public or custom image (/images)")
    cuda_version: str | None = Field(None, pattern=CUDA_VERSION_PATTERN, description="One the image offers")
    password: str | None = Field(
        None, min_length=8, max_length=128, description="Root password; only its SHA-512 crypt hash is kept"
    )
    ssh_public_key: str | None = Field(None, max_length=16_384, pattern=SSH_KEY_PATTERN)
    ssh_key_id: str | None = Field(None, max_length=32, description="One of your keys (/users/me/keys)")
    services: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,14}$")]] | None = Field(
        None,
        max_length=16,
        description="Which of the image's services to run; left out: all an image_id offers, or ssh and "
        "jupyter for a raw image",
    )
    shm_gb: float | None = Field(None, gt=0, le=1024)
    start_at: AwareDatetime | None = Field(None, description="Later start; None: now")
    end_at: AwareDatetime | None = Field(None, description="When it is deleted; or give hours")
    hours: float | None = Field(None, gt=0, le=24 * 366)
    mounts: Mounts = Field(default_factory=list, description="Project volumes to mount")

    _mounts = field_validator("mounts")(check_mounts)

    @field_validator("services")
    @classmethod
    def _distinct_services(cls, services: list[str] | None) -> list[str] | None:
        if services is not None and len(set(services)) != len(services):
            raise ValueError("a service is listed twice")
        return services


class ContainerBatchCreate(ContainerCreate):
    members: list[Annotated[str, Field(max_length=32)]] = Field(
        min_length=1, max_length=100, description="Usernames; each owns theirs"
    )
    count_per_member: int = Field(1, ge=1, le=20)


class EndpointPublic(BaseModel):
    name: str
    host: str
    port: int  # where a user connects
    connect: str  # ready to copy: `ssh root@HOST -p PORT`, or a URL


class ContainerPublic(ResourceColumns, UpdatedAt, ContainerFields):
    services: list[str]
    endpoints: list[EndpointPublic]


class ContainerDetail(ContainerPublic, WorkloadDetailFields):
    pass
