"""What operators scrape of the platform's state: every lifecycle by kind and status, and each kind's queue,
counted from the read models (the same rows the API lists), so a scrape never touches a workflow."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from models.projects import Project
from services.kinds import DATA_KINDS, KINDS, DataKind, WorkloadKind

WAITING = "waiting"


class LifecycleCollector(Collector):
    """`mlcp_lifecycles{kind, status}`, `mlcp_queue_length{kind}` and `mlcp_projects{status}`, read at each
    scrape. A kind's deleted rows are counted too: a rising count of them is the platform's throughput."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The families without reading the database: a registry asks for them when the app is made."""
        return iter(self._families())

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        lifecycles = GaugeMetricFamily(
            "mlcp_lifecycles",
            "Lifecycles by kind and status, from the read models",
            labels=["kind", "status"],
        )
        queues = GaugeMetricFamily(
            "mlcp_queue_length", "Workloads waiting in their projects' quota queues, by kind", labels=["kind"]
        )
        projects = GaugeMetricFamily("mlcp_projects", "Projects by status", labels=["status"])
        return lifecycles, queues, projects

    def collect(self) -> Iterator[GaugeMetricFamily]:
        lifecycles, queues, projects = self._families()
        with Session(self._engine) as session:
            kinds: list[WorkloadKind | DataKind] = [*KINDS, *DATA_KINDS]
            for kind in kinds:
                table: Any = kind.table
                counted = dict(
                    session.exec(select(table.status, func.count()).group_by(col(table.status))).all()
                )
                for status in kind.status:
                    lifecycles.add_metric([kind.name, status.value], counted.get(status.value, 0))
                if isinstance(kind, WorkloadKind):
                    queues.add_metric([kind.name], counted.get(WAITING, 0))
            by_status = select(Project.status, func.count()).group_by(col(Project.status))
            for project_status, count in session.exec(by_status).all():
                projects.add_metric([str(project_status)], count)
        yield lifecycles
        yield queues
        yield projects
