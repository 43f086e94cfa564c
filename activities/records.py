"""Writing a workload's read-model row from its workflow's state: the one upsert every kind uses."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from activities.usage import record_usage
from models.base import utcnow
from models.workload_lifecycle import MESSAGE_MAX, REASON_MAX, WorkloadLifecycleState, WorkloadRecord


def record_workload(
    engine: Engine, table: type[WorkloadRecord], state: WorkloadLifecycleState, columns: dict[str, Any]
) -> None:
    """Upsert the row for `state`; an older snapshot never wins over a newer one.

    The row takes every field the state shares with the table, plus the kind's own `columns` (what the
    table stores flattened from the spec). Its running periods are written in the same transaction.
    Idempotent: a retried write of the same version changes nothing.
    """
    shared = set(table.model_fields) & set(type(state).model_fields)
    values = state.model_dump(include=shared) | columns
    values["reason"] = str(values.get("reason", ""))[:REASON_MAX]
    values["message"] = str(values.get("message", ""))[:MESSAGE_MAX]
    values["updated_at"] = utcnow()
    with Session(engine) as session:
        row = session.get(table, values["id"], with_for_update=True)
        if row is not None and row.version > state.version:
            return
        if row is None:
            row = table(**values)
        else:
            row.sqlmodel_update(values)
        session.add(row)
        record_usage(session, state, state.as_of or values["updated_at"])
        session.commit()
