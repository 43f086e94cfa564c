"""Schedule activities: decide at fire time what a run does, record how it ended, pause a schedule.

Every activity is idempotent on the run's workflow ID: a retried plan finds the run it recorded and
answers with the same job (same ID, same name), so a run never starts two jobs.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select
from temporalio import activity
from temporalio.client import Client, ScheduleUpdate, ScheduleUpdateInput
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from config import Settings
from models.base import utcnow
from models.catalog import Spec
from models.job_templates import JobTemplate, next_job_name
from models.lifecycle import ProjectStatus
from models.projects import Project, ProjectMember
from models.schedules import RunEnd, RunOutcome, RunPlan, Schedule, ScheduleRun, StopAction
from services.errors import DomainError, conflict
from services.jobs import job_input
from services.workloads import Owner

NAME_ATTEMPTS = 5


class RunRequest(BaseModel):
    schedule_id: str
    project_id: str
    run_id: str  # the ScheduledJobWorkflow's workflow ID: one per fire
    fired_at: datetime


class PauseOrder(BaseModel):
    schedule_id: str
    note: str
    action: StopAction


# The note the project pauses its schedules with at grace; an extension that makes it active again resumes
# exactly those (a schedule its owner paused stays paused).
GRACE_PAUSE_NOTE = "the project's end date has passed (grace period)"


RESUMED_NOTE = "resumed: the project is active again"


class ProjectSchedulesStop(BaseModel):
    """Every schedule of a project stops with it: paused at grace, removed from Temporal at deletion."""

    project_id: str
    note: str
    action: StopAction


def job_id_for(run_id: str) -> str:
    """The same run always names the same job; starts with a letter like every resource ID."""
    return "s" + hashlib.sha256(run_id.encode()).hexdigest()[:9]


class ScheduleActivities:
    def __init__(self, engine: Engine, client: Client, settings: Settings) -> None:
        self._engine = engine
        self._client = client
        self._settings = settings

    @activity.defn
    def plan_scheduled_run(self, request: RunRequest) -> RunPlan:
        with Session(self._engine) as session:
            schedule = session.get(Schedule, request.schedule_id)
            if schedule is None:
                # Deleted (its Temporal schedule went first), or not committed yet: retried a few times.
                raise ApplicationError(f"schedule {request.schedule_id} is not recorded", type="NotFound")
            run = session.get(ScheduleRun, request.run_id)
            if run is None:  # the first attempt decides; a retry answers the same
                reason, stop = self._refusal(session, schedule)
                if reason:
                    session.add(self._run(request, RunOutcome.skipped, reason))
                    session.commit()
                    return RunPlan(run_id=request.run_id, skipped=reason, stop=stop)
                run = self._reserve(session, request, schedule)
            template = session.get(JobTemplate, schedule.template_id) if schedule.template_id else None
            if run.outcome == RunOutcome.skipped or run.job_id is None or run.job_name is None:
                return RunPlan(run_id=run.id, skipped=run.message)
            try:
                if template is None:
                    raise conflict("the schedule's job template was detached meanwhile")
                job = job_input(
                    session,
                    self._settings,
                    session.get_one(Project, schedule.project_id),
                    Owner(id=schedule.owner_id, username=schedule.owner),
                    template.job(run.job_name),
                    run.job_id,
                )
            except DomainError as refused:  # changed between the checks above and now
                run.outcome, run.message, run.ended_at = RunOutcome.skipped, refused.message[:2000], utcnow()
                session.add(run)
                session.commit()
                return RunPlan(run_id=run.id, skipped=run.message)
            return RunPlan(run_id=run.id, job_id=run.job_id, job_name=run.job_name, job_input=job)

    def _refusal(self, session: Session, schedule: Schedule) -> tuple[str, StopAction]:
        """Why this run starts no job, if it does not, and what becomes of the schedule."""
        project = session.get(Project, schedule.project_id)
        if project is None or project.status in (ProjectStatus.deleting, ProjectStatus.deleted):
            return "the project is deleted", StopAction.remove
        if project.status == ProjectStatus.grace:
            return GRACE_PAUSE_NOTE, StopAction.pause  # the same pause as the project's own at grace
        if project.status != ProjectStatus.active:
            return (
                f"the project is {project.status}: schedules pause until someone resumes them",
                StopAction.pause,
            )
        if session.get(ProjectMember, (schedule.project_id, schedule.owner_id)) is None:
            return f"{schedule.owner} is no longer a member of the project", StopAction.pause
        template = session.get(JobTemplate, schedule.template_id) if schedule.template_id else None
        if template is None:
            return "no job template is attached", StopAction.none
        spec = session.get(Spec, template.spec_id)
        if spec is None or not spec.is_active:
            return f"the template's spec {template.spec_id} is retired", StopAction.pause
        return "", StopAction.none

    def _reserve(self, session: Session, request: RunRequest, schedule: Schedule) -> ScheduleRun:
        """Record the run with its job's ID and the schedule's next job name."""
        for _ in range(NAME_ATTEMPTS):
            run = self._run(request, RunOutcome.started, "")
            run.job_id = job_id_for(request.run_id)
            run.job_name = next_job_name(session, schedule.project_id, schedule.name)
            run.started_at = utcnow()
            session.add(run)
            try:
                session.commit()
                return run
            except IntegrityError:
                # Runs of a multi-line schedule start together and may pick one name: take the next.
                session.rollback()
        raise ApplicationError(f"no free job name for schedule {schedule.name} after {NAME_ATTEMPTS} tries")

    def _run(self, request: RunRequest, outcome: RunOutcome, message: str) -> ScheduleRun:
        return ScheduleRun(
            id=request.run_id,
            schedule_id=request.schedule_id,
            project_id=request.project_id,
            fired_at=request.fired_at,
            outcome=outcome,
            message=message[:2000],
        )

    @activity.defn
    def record_run_end(self, end: RunEnd) -> None:
        with Session(self._engine) as session:
            run = session.get(ScheduleRun, end.run_id)
            if run is None:  # its schedule was deleted meanwhile, and its runs with it
                return
            run.outcome, run.message = end.outcome, end.message[:2000]
            run.ended_at = run.ended_at or utcnow()
            session.add(run)
            session.commit()

    @activity.defn
    async def pause_schedule(self, order: PauseOrder) -> None:
        """Stop a schedule that cannot run: paused with the reason; its Temporal schedule deleted with the
        project (the row stays paused, so the project's records still show it)."""
        handle = self._client.get_schedule_handle(f"schedule-{order.schedule_id}")
        try:
            if order.action == StopAction.remove:
                await handle.delete()
            else:

                def paused(current: ScheduleUpdateInput) -> ScheduleUpdate:
                    schedule = current.description.schedule
                    schedule.state.paused, schedule.state.note = True, order.note
                    return ScheduleUpdate(schedule=schedule)

                await handle.update(paused)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
        await asyncio.to_thread(self._record_pause, order)

    @activity.defn
    async def stop_project_schedules(self, order: ProjectSchedulesStop) -> int:
        """Pause (or remove) each of the project's schedules; how many there were. Safe to repeat."""
        schedule_ids = await asyncio.to_thread(self._schedule_ids, order.project_id)
        for schedule_id in schedule_ids:
            await self.pause_schedule(
                PauseOrder(schedule_id=schedule_id, note=order.note, action=order.action)
            )
        return len(schedule_ids)

    def _schedule_ids(self, project_id: str) -> list[str]:
        with Session(self._engine) as session:
            return list(session.exec(select(Schedule.id).where(Schedule.project_id == project_id)))

    @activity.defn
    async def resume_project_schedules(self, project_id: str) -> int:
        """The project is active again (an extension during grace): resume what its grace paused."""
        schedule_ids = await asyncio.to_thread(self._paused_at_grace, project_id)
        for schedule_id in schedule_ids:
            try:
                await self._client.get_schedule_handle(f"schedule-{schedule_id}").unpause(note=RESUMED_NOTE)
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
                continue  # removed from the workflow engine: nothing to resume
            await asyncio.to_thread(self._record_resume, schedule_id)
        return len(schedule_ids)

    def _paused_at_grace(self, project_id: str) -> list[str]:
        with Session(self._engine) as session:
            statement = select(Schedule.id).where(
                Schedule.project_id == project_id,
                Schedule.paused == True,  # noqa: E712 (a SQL expression)
                Schedule.pause_note == GRACE_PAUSE_NOTE,
            )
            return list(session.exec(statement))

    def _record_resume(self, schedule_id: str) -> None:
        with Session(self._engine) as session:
            row = session.get(Schedule, schedule_id)
            if row is None or row.pause_note != GRACE_PAUSE_NOTE:
                return
            row.paused, row.pause_note, row.updated_at = False, RESUMED_NOTE, utcnow()
            session.add(row)
            session.commit()

    def _record_pause(self, order: PauseOrder) -> None:
        with Session(self._engine) as session:
            row = session.get(Schedule, order.schedule_id)
            if row is None:
                return
            row.paused, row.pause_note, row.updated_at = True, order.note[:500], utcnow()
            session.add(row)
            session.commit()
