from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine
from sqlmodel import Session
from temporalio.testing import WorkflowEnvironment

from models.lifecycle import Decision, ProjectStatus
from models.projects import Project
from tests.workflows.project_harness import MailCatcher, new_state, project_worker, start_project
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
