"""The authorisation matrix: every route of the OpenAPI schema, as each kind of caller, against one table.

Callers: anonymous, an outsider, a project member, the project's admin, another project's admin, a
platform admin, a disabled user and an expired token. The project's workloads, schedules and its admin's
application belong to its admin, so the table also says what a plain member must not see. A cell is the
answer expected: OK (let through: any answer but 401, 403, 404 or 5xx, since a 409 or 422 comes after the
check) or the refusal. A route in the schema without a row fails the test.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from api.security import hash_token, new_token
from config import Settings
from models.accounts import ApiToken, PlatformRole, User
from models.base import new_id, utcnow
from models.catalog import GpuModel, GpuVendor, Purpose, Spec
from models.images import CustomImage, ImageStatus
from models.mail import MailRecord
from tests.api.test_projects import Headers, apply, approved_project, eventually, project_application
from tests.conftest import make_user, sign_in
from tests.kube_double.double import KubeDouble
from tests.kube_double.pod_exec import PodFolders, pod_folders  # noqa: F401
from worker import build_worker

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
ROLES = (
    "anonymous",
    "outsider",
    "member",
    "project_admin",
    "other_admin",
    "platform_admin",
    "disabled",
    "expired",
)
OK = "OK"  # let through the authorisation checks
REFUSALS = {401, 403, 404}


def cells(*codes: str | int) -> dict[str, str | int]:
    assert len(codes) == len(ROLES)
    return dict(zip(ROLES, codes, strict=True))


#                 anon outsider member p-admin other  platform disabled expired
PUBLIC = cells(OK, OK, OK, OK, OK, OK, OK, OK)
SIGNED_IN = cells(401, OK, OK, OK, OK, OK, 401, 401)
PLATFORM_ADMINS = cells(401, 403, 403, 403, 403, OK, 401, 401)
PROJECT_VISIBLE = cells(401, 404, OK, OK, 404, OK, 401, 401)
PROJECT_MEMBERS = cells(401, 404, OK, OK, 404, 403, 401, 401)
PROJECT_ADMINS = cells(401, 404, 403, OK, 404, 403, 401, 401)
# Owned by the project's admin: a member does not see it; a platform admin sees it but may not change it.
OWNERS_READ = cells(401, 404, 404, OK, 404, OK, 401, 401)
OWNERS_CHANGE = cells(401, 404, 404, OK, 404, 403, 401, 401)
# Job templates are the project's shared recipes: every member sees them, their owner changes them.
TEMPLATE_CHANGE = cells(401, 404, 403, OK, 404, 403, 401, 401)
APPLICANTS = cells(401, 404, 404, OK, 404, 403, 401, 401)
# A member's own transfer service (the POST row before makes one for the member and the project's admin).
TRANSFER_OWN = cells(401, 404, OK, OK, 404, 404, 401, 401)
# A user's own SSH key (the project's admin's here): nobody else sees it, platform admins included.
KEY_OWN = cells(401, 404, 404, OK, 404, 404, 401, 401)


def CLUSTER_BODY(w: World) -> dict[str, Any]:
    return {
        "name": "ring",
        "type": "horovod",
        "containers": 2,
        "spec_id": w.spec_id,
        "image": "busybox",
        "password": "p" * 12,
        "mount_home": False,
        "shm": False,  # the matrix's spec holds 1 GB of RAM
    }


@dataclass
class World:
    api: httpx.AsyncClient
    engine: Engine
    people: dict[str, Headers]
    project_id: str = ""
    ids: dict[str, str] = field(default_factory=dict)
    spec_id: str = ""

    async def create(self, what: str) -> str:
        """A new thing of its kind, owned by the project's admin where things have owners."""
        url, alice = f"/api/v1/projects/{self.project_id}", self.people["project_admin"]
        posts: dict[str, tuple[str, dict[str, Any]]] = {
            "container": (
                f"{url}/containers",
                {
                    "name": "box",
                    "spec_id": self.spec_id,
                    "image": "busybox",
                    "password": "p" * 12,
                    "services": [],
                },
            ),
            "job": (
                f"{url}/jobs",
                {"name": "job", "spec_id": self.spec_id, "image": "busybox", "command": "sleep 600"},
            ),
            "cluster": (f"{url}/clusters", CLUSTER_BODY(self)),
            # One whose pods are read: the delete-several row deletes the shared cluster and its pods.
            "cluster_pods": (f"{url}/clusters", CLUSTER_BODY(self)),
            "volume": (f"{url}/volumes", {"name": f"v{uuid.uuid4().hex[:8]}", "type": "nfs"}),
            "ssh_key": ("/api/v1/users/me/keys", {"name": f"k{uuid.uuid4().hex[:8]}"}),
            "template": (
                f"{url}/job-templates",
                {
                    "name": f"t{uuid.uuid4().hex[:8]}",
                    "spec_id": self.spec_id,
                    "image": "busybox",
                    "command": "echo",
                },
            ),
        }
        if what == "schedule":
            template = await self.create("template")
            posts["schedule"] = (
                f"{url}/schedules",
                {
                    "name": f"s{uuid.uuid4().hex[:8]}",
                    "template_id": template,
                    "trigger": {"kind": "daily", "at": "03:00"},
                },
            )
        if what in posts:
            path, body = posts[what]
            created = await self.api.post(path, headers=alice, json=body)
            assert created.status_code == 201, created.text
            return str(created.json()["id"])
        if what == "pending_application":  # the project admin's application for a new project
            project = await apply(self.api, alice, name=f"p{uuid.uuid4().hex[:6]}")
            return str((await project_application(self.api, alice, project["id"]))["id"])
        if what == "user":
            return make_user(self.engine, f"u{uuid.uuid4().hex[:8]}").id
        if what == "public_image":
            created = await self.api.post(
                "/api/v1/images/public", headers=self.people["platform_admin"], json=public_image_body(self)
            )
            assert created.status_code == 201, created.text
            return str(created.json()["id"])
        if what == "custom_image":  # the project admin's private image (as a commit leaves it)
            with Session(self.engine) as session:
                owner = session.exec(select(User).where(User.username == "alice")).one()
                image = CustomImage(
                    id=new_id(),
                    project_id=self.project_id,
                    owner_id=owner.id,
                    owner=owner.username,
                    name=f"i{uuid.uuid4().hex[:8]}",
                    tag="v1",
                    status=ImageStatus.available,
                    source_container_id="c0ntainer1",
                )
                session.add(image)
                session.commit()
                return image.id
        tables = {"gpu_model": GpuModel, "spec": Spec, "purpose": Purpose}
        with Session(self.engine) as session:
            name = f"x{uuid.uuid4().hex[:8]}"
            row: Any
            if what == "gpu_model":
                row = GpuModel(name=name, vendor=GpuVendor.NVIDIA, memory_gb=8)
            elif what == "spec":
                row = Spec(name=name, vcpu=1, ram_gb=1, hourly_price=Decimal("1"))
            else:
                row = tables[what](name=name)
            session.add(row)
            session.commit()
            return str(row.id)


Body = Callable[[World], Any]


@dataclass(frozen=True)
class Row:
    method: str
    path: str
    expected: dict[str, str | int]
    body: Body | None = None
    fresh: dict[str, str] = field(default_factory=dict)  # path parameter -> a new thing for each caller
    shared: dict[str, str] = field(default_factory=dict)  # path parameter -> one thing for every caller
    form: bool = False


def public_key_line() -> str:
    return asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode()


def public_image_body(w: World) -> dict[str, Any]:
    return {"name": f"i{uuid.uuid4().hex[:8]}", "tag": "v1", "reference": "busybox:1.36"}


def ids_of(kind: str) -> Body:
    return lambda w: {"ids": [w.ids[kind]]}


def spec_body(w: World) -> dict[str, Any]:
    return {"name": f"n{uuid.uuid4().hex[:8]}", "vcpu": 1, "ram_gb": 1, "hourly_price": "1"}


P = "/api/v1/projects/{project_id}"
TABLE = [
    Row("GET", "/healthz", PUBLIC),
    Row("GET", "/metrics", PUBLIC),  # counts only: no project, owner or name is in any label
    Row("GET", "/readyz", PUBLIC),
    Row(
        "POST",
        "/api/v1/auth/token",
        PUBLIC,
        lambda w: {"username": "bob", "password": "correct-horse-battery"},
        form=True,
    ),
    Row("POST", "/api/v1/auth/logout", SIGNED_IN),
    Row("GET", "/api/v1/users/me", SIGNED_IN),
    Row("PATCH", "/api/v1/users/me", SIGNED_IN, lambda w: {"time_zone": "Asia/Taipei"}),
    Row(
        "POST",
        "/api/v1/users/me/password",
        SIGNED_IN,
        lambda w: {"current_password": "not-it-at-all", "new_password": "another-password-1"},
    ),
    Row(
        "POST",
        "/api/v1/users",
        PLATFORM_ADMINS,
        lambda w: {"username": f"u{uuid.uuid4().hex[:8]}", "password": "a-long-password"},
    ),
    Row("GET", "/api/v1/users", PLATFORM_ADMINS),
    Row("GET", "/api/v1/users/me/setup", SIGNED_IN),
    Row("GET", "/api/v1/users/me/keys", SIGNED_IN),
    Row("POST", "/api/v1/users/me/keys", SIGNED_IN, lambda w: {"name": f"k{uuid.uuid4().hex[:8]}"}),
    Row(
        "POST",
        "/api/v1/users/me/keys/import",
        SIGNED_IN,
        lambda w: {"name": f"i{uuid.uuid4().hex[:8]}", "public_key": public_key_line()},
    ),
    Row("GET", "/api/v1/users/me/keys/{key_id}", KEY_OWN, shared={"key_id": "ssh_key"}),
    Row("DELETE", "/api/v1/users/me/keys/{key_id}", KEY_OWN, fresh={"key_id": "ssh_key"}),
    Row("GET", "/api/v1/users/{user_id}/setup", PLATFORM_ADMINS, shared={"user_id": "user"}),
    Row("POST", "/api/v1/users/{user_id}/setup", PLATFORM_ADMINS, fresh={"user_id": "user"}),
    Row("GET", "/api/v1/users/{user_id}", PLATFORM_ADMINS, shared={"user_id": "user"}),
    Row(
        "PATCH",
        "/api/v1/users/{user_id}",
        PLATFORM_ADMINS,
        lambda w: {"display_name": "X"},
        shared={"user_id": "user"},
    ),
    Row(
        "POST", "/api/v1/users/{user_id}/password", PLATFORM_ADMINS, lambda w: {}, shared={"user_id": "user"}
    ),
    *(
        row
        for kind, plural, body in (
            (
                "gpu_model",
                "gpu-models",
                lambda w: {"name": f"g{uuid.uuid4().hex[:8]}", "vendor": "NVIDIA", "memory_gb": 8},
            ),
            ("spec", "specs", spec_body),
            ("purpose", "purposes", lambda w: {"name": f"p{uuid.uuid4().hex[:8]}"}),
        )
        for row in (
            Row("GET", f"/api/v1/catalog/{plural}", SIGNED_IN),
            Row("POST", f"/api/v1/catalog/{plural}", PLATFORM_ADMINS, body),
            Row("GET", f"/api/v1/catalog/{plural}/{{ident}}", SIGNED_IN, shared={"ident": kind}),
            Row(
                "PATCH",
                f"/api/v1/catalog/{plural}/{{ident}}",
                PLATFORM_ADMINS,
                lambda w: {},
                shared={"ident": kind},
            ),
            Row("DELETE", f"/api/v1/catalog/{plural}/{{ident}}", PLATFORM_ADMINS, fresh={"ident": kind}),
        )
    ),
    Row(
        "POST",
        "/api/v1/projects",
        SIGNED_IN,
        lambda w: {
            "name": "Another",
            "start_at": "2027-01-01T00:00:00Z",
            "end_at": "2027-02-01T00:00:00Z",
            "members": [{"username": "bob"}],
            "quota": {"gpu": 0, "vcpu": 1, "ram_gb": 1},
        },
    ),
    Row("GET", "/api/v1/projects", SIGNED_IN),
    Row("GET", P, PROJECT_VISIBLE),
    Row("PATCH", P, PROJECT_ADMINS, lambda w: {"description": "edited"}),
    Row("DELETE", P + "?confirmation_code=WRONG1", PROJECT_ADMINS),  # a wrong code: 422 once let through
    Row("POST", P + "/extensions", PROJECT_ADMINS, lambda w: {"days": 1}),
    Row("POST", P + "/quota-requests", PROJECT_MEMBERS, lambda w: {"vcpu": 1}),
    *(
        row
        for kind, plural, body in (
            (
                "container",
                "containers",
                lambda w: {
                    "name": "box",
                    "spec_id": w.spec_id,
                    "image": "busybox",
                    "password": "p" * 12,
                    "services": [],
                },
            ),
            (
                "job",
                "jobs",
                lambda w: {"name": "job", "spec_id": w.spec_id, "image": "busybox", "command": "echo hi"},
            ),
            ("cluster", "clusters", CLUSTER_BODY),
        )
        for row in (
            Row("POST", f"{P}/{plural}", PROJECT_MEMBERS, body),
            Row("GET", f"{P}/{plural}", PROJECT_VISIBLE),
            Row("POST", f"{P}/{plural}/delete", PROJECT_VISIBLE, ids_of(kind)),
            Row("GET", f"{P}/{plural}/{{resource_id}}", OWNERS_READ, shared={"resource_id": kind}),
            Row("DELETE", f"{P}/{plural}/{{resource_id}}", OWNERS_CHANGE, fresh={"resource_id": kind}),
        )
    ),
    Row(
        "POST",
        P + "/containers/batch",
        PROJECT_ADMINS,
        lambda w: {
            "name": "class",
            "spec_id": w.spec_id,
            "image": "busybox",
            "password": "p" * 12,
            "services": [],
            "members": ["bob"],
        },
    ),
    Row("GET", P + "/jobs/{resource_id}/log", OWNERS_READ, shared={"resource_id": "job"}),
    *(
        Row(method, f"{P}/{plural}/{{resource_id}}/{what}", OWNERS_READ, shared={"resource_id": kind})
        for kind, plural in (("container", "containers"), ("job", "jobs"))
        for method, what in (("GET", "metrics"), ("GET", "metrics.svg"), ("POST", "metrics.svg/link"))
    ),
    Row("GET", P + "/gpu-usage", PROJECT_VISIBLE),
    Row("GET", P + "/costs", PROJECT_VISIBLE),
    Row("GET", "/api/v1/admin/costs", PLATFORM_ADMINS),
    # Scaling a cluster that does not run is refused with 409 after authorisation: it counts as let through.
    Row(
        "POST",
        P + "/clusters/{resource_id}/scale",
        OWNERS_CHANGE,
        lambda w: {"containers": 3},
        shared={"resource_id": "cluster"},
    ),
    Row("GET", P + "/clusters/{resource_id}/hostfile", OWNERS_READ, shared={"resource_id": "cluster"}),
    *(
        Row(
            method,
            P + f"/clusters/{{resource_id}}/pods/{{pod}}/{what}",
            OWNERS_READ,
            shared={"resource_id": "cluster_pods", "pod": "pod"},
        )
        for method, what in (
            *(("GET", what) for what in ("log", "events", "metrics", "metrics.svg")),
            ("POST", "metrics.svg/link"),
        )
    ),
    Row("GET", "/api/v1/images/public", SIGNED_IN),
    Row("POST", "/api/v1/images/public", PLATFORM_ADMINS, public_image_body),
    Row("GET", "/api/v1/images/public/{image_id}", SIGNED_IN, shared={"image_id": "public_image"}),
    Row(
        "PATCH",
        "/api/v1/images/public/{image_id}",
        PLATFORM_ADMINS,
        lambda w: {"description": "d"},
        shared={"image_id": "public_image"},
    ),
    Row("DELETE", "/api/v1/images/public/{image_id}", PLATFORM_ADMINS, fresh={"image_id": "public_image"}),
    Row("GET", P + "/images", PROJECT_VISIBLE),
    # The project admin's private image: a member does not see it.
    Row("GET", P + "/images/{image_id}", OWNERS_READ, shared={"image_id": "custom_image"}),
    Row(
        "PATCH",
        P + "/images/{image_id}",
        OWNERS_CHANGE,
        lambda w: {"description": "d"},
        shared={"image_id": "custom_image"},
    ),
    Row("DELETE", P + "/images/{image_id}", OWNERS_CHANGE, fresh={"image_id": "custom_image"}),
    Row(
        "POST",
        P + "/containers/{container_id}/commit",
        OWNERS_CHANGE,
        lambda w: {"name": f"i{uuid.uuid4().hex[:8]}"},
        shared={"container_id": "container"},
    ),
    # A project_write volume: every member sees it; its owner and the project's admins change it.
    Row(
        "POST", P + "/volumes", PROJECT_MEMBERS, lambda w: {"name": f"v{uuid.uuid4().hex[:8]}", "type": "nfs"}
    ),
    Row("GET", P + "/volumes", PROJECT_VISIBLE),
    Row("GET", P + "/volumes/limits", PROJECT_VISIBLE),
    Row("GET", P + "/volumes/{volume_id}", PROJECT_VISIBLE, shared={"volume_id": "volume"}),
    Row(
        "PATCH",
        P + "/volumes/{volume_id}",
        TEMPLATE_CHANGE,
        lambda w: {"permission": "project_write"},
        shared={"volume_id": "volume"},
    ),
    Row("DELETE", P + "/volumes/{volume_id}", TEMPLATE_CHANGE, fresh={"volume_id": "volume"}),
    Row(
        "POST",
        P + "/volumes/{volume_id}/expand",
        TEMPLATE_CHANGE,
        lambda w: {"capacity_gb": 2},
        shared={"volume_id": "volume"},
    ),
    Row(
        "POST",
        P + "/volumes/{volume_id}/clone",
        PROJECT_MEMBERS,
        lambda w: {"name": f"c{uuid.uuid4().hex[:8]}"},
        shared={"volume_id": "volume"},
    ),
    Row("GET", P + "/volumes/{volume_id}/credentials", PROJECT_MEMBERS, shared={"volume_id": "volume"}),
    Row("POST", P + "/storage-identity/rotate", PROJECT_ADMINS),
    Row("POST", P + "/transfer", PROJECT_MEMBERS, lambda w: {"password": "sftp-pass-123"}),
    Row("GET", P + "/transfer", TRANSFER_OWN),
    Row("DELETE", P + "/transfer", TRANSFER_OWN),
    Row("GET", "/api/v1/admin/storage-settings", PLATFORM_ADMINS),
    Row("PUT", "/api/v1/admin/storage-settings", PLATFORM_ADMINS, lambda w: {"max_volume_gb": 500}),
    Row(
        "POST",
        P + "/job-templates",
        PROJECT_MEMBERS,
        lambda w: {
            "name": f"t{uuid.uuid4().hex[:8]}",
            "spec_id": w.spec_id,
            "image": "busybox",
            "command": "echo",
        },
    ),
    Row("GET", P + "/job-templates", PROJECT_VISIBLE),
    Row("GET", P + "/job-templates/{template_id}", PROJECT_VISIBLE, shared={"template_id": "template"}),
    Row(
        "PATCH",
        P + "/job-templates/{template_id}",
        TEMPLATE_CHANGE,
        lambda w: {"command": "echo 2"},
        shared={"template_id": "template"},
    ),
    Row("DELETE", P + "/job-templates/{template_id}", TEMPLATE_CHANGE, fresh={"template_id": "template"}),
    Row(
        "POST",
        P + "/job-templates/{template_id}/run",
        PROJECT_MEMBERS,
        lambda w: {},
        shared={"template_id": "template"},
    ),
    Row(
        "POST",
        P + "/job-templates/{template_id}/schedule",
        PROJECT_MEMBERS,
        lambda w: {
            "schedule": {"name": f"s{uuid.uuid4().hex[:8]}", "trigger": {"kind": "daily", "at": "04:00"}}
        },
        shared={"template_id": "template"},
    ),
    Row(
        "POST",
        P + "/schedules",
        PROJECT_MEMBERS,
        lambda w: {"name": f"s{uuid.uuid4().hex[:8]}", "trigger": {"kind": "daily", "at": "05:00"}},
    ),
    Row("GET", P + "/schedules", PROJECT_VISIBLE),
    Row("GET", P + "/schedules/{schedule_id}", OWNERS_READ, shared={"schedule_id": "schedule"}),
    Row(
        "PATCH",
        P + "/schedules/{schedule_id}",
        OWNERS_CHANGE,
        lambda w: {"description": "d"},
        shared={"schedule_id": "schedule"},
    ),
    Row("DELETE", P + "/schedules/{schedule_id}", OWNERS_CHANGE, fresh={"schedule_id": "schedule"}),
    *(
        Row(
            "POST",
            P + f"/schedules/{{schedule_id}}/{action}",
            OWNERS_CHANGE,
            shared={"schedule_id": "schedule"},
        )
        for action in ("pause", "resume", "trigger")
    ),
    Row("GET", "/api/v1/applications", SIGNED_IN),
    Row(
        "GET",
        "/api/v1/applications/{application_id}",
        OWNERS_READ,
        shared={"application_id": "pending_application"},
    ),
    Row(
        "POST",
        "/api/v1/applications/{application_id}/withdraw",
        APPLICANTS,
        fresh={"application_id": "pending_application"},
    ),
    Row(
        "POST",
        "/api/v1/applications/{application_id}/approve",
        PLATFORM_ADMINS,
        lambda w: {},
        fresh={"application_id": "pending_application"},
    ),
    Row(
        "POST",
        "/api/v1/applications/{application_id}/reject",
        PLATFORM_ADMINS,
        lambda w: {"reason": "no"},
        fresh={"application_id": "pending_application"},
    ),
    Row("GET", "/api/v1/admin/outbox", PLATFORM_ADMINS),
    Row("GET", "/api/v1/admin/outbox/{key}", PLATFORM_ADMINS),
    Row("POST", "/api/v1/system/check", PLATFORM_ADMINS),
]


@pytest.fixture
async def world(
    settings: Settings,
    engine: Engine,
    dev_server_env: WorkflowEnvironment,
    tmp_path: Path,
    pod_folders: PodFolders,  # noqa: F811
) -> AsyncIterator[World]:
    client = dev_server_env.client
    with KubeDouble() as double:
        update = {
            "temporal_task_queue": "authz-" + uuid.uuid4().hex[:6],
            "runtime": "kubernetes",
            "kubeconfig": str(double.write_kubeconfig(tmp_path / "kubeconfig")),
        }
        settings = settings.model_copy(update=update)
        app = create_app(settings, engine=engine, temporal=client)
        transport = httpx.ASGITransport(app=app)
        async with (
            build_worker(client, settings, engine),
            httpx.AsyncClient(transport=transport, base_url="http://mlcp.test", timeout=60) as api,
        ):
            yield await build_world(api, engine)


async def build_world(api: httpx.AsyncClient, engine: Engine) -> World:
    make_user(engine, "root", PlatformRole.admin)
    for name in ("alice", "bob", "carol", "dave", "erin", "frank"):
        make_user(engine, name)
    signed = {name: await sign_in(api, name) for name in ("root", "alice", "bob", "carol", "dave", "erin")}
    people = {
        "anonymous": {},
        "outsider": signed["carol"],
        "member": signed["bob"],
        "project_admin": signed["alice"],
        "other_admin": signed["dave"],
        "platform_admin": signed["root"],
        "disabled": signed["erin"],
        "expired": expired_token(engine, "frank"),
    }
    world = World(api, engine, people)
    members = [{"username": name} for name in ("bob", "erin", "frank")]
    project = await approved_project(api, signed | {"alice": signed["alice"]}, members=members)
    world.project_id = project["id"]
    other = {"alice": signed["dave"], "root": signed["root"]}
    await approved_project(api, other, name="Other", members=[{"username": "carol"}])

    async def active() -> bool:
        detail = await api.get(f"/api/v1/projects/{world.project_id}", headers=signed["alice"])
        return bool(detail.json()["status"] == "active")

    await eventually(active, 30)
    world.spec_id = await world.create("spec")
    for kind in ("container", "job", "cluster"):
        world.ids[kind] = await world.create(kind)
    world.ids["pod"] = "launcher"
    with Session(engine) as session:
        world.ids["key"] = session.exec(select(MailRecord.key)).first() or ""
        erin = session.exec(select(User).where(User.username == "erin")).one()
        erin.is_active = False
        session.add(erin)
        session.commit()
    assert world.ids["key"], "the project's approval should have written a mail"
    return world


def expired_token(engine: Engine, username: str) -> Headers:
    token = new_token()
    with Session(engine) as session:
        user = session.exec(select(User).where(User.username == username)).one()
        session.add(
            ApiToken(token_hash=hash_token(token), user_id=user.id, expires_at=utcnow() - timedelta(1))
        )
        session.commit()
    return {"Authorization": f"Bearer {token}"}


async def call(world: World, row: Row, role: str) -> httpx.Response:
    values = {"project_id": world.project_id, "key": world.ids["key"]}
    for name, what in row.fresh.items():
        values[name] = await world.create(what)
    for name, what in row.shared.items():
        if what not in world.ids:
            world.ids[what] = await world.create(what)
        values[name] = world.ids[what]
    headers = dict(world.people[role])
    if (
        row.method == "POST"
        and row.path == "/api/v1/auth/logout"
        and role in ("outsider", "member", "project_admin", "other_admin", "platform_admin")
    ):
        # Signing out ends the session it is sent with: each caller signs out a session of its own.
        name = {
            "outsider": "carol",
            "member": "bob",
            "project_admin": "alice",
            "other_admin": "dave",
            "platform_admin": "root",
        }[role]
        headers = await sign_in(world.api, name)
    path = row.path.format(**values)
    body = row.body(world) if row.body else None
    if row.form:
        return await world.api.request(row.method, path, headers=headers, data=body)
    return await world.api.request(row.method, path, headers=headers, json=body)


def verdict(response: httpx.Response) -> str | int:
    if response.status_code >= 500:
        return response.status_code
    return response.status_code if response.status_code in REFUSALS else OK


def routes_in_schema() -> set[tuple[str, str]]:
    schema = create_app(Settings(temporal_port=1, database_url="sqlite:///:memory:")).openapi()
    return {(method.upper(), path) for path, operations in schema["paths"].items() for method in operations}


def test_every_route_has_a_row() -> None:
    rows = {(row.method, row.path.split("?")[0]) for row in TABLE}
    assert routes_in_schema() - rows == set(), "routes without a row in the matrix"
    assert rows - routes_in_schema() == set(), "rows for routes that no longer exist"
    assert len(rows) == len(TABLE), "a route has two rows"


@SQLITE_ONLY
async def test_authorisation_matrix(world: World) -> None:
    wrong = []
    for row in TABLE:
        for role in ROLES:
            response = await call(world, row, role)
            if verdict(response) != row.expected[role]:
                wrong.append(
                    f"{row.method} {row.path} as {role}: expected {row.expected[role]}, got "
                    f"{response.status_code} {response.text[:160]}"
                )
    assert wrong == [], f"{len(wrong)} of {len(TABLE) * len(ROLES)} cells differ:\n" + "\n".join(wrong)
    print(
        f"authorisation matrix: {len(TABLE)} routes x {len(ROLES)} callers = {len(TABLE) * len(ROLES)} cells"
    )
