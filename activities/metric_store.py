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

from sqlalchemy import CursorResult, Engine, Table, delete, func
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, SQLModel, col, select

from models.monitoring import ChartLink, MetricSample, MetricSource, PodSample, Resolution

RAW_KEPT = timedelta(hours=48)
MINUTES_KEPT = timedelta(days=30)
# A rollup recomputes a few buckets before its newest one: a sample that arrived late still counts.
REVISIT_BUCKETS = 3
ROLLUP_SOURCE = {Resolution.minute: Resolution.raw, Resolution.hour: Resolution.minute}


SAMPLES: Table = MetricSample.__table__  # type: ignore[attr-defined]


def bucket_start(at: datetime, seconds: int) -> datetime:
    epoch = int(at.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, UTC)


def upsert(session: Session, table: type[SQLModel], rows: list[dict[str, Any]]) -> None:
    """Insert rows, or overwrite the ones whose primary key exists: one statement executed for many rows
    (the driver batches them), on both backends."""
    if not rows:
        return
    core: Table = table.__table__  # type: ignore[attr-defined]
    keys = [column.name for column in core.primary_key]
    # PostgreSQL refuses a statement that would update one row twice: the last of duplicates wins.
    rows = list({tuple(row[key] for key in keys): row for row in rows}.values())
    insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(core)
    updates = {name: statement.excluded[name] for name in rows[0] if name not in keys}
    session.connection().execute(statement.on_conflict_do_update(index_elements=keys, set_=updates), rows)


def store_samples(engine: Engine, sampler: str, samples: Iterable[PodSample]) -> int:
    """Write raw samples and each pod's source row; returns how many values were written."""
    values: list[dict[str, Any]] = []
    sources: dict[tuple[str, str], dict[str, Any]] = {}
    for sample in samples:
        pod = {"workload_id": sample.workload_id, "pod": sample.pod}
        owner = {"kind": sample.kind, "project_id": sample.project_id}
        values += [
            pod | owner | {
                "metric": value.metric.value, "device": value.device, "resolution": Resolution.raw.value,
                "at": sample.at, "value": value.value, "peak": value.value, "count": 1,
            }
            for value in sample.values
        ]  # fmt: skip
        unavailable = {metric.value: reason for metric, reason in sample.unavailable.items()}
        sources[(sample.workload_id, sample.pod)] = pod | owner | {
            "sampler": sampler, "sampled_at": sample.at, "unavailable": unavailable
        }  # fmt: skip
    with Session(engine) as session:
        upsert(session, MetricSample, values)
        upsert(session, MetricSource, list(sources.values()))
        session.commit()
    return len(values)


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
        # Plain rows, not ORM objects: a catch-up reads days of samples.
        rows = session.connection().execute(
            SAMPLES.select().where(
                SAMPLES.c.resolution == source, SAMPLES.c.at >= since, SAMPLES.c.at < until
            )
        )
        buckets: dict[tuple[str, str, str, str, datetime], _Bucket] = defaultdict(lambda: _Bucket("", ""))
        for row in rows.mappings():
            at = bucket_start(_utc(row["at"]), seconds)
            bucket = buckets[(row["workload_id"], row["pod"], row["metric"], row["device"], at)]
            bucket.kind, bucket.project_id = row["kind"], row["project_id"]
            bucket.total += row["value"] * row["count"]
            bucket.peak = max(bucket.peak, row["peak"])
            bucket.count += row["count"]
        rolled = [
            {
                "workload_id": workload_id, "pod": pod, "metric": metric, "device": device,
                "resolution": target.value, "at": at, "kind": bucket.kind, "project_id": bucket.project_id,
                "value": bucket.total / bucket.count, "peak": bucket.peak, "count": bucket.count,
            }
            for (workload_id, pod, metric, device, at), bucket in buckets.items()
        ]  # fmt: skip
        upsert(session, MetricSample, rolled)
        session.commit()
    return len(buckets)


def prune(engine: Engine, now: datetime) -> int:
    """Delete raw samples older than 48 h and 1-minute rollups older than 30 days (hourly ones are kept);
    returns how many samples went. Expired chart links go too."""
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
        session.execute(delete(ChartLink).where(col(ChartLink.expires_at) < now))
        session.commit()
    return removed


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
