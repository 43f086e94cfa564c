"""Jobs on ``make run``: a command runs to its outcome on the local runtime with its log kept, a template
runs as a job, and a single-line schedule fires from its template with its runs in the job list."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.stack import ADMIN_PASSWORD, DevStack
from tests.e2e.test_dev_stack import _create_user, _sign_in
from tests.e2e.test_dev_stack_containers import Headers, _active_project, _eventually, _until

pytestmark = pytest.mark.e2e


async def _job(api: httpx.AsyncClient, who: Headers, url: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await api.post(url, headers=who, json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_a_member_runs_jobs_templates_and_a_schedule(dev_stack: DevStack) -> None:
    await dev_stack.start()
    async with httpx.AsyncClient(base_url=dev_stack.api_url, timeout=30) as api:
        admin = await _sign_in(api, "admin", ADMIN_PASSWORD)
        await _create_user(api, admin, "bob")
        bob = await _sign_in(api, "bob", "bob-password-1")
        spec = await api.post(
            "/api/v1/catalog/specs",
            headers=admin,
            json={"name": "cpu-1", "vcpu": 1, "ram_gb": 2, "hourly_price": "1"},
        )
        assert spec.status_code == 201, spec.text
        project_id = await _active_project(api, admin)
        jobs = f"/api/v1/projects/{project_id}/jobs"
        base = {"spec_id": spec.json()["id"], "image": "ubuntu:24.04"}

        hello = await _job(api, bob, jobs, base | {"name": "hello", "command": 'echo "Hello World!"'})
        done = await _until(api, bob, f"{jobs}/{hello['id']}", "succeeded")
        assert done["exit_code"] == 0
        assert "Hello World!" in (await api.get(f"{jobs}/{hello['id']}/log", headers=bob)).text

        broken = await _job(api, bob, jobs, base | {"name": "broken", "command": "echo oops; exit 3"})
        failed = await _until(api, bob, f"{jobs}/{broken['id']}", "failed")
        assert (failed["exit_code"], failed["reason"]) == (3, "Error")
        assert "oops" in failed["log_tail"]

        templates = f"/api/v1/projects/{project_id}/job-templates"
        template = await api.post(
            templates, headers=bob, json=base | {"name": "train", "command": "echo epoch done"}
        )
        assert template.status_code == 201, template.text
        from_template = await _job(api, bob, f"{templates}/{template.json()['id']}/run", {})
        assert from_template["name"] == "train1"
        await _until(api, bob, f"{jobs}/{from_template['id']}", "succeeded")

        schedules = f"/api/v1/projects/{project_id}/schedules"
        schedule = await api.post(
            schedules,
            headers=bob,
            json={
                "name": "nightly",
                "time_zone": "Asia/Taipei",
                "trigger": {"kind": "daily", "at": "20:10"},
                "template_id": template.json()["id"],
                "concurrency": "single",
            },
        )
        assert schedule.status_code == 201, schedule.text
        schedule_id = schedule.json()["id"]
        listed = (await api.get(jobs, headers=bob)).json()
        assert [row["id"] for row in listed["upcoming"]] == [f"schedule-{schedule_id}"]

        fired = await api.post(f"{schedules}/{schedule_id}/trigger", headers=bob)
        assert fired.status_code == 202, fired.text
        scheduled_job: dict[str, Any] = {}

        async def ran() -> bool:
            items = (await api.get(jobs, headers=bob)).json()["items"]
            scheduled_job.update(next((job for job in items if job["name"] == "nightly1"), {}))
            return scheduled_job.get("status") == "succeeded"

        await _eventually(ran)
        runs: list[tuple[str, str]] = []

        async def run_recorded() -> bool:
            # The run ends (and is recorded) just after its job's own record says succeeded.
            detail = (await api.get(f"{schedules}/{schedule_id}", headers=bob)).json()
            runs[:] = [(run["job_id"], run["outcome"]) for run in detail["recent_runs"]]
            return runs != [(scheduled_job["id"], "started")]

        await _eventually(run_recorded)
        assert runs == [(scheduled_job["id"], "succeeded")]
    assert await dev_stack.stop() == 0
