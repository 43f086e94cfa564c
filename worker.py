"""The Temporal worker: registers every workflow and activity on the platform's task queue."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine
from temporalio.client import Client
from temporalio.worker import Worker

from activities.heartbeat import HEARTBEAT_THROTTLE
from activities.mail import MailActivities
from activities.projects import ProjectActivities, ProjectCleanup
from activities.sample_rollups import SampleActivities
from activities.sampling import sample_forever, sampler_for
from activities.schedules import ScheduleActivities
from activities.system import SystemActivities
from activities.user_setup import UserSetupActivities
from activities.workloads import WorkloadActivities
from config import Settings, connect_temporal, worker_runtime
from models.database import make_engine
from services import kinds
from services.runtimes import runtime_from_settings, storage_for
from workflows.project import ProjectWorkflow
from workflows.sample_rollups import SampleRollupWorkflow, ensure_rollup_schedule
from workflows.scheduled_job import ScheduledJobWorkflow
from workflows.system_check import SystemCheckWorkflow
from workflows.user_setup import UserSetupWorkflow

log = logging.getLogger("mlcp.worker")
GRACEFUL_SHUTDOWN = timedelta(seconds=30)

WORKFLOWS: list[type] = [
    SystemCheckWorkflow,
    ProjectWorkflow,
    ScheduledJobWorkflow,
    UserSetupWorkflow,
    SampleRollupWorkflow,
    *kinds.workflows(),
]


def activities_for(settings: Settings, engine: Engine, client: Client) -> list[Any]:
    """Every activity, bound to the resources it needs; each workload kind brings its own."""
    system = SystemActivities(engine)
    mail = MailActivities(engine, settings)
    projects = ProjectActivities(engine)
    cleanup = ProjectCleanup(engine, client, kinds.KINDS)
    runtime = runtime_from_settings(settings)
    workloads = WorkloadActivities(runtime)
    schedules = ScheduleActivities(engine, client, settings)
    setups = UserSetupActivities(engine, storage_for(settings, runtime))
    samples = SampleActivities(engine)
    return [
        system.check_database,
        mail.send_mail,
        projects.record_project,
        cleanup.end_project_workflows,
        cleanup.close_workload_records,
        workloads.ensure_project_environment,
        workloads.delete_project_environment,
        workloads.apply_workload,
        workloads.workload_status,
        workloads.delete_workload,
        *kinds.activities(engine, runtime, settings),
        schedules.plan_scheduled_run,
        schedules.record_run_end,
        schedules.pause_schedule,
        schedules.stop_project_schedules,
        schedules.resume_project_schedules,
        setups.provision_home,
        setups.record_setup,
        samples.roll_up_samples,
        samples.prune_samples,
    ]


def build_worker(
    client: Client, settings: Settings, engine: Engine, executor: ThreadPoolExecutor | None = None
) -> Worker:
    # Database, Kubernetes and storage clients block, so activities run in a thread pool.
    return Worker(
        client,
        task_queue=settings.temporal_task_queue,
        workflows=WORKFLOWS,
        activities=activities_for(settings, engine, client),
        activity_executor=executor or ThreadPoolExecutor(max_workers=32, thread_name_prefix="mlcp-activity"),
        # On shutdown, running activities finish instead of being interrupted mid-transaction.
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        # Heartbeats reach the server at least this often, so a delete's cancellation arrives in seconds.
        max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
    )


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    engine = make_engine(settings.database_url)
    client = await connect_temporal(settings, worker_runtime(settings))
    with ThreadPoolExecutor(max_workers=32, thread_name_prefix="mlcp-activity") as executor:
        worker = build_worker(client, settings, engine, executor)
        log.info(
            "worker polling task queue %r on %s", settings.temporal_task_queue, settings.temporal_address
        )
        await ensure_rollup_schedule(client, settings.temporal_task_queue)
        sampling = start_sampling(settings, engine)
        try:
            if stop is None:
                await worker.run()
            else:
                async with worker:
                    await stop.wait()
        finally:
            if sampling is not None:
                sampling.cancel()
    engine.dispose()


def start_sampling(settings: Settings, engine: Engine) -> asyncio.Task[None] | None:
    """This host's sampler as a background task, where the worker is the one to sample."""
    sampler = sampler_for(settings)
    if sampler is None:
        log.info("no sampler in the worker: the node agent samples workload pods on each node")
        return None
    log.info("sampling workload pods every %ss (%s)", settings.sample_interval_seconds, sampler.name)
    return asyncio.create_task(
        sample_forever(sampler, engine, settings.sample_interval_seconds), name="sampler"
    )
