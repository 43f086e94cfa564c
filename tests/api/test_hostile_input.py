"""Hostile input is refused with a 422 naming the field, before anything is created.

Each case here once went through: a NUL in a job's command or environment answered 201 and left the job
`creating` for good (its runtime could not start it); an offset past what the database holds answered 500.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from tests.api import test_projects
from tests.api.test_containers import active_project, container_body, make_spec
from tests.api.test_jobs import job_body, jobs_url
from tests.api.test_projects import Headers

platform = test_projects.platform
people = test_projects.people
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
HUGE = "29480554559628962857585484006162432"


def refused(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field, response.json()


@SQLITE_ONLY
async def test_control_characters_in_workload_fields_are_refused_and_nothing_is_created(
    platform: httpx.AsyncClient, people: dict[str, Headers], engine: Engine
) -> None:
    project = await active_project(platform, people)
    spec_id, bob = make_spec(engine, vcpu=1), people["bob"]
    jobs = jobs_url(project["id"])
    cases: list[tuple[dict[str, Any], str]] = [
        ({"command": "echo \u0000"}, "command"),
        ({"command": "echo \u001b[2J"}, "command"),
        ({"env": {"A": "x\u0000y"}}, "env"),
        ({"image": "python:3.11\u0000"}, "image"),
        ({"image": "Python:3.11"}, "image"),  # not an OCI reference: the path is lowercase
        ({"image": "python:3.11 --privileged"}, "image"),
        ({"shm_gb": 1e308}, "shm_gb"),
    ]
    for overrides, field in cases:
        refused(await platform.post(jobs, headers=bob, json=job_body(spec_id, **overrides)), field)
    containers = f"/api/v1/projects/{project['id']}/containers"
    for overrides, field in [
        ({"image": "ubuntu\u0000"}, "image"),
        ({"password": "secret\u0000password"}, "password"),
        ({"end_at": "9999-12-31T00:00:00Z"}, "end_at"),
    ]:
        body = container_body(spec_id, **overrides)
        refused(await platform.post(containers, headers=bob, json=body), field)
    # Newlines and tabs are fine where a command line may hold them.
    script = job_body(spec_id, name="script1", command="echo one\n\techo two")
    assert (await platform.post(jobs, headers=bob, json=script)).status_code == 201
    listed = (await platform.get(jobs, headers=bob)).json()
    assert [job["name"] for job in listed["items"]] == ["script1"]  # nothing else was created
    assert (await platform.get(containers, headers=bob)).json()["total"] == 0


@SQLITE_ONLY
async def test_paging_and_path_and_query_values_are_bounded(
    platform: httpx.AsyncClient, people: dict[str, Headers]
) -> None:
    project = await active_project(platform, people)
    alice = people["alice"]
    for path in (
        "/api/v1/projects",
        "/api/v1/applications",
        "/api/v1/catalog/purposes",
        f"/api/v1/projects/{project['id']}/containers",
        f"/api/v1/projects/{project['id']}/jobs",
    ):
        refused(await platform.get(path, headers=alice, params={"offset": HUGE}), "offset")
        refused(await platform.get(path, headers=alice, params={"offset": "-1"}), "offset")
        refused(await platform.get(path, headers=alice, params={"limit": "501"}), "limit")
        assert (await platform.get(path, headers=alice, params={"offset": "1000000000"})).status_code == 200
    refused(await platform.get("/api/v1/projects/%00", headers=alice), "project_id")
    refused(await platform.get("/api/v1/projects", headers=alice, params={"q": "a\u0000"}), "q")
    refused(await platform.get("/api/v1/projects/" + "p" * 256, headers=alice), "project_id")
    headers = alice | {"Idempotency-Key": "k\u0007"}
    refused(await platform.post(jobs_url(project["id"]), headers=headers, json={}), "idempotency-key")
    sign_in = await platform.post("/api/v1/auth/token", data={"username": "bob\u0000", "password": "x"})
    refused(sign_in, "username")
