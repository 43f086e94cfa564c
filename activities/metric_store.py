"""Samples into the platform database, their rollups and their pruning.

Every step is idempotent: a sample is keyed by its pod, metric, GPU and time; a rollup bucket is computed
whole from the rows beneath it and written over whatever was there; pruning deletes by age. So any step may
run twice, or late, and the tables end the same.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, delete, func
from sqlmodel import Session, col, select

from models.monitoring import MetricSample, MetricSource, PodSample, Resolution

RAW_KEPT = timedelta(hours=48)
MINUTES_KEPT = timedelta(days=30)
# A rollup recomputes a few buckets before its newest one: a sample that arrived late still counts.
REVISIT_BUCKETS = 3
ROLLUP_SOURCE = {Resolution.minute: Resolution.raw, Resolution.hour: Resolution.minute}


def bucket_start(at: datetime, seconds: int) -> datetime:
    epoch = int(at.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, UTC)


def store_samples(engine: Engine, sampler: str, samples: Iterable[PodSample]) -> int:
    """Write raw samples and each pod's source row; returns how many values were written."""
    written = 0
    with Session(engine) as session:
        for sample in samples:
            for value in sample.values:
                session.merge(
                    MetricSample(
                        workload_id=sample.workload_id,
                        pod=sample.pod,
                        metric=value.metric.value,
                        device=value.device,
                        resolution=Resolution.raw,
                        at=sample.at,
                        kind=sample.kind,
                        project_id=sample.project_id,
                        value=value.value,
                        peak=value.value,
                        count=1,
                    )
                )
                written += 1
            session.merge(
                MetricSource(
                    workload_id=sample.workload_id,
                    pod=sample.pod,
                    kind=sample.kind,
                    project_id=sample.project_id,
                    sampler=sampler,
                    sampled_at=sample.at,
                    unavailable={metric.value: reason for metric, reason in sample.unavailable.items()},
                )
            )
        session.commit()
    return written


@dataclass
class _Bucket:
    kind: str
    project_id: str
    total: float = 0.0
    peak: float = float("-inf")
    count: int = 0


def roll_up(engine: Engine, target: Resolution, now: datetime) -> int:
    """Recompute the complete `target` buckets from the newest one already written (less a few, for late
    samples) up to `now`; returns how many buckets were written."""
    source, seconds = ROLLUP_SOURCE[target], int(target)
    until = bucket_start(now, seconds)  # only whole buckets: the current one is still filling
    with Session(engine) as session:
        newest = session.exec(
            select(func.max(MetricSample.at)).where(MetricSample.resolution == target)
        ).one()
        if newest is None:
            oldest = session.exec(
                select(func.min(MetricSample.at)).where(MetricSample.resolution == source)
            ).one()
            if oldest is None:
                return 0
            since = bucket_start(_utc(oldest), seconds)
        else:
            since = _utc(newest) - timedelta(seconds=seconds * REVISIT_BUCKETS)
        if since >= until:
            return 0
        rows = session.exec(
            select(MetricSample).where(
                MetricSample.resolution == source,
                col(MetricSample.at) >= since,
                col(MetricSample.at) < until,
            )
        )
        buckets: dict[tuple[str, str, str, str, datetime], _Bucket] = defaultdict(lambda: _Bucket("", ""))
        for row in rows:
            key = (row.workload_id, row.pod, row.metric, row.device, bucket_start(_utc(row.at), seconds))
            bucket = buckets[key]
            bucket.kind, bucket.project_id = row.kind, row.project_id
            bucket.total += row.value * row.count
            bucket.peak = max(bucket.peak, row.peak)
            bucket.count += row.count
        for (workload_id, pod, metric, device, at), bucket in buckets.items():
            session.merge(
                MetricSample(
                    workload_id=workload_id,
                    pod=pod,
                    metric=metric,
                    device=device,
                    resolution=target,
                    at=at,
                    kind=bucket.kind,
                    project_id=bucket.project_id,
                    value=bucket.total / bucket.count,
                    peak=bucket.peak,
                    count=bucket.count,
                )
            )
        session.commit()
    return len(buckets)


def prune(engine: Engine, now: datetime) -> int:
    """Delete raw samples older than 48 h and 1-minute rollups older than 30 days; hourly ones are kept."""
    removed = 0
    with Session(engine) as session:
        for resolution, kept in ((Resolution.raw, RAW_KEPT), (Resolution.minute, MINUTES_KEPT)):
            result = cast(
                CursorResult[Any],
                session.execute(
                    delete(MetricSample).where(
                        col(MetricSample.resolution) == resolution, col(MetricSample.at) < now - kept
                    )
                ),
            )
            removed += result.rowcount or 0
        session.commit()
    return removed


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
