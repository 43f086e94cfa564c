"""Utilisation samples (manual 5.4.2.2, 6.2.2): what a sampler reads every 10 s per workload pod, and the
rollups the platform keeps of them.

One table holds every resolution: raw samples (kept 48 h), 1-minute rollups (30 days) and hourly rollups
(kept). A row is one metric of one pod, for one GPU where the metric is per GPU, over one bucket: its
average, its peak and how many raw samples it stands for, so a rollup of rollups averages correctly.
Where a metric cannot be read (no GPU, a runtime that cannot tell network bytes) there is no row, and
`metric_source` says why.
"""

from __future__ import annotations

from datetime import datetime
from enum import IntEnum, StrEnum

from pydantic import BaseModel
from sqlalchemy import JSON, Index, String
from sqlmodel import Field, SQLModel

from models.base import UTCDateTime

SAMPLE_INTERVAL_SECONDS = 10
NO_GPU = "the pod holds no GPU"  # the reason its GPU series are absent, whoever samples it
MAIN_POD = "main"  # a container's or a job's one pod; a cluster's pods are named launcher, worker-NN


class Metric(StrEnum):
    gpu_percent = "gpu_percent"  # the GPU's utilisation, per GPU the pod holds
    gpu_memory_percent = "gpu_memory_percent"  # GPU memory in use of the device's total, per GPU
    vcpu_percent = "vcpu_percent"  # CPU time used of the vCPUs requested
    memory_percent = "memory_percent"  # resident memory of the RAM requested
    network_in = "network_in"  # bytes received per second
    network_out = "network_out"  # bytes sent per second


UNITS: dict[Metric, str] = {
    Metric.gpu_percent: "%",
    Metric.gpu_memory_percent: "%",
    Metric.vcpu_percent: "%",
    Metric.memory_percent: "%",
    Metric.network_in: "B/s",
    Metric.network_out: "B/s",
}

PER_DEVICE = frozenset({Metric.gpu_percent, Metric.gpu_memory_percent})


class Resolution(IntEnum):
    """A row's bucket length in seconds; raw rows are the samples themselves."""

    raw = 0
    minute = 60
    hour = 3600


class MetricSample(SQLModel, table=True):
    __tablename__ = "metric_sample"

    workload_id: str = Field(primary_key=True, max_length=32)  # a container's, job's or cluster's ID
    pod: str = Field(primary_key=True, max_length=32)
    metric: str = Field(primary_key=True, sa_type=String(24))
    device: str = Field(default="", primary_key=True, max_length=64)  # per-GPU metrics: the pod's GPU 0, 1...
    resolution: int = Field(primary_key=True)
    at: datetime = Field(primary_key=True, sa_type=UTCDateTime)  # the sample's time, or its bucket's start
    kind: str = Field(max_length=24)
    project_id: str = Field(max_length=32, index=True)
    value: float  # the average over the bucket
    peak: float
    count: int = 1  # raw samples it stands for

    __table_args__ = (Index("ix_metric_sample_resolution_at", "resolution", "at"),)


class MetricSource(SQLModel, table=True):
    """Per pod: who sampled it last, when, and why a metric has no series."""

    __tablename__ = "metric_source"

    workload_id: str = Field(primary_key=True, max_length=32)
    pod: str = Field(primary_key=True, max_length=32)
    kind: str = Field(max_length=24)
    project_id: str = Field(max_length=32, index=True)
    sampler: str = Field(max_length=32)  # local, agent, prometheus
    sampled_at: datetime = Field(sa_type=UTCDateTime)
    unavailable: dict[str, str] = Field(default_factory=dict, sa_type=JSON)  # metric -> reason


class ChartLink(SQLModel, table=True):
    """A link that opens one chart in a browser without a bearer header, for a short while; only its
    SHA-256 is kept, like an API token's."""

    __tablename__ = "chart_link"

    token_hash: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(foreign_key="user.id", ondelete="CASCADE", index=True, max_length=32)
    path: str = Field(max_length=512)  # the one chart it opens
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)


# ---- what a sampler hands the store -----------------------------------------------------------------


class MetricValue(BaseModel):
    metric: Metric
    value: float
    device: str = ""


class PodSample(BaseModel):
    """One pod's reading at one moment, from any sampler (local, the node agent, Prometheus)."""

    kind: str  # container, job, cluster
    workload_id: str
    pod: str = MAIN_POD
    project_id: str
    at: datetime
    values: list[MetricValue] = []
    unavailable: dict[Metric, str] = {}  # a metric with no value here, and why


# ---- API schemas (manual 5.4.2.2) -------------------------------------------------------------------


class Series(BaseModel):
    name: str  # the metric; per-GPU series with the pod's GPU index: gpu_percent[0]
    unit: str
    points: list[tuple[datetime, float]]


class ChartLinkAnswer(BaseModel):
    url: str  # open it in a browser: no sign-in needed until it expires
    expires_at: datetime


class SeriesAnswer(BaseModel):
    workload_id: str
    pod: str
    start: datetime
    end: datetime
    step_seconds: int
    series: list[Series]
    unavailable: dict[str, str]  # a metric with no series, and why
