"""Running periods written with each lifecycle record: opened at the price of the moment, closed when the pod
stops, a new period per run, cluster pods each their own, and nothing changed by writing a snapshot twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from activities.clusters import ClusterActivities
from activities.containers import ContainerRecords
from activities.jobs import JobActivities
from activities.projects import ProjectCleanup
from models.catalog import Spec
from models.clusters import ClusterMember, ClusterState, ClusterType, MemberPhase
from models.containers import ContainerState, ContainerStatus
from models.jobs import JobState, JobStatus
from models.lifecycle import MemberRole
from models.usage import UsagePeriod
from models.workloads import ResourceRequest
from services.kinds import KINDS
from tests.api.test_reports import add_project
from tests.conftest import make_user
from tests.specs import cluster_spec, one_role_spec

PROJECT = "pusage"
T0 = datetime(2026, 11, 30, 22, 0, tzinfo=UTC)


def set_up(engine: Engine) -> str:
    owner = make_user(engine, "bob").id
    add_project(engine, PROJECT, "Usage", {"bob": (owner, MemberRole.admin)})
    with Session(engine) as session:
        session.add(
            Spec(id="s1", name="cpu-2c", vcpu=2, ram_gb=8, hourly_price=Decimal("12.5"), currency="TWD")
        )
        session.commit()
    return owner


def set_price(engine: Engine, price: str) -> None:
    with Session(engine) as session:
        spec = session.get(Spec, "s1")
        assert spec is not None
        spec.hourly_price = Decimal(price)
        session.add(spec)
        session.commit()


def periods(engine: Engine, workload_id: str) -> list[UsagePeriod]:
    with Session(engine) as session:
        query = select(UsagePeriod).where(UsagePeriod.workload_id == workload_id)
        return list(session.exec(query.order_by(col(UsagePeriod.pod), col(UsagePeriod.started_at))))


def container(owner_id: str, **fields: object) -> ContainerState:
    spec = one_role_spec(
        project_id=PROJECT,
        resource_id="c1",
        kind="container",
        owner="bob",
        name="notebook",
        image="python:3.11",
        resources=ResourceRequest(gpu=1, gpu_model="A100", vcpu=2, ram_gb=8),
    )
    values: dict[str, object] = {"id": "c1", "project_id": PROJECT, "owner": "bob", "owner_id": owner_id}
    values |= {"name": "notebook", "spec_id": "s1", "spec": spec}
    return ContainerState.model_validate(values | fields)


def test_a_period_keeps_the_price_it_opened_at_and_each_run_is_its_own(engine: Engine) -> None:
    owner = set_up(engine)
    records = ContainerRecords(engine)
    running = container(owner, status=ContainerStatus.running, run_started_at=T0, version=1, as_of=T0)
    records.record_container(running)
    records.record_container(running)  # a retried write
    set_price(engine, "99")  # the catalog changes mid-run
    stopped_at = T0 + timedelta(hours=3)
    failed = running.model_copy(
        update={
            "status": ContainerStatus.failed,
            "run_stopped_at": stopped_at,
            "version": 2,
            "as_of": stopped_at,
        }
    )
    records.record_container(failed)
    [first] = periods(engine, "c1")
    assert (first.started_at, first.stopped_at, first.hourly_price) == (T0, stopped_at, Decimal("12.50"))
    assert (first.kind, first.pod, first.gpu, first.gpu_model, first.spec_name) == (
        "container",
        "main",
        1,
        "A100",
        "cpu-2c",
    )

    # Running again (the runtime brought it back): a new period, at the price of now.
    again_at = T0 + timedelta(hours=5)
    again = failed.model_copy(
        update={
            "status": ContainerStatus.running,
            "run_started_at": again_at,
            "run_stopped_at": None,
            "version": 3,
        }
    )
    records.record_container(again)
    assert [(p.started_at, p.stopped_at, p.hourly_price) for p in periods(engine, "c1")] == [
        (T0, stopped_at, Decimal("12.50")),
        (again_at, None, Decimal("99.00")),
    ]
    # An older snapshot arriving late changes nothing.
    records.record_container(running)
    assert len(periods(engine, "c1")) == 2


def test_a_job_that_ended_between_two_looks_still_has_its_period(engine: Engine) -> None:
    owner = set_up(engine)
    spec = one_role_spec(
        project_id=PROJECT,
        resource_id="j1",
        kind="job",
        owner="bob",
        name="train",
        image="python:3.11",
        resources=ResourceRequest(vcpu=2, ram_gb=8),
    )
    finished = T0 + timedelta(minutes=30)
    state = JobState(
        id="j1",
        project_id=PROJECT,
        owner="bob",
        owner_id=owner,
        name="train",
        spec_id="s1",
        spec=spec,
        status=JobStatus.succeeded,
        command="true",
        started_at=T0,
        finished_at=finished,
        version=4,
    )
    JobActivities(engine, runtime=None).record_job(state)  # type: ignore[arg-type]
    [period] = periods(engine, "j1")
    assert (period.started_at, period.stopped_at, period.gpu) == (T0, finished, 0)


def test_each_cluster_pod_has_its_periods_and_a_lost_or_removed_pod_closes_its_own(engine: Engine) -> None:
    owner = set_up(engine)
    spec = cluster_spec(
        project_id=PROJECT, cluster_id="k1", workers=2, resources=ResourceRequest(vcpu=2, ram_gb=8)
    )
    members = [
        ClusterMember(name="launcher", phase=MemberPhase.running, started_at=T0),
        ClusterMember(name="worker-00", ordinal=0, phase=MemberPhase.running, started_at=T0),
        ClusterMember(
            name="worker-01", ordinal=1, phase=MemberPhase.running, started_at=T0 + timedelta(minutes=1)
        ),
    ]
    state = ClusterState(
        id="k1", project_id=PROJECT, owner="bob", owner_id=owner, name="mpi", spec_id="s1", spec=spec,
        status="running", type=ClusterType.horovod, members=members, version=1, as_of=members[2].started_at,
    )  # fmt: skip
    activities = ClusterActivities(engine, runtime=None)  # type: ignore[arg-type]
    activities.record_cluster(state)
    assert [(p.pod, p.stopped_at) for p in periods(engine, "k1")] == [
        ("launcher", None),
        ("worker-00", None),
        ("worker-01", None),
    ]
    # worker-00 is lost (re-created later under its own name), worker-01 scaled in.
    lost_at = T0 + timedelta(hours=2)
    back_at = lost_at + timedelta(minutes=3)
    state.members = [members[0], members[1].model_copy(update={"started_at": None, "restarts": 1})]
    state.version, state.as_of = 2, lost_at
    activities.record_cluster(state)
    state.members[1] = members[1].model_copy(update={"started_at": back_at, "restarts": 1})
    state.version, state.as_of = 3, back_at
    activities.record_cluster(state)
    activities.record_cluster(state)
    assert [(p.pod, p.started_at, p.stopped_at) for p in periods(engine, "k1")] == [
        ("launcher", T0, None),
        ("worker-00", T0, lost_at),
        ("worker-00", back_at, None),
        ("worker-01", T0 + timedelta(minutes=1), lost_at),
    ]
    # The cluster deleted: every pod's period closes.
    gone_at = back_at + timedelta(hours=1)
    state.members, state.status, state.version, state.as_of = [], "deleted", 4, gone_at
    activities.record_cluster(state)
    assert all(p.stopped_at is not None for p in periods(engine, "k1"))
    assert {p.stopped_at for p in periods(engine, "k1") if p.pod == "launcher"} == {gone_at}


def test_a_workload_on_no_catalog_spec_is_not_billed(engine: Engine) -> None:
    owner = set_up(engine)
    ContainerRecords(engine).record_container(
        container(owner, spec_id=None, status=ContainerStatus.running, run_started_at=T0, version=1)
    )
    assert periods(engine, "c1") == []


def test_a_projects_deletion_closes_what_still_ran(engine: Engine) -> None:
    owner = set_up(engine)
    ContainerRecords(engine).record_container(
        container(owner, status=ContainerStatus.running, run_started_at=T0, version=1)
    )
    ProjectCleanup(engine, client=None, kinds=KINDS).close_workload_records(PROJECT)  # type: ignore[arg-type]
    [period] = periods(engine, "c1")
    assert period.stopped_at is not None and period.stopped_at > T0
