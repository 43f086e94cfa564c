"""Images (鏡像, manual 5.8): public images platform admins publish, custom images members commit from their
containers, and what crosses the ImageCommitWorkflow boundary.

`ImageFields` is declared once: what any image says of itself (name, tag, what it offers). A public image
adds its reference and uploader; a custom image adds its project, owner, type, status and what its commit
recorded (digest, size, notes). What the image offers decides what a container made from it may ask for:
its services and their ports, its login methods, the CUDA versions it carries.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints, ValidationInfo, field_validator, model_validator
from sqlalchemy import JSON, BigInteger, String, UniqueConstraint
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from models.base import UTCDateTime, utcnow
from models.inputs import ImageReference, Multiline, RequestModel
from models.workloads import STANDARD_PORTS, ServicePort

IMAGE_NAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$"  # a registry repository path component
IMAGE_TAG_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
CUDA_VERSION_PATTERN = r"^[0-9]{1,2}\.[0-9]{1,2}(\.[0-9]{1,3})?$"
DESCRIPTION_MAX = 1000
# The manual's warning when an image's GPU stack and the spec's GPU vendor differ (5.8.1.3).
ROCM_ON_NVIDIA = "鏡像所預載 ROCm 應用，與 NVIDIA 規格可能發生衝突 (ROCm image, NVIDIA spec)"
CUDA_ON_AMD = "鏡像所預載 CUDA 應用，與 AMD 規格可能發生衝突 (CUDA image, AMD spec)"


class Accelerator(StrEnum):
    cuda = "cuda"
    rocm = "rocm"
    none = "none"


class LoginMethod(StrEnum):
    password = "password"
    key = "key"


class Framework(StrEnum):
    """Distributed training frameworks an image carries; a training cluster of that type needs one."""

    horovod = "horovod"
    deepspeed = "deepspeed"


class ImageType(StrEnum):
    private = "private"  # 私有: its owner uses it (the project's admins see it)
    project = "project"  # 專案: every member of the project uses it


class ImageStatus(StrEnum):
    committing = "committing"
    available = "available"  # 可使用
    failed = "failed"  # the reason says why
    deleting = "deleting"
    deleted = "deleted"


LIVE_IMAGE_STATUSES = frozenset({ImageStatus.committing, ImageStatus.available, ImageStatus.failed})


def cuda_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


class ImageFields(SQLModel):
    id: str = SQLField(primary_key=True, max_length=32)
    name: str = SQLField(max_length=64, index=True)
    tag: str = SQLField(max_length=128)
    description: str = SQLField(default="", max_length=DESCRIPTION_MAX)
    size_bytes: int | None = SQLField(default=None, sa_type=BigInteger)
    os: str = SQLField(default="linux", max_length=32)
    accelerator: Accelerator = SQLField(default=Accelerator.none, sa_type=String(8), index=True)
    cuda_versions: list[str] = SQLField(default_factory=list, sa_type=JSON)
    services: list[dict[str, Any]] = SQLField(default_factory=list, sa_type=JSON)  # ServicePort dumps
    login_methods: list[str] = SQLField(default_factory=lambda: ["password", "key"], sa_type=JSON)
    frameworks: list[str] = SQLField(default_factory=list, sa_type=JSON)  # horovod, deepspeed
    created_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)

    def service_ports(self) -> list[ServicePort]:
        return [ServicePort.model_validate(service) for service in self.services]


class PublicImage(ImageFields, table=True):
    __tablename__ = "public_image"
    __table_args__ = (UniqueConstraint("name", "tag", name="uq_public_image_name_tag"),)
    reference: str = SQLField(max_length=512)
    uploader: str = SQLField(max_length=32)
    uploader_id: str | None = SQLField(default=None, foreign_key="user.id", ondelete="SET NULL")


class CustomImageColumns(SQLModel):
    """What a custom image adds: shown, and owned by its workflow once the commit starts."""

    project_id: str = SQLField(foreign_key="project.id", index=True, ondelete="CASCADE")
    owner: str = SQLField(max_length=32)
    type: ImageType = SQLField(default=ImageType.private, sa_type=String(8), index=True)
    status: ImageStatus = SQLField(default=ImageStatus.committing, sa_type=String(12), index=True)
    reason: str = SQLField(default="", max_length=128)
    message: str = SQLField(default="", max_length=2000)
    reference: str = SQLField(default="", max_length=512)  # by digest, once available
    digest: str = SQLField(default="", max_length=80)
    source_container_id: str = SQLField(max_length=32, index=True)
    base_image: str = SQLField(default="", max_length=512)  # what the container ran
    notes: list[str] = SQLField(default_factory=list, sa_type=JSON)  # what the commit did not capture
    stage: str = SQLField(default="", max_length=32)  # of the commit: resolving, committing, pushing...
    progress_bytes: int | None = SQLField(default=None, sa_type=BigInteger)


class CustomImage(CustomImageColumns, ImageFields, table=True):
    __tablename__ = "custom_image"
    owner_id: str = SQLField(foreign_key="user.id", index=True)
    version: int = 0  # the workflow's state version; older snapshots never overwrite newer ones


# ---- API schemas ---------------------------------------------------------------------------------

Description = Annotated[str, Multiline, StringConstraints(strip_whitespace=True, max_length=DESCRIPTION_MAX)]
CudaVersion = Annotated[str, Field(pattern=CUDA_VERSION_PATTERN, examples=["12.1"])]


class ServiceOffer(RequestModel):
    """A service the image runs; a standard one's port defaults to its usual one, a custom one names it."""

    name: str = Field(
        pattern=r"^[a-z][a-z0-9-]{0,14}$", description=f"{', '.join(STANDARD_PORTS)} or your own"
    )
    port: int | None = Field(
        None, ge=1, le=65535, description="Inside the image; a standard service's default"
    )

    @model_validator(mode="after")
    def _port_known(self) -> ServiceOffer:
        if self.port is None and self.name not in STANDARD_PORTS:
            raise ValueError(f"port: a custom service ({self.name}) needs its port")
        return self

    def served(self) -> ServicePort:
        return ServicePort(name=self.name, port=self.port or STANDARD_PORTS[self.name])


def check_offers(offers: list[ServiceOffer] | None) -> list[ServiceOffer] | None:
    if offers is None:
        return None
    served = [offer.served() for offer in offers]
    if len({port.name for port in served}) != len(served):
        raise ValueError("a service is listed twice")
    if len({port.port for port in served}) != len(served):
        raise ValueError("two services share a port")
    return offers


def check_cuda(versions: list[str] | None) -> list[str] | None:
    if versions is None:
        return None
    if len(set(versions)) != len(versions):
        raise ValueError("a CUDA version is listed twice")
    return sorted(versions, key=cuda_key)


class ImageOffer(RequestModel):
    """What an image offers; shared by the public image's create and update."""

    description: Description = ""
    size_bytes: int | None = Field(None, ge=0, le=10**15)
    os: str = Field("linux", pattern=r"^[a-z][a-z0-9._-]{0,31}$")
    accelerator: Accelerator = Accelerator.none
    cuda_versions: list[CudaVersion] = Field(default_factory=list, max_length=32)
    services: list[ServiceOffer] = Field(default_factory=list, max_length=16)
    login_methods: list[LoginMethod] = Field(
        default_factory=lambda: [LoginMethod.password, LoginMethod.key], max_length=2
    )
    frameworks: list[Framework] = Field(
        default_factory=list, max_length=2, description="Training clusters of these types may use it"
    )

    _services = field_validator("services")(check_offers)

    @field_validator("cuda_versions")
    @classmethod
    def _cuda_needs_cuda(cls, versions: list[str], info: ValidationInfo) -> list[str] | None:
        if versions and info.data.get("accelerator") != Accelerator.cuda:
            raise ValueError("only an image whose accelerator is cuda offers CUDA versions")
        return check_cuda(versions)


class PublicImageCreate(ImageOffer):
    name: str = Field(pattern=IMAGE_NAME_PATTERN, description="Lowercase letters, digits, '.', '_', '-'")
    tag: str = Field(pattern=IMAGE_TAG_PATTERN)
    reference: ImageReference


class PublicImageUpdate(RequestModel):
    """Fields left out stay as they are."""

    name: str | None = Field(None, pattern=IMAGE_NAME_PATTERN)
    tag: str | None = Field(None, pattern=IMAGE_TAG_PATTERN)
    reference: ImageReference | None = None
    description: Description | None = None
    size_bytes: int | None = Field(None, ge=0, le=10**15)
    os: str | None = Field(None, pattern=r"^[a-z][a-z0-9._-]{0,31}$")
    accelerator: Accelerator | None = None
    cuda_versions: list[CudaVersion] | None = Field(None, max_length=32)
    services: list[ServiceOffer] | None = Field(None, max_length=16)
    login_methods: list[LoginMethod] | None = Field(None, max_length=2)
    frameworks: list[Framework] | None = Field(None, max_length=2)

    _services = field_validator("services")(check_offers)
    _cuda = field_validator("cuda_versions")(check_cuda)


class ImagePublicFields(BaseModel):
    services: list[ServicePort]


class PublicImagePublic(ImagePublicFields, ImageFields):
    reference: str
    uploader: str


class CustomImagePublic(ImagePublicFields, CustomImageColumns, ImageFields):
    uploader: str


class CustomImageUpdate(RequestModel):
    description: Description | None = None
    type: ImageType | None = None


class ImageCommitRequest(RequestModel):
    """Commit a running container as a custom image (建立自定義鏡像, manual 5.4.4)."""

    name: str = Field(pattern=IMAGE_NAME_PATTERN, description="Also the registry repository's last part")
    tag: str = Field("latest", pattern=IMAGE_TAG_PATTERN)
    description: Description = ""
    type: ImageType = ImageType.private


# ---- the workflow boundary -------------------------------------------------------------------------


class CommitSource(BaseModel):
    """The running container a commit captures, and where the result goes."""

    image_id: str
    project_id: str
    container_id: str
    container_kind: str
    owner: str
    name: str
    tag: str
    base_image: str


class CommitProgress(BaseModel):
    stage: str
    bytes: int | None = None
    message: str = ""


class CommitResult(BaseModel):
    """What a runtime's commit made, before it is published under the user's tag."""

    repository: str  # the registry repository or the local layout's name for it
    internal_tag: str  # one per image ID: a retried commit finds it and commits nothing again
    digest: str  # of the manifest
    config_digest: str
    size_bytes: int
    notes: list[str] = []
    registry: str = ""  # empty: kept in the local image store only


class ImageCommitState(BaseModel):
    id: str
    project_id: str
    owner_id: str
    owner: str
    source: CommitSource
    status: ImageStatus = ImageStatus.committing
    reason: str = ""
    message: str = ""
    stage: str = "queued"
    reference: str = ""
    digest: str = ""
    size_bytes: int | None = None
    notes: list[str] = []
    result: CommitResult | None = None
    published: bool = False
    delete_requested_by: str | None = None
    version: int = 0

    def record(self) -> dict[str, Any]:
        """The custom image row's columns the workflow owns."""
        return {
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "stage": self.stage,
            "reference": self.reference,
            "digest": self.digest,
            "size_bytes": self.size_bytes,
            "notes": self.notes,
            "version": self.version,
            "updated_at": utcnow(),
        }


class ImageCommitTimings(BaseModel):
    commit_timeout: timedelta = timedelta(hours=2)


class ImageCommitInput(BaseModel):
    state: ImageCommitState
    timings: ImageCommitTimings = ImageCommitTimings()


class ImageDelete(BaseModel):
    requested_by: str
