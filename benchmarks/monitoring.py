"""Monitoring and cost figures on this machine: one sampling round over N real local workloads, writing it,
a day of samples rolled up, the series routes' read of 24 h and of 30 days, and a month's cost report.

    .venv/bin/python -m benchmarks.monitoring --workloads 20 --pods 50
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import psutil
from sqlmodel import Session

from activities.gpu_metrics import GpuUnavailable, NvmlProbe
from activities.local import LocalRuntime, is_running
from activities.local_sampler import LocalSampler
from activities.metric_store import bucket_start, roll_up, store_samples
from models.base import utcnow
from models.database import make_engine, migrate
from models.lifecycle import Quota
from models.monitoring import Metric, MetricValue, PodSample, Resolution
from models.reports import CostGrouping
from models.usage import UsagePeriod
from models.workloads import ProjectEnvironment, ResourceRequest, WorkloadState
from services.kinds import runtime_kinds
from services.monitoring import series_of
from services.usage_periods import ReportRange
from services.usage_reports import cost_report
from tests.specs import one_role_spec

PROJECT = "bench"
UTC_ZONE = ZoneInfo("UTC")
METRICS = (Metric.vcpu_percent, Metric.memory_percent, Metric.gpu_percent, Metric.gpu_memory_percent)


def timed(action: Callable[[], object], repeat: int = 5) -> float:
    """The median of `repeat` runs, in milliseconds."""
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        action()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def sampling_round(home: Path, workloads: int) -> None:
    runtime = LocalRuntime(home, runtime_kinds(), gpu_devices=lambda: [], stop_grace_seconds=2)
    runtime.ensure_project(ProjectEnvironment(project_id=PROJECT, quota=Quota(vcpu=1000, ram_gb=1000)))
    idle = [sys.executable, "-c", "import time; time.sleep(3600)"]
    try:
        for index in range(workloads):
            runtime.apply(
                one_role_spec(
                    project_id=PROJECT, resource_id=f"w{index}", kind="job", owner="bench", name=f"w{index}",
                    image="python:3.11", command=idle, resources=ResourceRequest(vcpu=1, ram_gb=1),
                )
            )  # fmt: skip
        for index in range(workloads):
            while runtime.status(PROJECT, "job", f"w{index}").state != WorkloadState.running:
                time.sleep(0.05)
        try:
            NvmlProbe().read()
            gpus = "NVML found GPUs"
        except GpuUnavailable as exc:
            gpus = f"no GPU ({exc})"
        sampler = LocalSampler(runtime.root, NvmlProbe(), is_running)
        engine = make_engine(_database(home / "round.db"))
        sampler.sample()
        round_ms = timed(sampler.sample)
        samples = sampler.sample()
        store_ms = timed(lambda: store_samples(engine, "local", samples))
        rss = psutil.Process().memory_info().rss / 2**20
        print(f"sampling round over {workloads} workloads: {round_ms:.1f} ms; storing it {store_ms:.1f} ms")
        print(f"  ({gpus}; the worker's RSS after sampling: {rss:.0f} MiB)")
    finally:
        runtime.delete_project(PROJECT)


def _database(path: Path) -> str:
    url = f"sqlite:///{path}"
    migrate(url)
    return url


def stored_history(home: Path, pods: int) -> None:
    engine = make_engine(_database(home / "history.db"))
    now = utcnow()
    start = bucket_start(now - timedelta(hours=24), 3600)
    samples = [
        PodSample(
            kind="container",
            workload_id=f"c{pod}",
            project_id=PROJECT,
            at=start + timedelta(seconds=10 * step),
            values=[MetricValue(metric=metric, value=float(step % 100)) for metric in METRICS],
        )
        for pod in range(pods)
        for step in range(24 * 360)
    ]
    began = time.perf_counter()
    for index in range(0, len(samples), 5000):
        store_samples(engine, "local", samples[index : index + 5000])
    store_s = time.perf_counter() - began
    began = time.perf_counter()
    minutes = roll_up(engine, Resolution.minute, now)
    hours = roll_up(engine, Resolution.hour, now)
    rollup_s = time.perf_counter() - began
    values = len(samples) * len(METRICS)
    print(f"a day of samples for {pods} pods ({values:,} values): stored in {store_s:.1f} s, rolled up into")
    print(f"  {minutes:,} minute and {hours:,} hour buckets in {rollup_s:.1f} s")
    with Session(engine) as session:
        day_ms = timed(lambda: series_of(session, "c0", "main", timedelta(hours=24), now))
        hour_ms = timed(lambda: series_of(session, "c0", "main", timedelta(hours=1), now))
        month_ms = timed(lambda: series_of(session, "c0", "main", timedelta(days=30), now))
    print(f"one pod's series: 1 h {hour_ms:.1f} ms, 24 h {day_ms:.1f} ms, 30 days {month_ms:.1f} ms")


def month_of_costs(home: Path, periods: int) -> None:
    engine = make_engine(_database(home / "costs.db"))
    now = utcnow()
    with Session(engine) as session:
        for index in range(periods):
            started = now - timedelta(days=30) + timedelta(minutes=43 * index % (30 * 24 * 60))
            session.add(
                UsagePeriod(
                    workload_id=f"w{index % 500}", pod="main", started_at=started,
                    stopped_at=started + timedelta(hours=index % 9 + 1), kind="job", project_id=PROJECT,
                    name=f"w{index % 500}", owner_id=f"u{index % 20}", owner=f"user{index % 20}",
                    spec_id="s1", spec_name="cpu", hourly_price=Decimal("5"), currency="TWD",
                )
            )  # fmt: skip
        session.commit()
        window = ReportRange(start=now - timedelta(days=30), end=now)
        for grouping in (CostGrouping.workload, CostGrouping.day):

            def report(grouping: CostGrouping = grouping) -> object:
                return cost_report(session, window, now, grouping, UTC_ZONE, project_id=PROJECT, owner=None)

            took = timed(report, repeat=3)
            print(f"a month's cost report over {periods:,} periods by {grouping.value}: {took:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workloads", type=int, default=20, help="real local workloads sampled in a round")
    parser.add_argument("--pods", type=int, default=50, help="pods with a day of samples each")
    parser.add_argument("--periods", type=int, default=20_000, help="running periods in the cost report")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        sampling_round(home, args.workloads)
        stored_history(home, args.pods)
        month_of_costs(home, args.periods)


if __name__ == "__main__":
    main()
