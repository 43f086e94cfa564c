"""Schedules firing on the Temporal dev server with a real worker, running short jobs on the local runtime.

Single-line schedules (BUFFER_ONE) run one job at a time: a run asked for while one is running waits for it
to finish. Multi-line schedules (ALLOW_ALL) start every run on time. The tests ask for several runs at once
(trigger now plus a backfill of past fire times) and compare the recorded runs' start and end.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, timedelta
from typing import Any

import httpx
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from temporalio.client import ScheduleBackfill
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from models.base import utcnow
from models.jobs import Job
from models.schedules import RunOutcome, Schedule, ScheduleRun
from tests.api import test_projects
from tests.api.test_containers import active_project, make_spec
from tests.api.test_projects import Headers, eventually
from tests.api.test_schedules import make_schedule, make_template, schedules_url, template_body

platform = test_projects.platform
people = test_projects.people


def runs_of(engine: Engine, schedule_id: str) -> list[ScheduleRun]:
    with Session(engine) as session:
        statement = select(ScheduleRun).where(ScheduleRun.schedule_id == schedule_id)
        return list(session.exec(statement.order_by(col(ScheduleRun.started_at))).all())


def overlaps(first: ScheduleRun, second: ScheduleRun) -> bool:
    assert first.started_at and first.ended_at and second.started_at and second.ended_at
    return first.started_at < second.ended_at and second.started_at < first.ended_at


async def ask_for_three_runs(
    api: httpx.AsyncClient, who: Headers, env: WorkflowEnvironment, project_id: str, made: dict[str, Any]
) -> None:
    """Run now, and backfill the two daily fire times of the last two days, all at once."""
    triggered = await api.post(f"{schedules_url(project_id)}/{made['id']}/trigger", headers=who)
    assert triggered.status_code == 202, triggered.text
    now = utcnow()
    handle = env.client.get_schedule_handle(f"schedule-{made['id']}")
    await handle.backfill(ScheduleBackfill(start_at=now - timedelta(days=2), end_at=now))


async def all_ended(
    engine: Engine, env: WorkflowEnvironment, schedule_id: str, at_least: int
) -> list[ScheduleRun]:
    """Every run Temporal started has recorded its end (buffered ones included)."""
    handle = env.client.get_schedule_handle(f"schedule-{schedule_id}")

    async def settled() -> bool:
        info = (await handle.describe()).info
        runs = runs_of(engine, schedule_id)
        return (
            not info.running_actions
            and info.num_actions == len(runs) >= at_least
            and all(run.ended_at is not None for run in runs)
        )

    await eventually(settled, seconds=60)
    return runs_of(engine, schedule_id)


def job_names(engine: Engine, runs: Sequence[ScheduleRun]) -> dict[str, str]:
    with Session(engine) as session:
        jobs = session.exec(select(Job).where(col(Job.id).in_([run.job_id for run in runs]))).all()
        return {job.name: job.status for job in jobs}


async def test_single_line_runs_wait_for_the_previous_job_and_multi_line_runs_overlap(
    platform: httpx.AsyncClient,
    people: dict[str, Headers],
    engine: Engine,
    dev_server_env: WorkflowEnvironment,
) -> None:
    project = await active_project(platform, people)
    template = await make_template(
        platform, people["bob"], project["id"], **template_body(make_spec(engine, vcpu=1), command="sleep 1")
    )
    # A daily time half a day away: no natural fire during the test, two inside the backfilled days.
    at = (utcnow() + timedelta(hours=12)).astimezone(UTC).strftime("%H:%M")
    trigger = {"kind": "daily", "at": at}
    common = {"template_id": template["id"], "time_zone": "UTC", "trigger": trigger}
    single = await make_schedule(platform, people["bob"], project["id"], name="single", **common)
    multi = await make_schedule(
        platform, people["bob"], project["id"], name="multi", concurrency="multi", **common
    )

    await ask_for_three_runs(platform, people["bob"], dev_server_env, project["id"], single)
    await ask_for_three_runs(platform, people["bob"], dev_server_env, project["id"], multi)
    single_runs = await all_ended(engine, dev_server_env, single["id"], at_least=2)
    multi_runs = await all_ended(engine, dev_server_env, multi["id"], at_least=3)

    assert {run.outcome for run in single_runs + multi_runs} == {RunOutcome.succeeded}
    for index, run in enumerate(single_runs):
        assert not any(overlaps(run, other) for other in single_runs[index + 1 :]), single_runs
    assert any(overlaps(a, b) for a in multi_runs for b in multi_runs if a is not b), multi_runs

    # Each run's job is a job like any other, named after the schedule with the next number.
    single_jobs = job_names(engine, single_runs)
    assert sorted(single_jobs) == [f"single{n}" for n in range(1, len(single_runs) + 1)]
    assert set(single_jobs.values()) == {"succeeded"}
    assert sorted(job_names(engine, multi_runs)) == ["multi1", "multi2", "multi3"]

    detail = (
        await platform.get(f"{schedules_url(project['id'])}/{single['id']}", headers=people["bob"])
    ).json()
    recent = detail["recent_runs"]
    assert len(recent) == len(single_runs) and detail["running"] == 0
    assert {r["job_name"] for r in recent} == set(single_jobs) and {r["outcome"] for r in recent} == {
        "succeeded"
    }
    for made in (single, multi):
        deleted = await platform.delete(f"{schedules_url(project['id'])}/{made['id']}", headers=people["bob"])
        assert deleted.status_code == 204


async def test_grace_pauses_the_project_schedules_and_a_run_fired_anyway_starts_no_job(
    platform: httpx.AsyncClient,
    people: dict[str, Headers],
    engine: Engine,
    dev_server_env: WorkflowEnvironment,
) -> None:
    now = utcnow()
    project = await test_projects.approved_project(
        platform,
        people,
        start_at=(now - timedelta(minutes=1)).isoformat(),
        end_at=(now + timedelta(seconds=7)).isoformat(),
    )
    url = schedules_url(project["id"])

    async def status_is(status: str) -> bool:
        response = await platform.get(f"/api/v1/projects/{project['id']}", headers=people["alice"])
        return bool(response.json()["status"] == status)

    await eventually(lambda: status_is("active"))
    template = await make_template(platform, people["bob"], project["id"], **template_body(make_spec(engine)))
    made = await make_schedule(platform, people["bob"], project["id"], template_id=template["id"])
    await eventually(lambda: status_is("grace"), seconds=30)

    # The project pauses its schedules as grace begins, before any of them fires.
    handle = dev_server_env.client.get_schedule_handle(f"schedule-{made['id']}")

    async def paused() -> bool:
        return (await handle.describe()).schedule.state.paused

    await eventually(paused)
    assert runs_of(engine, made["id"]) == []
    refused = await platform.post(f"{url}/{made['id']}/trigger", headers=people["bob"])
    assert refused.status_code == 409 and "grace" in refused.json()["message"], refused.text
    # A run that fires all the same (triggered behind the API's back) starts no job either.
    await handle.trigger()

    async def recorded() -> bool:
        return len(runs_of(engine, made["id"])) == 1

    await eventually(recorded)
    (run,) = runs_of(engine, made["id"])
    assert run.outcome == RunOutcome.skipped and run.job_id is None and "grace" in run.message
    detail = (await platform.get(f"{url}/{made['id']}", headers=people["bob"])).json()
    assert detail["paused"] and "grace" in detail["pause_note"] and detail["next_runs"] == []
    assert detail["recent_runs"][0]["outcome"] == "skipped"
    resumed = await platform.post(f"{url}/{made['id']}/resume", headers=people["bob"])
    assert resumed.status_code == 409, resumed.text
    with Session(engine) as session:
        assert session.exec(select(Job).where(Job.project_id == project["id"])).first() is None

    # An extension makes the project active again: what its grace paused runs again.
    project_url = f"/api/v1/projects/{project['id']}"
    extension = await platform.post(f"{project_url}/extensions", headers=people["alice"], json={"days": 30})
    assert extension.status_code == 201, extension.text
    approved = await platform.post(
        f"/api/v1/applications/{extension.json()['id']}/approve", headers=people["root"]
    )
    assert approved.status_code == 200, approved.text

    async def running_again() -> bool:
        return not await paused()

    await eventually(running_again)
    detail = (await platform.get(f"{url}/{made['id']}", headers=people["bob"])).json()
    assert (detail["paused"], detail["pause_note"], bool(detail["next_runs"])) == (
        False,
        "resumed: the project is active again",
        True,
    )

    # Deleting the project removes its schedules from Temporal; the rows stay, paused, saying why.
    code = (await platform.get(project_url, headers=people["alice"])).json()["delete_code"]
    deleting = await platform.delete(project_url, headers=people["alice"], params={"confirmation_code": code})
    assert deleting.status_code == 202, deleting.text

    async def removed() -> bool:
        try:
            await handle.describe()
        except RPCError as exc:
            return exc.status == RPCStatusCode.NOT_FOUND
        return False

    await eventually(removed)
    with Session(engine) as session:
        row = session.get(Schedule, made["id"])
        assert row is not None and row.paused and row.pause_note == "the project is deleted"
