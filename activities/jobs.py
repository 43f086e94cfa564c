"""Job activities: the read model, and keeping a finished job's log after its workload is deleted."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlmodel import Session
from temporalio import activity

from activities.records import record_workload
from activities.runtime import WorkloadRuntime
from activities.workloads import WorkloadRef, runtime_call
from models.base import utcnow
from models.jobs import LOG_KEEP_BYTES, Job, JobLog, JobState

# Lines asked of the runtime; the byte limit below is what really bounds the stored text.
LOG_TAIL_LINES = 100_000


def last_bytes(text: str, limit: int = LOG_KEEP_BYTES) -> tuple[str, bool]:
    """The end of ``text`` within ``limit`` UTF-8 bytes, starting at a whole line where one fits."""
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text, False
    tail = raw[-limit:]
    newline = tail.find(b"\n")
    if 0 <= newline < len(tail) - 1:
        tail = tail[newline + 1 :]
    return tail.decode("utf-8", errors="ignore"), True


class JobActivities:
    def __init__(self, engine: Engine, runtime: WorkloadRuntime) -> None:
        self._engine = engine
        self._runtime = runtime

    @activity.defn
    def record_job(self, state: JobState) -> None:
        record_workload(self._engine, Job, state, state.record())

    @activity.defn
    def keep_job_log(self, ref: WorkloadRef) -> int:
        """Copy the end of the workload's log into job_log; returns the bytes kept.

        Fetching and storing in one activity keeps up to a MiB of output out of workflow history.
        Idempotent: a retry overwrites the row with the same (or a longer) text. An empty read never
        replaces a copy taken earlier: Kubernetes deletes a job's pods, and their log, at its deadline.
        """
        with runtime_call():
            text, truncated = last_bytes(
                self._runtime.logs(ref.project_id, ref.kind, ref.resource_id, tail_lines=LOG_TAIL_LINES)
            )
        with Session(self._engine) as session:
            row = session.get(JobLog, ref.resource_id, with_for_update=True)
            if row is not None and row.text and not text:
                return len(row.text.encode("utf-8"))
            row = row or JobLog(job_id=ref.resource_id, text="")
            row.text, row.truncated, row.stored_at = text, truncated, utcnow()
            session.add(row)
            session.commit()
        return len(text.encode("utf-8"))
