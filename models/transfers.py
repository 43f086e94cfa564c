"""The transfer service (傳輸容器, manual 5.7.2): per member and project, an SFTP service over every volume
the member may reach. It is a long-running workload like a container (the same statuses, state and lifecycle
steps), with a table of its own and one route set per member."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import JSON
from sqlmodel import Field as SQLField

from models.containers import ContainerFields, ContainerStatus
from models.inputs import RequestModel
from models.workload_lifecycle import ResourceColumns, UpdatedAt, WorkloadRecord

TransferStatus = ContainerStatus
SFTP_PORT = 2222  # inside a Kubernetes pod; on the local runtime a free loopback port
VOLUMES_ROOT = "/volumes"


class Transfer(ResourceColumns, UpdatedAt, WorkloadRecord, ContainerFields, table=True):
    ports: list[dict[str, Any]] = SQLField(default_factory=list, sa_type=JSON)
    endpoints: list[dict[str, Any]] = SQLField(default_factory=list, sa_type=JSON)


class TransferCreate(RequestModel):
    password: str = Field(
        min_length=8, max_length=128, description="The SFTP password; only its argon2 hash is kept"
    )


class TransferVolume(BaseModel):
    id: str
    name: str
    read_only: bool


class TransferPublic(BaseModel):
    id: str
    project_id: str
    owner: str
    status: str
    reason: str
    message: str
    volumes: list[TransferVolume]  # at /<name> in the SFTP session
    host: str | None
    port: int | None
    connect: str | None = Field(None, description="Ready to copy: sftp -P PORT user@HOST")
