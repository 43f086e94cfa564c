"""Project volumes (儲存裝置, manual 5.7): the read-model table, the API's schemas and what crosses the
VolumeWorkflow boundary.

`VolumeFields` is declared once and shared by the table, the public model and the workflow's state. The
permission is the one field the workflow does not own: it decides who may mount the volume and how,
which the API checks when a workload is created, so it lives in the row alone.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import BigInteger, String
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from models.base import UTCDateTime, utcnow
from models.inputs import RequestModel
from models.workloads import check_mount_path

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
MAX_CAPACITY_GB = 1_000_000
GIB = 1024**3


class VolumeType(StrEnum):
    nfs = "nfs"  # a folder on the NFS server (or under MLCP_HOME on the local runtime); clones by copy
    s3 = "s3"  # the manual's MinIO: a bucket with a hard capacity on an S3-compatible server


class VolumePermission(StrEnum):
    project_read = "project_read"  # 專案可讀: its owner writes, every member reads
    project_write = "project_write"  # 專案可讀寫
    owner = "owner"  # 僅個人可讀寫


class VolumeStatus(StrEnum):
    creating = "creating"
    available = "available"  # 可用
    unavailable = "unavailable"  # 不可用: the reason says why
    deleting = "deleting"
    deleted = "deleted"


LIVE_VOLUME_STATUSES = frozenset({VolumeStatus.creating, VolumeStatus.available, VolumeStatus.unavailable})


class VolumeFields(SQLModel):
    id: str = SQLField(primary_key=True, max_length=32)
    project_id: str = SQLField(foreign_key="project.id", index=True, ondelete="CASCADE")
    name: str = SQLField(max_length=63, index=True)
    type: VolumeType = SQLField(sa_type=String(8))
    capacity_gb: float | None = None  # s3: the bucket's hard capacity; nfs: none (the export's own)
    owner: str = SQLField(max_length=32)
    status: VolumeStatus = SQLField(default=VolumeStatus.creating, sa_type=String(16), index=True)
    reason: str = SQLField(default="", max_length=128)
    message: str = SQLField(default="", max_length=2000)
    # None: not measured yet, or the backend cannot tell
    usage_bytes: int | None = SQLField(default=None, sa_type=BigInteger)
    usage_at: datetime | None = SQLField(default=None, sa_type=UTCDateTime)
    over_quota: bool = False
    supports_clone: bool = True
    cloned_from: str | None = SQLField(default=None, max_length=32)
    created_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)


class Volume(VolumeFields, table=True):
    owner_id: str = SQLField(foreign_key="user.id", index=True)
    permission: VolumePermission = SQLField(sa_type=String(16))
    version: int = 0
    updated_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)


class StorageSettings(SQLModel, table=True):
    """The platform's storage settings, one row (id 1), changed by platform admins through the API."""

    __tablename__ = "storage_settings"
    id: int = SQLField(default=1, primary_key=True)
    max_volume_gb: float | None = None  # per s3 volume; None: unlimited
    updated_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)


class StorageIdentity(SQLModel, table=True):
    """A project's S3 identity as the API shows it. The secret key itself is kept by the runtime (a Secret
    in the namespace, a 0600 file locally) and shown once: `secret_pending` until it has been."""

    __tablename__ = "storage_identity"
    project_id: str = SQLField(primary_key=True, foreign_key="project.id", ondelete="CASCADE")
    access_key: str = SQLField(max_length=128)
    secret_pending: bool = True
    rotated_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)


# ---- the workflow boundary -------------------------------------------------------------------------


class VolumeTimings(BaseModel):
    usage_interval: timedelta = timedelta(minutes=5)


class VolumeState(VolumeFields):
    owner_id: str
    permission: VolumePermission  # the row's from creation on: the API changes it there
    version: int = 0
    bucket: str = ""
    quota_note: str = ""
    reserved_gb: float = 0  # what the project's ledger holds for it
    delete_requested_by: str | None = None
    delete_reason: str = ""


class VolumeInput(BaseModel):
    state: VolumeState
    timings: VolumeTimings = VolumeTimings()


class VolumeResize(BaseModel):
    capacity_gb: float
    requested_by: str


class VolumeDelete(BaseModel):
    requested_by: str
    reason: str = ""


# ---- API schemas (manual 5.7.1-5.7.4) ----------------------------------------------------------------

CapacityGb = Annotated[float, Field(gt=0, le=MAX_CAPACITY_GB, description="GB (1 GB = 2^30 bytes)")]


class VolumeCreate(RequestModel):
    name: str = Field(min_length=1, max_length=63, pattern=NAME_PATTERN, examples=["my-storage-01"])
    type: VolumeType
    permission: VolumePermission = VolumePermission.project_write
    capacity_gb: CapacityGb | None = Field(None, description="Required for s3 volumes")


def s3_bucket_variable(mount_path: str) -> str:
    """MLCP_S3_BUCKET_DATA for /data: one variable per s3 mount, named after where it was asked for."""
    stem = re.sub(r"[^A-Z0-9]+", "_", mount_path.upper()).strip("_") or "ROOT"
    return f"MLCP_S3_BUCKET_{stem}"


class MountRequest(RequestModel):
    """A volume a container, job or job template mounts (manual 5.4.1, 5.5.1)."""

    volume_id: str = Field(pattern=r"^[a-z][a-z0-9]{0,31}$")
    path: str = Field(min_length=2, max_length=1024, examples=["/data"])
    read_only: bool = False
    workdir: bool = Field(False, description="The default Jupyter working directory (one mount at most)")

    @field_validator("path")
    @classmethod
    def _mount_path(cls, path: str) -> str:
        return check_mount_path(path)


Mounts = Annotated[list[MountRequest], Field(max_length=16)]


def check_mounts(mounts: list[MountRequest]) -> list[MountRequest]:
    paths = [mount.path.rstrip("/") for mount in mounts]
    if len(set(paths)) != len(paths):
        raise ValueError("two mounts share a path")
    if sum(mount.workdir for mount in mounts) > 1:
        raise ValueError("at most one mount is the working directory")
    return mounts


class VolumeUpdate(RequestModel):
    permission: VolumePermission


class VolumeExpand(RequestModel):
    capacity_gb: CapacityGb


class VolumeClone(RequestModel):
    name: str = Field(min_length=1, max_length=63, pattern=NAME_PATTERN)


class VolumePublic(VolumeFields):
    permission: VolumePermission
    updated_at: datetime


class VolumeLimits(BaseModel):
    """What the create form shows (manual 5.7.1.2)."""

    max_volume_gb: float | None  # the platform's per-volume maximum; None: unlimited
    project_total_gb: float  # the project's storage quota (its ledger's storage line)
    project_used_gb: float  # s3 capacities and other storage reserved
    project_remaining_gb: float
    largest_allowed_gb: float  # the largest capacity a new s3 volume may have now
    shown: str  # the manual's display rule: which of the figures the form shows


class VolumeCredentials(BaseModel):
    endpoint: str
    secure: bool
    region: str
    bucket: str
    access_key: str
    secret_key: str | None = Field(
        None, description="Only on the first call after the identity is made or rotated; never again"
    )
    note: str = ""


class StorageSettingsPublic(BaseModel):
    max_volume_gb: float | None
    updated_at: datetime


class StorageSettingsUpdate(RequestModel):
    max_volume_gb: CapacityGb | None = Field(None, description="Per s3 volume; null: unlimited")


class StorageIdentityPublic(BaseModel):
    project_id: str
    access_key: str
    secret_pending: bool  # the next credentials call shows the secret key
    rotated_at: datetime
