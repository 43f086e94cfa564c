"""Job templates and schedules through the API, with a real worker on the Temporal dev server."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from models.base import utcnow
from tests.api import test_projects
from tests.api.test_containers import active_project, make_spec
from tests.api.test_projects import Headers, eventually

platform = test_projects.platform
people = test_projects.people


def templates_url(project_id: str) -> str:
    return f"/api/v1/projects/{project_id}/job-templates"


def schedules_url(project_id: str) -> str:
    return f"/api/v1/projects/{project_id}/schedules"


def template_body(spec: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "train",
        "spec_id": spec,
        "image": "pytorch/pytorch:2.3.0-cuda12.1-cudnn8-runtime",
        "command": "sleep 1",
        "env": {"EPOCHS": "3"},
    }
    body.update(overrides)
    return body


def schedule_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "nightly",
        "description": "retrain every night",
        "time_zone": "Asia/Taipei",
        "trigger": {"kind": "daily", "at": "20:10"},
        "concurrency": "single",
    }
    body.update(overrides)
    return body


async def make_template(api: httpx.AsyncClient, who: Headers, project_id: str, **body: Any) -> dict[str, Any]:
    response = await api.post(templates_url(project_id), headers=who, json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def make_schedule(api: httpx.AsyncClient, who: Headers, project_id: str, **body: Any) -> dict[str, Any]:
    response = await api.post(schedules_url(project_id), headers=who, json=schedule_body(**body))
    assert response.status_code == 201, response.text
    return response.json()


async def test_templates_are_the_projects_changed_by_their_owner_or_project_admins_and_validated(
    platform: httpx.AsyncClient, people: dict[str, Headers], engine: Engine
) -> None:
    project = await active_project(platform, people)
    url, spec_id = templates_url(project["id"]), make_spec(engine, vcpu=1)
    made = await make_template(platform, people["bob"], project["id"], **template_body(spec_id))
    assert (made["owner"], made["name"], made["command"], made["env"]) == (
        "bob",
        "train",
        "sleep 1",
        {"EPOCHS": "3"},
    )

    for who in ("alice", "bob", "root"):
        listed = (await platform.get(url, headers=people[who])).json()
        assert [t["id"] for t in listed["items"]] == [made["id"]], who
    assert (await platform.get(url, headers=people["carol"])).status_code == 404
    assert (await platform.get(f"{url}/{made['id']}", headers=people["carol"])).status_code == 404

    duplicate = await platform.post(url, headers=people["alice"], json=template_body(spec_id))
    assert (duplicate.status_code, duplicate.json()["field"]) == (409, "name")
    by_root = await platform.post(url, headers=people["root"], json=template_body(spec_id, name="root1"))
    assert by_root.status_code == 403  # platform admins see every project but are not its members

    edited = await platform.patch(f"{url}/{made['id']}", headers=people["alice"], json={"command": "echo hi"})
    assert edited.status_code == 200 and edited.json()["command"] == "echo hi", edited.text
    refused = await platform.patch(f"{url}/{made['id']}", headers=people["root"], json={"command": "x"})
    assert refused.status_code == 403
    cleared = await platform.patch(f"{url}/{made['id']}", headers=people["bob"], json={"shm_gb": 2})
    assert cleared.json()["shm_gb"] == 2 and cleared.json()["command"] == "echo hi"
    nulled = await platform.patch(f"{url}/{made['id']}", headers=people["bob"], json={"image": None})
    assert (nulled.status_code, nulled.json()["field"]) == (422, "image")

    second = await make_template(
        platform, people["alice"], project["id"], **template_body(spec_id, name="eval")
    )
    paged = (await platform.get(url, headers=people["bob"], params={"limit": 1})).json()
    assert paged["total"] == 2 and [t["id"] for t in paged["items"]] == [second["id"]]
    named = (await platform.get(url, headers=people["bob"], params={"name": "TRA"})).json()
    assert [t["id"] for t in named["items"]] == [made["id"]]

    assert (await platform.delete(f"{url}/{made['id']}", headers=people["root"])).status_code == 403
    assert (await platform.delete(f"{url}/{made['id']}", headers=people["bob"])).status_code == 204
    assert (await platform.get(f"{url}/{made['id']}", headers=people["bob"])).status_code == 404
    await _template_validation_names_the_field(platform, people, engine, project)


async def _template_validation_names_the_field(
    platform: httpx.AsyncClient, people: dict[str, Headers], engine: Engine, project: dict[str, Any]
) -> None:
    spec_id, retired = make_spec(engine, vcpu=3), make_spec(engine, vcpu=2, is_active=False)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name": "Train"}, "name"),
        ({"name": "t" * 33}, "name"),  # leaves room for the run number
        ({"spec_id": "missing"}, "spec_id"),
        ({"spec_id": retired}, "spec_id"),
        ({"image": "two words"}, "image"),
        ({"command": "   "}, "command"),
        ({"command": None}, "command"),
        ({"env": {"1BAD": "x"}}, "env"),
        ({"shm_gb": 0}, "shm_gb"),
    ]
    for overrides, field in cases:
        response = await platform.post(
            templates_url(project["id"]), headers=people["bob"], json=template_body(spec_id, **overrides)
        )
        assert response.status_code == 422, (overrides, response.text)
        assert response.json()["field"] == field, (overrides, response.json())


async def test_schedule_lifecycle_visibility_and_refusals(
    platform: httpx.AsyncClient,
    people: dict[str, Headers],
    engine: Engine,
    dev_server_env: WorkflowEnvironment,
) -> None:
    project = await active_project(platform, people)
    url = schedules_url(project["id"])
    template = await make_template(platform, people["bob"], project["id"], **template_body(make_spec(engine)))

    # Way 1 of the manual: the schedule first, the template attached afterwards.
    made = await make_schedule(platform, people["bob"], project["id"])
    assert (made["owner"], made["template_id"], made["paused"]) == ("bob", None, True)
    assert made["pause_note"] == "no job template attached yet" and made["next_runs"] == []
    handle = dev_server_env.client.get_schedule_handle(f"schedule-{made['id']}")
    assert (await handle.describe()).schedule.state.paused

    resumed = await platform.post(f"{url}/{made['id']}/resume", headers=people["bob"])
    assert (resumed.status_code, resumed.json()["field"]) == (409, "template_id")
    attached = await platform.patch(
        f"{url}/{made['id']}", headers=people["bob"], json={"template_id": template["id"]}
    )
    body = attached.json()
    assert attached.status_code == 200, attached.text
    assert (body["template_id"], body["template_name"], body["paused"]) == (template["id"], "train", False)
    assert body["next_runs"] and all(
        (t[11:16] == "12:10" and t.endswith(("Z", "+00:00"))) for t in body["next_runs"]
    ), body["next_runs"]  # 20:10 in Taipei

    # The job list shows the next run as a row that only goes with its schedule.
    jobs_url, row_id = f"/api/v1/projects/{project['id']}/jobs", f"schedule-{made['id']}"
    for who in ("alice", "bob"):
        upcoming = (await platform.get(jobs_url, headers=people[who])).json()["upcoming"]
        assert [(u["id"], u["name"], u["owner"], u["status"]) for u in upcoming] == [
            (row_id, "nightly", "bob", "scheduled")
        ], who
        assert upcoming[0]["next_run_at"].replace("+00:00", "Z") == body["next_runs"][0].replace(
            "+00:00", "Z"
        )
    assert (await platform.get(jobs_url, headers=people["bob"], params={"offset": 1})).json()[
        "upcoming"
    ] == []
    assert (await platform.get(jobs_url, headers=people["alice"], params={"owner": "alice"})).json()[
        "upcoming"
    ] == []
    refused = await platform.delete(f"{jobs_url}/{row_id}", headers=people["bob"])
    assert refused.status_code == 409 and "delete the schedule" in refused.json()["message"], refused.text
    several = await platform.post(f"{jobs_url}/delete", headers=people["alice"], json={"ids": [row_id]})
    assert several.json()["results"][0]["error"] == "conflict", several.text
    assert (await platform.delete(f"{jobs_url}/{row_id}", headers=people["carol"])).status_code == 404

    paused = await platform.post(
        f"{url}/{made['id']}/pause", headers=people["alice"], json={"note": "holiday"}
    )
    assert (paused.json()["paused"], paused.json()["pause_note"], paused.json()["next_runs"]) == (
        True,
        "holiday",
        [],
    )
    assert (await handle.describe()).schedule.state.note == "holiday"
    assert (await platform.get(jobs_url, headers=people["bob"])).json()["upcoming"] == []
    resumed = await platform.post(f"{url}/{made['id']}/resume", headers=people["bob"])
    assert resumed.status_code == 200 and not resumed.json()["paused"], resumed.text

    renamed = await platform.patch(f"{url}/{made['id']}", headers=people["bob"], json={"name": "other"})
    assert (renamed.status_code, renamed.json()["field"]) == (422, "name")
    edited = await platform.patch(
        f"{url}/{made['id']}",
        headers=people["bob"],
        json={"trigger": {"kind": "every_minutes", "every": 30}, "concurrency": "multi", "time_zone": "UTC"},
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["trigger"] == {"kind": "every_minutes", "every": 30}
    described = await handle.describe()
    assert [i.every for i in described.schedule.spec.intervals] == [timedelta(minutes=30)]
    assert described.schedule.policy.overlap.name == "ALLOW_ALL"

    # The template is in use: deleting it names the schedule.
    in_use = await platform.delete(f"{templates_url(project['id'])}/{template['id']}", headers=people["bob"])
    assert in_use.status_code == 409 and "nightly" in in_use.json()["message"], in_use.text

    assert (await platform.delete(f"{url}/{made['id']}", headers=people["carol"])).status_code == 404
    assert (await platform.delete(f"{url}/{made['id']}", headers=people["root"])).status_code == 403
    assert (await platform.delete(f"{url}/{made['id']}", headers=people["bob"])).status_code == 204
    with pytest.raises(RPCError):
        await handle.describe()
    assert (await platform.get(url, headers=people["alice"])).json()["total"] == 0
    gone = await platform.delete(f"{templates_url(project['id'])}/{template['id']}", headers=people["bob"])
    assert gone.status_code == 204
    await _who_sees_and_changes_schedules_and_what_is_refused(platform, people, engine, project)


async def _who_sees_and_changes_schedules_and_what_is_refused(
    platform: httpx.AsyncClient, people: dict[str, Headers], engine: Engine, project: dict[str, Any]
) -> None:
    url = schedules_url(project["id"])
    template = await make_template(
        platform, people["bob"], project["id"], **template_body(make_spec(engine, vcpu=4))
    )
    bobs = await make_schedule(platform, people["bob"], project["id"], template_id=template["id"])
    alices = await make_schedule(
        platform, people["alice"], project["id"], name="weekly", template_id=template["id"]
    )

    seen_by_bob = (await platform.get(url, headers=people["bob"])).json()
    assert [s["id"] for s in seen_by_bob["items"]] == [bobs["id"]]
    seen_by_alice = (await platform.get(url, headers=people["alice"], params={"limit": 1})).json()
    assert seen_by_alice["total"] == 2 and [s["id"] for s in seen_by_alice["items"]] == [alices["id"]]
    assert (await platform.get(f"{url}/{alices['id']}", headers=people["bob"])).status_code == 404
    assert (await platform.get(url, headers=people["carol"])).status_code == 404
    changed = await platform.patch(
        f"{url}/{bobs['id']}", headers=people["alice"], json={"description": "admin"}
    )
    assert changed.status_code == 200 and changed.json()["description"] == "admin"

    taken = await platform.post(url, headers=people["bob"], json=schedule_body())
    assert (taken.status_code, taken.json()["field"]) == (409, "name")
    now = utcnow()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name": "Nightly"}, "name"),
        ({"time_zone": "Asia/Nowhere"}, "time_zone"),
        ({"trigger": {"kind": "daily", "at": "25:00"}}, "trigger.daily.at"),
        ({"trigger": {"kind": "cron", "expression": "0 0 0 * *"}}, "trigger.cron.expression"),
        ({"concurrency": "sometimes"}, "concurrency"),
        ({"start_at": "2027-01-01T00:00:00"}, "start_at"),  # no time zone
        (
            {
                "start_at": (now + timedelta(days=2)).isoformat(),
                "end_at": (now + timedelta(days=1)).isoformat(),
            },
            "end_at",
        ),
        ({"end_at": (now - timedelta(days=1)).isoformat()}, "end_at"),
        ({"template_id": "missing"}, "template_id"),
    ]
    for overrides, field in cases:
        response = await platform.post(
            url, headers=people["bob"], json=schedule_body(**{"name": "other", **overrides})
        )
        assert response.status_code == 422, (overrides, response.text)
        assert response.json()["field"] == field, (overrides, response.json())
    by_root = await platform.post(url, headers=people["root"], json=schedule_body(name="root"))
    assert by_root.status_code == 403
    for made in (bobs, alices):
        assert (await platform.delete(f"{url}/{made['id']}", headers=people["alice"])).status_code == 204


async def test_a_template_runs_now_and_as_a_new_or_an_existing_schedule(
    platform: httpx.AsyncClient, people: dict[str, Headers], engine: Engine
) -> None:
    project = await active_project(platform, people)
    spec_id = make_spec(engine)
    template = await make_template(platform, people["bob"], project["id"], **template_body(spec_id))
    other = await make_template(
        platform, people["bob"], project["id"], **template_body(spec_id, name="other")
    )
    url = f"{templates_url(project['id'])}/{template['id']}/schedule"

    neither = await platform.post(url, headers=people["bob"], json={})
    assert (neither.status_code, neither.json()["field"]) == (422, "schedule_id")
    created = await platform.post(
        url,
        headers=people["bob"],
        json={"schedule": schedule_body(trigger={"kind": "every_hours", "every": 6})},
    )
    assert created.status_code == 201, created.text
    made = created.json()
    assert made["template_id"] == template["id"] and not made["paused"] and made["next_runs"]

    attach = f"{templates_url(project['id'])}/{other['id']}/schedule"
    existing = await platform.post(
        attach, headers=people["bob"], json={"schedule_id": made["id"], "changes": {"description": "moved"}}
    )
    assert existing.status_code == 200, existing.text
    assert (existing.json()["template_id"], existing.json()["description"], existing.json()["name"]) == (
        other["id"],
        "moved",
        "nightly",
    )
    assert (
        await platform.post(attach, headers=people["carol"], json={"schedule_id": made["id"]})
    ).status_code == 404
    url = schedules_url(project["id"])
    assert (await platform.delete(f"{url}/{made['id']}", headers=people["bob"])).status_code == 204
    await _running_a_template_starts_numbered_jobs_of_the_runner(platform, people, engine, project)


async def _running_a_template_starts_numbered_jobs_of_the_runner(
    platform: httpx.AsyncClient, people: dict[str, Headers], engine: Engine, project: dict[str, Any]
) -> None:
    template = await make_template(
        platform,
        people["alice"],
        project["id"],
        **template_body(make_spec(engine, vcpu=1), name="quick", command="true"),
    )
    url = f"{templates_url(project['id'])}/{template['id']}/run"

    first = await platform.post(url, headers=people["bob"])
    assert first.status_code == 201, first.text
    job = first.json()
    assert (job["name"], job["owner"], job["command"], job["env"]) == (
        "quick1",
        "bob",
        "true",
        {"EPOCHS": "3"},
    )
    assert job["spec_id"] == template["spec_id"] and job["image"] == template["image"]
    key = {"Idempotency-Key": "run-2"}
    second = await platform.post(url, headers={**people["bob"], **key})
    again = await platform.post(url, headers={**people["bob"], **key})
    assert second.json()["name"] == "quick2" and again.json()["id"] == second.json()["id"]
    named = await platform.post(url, headers=people["alice"], json={"name": "custom"})
    assert (named.status_code, named.json()["name"], named.json()["owner"]) == (201, "custom", "alice")
    taken = await platform.post(url, headers=people["alice"], json={"name": "quick1"})
    assert (taken.status_code, taken.json()["field"]) == (409, "name")
    bad = await platform.post(url, headers=people["alice"], json={"name": "Train 3"})
    assert (bad.status_code, bad.json()["field"]) == (422, "name")
    assert (await platform.post(url, headers=people["carol"])).status_code == 404
    assert (await platform.post(url, headers=people["root"])).status_code == 403

    jobs_url = f"/api/v1/projects/{project['id']}/jobs"

    async def all_finished() -> bool:
        listed = (await platform.get(jobs_url, headers=people["alice"])).json()
        return listed["total"] == 3 and {j["status"] for j in listed["items"]} == {"succeeded"}

    await eventually(all_finished, seconds=60)
    listed = (await platform.get(jobs_url, headers=people["alice"])).json()
    assert sorted(j["name"] for j in listed["items"]) == ["custom", "quick1", "quick2"]
