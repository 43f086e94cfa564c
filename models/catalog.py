"""The admin catalog: GPU models, MLS specs (hardware plus hourly price) and project purposes.

Platform admins write it; every signed-in user reads it. Projects reference purposes, containers
reference specs, and specs reference GPU models, all with ON DELETE RESTRICT so nothing in use vanishes.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, StringConstraints, field_validator
from pydantic import Field as SchemaField
from sqlalchemy import BigInteger, CheckConstraint, Dialect, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, Session, SQLModel, select

from models.base import UTCDateTime, new_id, utcnow
from models.inputs import Multiline, RequestModel

NAME_MAX_LENGTH = 64
DESCRIPTION_MAX_LENGTH = 1000
PRICE_DECIMAL_PLACES = 4
_PRICE_SCALE = Decimal(10) ** PRICE_DECIMAL_PLACES
DEFAULT_CURRENCY = "TWD"

CatalogName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=NAME_MAX_LENGTH)
]
Description = Annotated[
    str, Multiline, StringConstraints(strip_whitespace=True, max_length=DESCRIPTION_MAX_LENGTH)
]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
# Hourly prices keep up to four decimal places (fractions of a cent for cheap CPU specs).
HourlyPrice = Annotated[
    Decimal,
    SchemaField(
        ge=0,
        le=Decimal("9999999999.9999"),
        max_digits=14,
        decimal_places=PRICE_DECIMAL_PLACES,
        allow_inf_nan=False,
        # Also as a string ("150.00"), which keeps every digit a float would round.
        json_schema_extra={
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": 9999999999.9999},
                {"type": "string", "maxLength": 20, "pattern": r"^[0-9]{1,10}(\.[0-9]{1,4})?$"},
            ]
        },
    ),
]


class ExactDecimal(TypeDecorator[Decimal]):
    """A decimal kept as an integer count of 1/10,000 units, exact on every backend.

    SQLite has no decimal type (SQLAlchemy would round-trip through float), so a scaled integer is
    the one representation that is exact, sortable and summable on both SQLite and PostgreSQL.
    """

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> int | None:
        if value is None:
            return None
        scaled = Decimal(value) * _PRICE_SCALE
        if scaled != scaled.to_integral_value():
            raise ValueError(f"{value} has more than {PRICE_DECIMAL_PLACES} decimal places")
        return int(scaled)

    def process_result_value(self, value: int | None, dialect: Dialect) -> Decimal | None:
        return None if value is None else display_price(Decimal(value) / _PRICE_SCALE)


def display_price(value: Decimal) -> Decimal:
    """At least two decimal places, more only when the price needs them: 12.50, 0.0125."""
    two_places = value.quantize(Decimal("0.01"))
    if two_places == value:
        return two_places
    return value.quantize(Decimal(1).scaleb(-PRICE_DECIMAL_PLACES)).normalize()


class GpuVendor(StrEnum):
    NVIDIA = "NVIDIA"
    AMD = "AMD"


# --- tables -------------------------------------------------------------------------------------------


class GpuModel(SQLModel, table=True):
    __tablename__ = "gpu_model"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    name: str = Field(unique=True, index=True, max_length=NAME_MAX_LENGTH)
    vendor: GpuVendor
    memory_gb: int
    # A shareable model can be sliced between containers (the manual's 共享 mode).
    shareable: bool = False
    description: str = Field(default="", max_length=DESCRIPTION_MAX_LENGTH)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)

    __table_args__ = (CheckConstraint("memory_gb > 0", name="ck_gpu_model_memory_positive"),)


class Spec(SQLModel, table=True):
    """An MLS spec: what one container gets (GPUs, vCPU, RAM) and what it costs per hour."""

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    name: str = Field(unique=True, index=True, max_length=NAME_MAX_LENGTH)
    gpu_model_id: str | None = Field(
        default=None, foreign_key="gpu_model.id", ondelete="RESTRICT", index=True, max_length=32
    )
    gpu_count: int = 0
    vcpu: float
    ram_gb: float
    hourly_price: Decimal = Field(sa_type=ExactDecimal)
    currency: str = Field(default=DEFAULT_CURRENCY, max_length=3)
    description: str = Field(default="", max_length=DESCRIPTION_MAX_LENGTH)
    is_active: bool = Field(default=True, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)

    __table_args__ = (
        CheckConstraint("gpu_count >= 0", name="ck_spec_gpu_count_not_negative"),
        CheckConstraint(
            "(gpu_model_id IS NULL AND gpu_count = 0) OR (gpu_model_id IS NOT NULL AND gpu_count > 0)",
            name="ck_spec_gpu_model_matches_count",
        ),
        CheckConstraint("vcpu > 0", name="ck_spec_vcpu_positive"),
        CheckConstraint("ram_gb > 0", name="ck_spec_ram_positive"),
        CheckConstraint("hourly_price >= 0", name="ck_spec_price_not_negative"),
    )


class Purpose(SQLModel, table=True):
    """Why a project exists (研究 research, 教學 teaching, 競賽 competition...)."""

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    name: str = Field(unique=True, index=True, max_length=NAME_MAX_LENGTH)
    description: str = Field(default="", max_length=DESCRIPTION_MAX_LENGTH)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


# --- request and response schemas ---------------------------------------------------------------------

_MAX_GPU_MEMORY_GB = 4096
_MAX_GPU_COUNT = 64
_MAX_VCPU = 1024
_MAX_RAM_GB = 65536


def _millis(value: float | None) -> float | None:
    # Kubernetes resolves CPU to 1m; a finer value could never be scheduled as written.
    if value is not None and abs(value * 1000 - round(value * 1000)) > 1e-6:
        raise ValueError("must have at most 3 decimal places")
    return value


class GpuModelCreate(RequestModel):
    name: CatalogName
    vendor: GpuVendor
    memory_gb: int = SchemaField(gt=0, le=_MAX_GPU_MEMORY_GB)
    shareable: bool = False
    description: Description = ""


class GpuModelUpdate(RequestModel):
    name: CatalogName | None = None
    vendor: GpuVendor | None = None
    memory_gb: int | None = SchemaField(default=None, gt=0, le=_MAX_GPU_MEMORY_GB)
    shareable: bool | None = None
    description: Description | None = None


class GpuModelPublic(BaseModel):
    id: str
    name: str
    vendor: GpuVendor
    memory_gb: int
    shareable: bool
    description: str
    created_at: datetime
    updated_at: datetime


class SpecCreate(RequestModel):
    name: CatalogName
    gpu_model_id: str | None = SchemaField(None, max_length=32)
    gpu_count: int = SchemaField(default=0, ge=0, le=_MAX_GPU_COUNT)
    vcpu: float = SchemaField(gt=0, le=_MAX_VCPU, allow_inf_nan=False)
    ram_gb: float = SchemaField(gt=0, le=_MAX_RAM_GB, allow_inf_nan=False)
    hourly_price: HourlyPrice
    currency: Currency = DEFAULT_CURRENCY
    description: Description = ""
    is_active: bool = True

    _vcpu = field_validator("vcpu", "ram_gb")(_millis)


class SpecUpdate(RequestModel):
    name: CatalogName | None = None
    gpu_model_id: str | None = SchemaField(None, max_length=32)
    gpu_count: int | None = SchemaField(default=None, ge=0, le=_MAX_GPU_COUNT)
    vcpu: float | None = SchemaField(default=None, gt=0, le=_MAX_VCPU, allow_inf_nan=False)
    ram_gb: float | None = SchemaField(default=None, gt=0, le=_MAX_RAM_GB, allow_inf_nan=False)
    hourly_price: HourlyPrice | None = None
    currency: Currency | None = None
    description: Description | None = None
    is_active: bool | None = None

    _vcpu = field_validator("vcpu", "ram_gb")(_millis)


class SpecPublic(BaseModel):
    id: str
    name: str
    gpu_model_id: str | None
    gpu_model_name: str | None = None
    gpu_count: int
    vcpu: float
    ram_gb: float
    hourly_price: Decimal
    currency: str
    description: str
    is_active: bool
    created_at: datetime
    updated_at: datetime

    _price = field_validator("hourly_price")(display_price)


class PurposeCreate(RequestModel):
    name: CatalogName
    description: Description = ""


class PurposeUpdate(RequestModel):
    name: CatalogName | None = None
    description: Description | None = None


class PurposePublic(BaseModel):
    id: str
    name: str
    description: str
    created_at: datetime
    updated_at: datetime


# --- starter catalog ----------------------------------------------------------------------------------

# (name, vendor, memory GB, shareable, description)
_STARTER_GPU_MODELS: list[tuple[str, GpuVendor, int, bool, str]] = [
    ("A100-80G", GpuVendor.NVIDIA, 80, False, "NVIDIA A100 80 GB"),
    ("P4-8G", GpuVendor.NVIDIA, 8, True, "NVIDIA Tesla P4, can be shared between containers"),
    ("MI210-64G", GpuVendor.AMD, 64, False, "AMD Instinct MI210 (ROCm)"),
]
# (name, GPU model name or None, GPU count, vCPU, RAM GB, TWD per hour, description)
_STARTER_SPECS: list[tuple[str, str | None, int, float, float, str, str]] = [
    ("cpu-2c-8g", None, 0, 2, 8, "5.00", "CPU only: data preparation, notebooks"),
    ("p4x1-4c-16g", "P4-8G", 1, 4, 16, "20.00", "One P4: inference and small experiments"),
    ("a100x1-16c-128g", "A100-80G", 1, 16, 128, "150.00", "One A100 80 GB"),
    ("a100x4-64c-512g", "A100-80G", 4, 64, 512, "600.00", "Four A100 80 GB: distributed training"),
    ("mi210x1-16c-128g", "MI210-64G", 1, 16, 128, "120.00", "One MI210: ROCm images only"),
]
_STARTER_PURPOSES = [
    ("研究", "Research"),
    ("教學", "Teaching"),
    ("競賽", "Competition"),
]


def seed_default_catalog(engine: Engine) -> bool:
    """Fill an empty catalog with a starter set; leave any catalog that has rows alone.

    Returns whether it seeded. Safe to call on every start, also by two processes at once:
    the loser of that race hits the unique names and backs off.
    """
    with Session(engine) as session:
        for table in (GpuModel, Spec, Purpose):
            if session.exec(select(table.id).limit(1)).first() is not None:
                return False
        gpu_ids: dict[str, str] = {}
        for model_name, vendor, memory_gb, shareable, description in _STARTER_GPU_MODELS:
            gpu = GpuModel(
                name=model_name,
                vendor=vendor,
                memory_gb=memory_gb,
                shareable=shareable,
                description=description,
            )
            session.add(gpu)
            gpu_ids[model_name] = gpu.id
        for name, gpu_name, count, vcpu, ram_gb, price, description in _STARTER_SPECS:
            session.add(
                Spec(
                    name=name,
                    gpu_model_id=gpu_ids[gpu_name] if gpu_name else None,
                    gpu_count=count,
                    vcpu=vcpu,
                    ram_gb=ram_gb,
                    hourly_price=Decimal(price),
                    description=description,
                )
            )
        for name, description in _STARTER_PURPOSES:
            session.add(Purpose(name=name, description=description))
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            return False
    return True
