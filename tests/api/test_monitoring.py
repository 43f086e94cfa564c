"""The monitoring routes (manual 5.4.2.2, 6.2.2) over samples written straight into the database: series at
a step fitting the range, rollups and raw samples joined without double counting, reasons for what has no
series, the SVG chart, who may look, and every bad input named."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from activities.metric_store import bucket_start, prune, store_samples
from models.accounts import PlatformRole, User
from models.base import utcnow
from models.clusters import Cluster, ClusterType
from models.containers import Container
from models.jobs import Job
from models.lifecycle import MemberRole
from models.monitoring import ChartLink, Metric, MetricSample, MetricValue, PodSample, Resolution
from tests.api.test_reports import add_project
from tests.conftest import make_user, sign_in

Headers = dict[str, str]
PROJECT = "pmon"
BASE = f"/api/v1/projects/{PROJECT}"
SVG_NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture
async def people(api: httpx.AsyncClient, engine: Engine) -> dict[str, Headers]:
    """alice the project's admin; bob, who owns the workloads; carol another member; eve an outsider."""
    ids = {name: make_user(engine, name).id for name in ("alice", "bob", "carol", "eve")}
    ids["root"] = make_user(engine, "root", PlatformRole.admin).id
    members = {
        "alice": (ids["alice"], MemberRole.admin),
        "bob": (ids["bob"], MemberRole.member),
        "carol": (ids["carol"], MemberRole.member),
    }
    add_project(engine, PROJECT, "Monitoring", members)
    resources: dict[str, Any] = {"image": "python:3.11", "vcpu": 2, "ram_gb": 4, "gpu": 2}
    common: dict[str, Any] = {"project_id": PROJECT, "owner": "bob", "owner_id": ids["bob"], **resources}
    with Session(engine) as session:
        session.add(Container(id="c1", name="notebook", status="running", **common))
        session.add(Job(id="j1", name="train", status="running", command="python train.py", **common))
        pods = [
            {"name": name, "role": role, "status": "running", "ready": True}
            for name, role in (("launcher", "launcher"), ("worker-00", "worker"))
        ]
        session.add(
            Cluster(id="k1", name="mpi", status="running", type=ClusterType.horovod, pods=pods, **common)
        )
        session.commit()
    return {name: await sign_in(api, name) for name in ids}


def write_samples(engine: Engine, workload_id: str, pod: str = "main", minutes: int = 30) -> None:
    """A sample every 10 s for the last `minutes`: vCPU rising 0..., memory at 40 %, two GPUs."""
    now = utcnow()
    samples = []
    for i in range(minutes * 6):
        values = [
            MetricValue(metric=Metric.vcpu_percent, value=float(i % 100)),
            MetricValue(metric=Metric.memory_percent, value=40.0),
            MetricValue(metric=Metric.gpu_percent, value=80.0, device="0"),
            MetricValue(metric=Metric.gpu_percent, value=20.0, device="1"),
            MetricValue(metric=Metric.gpu_memory_percent, value=50.0, device="0"),
        ]
        samples.append(
            PodSample(
                kind="container",
                workload_id=workload_id,
                pod=pod,
                project_id=PROJECT,
                at=now - timedelta(seconds=10 * (minutes * 6 - i)),
                values=values,
                unavailable={
                    Metric.network_in: "shared host network",
                    Metric.network_out: "shared host network",
                },
            )
        )
    store_samples(engine, "local", samples)


async def metrics(api: httpx.AsyncClient, who: Headers, path: str, **params: str) -> httpx.Response:
    return await api.get(f"{BASE}{path}/metrics", headers=who, params=params)


async def test_a_containers_series_at_the_range_step_with_reasons_for_the_rest(
    api: httpx.AsyncClient, engine: Engine, people: dict[str, Headers]
) -> None:
    write_samples(engine, "c1")
    response = await metrics(api, people["bob"], "/containers/c1", range="1h")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["step_seconds"] == 10
    names = [series["name"] for series in body["series"]]
    assert names == [
        "gpu_percent[0]",
        "gpu_percent[1]",
        "gpu_memory_percent[0]",
        "vcpu_percent",
        "memory_percent",
    ]
    units = {series["name"]: series["unit"] for series in body["series"]}
    assert units["vcpu_percent"] == "%"
    memory = next(series for series in body["series"] if series["name"] == "memory_percent")
    assert len(memory["points"]) == 180 and {value for _, value in memory["points"]} == {40.0}
    assert body["unavailable"] == {"network_in": "shared host network", "network_out": "shared host network"}

    # Six hours: one-minute steps, each the mean of its six samples.
    wide = (await metrics(api, people["bob"], "/containers/c1", range="6h")).json()
    assert wide["step_seconds"] == 60
    gpu = next(series for series in wide["series"] if series["name"] == "gpu_percent[1]")
    assert 30 <= len(gpu["points"]) <= 31 and {value for _, value in gpu["points"]} == {20.0}


async def test_rollups_and_raw_samples_join_without_counting_twice(
    api: httpx.AsyncClient, engine: Engine, people: dict[str, Headers]
) -> None:
    now = utcnow()
    cutoff = bucket_start(now, 120) - timedelta(minutes=10)  # on a step boundary: no step straddles it
    with Session(engine) as session:
        for minute in range(1, 120):  # two hours of minute rollups at 10 %, up to the cutoff
            at = cutoff - timedelta(minutes=minute)
            session.add(
                MetricSample(
                    workload_id="j1", pod="main", metric="vcpu_percent", resolution=Resolution.minute,
                    at=at, kind="job", project_id=PROJECT, value=10.0, peak=10.0, count=6,
                )
            )  # fmt: skip
        session.commit()
    # Raw samples at 70 % both before the cutoff (already rolled up: must not count again) and after it.
    raw = [
        PodSample(
            kind="job",
            workload_id="j1",
            project_id=PROJECT,
            at=cutoff + timedelta(seconds=10 * i),
            values=[MetricValue(metric=Metric.vcpu_percent, value=70.0)],
        )
        for i in range(-30, 30)
    ]
    store_samples(engine, "local", raw)
    body = (await metrics(api, people["alice"], "/jobs/j1", range="12h")).json()
    assert body["step_seconds"] == 120
    points = dict((at, value) for at, value in body["series"][0]["points"])
    assert set(points.values()) == {10.0, 70.0}  # never a mixture: each part read from one resolution
    assert body["series"][0]["name"] == "vcpu_percent"


async def test_a_cluster_pods_series_reach_back_thirty_days(
    api: httpx.AsyncClient, engine: Engine, people: dict[str, Headers]
) -> None:
    write_samples(engine, "k1", pod="worker-00", minutes=5)
    ok = await metrics(api, people["bob"], "/clusters/k1/pods/worker-00", range="30d")
    assert ok.status_code == 200, ok.text
    assert ok.json()["step_seconds"] == 7200 and ok.json()["pod"] == "worker-00"
    launcher = (await metrics(api, people["bob"], "/clusters/k1/pods/launcher", range="1h")).json()
    assert launcher["series"] == [] and set(launcher["unavailable"]) == {metric.value for metric in Metric}
    assert "not sampled yet" in launcher["unavailable"]["vcpu_percent"]
    missing = await metrics(api, people["bob"], "/clusters/k1/pods/worker-07", range="1h")
    assert missing.status_code == 404
    bad_pod = await metrics(api, people["bob"], "/clusters/k1/pods/boss", range="1h")
    assert bad_pod.status_code == 422


async def test_a_clusters_pods_show_their_newest_utilisation(
    api: httpx.AsyncClient, engine: Engine, people: dict[str, Headers]
) -> None:
    write_samples(engine, "k1", pod="worker-00", minutes=1)
    response = await api.get(f"{BASE}/clusters/k1", headers=people["bob"])
    assert response.status_code == 200, response.text
    pods = {pod["name"]: pod["utilisation"] for pod in response.json()["pods"]}
    assert pods["launcher"] == {}  # never sampled: nothing, rather than zeros
    assert pods["worker-00"]["memory_percent"] == 40.0 and pods["worker-00"]["gpu_percent[1]"] == 20.0
    assert pods["worker-00"]["vcpu_percent"] == 5.0  # the newest of the rising values


async def test_the_chart_is_svg_with_one_path_per_series_in_the_time_zone_asked(
    api: httpx.AsyncClient, engine: Engine, people: dict[str, Headers]
) -> None:
    write_samples(engine, "c1")
    response = await api.get(
        f"{BASE}/containers/c1/metrics.svg",
        headers=people["bob"],
        params={"range": "2h", "tz": "Asia/Taipei"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("image/svg+xml")
    root = ET.fromstring(response.text)
    assert root.tag == f"{SVG_NS}svg"
    assert len(root.findall(f".//{SVG_NS}path")) == 5
    assert "Asia/Taipei" in response.text and "notebook" in response.text
    # Without tz, the viewer's own time zone; without one, the platform's (UTC in tests).
    plain = await api.get(f"{BASE}/containers/c1/metrics.svg", headers=people["bob"])
    assert "times in UTC" in plain.text
    await api.patch("/api/v1/users/me", headers=people["bob"], json={"time_zone": "Europe/Berlin"})
    mine = await api.get(f"{BASE}/containers/c1/metrics.svg", headers=people["bob"])
    assert "times in Europe/Berlin" in mine.text
    bad_zone = await api.get(
        f"{BASE}/containers/c1/metrics.svg", headers=people["bob"], params={"tz": "Mars/Olympus"}
    )
    assert bad_zone.status_code == 422 and "tz" in bad_zone.text


async def test_a_chart_link_opens_that_chart_alone_without_signing_in_until_it_expires(
    api: httpx.AsyncClient, engine: Engine, people: dict[str, Headers]
) -> None:
    write_samples(engine, "c1", minutes=2)
    made = await api.post(
        f"{BASE}/containers/c1/metrics.svg/link", headers=people["bob"], params={"range": "2h", "tz": "UTC"}
    )
    assert made.status_code == 201, made.text
    url = httpx.URL(made.json()["url"])
    assert url.path == f"{BASE}/containers/c1/metrics.svg" and url.params["range"] == "2h"
    opened = await api.get(url.path, params=url.params)  # no Authorization header: a browser
    assert opened.status_code == 200 and opened.headers["content-type"].startswith("image/svg+xml")
    assert len(ET.fromstring(opened.text).findall(f".//{SVG_NS}path")) == 5
    # Another range of the same chart opens too; the link opens nothing else.
    assert (await api.get(url.path, params={"range": "6h", "link": url.params["link"]})).status_code == 200
    for other in (f"{BASE}/containers/c1/metrics", f"{BASE}/jobs/j1/metrics.svg"):
        refused = await api.get(other, params={"link": url.params["link"]})
        assert refused.status_code == 401, (other, refused.text)
    assert (await api.get(url.path, params={"link": "mlcp_forged"})).status_code == 401
    # A member who may not see the container may not make a link to it either.
    carol = await api.post(f"{BASE}/containers/c1/metrics.svg/link", headers=people["carol"])
    assert carol.status_code == 404
    # Disabling its maker stops the link at once, as it stops their tokens.
    with Session(engine) as session:
        bob = session.exec(select(User).where(User.username == "bob")).one()
        bob.is_active = False
        session.add(bob)
        session.commit()
    disabled = await api.get(url.path, params=url.params)
    assert disabled.status_code == 401 and "disabled" in disabled.text
    with Session(engine) as session:
        bob.is_active = True
        session.add(bob)
        session.commit()
    assert (await api.get(url.path, params=url.params)).status_code == 200
    with Session(engine) as session:
        for row in session.exec(select(ChartLink)):
            row.expires_at = utcnow() - timedelta(seconds=1)
            session.add(row)
        session.commit()
    expired = await api.get(url.path, params=url.params)
    assert expired.status_code == 401 and "expired" in expired.text
    prune(engine, utcnow())
    with Session(engine) as session:
        assert session.exec(select(ChartLink)).all() == []


async def test_only_the_owner_and_the_projects_admins_may_look(
    api: httpx.AsyncClient, engine: Engine, people: dict[str, Headers]
) -> None:
    write_samples(engine, "c1", minutes=1)
    for who, status in (("bob", 200), ("alice", 200), ("root", 200), ("carol", 404), ("eve", 404)):
        for suffix in ("metrics", "metrics.svg"):
            response = await api.get(f"{BASE}/containers/c1/{suffix}", headers=people[who])
            assert response.status_code == status, (who, suffix, response.text)
    assert (await api.get(f"{BASE}/containers/c1/metrics")).status_code == 401


@pytest.mark.parametrize("span", ["25h", "0h", "30m", "6", "h", "1w", "-1h", "99999h"])
async def test_a_range_outside_one_to_twenty_four_hours_is_refused_by_name(
    api: httpx.AsyncClient, people: dict[str, Headers], span: str
) -> None:
    response = await metrics(api, people["bob"], "/containers/c1", range=span)
    assert response.status_code == 422, response.text
    assert "range" in response.text
