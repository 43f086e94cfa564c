"""Transfer service activities: the read model."""

from __future__ import annotations

from sqlalchemy import Engine
from temporalio import activity

from activities.records import record_workload
from models.containers import ContainerState
from models.transfers import Transfer


class TransferRecords:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @activity.defn
    def record_transfer(self, state: ContainerState) -> None:
        record_workload(self._engine, Transfer, state, state.record())
