"""Running periods from lifecycle records: what cost and GPU usage are computed from (models/usage.py).

Called inside a read-model write, with the snapshot the workflow recorded: a period it lists is opened (its
spec's price copied from the catalog then, once) or closed; a period still open here that the snapshot no
longer lists (a pod lost, scaled in, or deleted while a write was missed) is closed at the snapshot's time.
Idempotent: the same snapshot written twice changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import update
from sqlmodel import Session, col, select

from models.catalog import DEFAULT_CURRENCY, Spec
from models.usage import RunPeriod, UsagePeriod
from models.workload_lifecycle import WorkloadLifecycleState


def record_usage(session: Session, state: WorkloadLifecycleState, as_of: datetime) -> None:
    if state.spec_id is None:
        return  # not run on a catalog spec (the transfer service): nothing to price, nothing to bill
    periods = state.run_periods()
    listed = {(period.pod, period.started_at) for period in periods}
    open_rows = session.exec(
        select(UsagePeriod).where(UsagePeriod.workload_id == state.id, col(UsagePeriod.stopped_at).is_(None))
    ).all()
    for stray in open_rows:
        if (stray.pod, stray.started_at) not in listed:
            stray.stopped_at = max(as_of, stray.started_at)
            session.add(stray)
    spec: Spec | None = None
    for period in periods:
        row = session.get(UsagePeriod, (state.id, period.pod, period.started_at))
        if row is None:
            spec = spec or session.get(Spec, state.spec_id)
            row = UsagePeriod(
                workload_id=state.id,
                pod=period.pod,
                started_at=period.started_at,
                stopped_at=period.stopped_at,
                kind=state.spec.kind,
                project_id=state.project_id,
                name=state.name,
                owner_id=state.owner_id,
                owner=state.owner,
                spec_id=state.spec_id,
                spec_name=spec.name if spec else "",
                gpu=period.gpu,
                gpu_model=period.gpu_model,
                hourly_price=spec.hourly_price if spec else Decimal(0),
                currency=spec.currency if spec else DEFAULT_CURRENCY,
            )
        elif row.stopped_at is None and period.stopped_at is not None:
            row.stopped_at = period.stopped_at
        else:
            continue
        session.add(row)


def close_project_usage(session: Session, project_id: str, at: datetime) -> int:
    """A project's deletion ends whatever still ran in it (its workflows may have ended before recording)."""
    result = session.execute(
        update(UsagePeriod)
        .where(col(UsagePeriod.project_id) == project_id, col(UsagePeriod.stopped_at).is_(None))
        .values(stopped_at=at)
    )
    return int(getattr(result, "rowcount", 0) or 0)


__all__ = ["RunPeriod", "close_project_usage", "record_usage"]
