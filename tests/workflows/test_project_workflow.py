from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from models.lifecycle import (
    Application,
    ApplicationStatus,
    ApplicationType,
    Decision,
    DeleteRequest,
    ProjectState,
    ProjectStatus,
    Quota,
    Withdrawal,
    WorkloadEvent,
)
from models.projects import Project
from tests.workflows.project_harness import (
    FakeWorkloadWorkflow,
    MailCatcher,
    admit,
    new_state,
    project_worker,
    start_project,
    start_workload,
)
from workflows.project import ProjectWorkflow


def status_in_db(engine: Engine, project_id: str) -> str | None:
    with Session(engine) as session:
        project = session.get(Project, project_id)
        return None if project is None else project.status


async def test_whole_life_apply_approve_start_remind_expire_grace_delete(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    env = time_skipping_env
    mail = MailCatcher()
    now = await env.get_current_time()
    state = new_state(start=now + timedelta(days=2), end=now + timedelta(days=30))
    async with project_worker(env.client, engine, mail) as tq:
        handle = await start_project(env.client, tq, state)
        view = await handle.execute_update(ProjectWorkflow.synced)
        assert view.state.status == ProjectStatus.pending
        assert status_in_db(engine, state.id) == "pending"

        decided = await handle.execute_update(
            ProjectWorkflow.decide,
            Decision(application_id=f"a-{state.id}", approve=True, admin_id="root", admin="root"),
        )
        assert decided.status == "approved"
        assert status_in_db(engine, state.id) == "approved"
        assert mail.subjects() == ["[mlcp] Project application approved: Vision"]

        result = await handle.result()  # time skips through start, reminder, end and grace
        assert result == ProjectStatus.deleted
        assert status_in_db(engine, state.id) == "deleted"
        keys = [m.key.split("/", 1)[1] for m in mail.messages]
        assert keys[0].endswith("/approved")
        assert keys[1].startswith("reminder/") and keys[2].startswith("expired/") and keys[3] == "deleted"
        end_of_grace = await env.get_current_time()
        assert end_of_grace >= state.details.end_at + timedelta(days=14)


def failure_type(exc: WorkflowUpdateFailedError) -> str | None:
    cause = exc.cause
    return cause.type if isinstance(cause, ApplicationError) else None


async def rejected_type(
    env: WorkflowEnvironment, handle: WorkflowHandle[Any, Any], update: Any, arg: Any
) -> str | None:
    """Send an update the workflow must refuse; return the refusal's error type.

    The time-skipping test server can lose an update that arrives while it still completes the
    workflow task that refused the previous one, so let a second of skipped time pass after it.
    """
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(update, arg)
    await env.sleep(timedelta(seconds=1))
    await handle.query("view")  # a full round trip through the worker before the next update
    return failure_type(refused.value)


async def completed(handle: WorkflowHandle[Any, Any]) -> None:
    for _ in range(100):
        if (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{handle.id} did not complete")


async def approve(handle: WorkflowHandle[Any, Any], application_id: str) -> Application:
    return await handle.execute_update(
        ProjectWorkflow.decide,
        Decision(application_id=application_id, approve=True, admin_id="root", admin="root"),
    )


async def active_project(
    env: WorkflowEnvironment,
    tq: str,
    days: int = 30,
    quota: Quota | None = None,
) -> tuple[WorkflowHandle[Any, Any], ProjectState]:
    now = await env.get_current_time()
    state = new_state(start=now - timedelta(minutes=1), end=now + timedelta(days=days), quota=quota)
    handle = await start_project(env.client, tq, state)
    await approve(handle, f"a-{state.id}")
    assert (await handle.query(ProjectWorkflow.view)).state.status == ProjectStatus.active
    return handle, state


async def test_rejection_needs_a_reason_and_ends_the_workflow(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    env, mail = time_skipping_env, MailCatcher()
    now = await env.get_current_time()
    state = new_state(start=now + timedelta(days=1), end=now + timedelta(days=10))
    async with project_worker(env.client, engine, mail) as tq:
        handle = await start_project(env.client, tq, state)
        no_reason = Decision(application_id=f"a-{state.id}", approve=False, admin_id="root", admin="root")
        assert await rejected_type(env, handle, ProjectWorkflow.decide, no_reason) == "Invalid"
        rejected = await handle.execute_update(
            ProjectWorkflow.decide, no_reason.model_copy(update={"reason": "no budget"})
        )
        assert rejected.status == ApplicationStatus.rejected
        assert await handle.result() == ProjectStatus.rejected
        assert status_in_db(engine, state.id) == "rejected"
        assert "no budget" in mail.messages[0].body and mail.messages[0].to_user_ids == ["alice"]


async def test_withdrawal_only_by_the_applicant(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    env = time_skipping_env
    now = await env.get_current_time()
    state = new_state(start=now + timedelta(days=1), end=now + timedelta(days=10))
    async with project_worker(env.client, engine, MailCatcher()) as tq:
        handle = await start_project(env.client, tq, state)
        by_bob = Withdrawal(application_id=f"a-{state.id}", user_id="bob")
        assert await rejected_type(env, handle, ProjectWorkflow.withdraw, by_bob) == "Forbidden"
        await handle.execute_update(
            ProjectWorkflow.withdraw, Withdrawal(application_id=f"a-{state.id}", user_id="alice")
        )
        assert await handle.result() == ProjectStatus.withdrawn
        with pytest.raises(RPCError):  # the lifecycle is over
            await approve(handle, f"a-{state.id}")


async def test_concurrent_approvals_decide_once_on_the_real_server(
    dev_server_env: WorkflowEnvironment, engine: Engine
) -> None:
    env, mail = dev_server_env, MailCatcher()
    now = await env.get_current_time()
    state = new_state(start=now + timedelta(days=1), end=now + timedelta(days=10))
    async with project_worker(env.client, engine, mail) as tq:
        handle = await start_project(env.client, tq, state)
        results = await asyncio.gather(
            *(approve(handle, f"a-{state.id}") for _ in range(5)), return_exceptions=True
        )
        decided = [r for r in results if isinstance(r, Application)]
        refused = [r for r in results if isinstance(r, WorkflowUpdateFailedError)]
        assert len(decided) == 1 and len(refused) == 4
        assert {failure_type(r) for r in refused} == {"Conflict"}
        assert [m.key.rsplit("/", 1)[1] for m in mail.messages] == ["approved"]


async def test_extension_while_active_moves_the_end_and_rearms_the_reminder(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    env, mail = time_skipping_env, MailCatcher()
    async with project_worker(env.client, engine, mail) as tq:
        handle, state = await active_project(env, tq, days=10)
        await env.sleep(timedelta(days=4))  # past the 7-day reminder
        assert any("/reminder/" in m.key for m in mail.messages)
        extension = Application(
            id="ext-1",
            type=ApplicationType.extension,
            applicant_id="alice",
            applicant="alice",
            submitted_at=await env.get_current_time(),
            extension_days=20,
        )
        await handle.execute_update(ProjectWorkflow.apply, extension)
        second = extension.model_copy(update={"id": "ext-2"})
        assert await rejected_type(env, handle, ProjectWorkflow.apply, second) == "Conflict"
        await approve(handle, "ext-1")
        view = await handle.query(ProjectWorkflow.view)
        assert view.state.details.end_at == state.details.end_at + timedelta(days=20)
        await env.sleep(timedelta(days=20))  # the new end is 26 days away: a second reminder at 19
        reminders = [m for m in mail.messages if "/reminder/" in m.key]
        assert len(reminders) == 2
        assert (await handle.query(ProjectWorkflow.view)).state.status == ProjectStatus.active


async def test_extension_during_grace_returns_to_active(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    env, mail = time_skipping_env, MailCatcher()
    async with project_worker(env.client, engine, mail, extra_workflows=[FakeWorkloadWorkflow]) as tq:
        handle, state = await active_project(env, tq, days=3)
        workload, request = await start_workload(env.client, tq, state.id, "c1", gpu=1)
        assert (await admit(handle, workload, request)).admitted
        await env.sleep(timedelta(days=4))
        view = await handle.query(ProjectWorkflow.view)
        assert view.state.status == ProjectStatus.grace
        assert status_in_db(engine, state.id) == "grace"
        # Deleted through its own workflow. (Awaiting its result would let the test server skip time
        # to the end of grace, so poll its description instead.)
        await completed(workload)
        assert await workload.query(FakeWorkloadWorkflow.shutdown_reason_query) == "grace"
        assert view.state.ledger == [] or (await handle.query(ProjectWorkflow.quota_panel)).in_flight.gpu == 0
        late_workload, late = await start_workload(env.client, tq, state.id, "c2", gpu=1)
        assert (await admit(handle, late_workload, late)).refusal == "Conflict"

        extension = Application(
            id="ext-g",
            type=ApplicationType.extension,
            applicant_id="alice",
            applicant="alice",
            submitted_at=await env.get_current_time(),
            extension_days=30,
        )
        await handle.execute_update(ProjectWorkflow.apply, extension)
        await approve(handle, "ext-g")
        view = await handle.query(ProjectWorkflow.view)
        assert view.state.status == ProjectStatus.active and view.state.grace_ends_at is None
        assert any("/expired/" in m.key for m in mail.messages)


async def test_quota_application_adds_to_quota_and_admits_the_queue(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    env = time_skipping_env
    async with project_worker(
        env.client, engine, MailCatcher(), extra_workflows=[FakeWorkloadWorkflow]
    ) as tq:
        handle, state = await active_project(env, tq, quota=Quota(gpu=2, vcpu=8, ram_gb=32))
        first, first_req = await start_workload(env.client, tq, state.id, "q1", gpu=2)
        second, second_req = await start_workload(env.client, tq, state.id, "q2", gpu=1)
        assert (await admit(handle, first, first_req)).admitted
        queued = await admit(handle, second, second_req)
        assert (queued.admitted, queued.position, queued.reason) == (
            False,
            1,
            "waiting for resources: 1 GPU short",
        )
        quota_app = Application(
            id="quota-1",
            type=ApplicationType.quota,
            applicant_id="alice",
            applicant="alice",
            submitted_at=await env.get_current_time(),
            quota_delta=Quota(gpu=2),
        )
        await handle.execute_update(ProjectWorkflow.apply, quota_app)
        await approve(handle, "quota-1")
        panel = await handle.query(ProjectWorkflow.quota_panel)
        assert panel.limit.gpu == 4 and panel.in_flight.gpu == 3 and panel.requested.gpu == 0
        await env.sleep(timedelta(seconds=5))
        assert await second.query(FakeWorkloadWorkflow.is_admitted)


async def test_admission_queue_order_release_and_limits(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    env = time_skipping_env
    async with project_worker(
        env.client, engine, MailCatcher(), extra_workflows=[FakeWorkloadWorkflow]
    ) as tq:
        handle, state = await active_project(env, tq, quota=Quota(gpu=2, vcpu=8, ram_gb=32))
        workloads = [
            await start_workload(env.client, tq, state.id, f"w{i}", gpu=g) for i, g in enumerate([2, 2, 1])
        ]
        results = [await admit(handle, workload, req) for workload, req in workloads]
        assert [(r.admitted, r.position) for r in results] == [(True, None), (False, 1), (False, 2)]
        again = await admit(handle, *workloads[1])
        assert again == results[1]  # idempotent on the resource ID

        await handle.signal(ProjectWorkflow.workload_running, WorkloadEvent(resource_id="w0"))
        await handle.signal(ProjectWorkflow.release, WorkloadEvent(resource_id="w0"))
        await env.sleep(timedelta(seconds=5))
        assert await workloads[1][0].query(FakeWorkloadWorkflow.is_admitted)
        assert not await workloads[2][0].query(FakeWorkloadWorkflow.is_admitted)
        panel = await handle.query(ProjectWorkflow.quota_panel)
        assert (panel.in_flight.gpu, panel.requested.gpu, panel.remaining.gpu) == (2, 1, 0)
        assert panel.queue[0].resource_id == "w2"

        huge, too_big = await start_workload(env.client, tq, state.id, "huge", gpu=3)
        refused = await admit(handle, huge, too_big)
        assert (refused.admitted, refused.refusal) == (False, "QuotaExceeded")
        assert "the request exceeds the project's whole quota by 1 GPU" in refused.reason
        assert "huge" not in [e.resource_id for e in (await handle.query(ProjectWorkflow.view)).state.ledger]


async def test_admission_refused_before_the_project_is_active(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    env = time_skipping_env
    now = await env.get_current_time()
    state = new_state(start=now + timedelta(days=2), end=now + timedelta(days=9))
    async with project_worker(
        env.client, engine, MailCatcher(), extra_workflows=[FakeWorkloadWorkflow]
    ) as tq:
        handle = await start_project(env.client, tq, state)
        workload, request = await start_workload(env.client, tq, state.id, "x", gpu=1)
        for attempt in range(2):  # pending, then approved-but-not-started
            assert (await admit(handle, workload, request)).refusal == "Conflict"
            if attempt == 0:
                await approve(handle, f"a-{state.id}")


async def test_delete_needs_the_code_and_deletes_workloads_through_their_workflows(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    env, mail = time_skipping_env, MailCatcher()
    async with project_worker(env.client, engine, mail, extra_workflows=[FakeWorkloadWorkflow]) as tq:
        handle, state = await active_project(env, tq)
        workload, request = await start_workload(env.client, tq, state.id, "d1", gpu=1)
        await admit(handle, workload, request)
        wrong = DeleteRequest(user_id="alice", username="alice", confirmation_code="WRONG")
        assert await rejected_type(env, handle, ProjectWorkflow.request_delete, wrong) == "Invalid"
        await handle.execute_update(
            ProjectWorkflow.request_delete, wrong.model_copy(update={"confirmation_code": "ABC123"})
        )
        assert await handle.result() == ProjectStatus.deleted
        assert await workload.result() == "deleting"
        assert status_in_db(engine, state.id) == "deleted"
        assert mail.messages[-1].key.endswith("/deleted")
        assert sorted(mail.messages[-1].to_user_ids) == ["alice", "bob"]


async def test_continue_as_new_keeps_state(time_skipping_env: WorkflowEnvironment, engine: Engine) -> None:
    env = time_skipping_env
    async with project_worker(
        env.client, engine, MailCatcher(), extra_workflows=[FakeWorkloadWorkflow]
    ) as tq:
        now = await env.get_current_time()
        state = new_state(start=now - timedelta(minutes=1), end=now + timedelta(days=30))
        handle = await start_project(env.client, tq, state, max_history_events=30)
        first_run = (await handle.describe()).run_id
        await approve(handle, f"a-{state.id}")
        for i in range(6):
            workload, request = await start_workload(env.client, tq, state.id, f"can{i}", gpu=1)
            await admit(handle, workload, request)
            await handle.signal(ProjectWorkflow.workload_running, WorkloadEvent(resource_id=f"can{i}"))
        await env.sleep(timedelta(seconds=5))
        latest = env.client.get_workflow_handle(handle.id)
        assert (await latest.describe()).run_id != first_run
        view = await latest.query(ProjectWorkflow.view)
        assert view.state.applications[0].status == ApplicationStatus.approved
        assert [e.resource_id for e in view.state.ledger] == [f"can{i}" for i in range(6)]
        assert view.panel.in_use.gpu == 4 and view.panel.requested.gpu == 2
        assert view.state.status == ProjectStatus.active
