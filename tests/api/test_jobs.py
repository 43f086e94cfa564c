"""Jobs through the API, with a real worker on the Temporal dev server and the local runtime."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from config import Settings
from models.jobs import JobLog
from models.workloads import WorkloadState
from services.runtimes import runtime_from_settings
from tests.api import test_projects
from tests.api.test_containers import active_project, make_spec
from tests.api.test_projects import Headers, eventually

# The API with a real worker, and signed-in people, as the project tests set them up.
platform = test_projects.platform
people = test_projects.people

IMAGE = "python:3.11-slim"
# The failure and stop paths write through the same queries as the success path, which runs on both lanes.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def jobs_url(project_id: str) -> str:
    return f"/api/v1/projects/{project_id}/jobs"


def job_body(spec: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "hello1",
        "spec_id": spec,
        "image": IMAGE,
        "command": 'echo "Hello World!"',
        "env": {"EPOCHS": "3"},
    }
    body.update(overrides)
    return body


async def create(api: httpx.AsyncClient, who: Headers, project_id: str, **body: Any) -> dict[str, Any]:
    response = await api.post(jobs_url(project_id), headers=who, json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def wait_status(
    api: httpx.AsyncClient, who: Headers, project_id: str, job_id: str, *statuses: str
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def reached() -> bool:
        response = await api.get(f"{jobs_url(project_id)}/{job_id}", headers=who)
        seen.update(response.json())
        return seen.get("status") in statuses

    await eventually(reached)
    return seen


async def test_hello_world_runs_its_log_outlives_it_and_delete_hides_it(
    platform: httpx.AsyncClient,
    people: dict[str, Headers],
    engine: Engine,
    settings: Settings,
) -> None:
    project = await active_project(platform, people)
    spec_id = make_spec(engine, vcpu=1)
    url, key = jobs_url(project["id"]), {"Idempotency-Key": "retry-1"}
    response = await platform.post(url, headers=people["bob"] | key, json=job_body(spec_id))
    assert response.status_code == 201, response.text
    created = response.json()
    retried = await platform.post(url, headers=people["bob"] | key, json=job_body(spec_id))
    assert (retried.status_code, retried.json()["id"]) == (201, created["id"])  # one job, not two
    assert (created["owner"], created["command"], created["env"]) == (
        "bob",
        'echo "Hello World!"',
        {"EPOCHS": "3"},
    )
    assert created["max_runtime_seconds"] == settings.job_max_runtime_hours * 3600 == 72 * 3600
    assert created["status"] in ("waiting", "creating", "running", "succeeded")

    done = await wait_status(platform, people["bob"], project["id"], created["id"], "succeeded")
    assert (done["exit_code"], done["reason"]) == (0, "Completed")
    assert done["started_at"] and done["finished_at"]

    async def kept() -> bool:
        return bool((await platform.get(f"{url}/{created['id']}", headers=people["bob"])).json()["log_tail"])

    await eventually(kept)
    runtime = runtime_from_settings(settings)

    async def cleaned_up() -> bool:
        status = runtime.status(project["id"], "job", created["id"])
        return status.state == WorkloadState.gone

    await eventually(cleaned_up)
    detail = (await platform.get(f"{url}/{created['id']}", headers=people["bob"])).json()
    assert (detail["log_tail"], detail["events"]) == ("Hello World!\n", [])
    log = await platform.get(f"{url}/{created['id']}/log", headers=people["bob"])
    assert log.status_code == 200 and log.headers["content-type"].startswith("text/plain")
    assert log.text == "Hello World!\n"
    with Session(engine) as session:
        stored = session.get(JobLog, created["id"])
        assert stored is not None and stored.text == "Hello World!\n"

    listed = (await platform.get(url, headers=people["bob"])).json()
    assert [(j["id"], j["status"]) for j in listed["items"]] == [(created["id"], "succeeded")]
    deleted = await platform.delete(f"{url}/{created['id']}", headers=people["bob"])
    assert deleted.status_code == 202, deleted.text
    assert (deleted.json()["status"], deleted.json()["message"]) == ("deleted", "deleted by bob")
    assert (await platform.get(url, headers=people["bob"])).json()["total"] == 0
    shown = await platform.get(url, headers=people["bob"], params={"status": "deleted"})
    assert [j["id"] for j in shown.json()["items"]] == [created["id"]]
    assert shown.json()["items"][0]["exit_code"] == 0  # the outcome stays readable
    again = await platform.delete(f"{url}/{created['id']}", headers=people["bob"])
    assert again.status_code == 409, again.text


@SQLITE_ONLY
async def test_a_failing_job_reports_its_exit_code_and_a_running_one_stops_on_delete(
    platform: httpx.AsyncClient, people: dict[str, Headers], engine: Engine, settings: Settings
) -> None:
    project = await active_project(platform, people)
    spec_id = make_spec(engine, vcpu=1)
    url = jobs_url(project["id"])
    failing = await create(
        platform,
        people["bob"],
        project["id"],
        **job_body(spec_id, name="fail1", command="echo oops >&2; exit 3"),
    )
    long = await create(
        platform,
        people["bob"],
        project["id"],
        **job_body(spec_id, name="long1", command="echo started && sleep 60"),
    )
    failed = await wait_status(platform, people["bob"], project["id"], failing["id"], "failed")
    assert failed["exit_code"] == 3 and failed["reason"]

    async def live_log() -> bool:
        detail = (await platform.get(f"{url}/{long['id']}", headers=people["bob"])).json()
        return bool(detail["status"] == "running" and detail["log_tail"] == "started\n")

    await eventually(live_log)
    stopping = await platform.delete(f"{url}/{long['id']}", headers=people["bob"])
    assert stopping.status_code == 202, stopping.text
    assert stopping.json()["status"] in ("deleting", "deleted")
    await wait_status(platform, people["bob"], project["id"], long["id"], "deleted")
    gone = runtime_from_settings(settings).status(project["id"], "job", long["id"])
    assert gone.state == WorkloadState.gone
    assert (await platform.get(f"{url}/{long['id']}/log", headers=people["bob"])).text == "started\n"
    assert "oops" in (await platform.get(f"{url}/{failing['id']}/log", headers=people["bob"])).text


async def test_validation_names_the_field_members_see_their_own_admins_all_outsiders_nothing(
    platform: httpx.AsyncClient, people: dict[str, Headers], engine: Engine
) -> None:
    project = await active_project(platform, people)
    spec_id, retired = make_spec(engine, vcpu=1), make_spec(engine, is_active=False)
    url = jobs_url(project["id"])
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name": "Hello_1"}, "name"),
        ({"name": ""}, "name"),
        ({"spec_id": "missing"}, "spec_id"),
        ({"spec_id": retired}, "spec_id"),
        ({"image": ""}, "image"),
        ({"command": None}, "command"),  # left out
        ({"command": "   "}, "command"),
        ({"env": {"1BAD": "x"}}, "env"),
        ({"shm_gb": 0}, "shm_gb"),
    ]
    for overrides, field in cases:
        body = {k: v for k, v in job_body(spec_id, **overrides).items() if v is not None}
        response = await platform.post(url, headers=people["bob"], json=body)
        assert response.status_code == 422, (overrides, response.text)
        assert response.json()["field"] == field, (overrides, response.json())
    assert (await platform.get(url, headers=people["alice"])).json()["total"] == 0

    sleeper = job_body(spec_id, command="sleep 60")
    bobs = await create(platform, people["bob"], project["id"], **sleeper | {"name": "bob1"})
    alices = await create(platform, people["alice"], project["id"], **sleeper | {"name": "alice1"})

    seen_by_bob = (await platform.get(url, headers=people["bob"])).json()
    assert [j["id"] for j in seen_by_bob["items"]] == [bobs["id"]]
    seen_by_alice = (await platform.get(url, headers=people["alice"])).json()
    assert {j["id"] for j in seen_by_alice["items"]} == {bobs["id"], alices["id"]}
    only_bob = (await platform.get(url, headers=people["alice"], params={"owner": "bob"})).json()
    assert [j["id"] for j in only_bob["items"]] == [bobs["id"]]
    paged = (await platform.get(url, headers=people["alice"], params={"limit": 1})).json()
    assert (len(paged["items"]), paged["total"]) == (1, 2)
    by_status = await platform.get(url, headers=people["alice"], params={"status": "succeeded"})
    assert by_status.json()["total"] == 0
    assert (await platform.get(f"{url}/{bobs['id']}", headers=people["root"])).status_code == 200

    assert (await platform.get(f"{url}/{alices['id']}", headers=people["bob"])).status_code == 404
    assert (await platform.get(f"{url}/{alices['id']}/log", headers=people["bob"])).status_code == 404
    assert (await platform.delete(f"{url}/{alices['id']}", headers=people["bob"])).status_code == 404
    assert (await platform.get(url, headers=people["carol"])).status_code == 404
    assert (await platform.get(f"{url}/{bobs['id']}", headers=people["carol"])).status_code == 404
    assert (await platform.post(url, headers=people["carol"], json=sleeper)).status_code == 404

    both = await platform.post(
        f"{url}/delete", headers=people["bob"], json={"ids": [bobs["id"], alices["id"], "missing"]}
    )
    assert both.status_code == 200, both.text
    results = {r["id"]: r for r in both.json()["results"]}
    assert results[bobs["id"]]["ok"] is True
    assert (results[alices["id"]]["ok"], results[alices["id"]]["error"]) == (False, "not_found")
    assert results["missing"]["error"] == "not_found"
    by_admin = await platform.post(f"{url}/delete", headers=people["alice"], json={"ids": [alices["id"]]})
    assert by_admin.json()["results"][0]["ok"] is True
    for job in (bobs, alices):
        await wait_status(platform, people["alice"], project["id"], job["id"], "deleted")
