"""Container activities: the read model."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlmodel import Session
from temporalio import activity

from models.base import utcnow
from models.containers import Container, ContainerState


class ContainerRecords:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @activity.defn
    def record_container(self, state: ContainerState) -> None:
        """Upsert the container row; an older snapshot never wins."""
        with Session(self._engine) as session:
            row = session.get(Container, state.id, with_for_update=True)
            if row is not None and row.version > state.version:
                return
            spec, resources = state.spec, state.spec.resources
            row = row or Container(
                id=state.id,
                project_id=state.project_id,
                owner_id=state.owner_id,
                owner=state.owner,
                name=state.name,
                image=spec.image,
                vcpu=resources.vcpu,
                ram_gb=resources.ram_gb,
                status=state.status,
                created_at=state.created_at,
            )
            row.name, row.spec_id, row.image = state.name, state.spec_id, spec.image
            row.gpu, row.gpu_model = resources.gpu, resources.gpu_model
            row.vcpu, row.ram_gb, row.shm_gb = resources.vcpu, resources.ram_gb, resources.shm_gb
            row.ports = [port.model_dump() for port in spec.ports]
            row.status, row.reason, row.message = state.status, state.reason[:128], state.message[:2000]
            row.queue_position = state.queue_position
            row.endpoints = [endpoint.model_dump() for endpoint in state.endpoints]
            row.start_at, row.end_at = state.start_at, state.end_at
            row.version, row.updated_at = state.version, utcnow()
            session.add(row)
            session.commit()
