"""SSH keys through the API: made (the private key once), imported (a private key refused, unkept and
unlogged), personal, installed in a container, and kept while a live container uses them."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncssh
import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from config import Settings
from models.keys import SshKey
from tests.api import test_projects
from tests.api.test_containers import active_project, container_body, make_spec
from tests.api.test_projects import Headers, eventually
from tests.conftest import make_user, sign_in

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
KEYS = "/api/v1/users/me/keys"
platform = test_projects.platform
people = test_projects.people


@SQLITE_ONLY
async def test_keys_are_made_once_imported_checked_and_personal(
    api: httpx.AsyncClient, engine: Engine, user_headers: Headers, caplog: pytest.LogCaptureFixture
) -> None:
    made = await api.post(KEYS, headers=user_headers, json={"name": "laptop"})
    assert made.status_code == 201, made.text
    assert made.headers["cache-control"] == "no-store"
    body: dict[str, Any] = made.json()
    private = asyncssh.import_private_key(body["private_key"])
    assert private.get_algorithm() == "ssh-ed25519"
    assert (
        private.convert_to_public().export_public_key("openssh").decode().split()[1]
        == body["public_key"].split()[1]
    )
    assert body["fingerprint"].startswith("SHA256:")
    listed = (await api.get(KEYS, headers=user_headers)).json()
    assert listed["total"] == 1 and "private_key" not in listed["items"][0]
    shown = (await api.get(f"{KEYS}/{body['id']}", headers=user_headers)).json()
    assert "private_key" not in shown
    with Session(engine) as session:
        kept = session.exec(select(SshKey)).one()
        assert "PRIVATE" not in kept.public_key
    assert (await api.post(KEYS, headers=user_headers, json={"name": "laptop"})).status_code == 409

    mine = asyncssh.generate_private_key("ssh-ed25519")
    line = mine.export_public_key("openssh").decode().strip() + " alice@desk"
    imported = await api.post(
        f"{KEYS}/import", headers=user_headers, json={"name": "desk", "public_key": line + "\n"}
    )
    assert imported.status_code == 201, imported.text
    assert imported.json()["public_key"] == line and imported.json()["algorithm"] == "ssh-ed25519"

    secret = mine.export_private_key("openssh").decode()
    with caplog.at_level(logging.DEBUG):
        refused = await api.post(
            f"{KEYS}/import", headers=user_headers, json={"name": "oops", "public_key": secret}
        )
    assert refused.status_code == 422 and refused.json()["field"] == "public_key"
    assert "private key" in refused.json()["message"] and secret.splitlines()[1] not in refused.text
    assert secret.splitlines()[1] not in caplog.text
    with Session(engine) as session:
        assert len(session.exec(select(SshKey)).all()) == 2  # nothing of it was kept
    garbage = await api.post(
        f"{KEYS}/import", headers=user_headers, json={"name": "bad", "public_key": "ssh-ed25519 AAAAnotakey"}
    )
    assert garbage.status_code == 422 and garbage.json()["field"] == "public_key"

    make_user(engine, "bob")
    bob = await sign_in(api, "bob")
    assert (await api.get(f"{KEYS}/{body['id']}", headers=bob)).status_code == 404
    assert (await api.delete(f"{KEYS}/{body['id']}", headers=bob)).status_code == 404
    assert (await api.get(KEYS, headers=bob)).json()["total"] == 0
    assert (await api.delete(f"{KEYS}/{imported.json()['id']}", headers=user_headers)).status_code == 204


@SQLITE_ONLY
async def test_a_container_gets_its_key_and_the_key_stays_while_it_lives(
    platform: httpx.AsyncClient, people: dict[str, Headers], engine: Engine, settings: Settings
) -> None:
    alice, bob = people["alice"], people["bob"]
    project = await active_project(platform, people)
    key = (await platform.post(KEYS, headers=alice, json={"name": "box"})).json()
    url = f"/api/v1/projects/{project['id']}/containers"
    body = container_body(
        make_spec(engine), password=None, ssh_public_key=None, ssh_key_id=key["id"], hours=1
    )
    foreign = await platform.post(url, headers=bob, json=body)
    assert foreign.status_code == 422 and foreign.json()["field"] == "ssh_key_id"
    created = await platform.post(url, headers=alice, json=body)
    assert created.status_code == 201, created.text
    container_id = created.json()["id"]
    keys_file = (
        settings.home.resolve()
        / "runtime"
        / f"mlcp-{project['id']}"
        / f"container-{container_id}"
        / "credentials"
        / "authorized_keys"
    )

    async def installed() -> bool:
        return await asyncio.to_thread(keys_file.exists)

    await eventually(installed, 30)
    assert keys_file.read_text() == key["public_key"] + "\n"
    busy = await platform.delete(f"{KEYS}/{key['id']}", headers=alice)
    assert busy.status_code == 409 and container_id in busy.json()["message"]
    assert (await platform.delete(f"{url}/{container_id}", headers=alice)).status_code == 202

    async def deleted() -> bool:
        return bool(
            (await platform.get(f"{url}/{container_id}", headers=alice)).json()["status"] == "deleted"
        )

    await eventually(deleted, 30)
    assert (await platform.delete(f"{KEYS}/{key['id']}", headers=alice)).status_code == 204
    assert not await asyncio.to_thread(keys_file.exists)  # the container's folder went with it
