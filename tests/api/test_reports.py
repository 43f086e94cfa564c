"""Cost analysis and GPU usage through the API, over running periods and samples written straight into the
database (the lifecycles that write them are tested on their own): frozen prices, midnight in a time zone,
open periods, every grouping, currencies kept apart, CSV, who sees what, and every bad input named."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from models.accounts import PlatformRole
from models.base import utcnow
from models.catalog import Spec
from models.lifecycle import MemberRole, ProjectStatus
from models.monitoring import MetricSample, Resolution
from models.projects import Project, ProjectMember
from models.usage import UsagePeriod
from services.gpu_usage import gpu_utilisation
from services.usage_periods import ReportRange
from tests.conftest import make_user, sign_in

Headers = dict[str, str]
DAY = datetime(2026, 3, 1, tzinfo=UTC)  # a day well in the past: closed periods, fixed ranges
WHOLE_MONTH = {"from": "2026-03-01T00:00:00Z", "to": "2026-04-01T00:00:00Z"}


@dataclass
class World:
    api: httpx.AsyncClient
    engine: Engine
    people: dict[str, Headers]
    user_ids: dict[str, str]
    project_id: str = "pvision"

    def costs(self, who: str, **params: Any) -> Any:
        return self.api.get(
            f"/api/v1/projects/{self.project_id}/costs", headers=self.people[who], params=params
        )

    def gpu_usage(self, who: str, **params: Any) -> Any:
        return self.api.get(
            f"/api/v1/projects/{self.project_id}/gpu-usage", headers=self.people[who], params=params
        )

    def period(self, workload_id: str, start: datetime, hours: float | None, **fields: Any) -> UsagePeriod:
        """A running period; hours=None leaves it open."""
        owner = fields.pop("owner", "bob")
        values: dict[str, Any] = {
            "workload_id": workload_id,
            "pod": "main",
            "started_at": start,
            "stopped_at": None if hours is None else start + timedelta(hours=hours),
            "kind": "container",
            "project_id": self.project_id,
            "name": workload_id,
            "owner_id": self.user_ids[owner],
            "owner": owner,
            "spec_id": "spec-a",
            "spec_name": "gpu-a",
            "gpu": 1,
            "gpu_model": "A100",
            "hourly_price": Decimal("10"),
            "currency": "TWD",
        }
        row = UsagePeriod(**(values | fields))
        with Session(self.engine, expire_on_commit=False) as session:
            session.add(row)
            session.commit()
        return row


def add_project(
    engine: Engine, project_id: str, name: str, members: dict[str, tuple[str, MemberRole]], **fields: Any
) -> None:
    owner = next(user_id for user_id, role in members.values() if role == MemberRole.admin)
    with Session(engine) as session:
        session.add(
            Project(
                id=project_id,
                name=name,
                owner_id=owner,
                status=fields.get("status", ProjectStatus.active),
                start_at=DAY - timedelta(days=30),
                end_at=DAY + timedelta(days=365),
                delete_code="1234",
            )
        )
        session.flush()
        for username, (user_id, role) in members.items():
            session.add(ProjectMember(project_id=project_id, user_id=user_id, username=username, role=role))
        session.commit()


@pytest.fixture
async def world(api: httpx.AsyncClient, engine: Engine) -> World:
    """Project pvision: alice its admin, bob and carol members; eve an outsider; root a platform admin."""
    roles = {"root": PlatformRole.admin, "alice": PlatformRole.user, "bob": PlatformRole.user}
    roles |= {"carol": PlatformRole.user, "eve": PlatformRole.user}
    user_ids = {name: make_user(engine, name, role).id for name, role in roles.items()}
    people = {name: await sign_in(api, name) for name in roles}
    members = {
        "alice": (user_ids["alice"], MemberRole.admin),
        "bob": (user_ids["bob"], MemberRole.member),
        "carol": (user_ids["carol"], MemberRole.member),
    }
    add_project(engine, "pvision", "Vision", members)
    return World(api, engine, people, user_ids)


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def figures(rows: list[dict[str, Any]], *labels: str) -> list[tuple[Any, ...]]:
    return [(*(row[label] for label in labels), row["hours"], row["cost"], row["currency"]) for row in rows]


# ---- costs ----------------------------------------------------------------------------------------


async def test_a_price_change_mid_run_keeps_the_running_periods_frozen_price(world: World) -> None:
    spec = Spec(name="gpu-a", vcpu=4, ram_gb=16, hourly_price=Decimal("10"))
    with Session(world.engine, expire_on_commit=False) as session:
        session.add(spec)
        session.commit()
    now = utcnow()
    running = world.period("c1", now - timedelta(hours=3), None, spec_id=spec.id)
    changed = await world.api.patch(
        f"/api/v1/catalog/specs/{spec.id}", headers=world.people["root"], json={"hourly_price": "15"}
    )
    assert changed.status_code == 200, changed.text
    # The run that opened after the change is priced at the new price; the running one keeps its own.
    world.period("c2", now - timedelta(hours=2), 1, spec_id=spec.id, hourly_price=Decimal("15"))

    report = ok(await world.costs("alice", group_by="spec"))
    by_price = {row["hourly_price"]: row for row in report["rows"]}
    assert set(by_price) == {"10.00", "15.00"}
    assert by_price["10.00"]["hours"] == pytest.approx(3, abs=0.01)
    assert Decimal(by_price["10.00"]["cost"]) == pytest.approx(Decimal("30"), abs=Decimal("0.1"))
    assert (by_price["15.00"]["hours"], by_price["15.00"]["cost"]) == (1.0, "15.00")
    assert {row["spec"] for row in report["rows"]} == {"gpu-a"}

    world_rows = ok(await world.costs("alice", group_by="workload"))["rows"]
    assert [row["workload_id"] for row in world_rows] == ["c1", "c2"]  # most expensive first
    assert [row["hourly_price"] for row in world_rows] == ["10.00", "15.00"]  # hours x its frozen price
    # A workload whose runs had different prices names none: group_by=spec shows each.
    world.period("c2", now - timedelta(minutes=30), 0.25, spec_id=spec.id, hourly_price=Decimal("10"))
    mixed = ok(await world.costs("alice", group_by="workload"))["rows"]
    assert {row["workload_id"]: row["hourly_price"] for row in mixed} == {"c1": "10.00", "c2": None}
    with Session(world.engine) as session:
        stored = session.get(UsagePeriod, ("c1", "main", running.started_at))
        assert stored is not None and stored.hourly_price == Decimal("10")  # history is not rewritten


async def test_a_period_spanning_midnight_counts_on_both_days_in_the_time_zone_asked(world: World) -> None:
    world.period("c1", DAY + timedelta(hours=22), 4)  # 22:00-02:00 UTC
    world.period("c2", DAY + timedelta(days=5, hours=14), 4)  # 14:00-18:00 UTC: 22:00-02:00 in Taipei

    utc = ok(await world.costs("alice", group_by="day", **WHOLE_MONTH))
    assert figures(utc["rows"], "day") == [
        ("2026-03-01", 2.0, "20.00", "TWD"),
        ("2026-03-02", 2.0, "20.00", "TWD"),
        ("2026-03-06", 4.0, "40.00", "TWD"),
    ]
    assert utc["tz"] == "UTC"
    taipei = ok(await world.costs("alice", group_by="day", tz="Asia/Taipei", **WHOLE_MONTH))
    assert figures(taipei["rows"], "day") == [
        ("2026-03-02", 4.0, "40.00", "TWD"),
        ("2026-03-06", 2.0, "20.00", "TWD"),
        ("2026-03-07", 2.0, "20.00", "TWD"),
    ]
    assert taipei["totals"] == utc["totals"] == [{"hours": 8.0, "cost": "80.00", "currency": "TWD"}]


async def test_an_open_period_counts_up_to_now_and_a_range_clips_every_period(world: World) -> None:
    now = utcnow()
    world.period("c1", now - timedelta(hours=2), None)
    world.period("c2", DAY - timedelta(hours=1), 3)  # one hour before the range, two inside

    report = ok(await world.costs("alice"))  # the last 30 days, up to now
    (row,) = report["rows"]
    assert row["workload_id"] == "c1" and row["hours"] == pytest.approx(2, abs=0.01)
    an_hour_ago = (now - timedelta(hours=1)).isoformat()
    earlier = ok(await world.costs("alice", to=an_hour_ago))
    assert earlier["rows"][0]["hours"] == pytest.approx(1, abs=0.01)

    clipped = ok(await world.costs("alice", **WHOLE_MONTH))
    assert figures(clipped["rows"], "workload_id") == [("c2", 2.0, "20.00", "TWD")]


async def test_costs_by_workload_member_spec_and_day_with_totals(world: World) -> None:
    world.period("c1", DAY + timedelta(hours=1), 3, name="train1")
    world.period(
        "j1",
        DAY + timedelta(hours=2),
        1,
        kind="job",
        name="hello1",
        spec_id="spec-b",
        spec_name="gpu-b",
        hourly_price=Decimal("20"),
    )
    for pod in ("launcher", "worker-01", "worker-02"):
        world.period(
            "k1",
            DAY + timedelta(hours=3),
            2,
            pod=pod,
            kind="cluster",
            name="ring",
            owner="carol",
            spec_id="spec-b",
            spec_name="gpu-b",
            hourly_price=Decimal("20"),
        )

    by_workload = ok(await world.costs("alice", **WHOLE_MONTH))
    assert by_workload["group_by"] == "workload" and by_workload["member"] is None
    assert [
        (r["workload_id"], r["kind"], r["name"], r["owner"], r["spec"], r["pods"], r["hours"], r["cost"])
        for r in by_workload["rows"]
    ] == [
        ("k1", "cluster", "ring", "carol", "gpu-b", 3, 6.0, "120.00"),
        ("c1", "container", "train1", "bob", "gpu-a", 1, 3.0, "30.00"),
        ("j1", "job", "hello1", "bob", "gpu-b", 1, 1.0, "20.00"),
    ]
    assert by_workload["totals"] == [{"hours": 10.0, "cost": "170.00", "currency": "TWD"}]

    by_member = ok(await world.costs("alice", group_by="member", **WHOLE_MONTH))
    assert [(r["owner"], r["workloads"], r["hours"], r["cost"]) for r in by_member["rows"]] == [
        ("carol", 1, 6.0, "120.00"),
        ("bob", 2, 4.0, "50.00"),
    ]
    assert by_member["rows"][0]["owner_id"] == world.user_ids["carol"]
    by_spec = ok(await world.costs("alice", group_by="spec", **WHOLE_MONTH))
    assert figures(by_spec["rows"], "spec_id", "spec", "hourly_price") == [
        ("spec-b", "gpu-b", "20.00", 7.0, "140.00", "TWD"),
        ("spec-a", "gpu-a", "10.00", 3.0, "30.00", "TWD"),
    ]
    by_day = ok(await world.costs("alice", group_by="day", **WHOLE_MONTH))
    assert figures(by_day["rows"], "day") == [("2026-03-01", 10.0, "170.00", "TWD")]
    for report in (by_member, by_spec, by_day):
        assert report["totals"] == by_workload["totals"]


async def test_two_currencies_are_never_added_together(world: World) -> None:
    world.period("c1", DAY, 2)
    world.period("c2", DAY, 1, hourly_price=Decimal("3.5"), currency="USD")
    world.period("c2", DAY + timedelta(hours=5), 1, hourly_price=Decimal("40"))  # its spec moved to TWD

    report = ok(await world.costs("alice", **WHOLE_MONTH))
    assert figures(report["rows"], "workload_id") == [
        ("c2", 1.0, "40.00", "TWD"),
        ("c1", 2.0, "20.00", "TWD"),
        ("c2", 1.0, "3.50", "USD"),
    ]
    assert report["totals"] == [
        {"hours": 3.0, "cost": "60.00", "currency": "TWD"},
        {"hours": 1.0, "cost": "3.50", "currency": "USD"},
    ]
    by_member = ok(await world.costs("alice", group_by="member", **WHOLE_MONTH))
    assert figures(by_member["rows"], "owner") == [("bob", 3.0, "60.00", "TWD"), ("bob", 1.0, "3.50", "USD")]


def parse_csv(response: httpx.Response) -> list[list[str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.content.startswith("\ufeff".encode())  # Excel reads it as UTF-8
    return list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))


async def test_costs_as_csv_by_format_and_by_accept_header(world: World) -> None:
    world.period("c1", DAY + timedelta(hours=1), 3, name="train1")
    world.period("c2", DAY, 1, name="=cmd", hourly_price=Decimal("0.0125"), currency="USD")

    as_json = ok(await world.costs("alice", **WHOLE_MONTH))
    response = await world.costs("alice", format="csv", **WHOLE_MONTH)
    header, *rows = parse_csv(response)
    disposition = response.headers["content-disposition"]
    assert disposition == 'attachment; filename="costs-pvision-2026-03-01-2026-04-01.csv"'
    labels = ["workload_id", "kind", "name", "owner", "spec", "hourly_price", "pods"]
    assert header == [*labels, "hours", "cost", "currency"]
    assert rows == [
        ["c1", "container", "train1", "bob", "gpu-a", "10.00", "1", "3.0", "30.00", "TWD"],
        ["c2", "container", "'=cmd", "bob", "gpu-a", "0.0125", "1", "1.0", "0.0125", "USD"],  # no formula
        ["total", "", "", "", "", "", "", "3.0", "30.00", "TWD"],
        ["total", "", "", "", "", "", "", "1.0", "0.0125", "USD"],
    ]
    assert [row[0] for row in rows[:2]] == [row["workload_id"] for row in as_json["rows"]]

    accepted = await world.api.get(
        f"/api/v1/projects/{world.project_id}/costs",
        headers=world.people["alice"] | {"Accept": "text/csv"},
        params={"group_by": "day", **WHOLE_MONTH},
    )
    assert parse_csv(accepted) == [
        ["day", "hours", "cost", "currency"],
        ["2026-03-01", "3.0", "30.00", "TWD"],
        ["2026-03-01", "1.0", "0.0125", "USD"],
        ["total", "3.0", "30.00", "TWD"],
        ["total", "1.0", "0.0125", "USD"],
    ]
    prefers_json = await world.api.get(
        f"/api/v1/projects/{world.project_id}/costs",
        headers=world.people["alice"] | {"Accept": "application/json, text/csv;q=0.5"},
        params=WHOLE_MONTH,
    )
    assert prefers_json.headers["content-type"].startswith("application/json")
    forced_json = await world.api.get(
        f"/api/v1/projects/{world.project_id}/costs",
        headers=world.people["alice"] | {"Accept": "text/csv"},
        params={"format": "json", **WHOLE_MONTH},
    )
    assert forced_json.json()["rows"] == as_json["rows"]


async def test_members_see_their_own_usage_admins_everyones_outsiders_nothing(world: World) -> None:
    world.period("c1", DAY, 1)  # bob's
    world.period("c2", DAY, 2, owner="carol")
    owners = {"bob": ["c1"], "carol": ["c2"], "everyone": ["c2", "c1"]}

    def workloads(report: dict[str, Any]) -> list[str]:
        return [row["workload_id"] for row in report["rows"]]

    mine = ok(await world.costs("bob", **WHOLE_MONTH))
    assert (mine["member"], workloads(mine)) == ("bob", owners["bob"])
    assert ok(await world.costs("bob", member="bob", **WHOLE_MONTH))["rows"] == mine["rows"]
    assert [r["workload_id"] for r in ok(await world.gpu_usage("bob", **WHOLE_MONTH))["rows"]] == ["c1"]
    for ask in (world.costs, world.gpu_usage):
        refused = await ask("bob", member="carol", **WHOLE_MONTH)
        assert refused.status_code == 403, refused.text
        assert (
            refused.json()["field"] == "member" and "only the project's admins" in refused.json()["message"]
        )
        hidden = await ask("eve", **WHOLE_MONTH)
        assert hidden.status_code == 404 and "pvision" in hidden.json()["message"]

    for admin in ("alice", "root"):  # the project's admin; a platform admin who is no member
        every = ok(await world.costs(admin, **WHOLE_MONTH))
        assert (every["member"], workloads(every)) == (None, owners["everyone"])
        carols = ok(await world.costs(admin, member="carol", **WHOLE_MONTH))
        assert (carols["member"], workloads(carols)) == ("carol", owners["carol"])
        gpu = ok(await world.gpu_usage(admin, member="bob", **WHOLE_MONTH))
        assert [r["workload_id"] for r in gpu["rows"]] == owners["bob"]

    with Session(world.engine) as session:  # carol leaves the project; her usage stays hers
        member = session.get(ProjectMember, ("pvision", world.user_ids["carol"]))
        session.delete(member)
        session.commit()
    former = ok(await world.costs("alice", member="carol", **WHOLE_MONTH))
    assert workloads(former) == owners["carol"]
    assert (await world.costs("carol", **WHOLE_MONTH)).status_code == 404


async def test_platform_costs_by_project_include_deleted_projects_for_platform_admins_only(
    world: World,
) -> None:
    add_project(
        world.engine,
        "pold",
        "Old",
        {"alice": (world.user_ids["alice"], MemberRole.admin)},
        status=ProjectStatus.deleted,
    )
    world.period("c1", DAY, 1)
    world.period("c2", DAY, 3, project_id="pold", owner="alice")
    world.period("c3", DAY, 2, project_id="pgone", owner="alice")  # its record is gone
    world.period("c4", DAY, 1, project_id="pgone", owner="alice", currency="USD")
    url = "/api/v1/admin/costs"

    report = ok(await world.api.get(url, headers=world.people["root"], params=WHOLE_MONTH))
    assert (report["project_id"], report["group_by"]) == (None, "project")
    assert [
        (r["project_id"], r["project_name"], r["project_status"], r["workloads"], r["cost"], r["currency"])
        for r in report["rows"]
    ] == [
        ("pold", "Old", "deleted", 1, "30.00", "TWD"),
        ("pgone", None, None, 1, "20.00", "TWD"),
        ("pvision", "Vision", "active", 1, "10.00", "TWD"),
        ("pgone", None, None, 1, "10.00", "USD"),
    ]
    assert report["totals"] == [
        {"hours": 6.0, "cost": "60.00", "currency": "TWD"},
        {"hours": 1.0, "cost": "10.00", "currency": "USD"},
    ]
    by_member = ok(
        await world.api.get(url, headers=world.people["root"], params={"group_by": "member", **WHOLE_MONTH})
    )
    assert figures(by_member["rows"], "owner") == [
        ("alice", 5.0, "50.00", "TWD"),
        ("bob", 1.0, "10.00", "TWD"),
        ("alice", 1.0, "10.00", "USD"),
    ]
    as_csv = await world.api.get(url, headers=world.people["root"], params={"format": "csv", **WHOLE_MONTH})
    assert parse_csv(as_csv)[0][:3] == ["project_id", "project_name", "project_status"]
    assert 'filename="costs-all-2026-03-01-2026-04-01.csv"' in as_csv.headers["content-disposition"]
    for who in ("alice", "bob", "eve"):
        refused = await world.api.get(url, headers=world.people[who])
        assert refused.status_code == 403, refused.text
        assert "platform admins" in refused.json()["message"]
    assert (await world.api.get(url)).status_code == 401


# ---- GPU usage ------------------------------------------------------------------------------------


def sample(
    workload_id: str, at: datetime, value: float, resolution: Resolution, count: int, **fields: Any
) -> MetricSample:
    return MetricSample(
        workload_id=workload_id,
        pod=fields.get("pod", "main"),
        metric="gpu_percent",
        device=fields.get("device", "0"),
        resolution=resolution,
        at=at,
        kind=fields.get("kind", "container"),
        project_id="pvision",
        value=value,
        peak=value,
        count=count,
    )


def samples_at_every_resolution(
    workload_id: str, start: datetime, devices: tuple[str, ...]
) -> list[MetricSample]:
    """Hour 1 rolled up to an hour (and also in minutes and raw, which must not count again); hour 2
    rolled up only to minutes (and raw); the first minute of hour 3 only raw."""
    rows = []
    hour_two, hour_three = start + timedelta(hours=1), start + timedelta(hours=2)
    for device in devices:
        rows.append(sample(workload_id, start, 50, Resolution.hour, 360, device=device))
        rows += [
            sample(workload_id, start + timedelta(minutes=m), 90, Resolution.minute, 6, device=device)
            for m in range(60)
        ]
        rows += [
            sample(workload_id, start + timedelta(seconds=s), 99, Resolution.raw, 1, device=device)
            for s in range(0, 3600, 10)
        ]
        rows += [
            sample(workload_id, hour_two + timedelta(minutes=m), 80, Resolution.minute, 6, device=device)
            for m in range(60)
        ]
        rows += [
            sample(workload_id, hour_two + timedelta(seconds=s), 5, Resolution.raw, 1, device=device)
            for s in range(0, 3600, 10)
        ]
        rows += [
            sample(workload_id, hour_three + timedelta(seconds=s), 20, Resolution.raw, 1, device=device)
            for s in range(0, 60, 10)
        ]
    return rows


EXPECTED_UTILISATION = round((50 * 360 + 80 * 360 + 20 * 6) / (360 + 360 + 6), 1)


async def test_gpu_usage_hours_gpu_hours_utilisation_and_the_range_sentence(world: World) -> None:
    world.period("c1", DAY + timedelta(hours=1), 3, name="train1", gpu=2)
    world.period("c2", DAY, 1, name="quiet", owner="carol")  # a GPU, never sampled
    world.period("j1", DAY, 2, kind="job", name="cpu1", gpu=0, gpu_model=None, spec_name="cpu-4")
    for pod, gpus in (("launcher", 1), ("worker-01", 4)):
        world.period("k1", DAY + timedelta(hours=4), 1.5, pod=pod, kind="cluster", name="ring", gpu=gpus)
    with Session(world.engine) as session:
        session.add_all(samples_at_every_resolution("c1", DAY + timedelta(hours=1), ("0", "1")))
        session.add(
            sample("k1", DAY + timedelta(hours=4), 40, Resolution.minute, 6, pod="worker-01", kind="cluster")
        )
        session.add(
            sample(
                "k1",
                DAY + timedelta(hours=4, minutes=1),
                60,
                Resolution.minute,
                18,
                pod="worker-01",
                kind="cluster",
            )
        )
        session.commit()

    manual = {"from": "2026-03-01T00:00:00Z", "to": "2026-03-28T14:21:00Z"}  # the manual's 662 hours
    report = ok(await world.gpu_usage("alice", **manual))
    assert (report["range_hours"], report["range_days"]) == (662.35, 28)
    assert report["range_text"] == "about 662 hours, i.e. 28 days"
    assert [
        (
            r["name"],
            r["kind"],
            r["owner"],
            r["hours"],
            r["gpu"],
            r["gpu_hours"],
            r["gpu_utilisation"],
            r["gpu_utilisation_note"],
        )
        for r in report["rows"]
    ] == [
        ("train1", "container", "bob", 3.0, 2, 6.0, EXPECTED_UTILISATION, None),
        ("ring/worker-01", "cluster", "bob", 1.5, 4, 6.0, 55.0, None),
        ("ring/launcher", "cluster", "bob", 1.5, 1, 1.5, None, "no GPU samples in this range"),
        ("quiet", "container", "carol", 1.0, 1, 1.0, None, "no GPU samples in this range"),
        ("cpu1", "job", "bob", 2.0, 0, 0.0, None, "the pod holds no GPU"),
    ]
    assert (report["hours"], report["gpu_hours"]) == (9.0, 14.5)
    assert report["rows"][1]["pod"] == "worker-01" and report["rows"][0]["gpu_model"] == "A100"

    clusters = ok(await world.gpu_usage("alice", kind="cluster", **manual))
    assert (clusters["kind"], [r["name"] for r in clusters["rows"]]) == (
        "cluster",
        ["ring/worker-01", "ring/launcher"],
    )
    short = ok(
        await world.gpu_usage("alice", **{"from": "2026-03-01T00:00:00Z", "to": "2026-03-01T05:00:00Z"})
    )
    assert short["range_text"] == "about 5 hours"


async def test_utilisation_counts_each_moment_once_and_partial_rollups_by_their_overlap(world: World) -> None:
    start = DAY + timedelta(hours=1)
    pods = {("c1", "main")}
    with Session(world.engine) as session:
        session.add_all(samples_at_every_resolution("c1", start, ("0",)))
        session.add(
            sample("c1", DAY - timedelta(hours=1), 10, Resolution.hour, 360)
        )  # older: only an hour kept
        session.commit()
        whole = ReportRange(start, start + timedelta(hours=3))
        assert gpu_utilisation(session, "pvision", pods, whole) == {("c1", "main"): EXPECTED_UTILISATION}
        # Half of the older hour counts, at half its weight: nothing finer is left there.
        ragged = ReportRange(DAY - timedelta(minutes=30), start + timedelta(hours=1))
        expected = round((10 * 180 + 50 * 360) / (180 + 360), 1)
        assert gpu_utilisation(session, "pvision", pods, ragged) == {("c1", "main"): expected}
        # Part of an hour with minute rows: the minutes inside count, not the hour's rollup.
        part = ReportRange(start, start + timedelta(minutes=30))
        assert gpu_utilisation(session, "pvision", pods, part) == {("c1", "main"): 90.0}
        empty = ReportRange(DAY + timedelta(days=1), DAY + timedelta(days=2))
        assert gpu_utilisation(session, "pvision", pods, empty) == {("c1", "main"): None}


# ---- bad input ------------------------------------------------------------------------------------

GPU, COSTS, ADMIN = "gpu-usage", "costs", "admin"
BAD_INPUT = [
    (COSTS, {"from": "2026-03-01T00:00:00"}, "from", "time zone"),
    (GPU, {"to": "2026-03-01T00:00:00"}, "to", "time zone"),
    (COSTS, {"from": "yesterday"}, "from", "datetime"),
    (COSTS, {"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "from", "before to"),
    (GPU, {"from": "2026-03-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "from", "before to"),
    (ADMIN, {"from": "2024-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from", "400 days"),
    (COSTS, {"from": "1900-01-01T00:00:00Z", "to": "1900-02-01T00:00:00Z"}, "from", "between"),
    (COSTS, {"group_by": "project"}, "group_by", "workload"),
    (ADMIN, {"group_by": "workload"}, "group_by", "project"),
    (COSTS, {"format": "xml"}, "format", "csv"),
    (ADMIN, {"format": "pdf"}, "format", "csv"),
    (GPU, {"kind": "volume"}, "kind", "container"),
    (COSTS, {"tz": "Mars/Olympus"}, "tz", "IANA"),
    (ADMIN, {"tz": "../../etc/passwd"}, "tz", "IANA"),
    (COSTS, {"tz": "x" * 65}, "tz", "64"),
    (COSTS, {"member": "nobody"}, "member", "not a member"),
    (GPU, {"member": "eve"}, "member", "not a member"),
]


@pytest.mark.parametrize(("route", "params", "field", "rule"), BAD_INPUT)
async def test_bad_input_is_refused_naming_the_field_and_the_rule(
    world: World, route: str, params: dict[str, str], field: str, rule: str
) -> None:
    if route == ADMIN:
        response = await world.api.get("/api/v1/admin/costs", headers=world.people["root"], params=params)
    else:
        response = await (world.costs if route == COSTS else world.gpu_usage)("alice", **params)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == field and body["message"].startswith(f"{field}: "), body
    assert rule in body["message"], body
