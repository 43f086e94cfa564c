"""A workload pod's utilisation series (manual 5.4.2.2, 6.2.2), read from the samples at a step that fits.

Each part of the range is read from the coarsest resolution that covers it at the step asked (hourly rows
where they exist, then 1-minute rows, then raw samples up to now), and the rows are averaged into steps
weighted by how many samples each stands for: the answer never holds more than about MAX_POINTS per series.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import RowMapping, func, select
from sqlmodel import Session, col
from sqlmodel import select as select_models

from activities.metric_store import SAMPLES, bucket_start
from models.monitoring import (
    PER_DEVICE,
    UNITS,
    Metric,
    MetricSample,
    MetricSource,
    Resolution,
    Series,
    SeriesAnswer,
)
from services.errors import invalid

MAX_POINTS = 360
STEPS = (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)
RANGE_PATTERN = r"^[1-9][0-9]{0,3}[mhd]$"
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400}
NO_SAMPLES = "no samples in this range"
LATEST_WITHIN = timedelta(minutes=1)  # six samples' worth: older is no longer "now"
NOT_SAMPLED = "not sampled yet: samples come every 10 s while the pod runs"


def parse_range(text: str, longest: timedelta) -> timedelta:
    """`6h`, `90m`, `7d`: from 1 hour up to `longest`; a 422 naming `range` otherwise."""
    match = re.fullmatch(RANGE_PATTERN, text)
    span = timedelta(seconds=int(text[:-1]) * _UNIT_SECONDS[text[-1]]) if match else None
    if span is None or not timedelta(hours=1) <= span <= longest:
        hours = int(longest.total_seconds() // 3600)
        raise invalid("range", f"give 1h to {hours}h ({hours // 24}d) as a number and a unit: m, h or d")
    return span


def step_for(span: timedelta) -> int:
    wanted = span.total_seconds() / MAX_POINTS
    return next((step for step in STEPS if step >= wanted), STEPS[-1])


def series_of(session: Session, workload_id: str, pod: str, span: timedelta, now: datetime) -> SeriesAnswer:
    step = step_for(span)
    start = bucket_start(now - span, step)
    rows = _rows(session, workload_id, pod, start, now, step)
    buckets: dict[tuple[str, str], dict[datetime, list[float]]] = defaultdict(
        lambda: defaultdict(lambda: [0, 0])
    )
    for row in rows:
        bucket = buckets[(row["metric"], row["device"])][bucket_start(row["at"], step)]
        bucket[0] += row["value"] * row["count"]
        bucket[1] += row["count"]
    series = []
    order = list(Metric)
    for metric, device in sorted(buckets, key=lambda key: (order.index(Metric(key[0])), key[1])):
        points = [
            (at, round(total / count, 2)) for at, (total, count) in sorted(buckets[(metric, device)].items())
        ]
        series.append(Series(name=_series_name(metric, device), unit=UNITS[Metric(metric)], points=points))
    return SeriesAnswer(
        workload_id=workload_id,
        pod=pod,
        start=start,
        end=now,
        step_seconds=step,
        series=series,
        unavailable=_unavailable(session, workload_id, pod, {metric for metric, _ in buckets}),
    )


def _rows(
    session: Session, workload_id: str, pod: str, start: datetime, end: datetime, step: int
) -> list[RowMapping]:
    """The coarsest rows that fit the step for as far as they reach, finer ones after (plain rows, not ORM
    objects: a day of raw samples is thousands)."""
    mine = (SAMPLES.c.workload_id == workload_id, SAMPLES.c.pod == pod)
    connection = session.connection()
    rows: list[RowMapping] = []
    since = start
    for resolution in (Resolution.hour, Resolution.minute):
        if resolution > step:
            continue
        newest = connection.execute(
            select(func.max(SAMPLES.c.at)).where(*mine, SAMPLES.c.resolution == resolution)
        ).scalar()
        if newest is None:
            continue
        reach = bucket_start(newest, int(resolution)) + timedelta(seconds=int(resolution))
        if reach <= since:
            continue
        rows += (
            connection.execute(
                SAMPLES.select().where(
                    *mine, SAMPLES.c.resolution == resolution, SAMPLES.c.at >= since, SAMPLES.c.at < reach
                )
            )
            .mappings()
            .all()
        )
        since = reach
    rows += (
        connection.execute(
            SAMPLES.select().where(
                *mine, SAMPLES.c.resolution == Resolution.raw, SAMPLES.c.at >= since, SAMPLES.c.at <= end
            )
        )
        .mappings()
        .all()
    )
    return rows


def _unavailable(session: Session, workload_id: str, pod: str, present: set[str]) -> dict[str, str]:
    source = session.get(MetricSource, (workload_id, pod))
    reasons = source.unavailable if source is not None else {}
    missing = [metric.value for metric in Metric if metric.value not in present]
    fallback = NO_SAMPLES if source is not None else NOT_SAMPLED
    return {metric: reasons.get(metric, fallback) for metric in missing}


def latest_values(
    session: Session, workload_id: str, now: datetime, within: timedelta = LATEST_WITHIN
) -> dict[str, dict[str, float]]:
    """Each pod's newest raw value per series from the last `within` (a pod list's utilisation columns);
    a pod or a series with no recent sample is left out, not shown as zero."""
    rows = session.exec(
        select_models(MetricSample)
        .where(
            MetricSample.workload_id == workload_id,
            MetricSample.resolution == Resolution.raw,
            col(MetricSample.at) >= now - within,
        )
        .order_by(col(MetricSample.at))
    )
    latest: dict[str, dict[str, float]] = defaultdict(dict)
    for row in rows:
        latest[row.pod][_series_name(row.metric, row.device)] = round(row.value, 2)
    return dict(latest)


def _series_name(metric: str, device: str) -> str:
    return f"{metric}[{device}]" if Metric(metric) in PER_DEVICE and device else metric


def has_samples(session: Session, workload_id: str, pod: str) -> bool:
    return session.get(MetricSource, (workload_id, pod)) is not None
