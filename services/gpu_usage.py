"""GPU usage (manual 5.6): per workload pod, its hours in a range, the GPUs it held, GPU hours and its
average GPU utilisation.

Hours come from running periods; utilisation from the samples. Samples are kept at three resolutions
(raw 48 h, minute rollups 30 days, hourly rollups beyond) and a bucket's rollup stands for the rows beneath
it, so every moment is counted once, from the coarsest row that lies wholly inside the range: an hourly
row for each whole hour, minute rows for the rest of the range, raw samples for what no rollup covers yet.
Where only a coarser row is left for the range's ragged edges (finer ones pruned), it counts in proportion
to its overlap.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from activities.metric_store import bucket_start
from models.monitoring import NO_GPU, Metric, MetricSample, Resolution
from models.reports import GpuUsageReport, GpuUsageRow, UsageKind
from services.usage_periods import HOUR, ReportRange, Run, as_hours, runs_in
from services.workloads import Owner

NO_SAMPLES = "no GPU samples in this range"
UTILISATION_PLACES = 1
CLUSTER_KIND = UsageKind.cluster.value


@dataclass(frozen=True)
class _Sample:
    resolution: int
    at: datetime
    value: float
    count: int


@dataclass
class _Average:
    weighted: float = 0.0
    weight: float = 0.0

    def add(self, value: float, weight: float) -> None:
        self.weighted += value * weight
        self.weight += weight

    @property
    def percent(self) -> float | None:
        return round(self.weighted / self.weight, UTILISATION_PLACES) if self.weight > 0 else None


def _span(sample: _Sample) -> timedelta:
    return timedelta(seconds=max(sample.resolution, 1))


def _series_average(samples: Iterable[_Sample], window: ReportRange, average: _Average) -> None:
    """Add one series (one pod's one GPU) to `average`, each moment counted from one resolution only."""
    by_resolution: dict[int, list[_Sample]] = defaultdict(list)
    for sample in samples:
        by_resolution[sample.resolution].append(sample)
    hours, minutes, raw = (by_resolution[r] for r in (Resolution.hour, Resolution.minute, Resolution.raw))

    def whole(sample: _Sample) -> bool:
        return window.start <= sample.at and sample.at + _span(sample) <= window.end

    whole_hours = {s.at for s in hours if whole(s)}
    whole_minutes = {
        s.at for s in minutes if whole(s) and bucket_start(s.at, Resolution.hour) not in whole_hours
    }
    finer: list[_Sample] = [
        s
        for s in raw
        if window.start <= s.at < window.end
        and bucket_start(s.at, Resolution.hour) not in whole_hours
        and bucket_start(s.at, Resolution.minute) not in whole_minutes
    ]
    for sample in finer:
        average.add(sample.value, sample.count)
    # Rows wholly inside the range, then the edges' partial rows where nothing finer covers them.
    taken: list[_Sample] = list(finer)
    for resolution_rows, covered in ((minutes, whole_minutes), (hours, whole_hours)):
        for sample in resolution_rows:
            if sample.at in covered:
                average.add(sample.value, sample.count)
                taken.append(sample)
    for resolution_rows in (minutes, hours):
        for sample in resolution_rows:
            if whole(sample) or not _overlaps(sample, window.start, window.end):
                continue
            start, end = max(sample.at, window.start), min(sample.at + _span(sample), window.end)
            if any(start <= other.at < end for other in taken):
                continue
            average.add(sample.value, sample.count * ((end - start) / _span(sample)))
            taken.append(sample)


def _overlaps(sample: _Sample, start: datetime, end: datetime) -> bool:
    return sample.at < end and sample.at + _span(sample) > start


def gpu_utilisation(
    session: Session, project_id: str, pods: set[tuple[str, str]], window: ReportRange
) -> dict[tuple[str, str], float | None]:
    """Each (workload_id, pod)'s count-weighted average `gpu_percent` over the range, across its GPUs."""
    if not pods:
        return {}
    rows = session.exec(
        select(MetricSample).where(
            MetricSample.project_id == project_id,
            MetricSample.metric == Metric.gpu_percent.value,
            col(MetricSample.workload_id).in_({workload_id for workload_id, _ in pods}),
            # An hourly row that began before the range may still overlap its start.
            col(MetricSample.at) >= window.start - HOUR,
            col(MetricSample.at) < window.end,
        )
    )
    series: dict[tuple[str, str, str], list[_Sample]] = defaultdict(list)
    for row in rows:
        if (row.workload_id, row.pod) in pods:
            sample = _Sample(row.resolution, row.at, row.value, row.count)
            series[(row.workload_id, row.pod, row.device)].append(sample)
    averages: dict[tuple[str, str], _Average] = defaultdict(_Average)
    for (workload_id, pod, _), samples in series.items():
        _series_average(samples, window, averages[(workload_id, pod)])
    return {key: averages[key].percent if key in averages else None for key in pods}


@dataclass
class _PodUsage:
    latest: Run
    microseconds: int = 0
    gpu_microseconds: int = 0


def range_text(hours: float) -> str:
    """The manual's sentence (本次查詢區間約 662 小時，相當於 28 天), in English."""
    if hours < 1:
        minutes = round(hours * 60)
        return f"about {minutes} minute{'s' if minutes != 1 else ''}"
    whole = round(hours)
    text = f"about {whole} hour{'s' if whole != 1 else ''}"
    if hours >= 24:
        days = round(hours / 24)
        text += f", i.e. {days} day{'s' if days != 1 else ''}"
    return text


def gpu_usage_report(
    session: Session,
    window: ReportRange,
    now: datetime,
    project_id: str,
    owner: Owner | None,
    kind: UsageKind | None,
) -> GpuUsageReport:
    runs = runs_in(
        session, window, now, project_id=project_id, owner_id=owner.id if owner else None, kind=kind
    )
    usage: dict[tuple[str, str], _PodUsage] = {}
    for run in runs:
        pod = usage.setdefault((run.period.workload_id, run.period.pod), _PodUsage(run))
        pod.microseconds += run.microseconds
        pod.gpu_microseconds += run.microseconds * run.period.gpu
        if run.period.started_at >= pod.latest.period.started_at:
            pod.latest = run
    with_gpu = {key for key, pod in usage.items() if pod.gpu_microseconds > 0}
    utilisation = gpu_utilisation(session, project_id, with_gpu, window)
    rows = []
    for key, pod in usage.items():
        period = pod.latest.period
        average = utilisation.get(key)
        note = None if average is not None else (NO_GPU if key not in with_gpu else NO_SAMPLES)
        rows.append(
            GpuUsageRow(
                workload_id=period.workload_id,
                pod=period.pod,
                kind=period.kind,
                name=f"{period.name}/{period.pod}" if period.kind == CLUSTER_KIND else period.name,
                owner=period.owner,
                hours=as_hours(pod.microseconds),
                gpu=period.gpu,
                gpu_model=period.gpu_model,
                gpu_hours=as_hours(pod.gpu_microseconds),
                gpu_utilisation=average,
                gpu_utilisation_note=note,
            )
        )
    rows.sort(key=lambda row: (-row.gpu_hours, -row.hours, row.name))
    length = window.hours
    return GpuUsageReport(
        project_id=project_id,
        member=owner.username if owner else None,
        start=window.start,
        end=window.end,
        kind=kind,
        range_hours=round(length, 2),
        range_days=round(length / 24),
        range_text=range_text(length),
        rows=rows,
        hours=as_hours(sum(pod.microseconds for pod in usage.values())),
        gpu_hours=as_hours(sum(pod.gpu_microseconds for pod in usage.values())),
    )
