"""The samples' upkeep in the time-skipping environment: rollups that add up, repeat harmlessly, catch up
late samples, and pruning that keeps what the retention promises."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.metric_store import bucket_start, store_samples
from activities.sample_rollups import SampleActivities
from models.monitoring import Metric, MetricSample, MetricValue, PodSample, Resolution
from workflows.sample_rollups import SCHEDULE_ID, SampleRollupWorkflow, ensure_rollup_schedule

QUEUE = "rollups"


@pytest.fixture
async def worker(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> AsyncIterator[WorkflowEnvironment]:
    activities = SampleActivities(engine)
    with ThreadPoolExecutor(max_workers=4) as executor:
        async with Worker(
            time_skipping_env.client,
            task_queue=QUEUE,
            workflows=[SampleRollupWorkflow],
            activities=[activities.roll_up_samples, activities.prune_samples],
            activity_executor=executor,
        ):
            yield time_skipping_env


def sample(at: datetime, cpu: float, gpu: float | None = None) -> PodSample:
    values = [MetricValue(metric=Metric.vcpu_percent, value=cpu)]
    if gpu is not None:
        values.append(MetricValue(metric=Metric.gpu_percent, value=gpu, device="0"))
    return PodSample(kind="job", workload_id="j1", project_id="p1", at=at, values=values)


def rows(engine: Engine, resolution: Resolution, metric: Metric = Metric.vcpu_percent) -> list[MetricSample]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(MetricSample)
                .where(MetricSample.resolution == resolution, MetricSample.metric == metric)
                .order_by(col(MetricSample.at))
            )
        )


async def run_upkeep(env: WorkflowEnvironment) -> tuple[int, int, int]:
    """One scheduled run at the environment's time. Awaiting a result lets the test server skip time
    (to the activities' timeouts, or years on), so time moves only where the test skips it."""
    with env.auto_time_skipping_disabled():
        result = await env.client.execute_workflow(
            SampleRollupWorkflow.run, id=f"rollup-{uuid.uuid4().hex[:6]}", task_queue=QUEUE
        )
    return result.minute_buckets, result.hour_buckets, result.pruned


async def test_rollups_average_by_sample_count_repeat_harmlessly_and_prune_by_age(
    worker: WorkflowEnvironment, engine: Engine
) -> None:
    env = worker
    now = await env.get_current_time()
    hour = bucket_start(now, 3600) - timedelta(hours=2)  # two whole hours ago
    # Two hours of a sample every 10 s: the first hour at 20 %, the second at 60 %, GPU at 50 % throughout.
    store_samples(
        engine,
        "local",
        [sample(hour + timedelta(seconds=10 * i), 20.0 if i < 360 else 60.0, gpu=50.0) for i in range(720)],
    )
    minutes, hours, pruned = await run_upkeep(env)
    assert (minutes, pruned) == (2 * 120, 0)  # 120 minute buckets, vCPU and GPU each
    assert hours == 2 * 2
    minute_rows = rows(engine, Resolution.minute)
    assert len(minute_rows) == 120 and all(row.count == 6 for row in minute_rows)
    assert {row.value for row in minute_rows[:60]} == {20.0} and {row.value for row in minute_rows[60:]} == {
        60.0
    }
    hourly = rows(engine, Resolution.hour)
    assert [(row.at, row.value, row.count) for row in hourly] == [
        (hour, 20.0, 360),
        (hour + timedelta(hours=1), 60.0, 360),
    ]
    assert [row.value for row in rows(engine, Resolution.hour, Metric.gpu_percent)] == [50.0, 50.0]

    # Again at once: the same buckets, the same values (only the last few are revisited).
    await run_upkeep(env)
    assert [(r.at, r.value, r.count) for r in rows(engine, Resolution.hour)] == [
        (r.at, r.value, r.count) for r in hourly
    ]
    assert len(rows(engine, Resolution.minute)) == 120

    # A late sample in the newest whole minute is counted by the next run.
    last_minute = minute_rows[-1].at
    store_samples(engine, "local", [sample(last_minute + timedelta(seconds=5), 130.0)])
    await run_upkeep(env)
    late = next(row for row in rows(engine, Resolution.minute) if row.at == last_minute)
    assert late.count == 7 and late.value == pytest.approx((6 * 60 + 130) / 7)

    # Two days later the raw samples are gone, the rollups stay; thirty days later the minutes go too.
    await env.sleep(timedelta(hours=49))
    _, _, pruned = await run_upkeep(env)
    assert pruned == 2 * 720 + 1
    assert rows(engine, Resolution.raw) == [] and len(rows(engine, Resolution.minute)) == 120
    await env.sleep(timedelta(days=30))
    await run_upkeep(env)
    assert rows(engine, Resolution.minute) == []
    assert [row.value for row in rows(engine, Resolution.hour)][:1] == [20.0]


async def test_the_schedule_is_made_once(dev_server_env: WorkflowEnvironment) -> None:
    # The time-skipping server has no schedules: the real dev server does, shared with the tests whose
    # workers made the platform's own; this one has an ID of its own.
    client, schedule_id = dev_server_env.client, f"{SCHEDULE_ID}-{uuid.uuid4().hex[:6]}"
    assert await ensure_rollup_schedule(client, QUEUE, schedule_id)
    try:
        assert not await ensure_rollup_schedule(client, QUEUE, schedule_id)  # a second worker, or a restart
        description = await client.get_schedule_handle(schedule_id).describe()
        assert description.schedule.spec.intervals[0].every == timedelta(minutes=5)
    finally:
        await client.get_schedule_handle(schedule_id).delete()
