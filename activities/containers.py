"""Container activities: the read model."""

from __future__ import annotations

from sqlalchemy import Engine
from temporalio import activity

from activities.records import record_workload
from models.containers import Container, ContainerState


class ContainerRecords:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @activity.defn
    def record_container(self, state: ContainerState) -> None:
        record_workload(self._engine, Container, state, state.record())
