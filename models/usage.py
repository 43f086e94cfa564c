"""Running periods (manual 5.6, 5.10): when each workload pod ran, on which spec, at which hourly price.

A period opens when a lifecycle sees its pod running and closes when it stops; its price and currency are
copied from the catalog when it opens, so a later price change never rewrites history. Cost and GPU usage
are read from these rows, never from samples: a pod that was never sampled still ran and still costs.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel
from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from models.base import UTCDateTime
from models.catalog import ExactDecimal


class UsagePeriod(SQLModel, table=True):
    __tablename__ = "usage_period"

    workload_id: str = Field(primary_key=True, max_length=32)
    pod: str = Field(primary_key=True, max_length=32)  # main, or a cluster's launcher / worker-NN
    started_at: datetime = Field(primary_key=True, sa_type=UTCDateTime)
    stopped_at: datetime | None = Field(default=None, sa_type=UTCDateTime)  # None: still running
    kind: str = Field(max_length=24)
    project_id: str = Field(max_length=32)
    name: str = Field(max_length=128)  # the workload's name when it ran
    owner_id: str = Field(max_length=32, index=True)
    owner: str = Field(max_length=32)
    spec_id: str | None = Field(default=None, max_length=32)
    spec_name: str = Field(default="", max_length=64)
    gpu: int = 0
    gpu_model: str | None = Field(default=None, max_length=128)
    hourly_price: Decimal = Field(sa_type=ExactDecimal)  # frozen when the period opened
    currency: str = Field(max_length=3)

    __table_args__ = (
        Index("ix_usage_period_project_started", "project_id", "started_at"),
        Index("ix_usage_period_open", "workload_id", "stopped_at"),
    )


class RunPeriod(BaseModel):
    """What a lifecycle's record says about one pod's run: the record activity turns it into a row."""

    pod: str
    started_at: datetime
    stopped_at: datetime | None = None
    gpu: int = 0
    gpu_model: str | None = None
