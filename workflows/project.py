"""ProjectWorkflow: one per project, from application to deletion (manual 5.1-5.3).

The workflow owns the project's state, its dates and its quota ledger. The main loop derives the
status from the clock (approved -> active -> grace -> deleted) and sleeps until the next date or
until an update or signal changes something; every change re-arms the timers.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.heartbeat import HEARTBEAT_TIMEOUT
    from activities.mail import MailActivities
    from activities.projects import ProjectActivities, ProjectCleanup, ProjectSweep
    from activities.schedules import GRACE_PAUSE_NOTE, ProjectSchedulesStop, ScheduleActivities
    from activities.volumes import VolumeActivities
    from activities.workloads import WorkloadActivities
    from models.lifecycle import (
        PROJECT_ADMISSION_REQUEST_SIGNAL,
        WORKLOAD_ADMISSION_SIGNAL,
        WORKLOAD_ADMITTED_SIGNAL,
        WORKLOAD_SHUTDOWN_SIGNAL,
        AdmissionAnswer,
        AdmitRequest,
        Application,
        ApplicationStatus,
        ApplicationType,
        Decision,
        DeleteRequest,
        LedgerEntry,
        MemberRole,
        ProjectEdit,
        ProjectState,
        ProjectStatus,
        ProjectView,
        ProjectWorkflowInput,
        QuotaPanel,
        ShutdownNotice,
        Withdrawal,
        WorkloadEvent,
    )
    from models.mail import MailMessage
    from models.schedules import StopAction
    from models.workloads import ProjectEnvironment
    from workflows import project_mail, search_attributes
    from workflows.ledger import QuotaLedger

TERMINAL = {ProjectStatus.rejected, ProjectStatus.withdrawn, ProjectStatus.deleted}
LIVE = {ProjectStatus.approved, ProjectStatus.active, ProjectStatus.grace}
RECORD_TIMEOUT = timedelta(seconds=30)
ENVIRONMENT_TIMEOUT = timedelta(minutes=2)
WITH_ENVIRONMENT = {ProjectStatus.active, ProjectStatus.grace}
MAIL_TIMEOUT = timedelta(minutes=1)
STORAGE_CLEANUP_TIMEOUT = timedelta(hours=1)
SCHEDULES_TIMEOUT = timedelta(minutes=2)
MAIL_RETRY = RetryPolicy(maximum_attempts=20, maximum_interval=timedelta(minutes=10))


def conflict(message: str) -> ApplicationError:
    """Rejected requests reach the API as a 409 with this message."""
    return ApplicationError(message, type="Conflict", non_retryable=True)


def workflow_id(project_id: str) -> str:
    return f"project-{project_id}"


@workflow.defn
class ProjectWorkflow:
    @workflow.init
    def __init__(self, input: ProjectWorkflowInput) -> None:
        self._state: ProjectState = input.state
        self._timings = input.timings
        self._max_history = input.max_history_events
        self._ledger = QuotaLedger(self._state.ledger)
        self._recorded_version = -1
        self._outbox: list[MailMessage] = []
        self._to_admit: list[LedgerEntry] = []
        self._to_shut_down: list[LedgerEntry] = []
        self._answers: list[tuple[str, AdmissionAnswer]] = []  # (workload's workflow ID, its answer)
        self._schedules_stop: ProjectSchedulesStop | None = None
        self._schedules_resume = False
        # Ledger changes wake the main loop without a new read-model version: the read model holds no
        # ledger, so a busy project must not write its row on every admit and release.
        self._wakeups = 0

    # ---- main loop -------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: ProjectWorkflowInput) -> ProjectStatus:
        while True:
            await self._flush()
            state = self._state
            if state.status in TERMINAL:
                await workflow.wait_condition(workflow.all_handlers_finished)
                return state.status
            if state.delete_requested_by or state.status == ProjectStatus.deleting:
                await self._delete_everything(f"deleted by {state.delete_requested_by}")
                continue
            if self._should_continue_as_new():
                await workflow.wait_condition(workflow.all_handlers_finished)
                await self._flush()
                workflow.continue_as_new(
                    ProjectWorkflowInput(
                        state=self._state, timings=self._timings, max_history_events=self._max_history
                    )
                )
            wake_at = self._follow_the_clock(workflow.now())
            if self._state.status == ProjectStatus.deleting:
                continue
            version, wakeups = self._state.version, self._wakeups
            pending = bool(self._outbox or self._to_admit or self._to_shut_down or self._answers) or (
                self._schedules_stop is not None or self._schedules_resume
            )
            if pending or self._recorded_version < version:
                continue
            timeout = None if wake_at is None else max(wake_at - workflow.now(), timedelta(0))
            await self._sleep_until_changed(version, wakeups, wake_in=timeout)

    async def _sleep_until_changed(self, version: int, wakeups: int, wake_in: timedelta | None) -> None:
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: self._state.version != version or self._wakeups != wakeups, timeout=wake_in
            )

    def _follow_the_clock(self, now: datetime) -> datetime | None:
        """Move the status to where the dates say; return when to look again."""
        state, details = self._state, self._state.details
        if state.status == ProjectStatus.pending:
            return None
        grace_ends = details.end_at + self._timings.grace_period
        if now >= grace_ends:
            self._set_status(ProjectStatus.deleting)
            return None
        if now >= details.end_at:
            if state.status != ProjectStatus.grace:
                self._enter_grace(grace_ends)
            return grace_ends
        if now >= details.start_at:
            if state.status != ProjectStatus.active:
                # Back from grace (an extension): what grace paused runs again.
                self._schedules_resume = state.status == ProjectStatus.grace
                state.grace_ends_at = None
                self._set_status(ProjectStatus.active)
            remind_at = details.end_at - self._timings.reminder_before
            if state.reminder_sent_for != details.end_at:
                if now >= remind_at:
                    state.reminder_sent_for = details.end_at
                    self._mail(project_mail.reminder(state, self._admin_ids()))
                    self._touch()
                else:
                    return remind_at
            return details.end_at
        self._set_status(ProjectStatus.approved)
        return details.start_at

    def _enter_grace(self, grace_ends: datetime) -> None:
        state = self._state
        state.grace_ends_at = grace_ends
        self._set_status(ProjectStatus.grace)
        if state.expiry_notice_for != state.details.end_at:
            state.expiry_notice_for = state.details.end_at
            self._mail(project_mail.expired(state, self._admin_ids(), grace_ends))
        self._shut_down_workloads()
        self._schedules_stop = ProjectSchedulesStop(
            project_id=state.id,
            note=GRACE_PAUSE_NOTE,
            action=StopAction.pause,
        )

    async def _delete_everything(self, reason: str) -> None:
        """Delete everything in the project, within minutes whatever its workloads do.

        Each workload first deletes itself through its own workflow and releases its reservation. One that
        has not within `workload_shutdown_timeout` has its workflow cancelled (it tears down on
        cancellation); one still registered `workload_cancel_timeout` later is terminated. Then every
        other running workflow of the project ends, the runtime environment goes with whatever is left in
        it (found by the project's labels), and rows the ended workflows could not finish are closed.
        """
        state, timings = self._state, self._timings
        self._set_status(ProjectStatus.deleting)
        self._shut_down_workloads()
        await self._flush()
        if not await self._ledger_empties(timings.workload_shutdown_timeout):
            workflow.logger.warning("workloads still registered, cancelling: %s", self._registered())
            for entry in list(state.ledger):
                with contextlib.suppress(Exception):
                    await workflow.get_external_workflow_handle(entry.workflow_id).cancel()
            await self._ledger_empties(timings.workload_cancel_timeout)
        leftover = [entry.workflow_id for entry in state.ledger]
        self._schedules_stop = ProjectSchedulesStop(
            project_id=state.id, note="the project is deleted", action=StopAction.remove
        )
        await self._flush()
        await workflow.execute_activity_method(
            ProjectCleanup.end_project_workflows,
            ProjectSweep(
                project_id=state.id,
                workflow_ids=leftover,
                keep=workflow.info().workflow_id,
                reason=f"project {state.id} is deleted",
            ),
            start_to_close_timeout=ENVIRONMENT_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
        )
        for entry in list(state.ledger):  # ended without giving their reservations back
            self._ledger.release(entry.resource_id, state.quota)
        if workflow.patched("project-storage-cleanup"):
            # Volumes delete themselves above; whatever a cut-short deletion left (a bucket, a folder, the
            # project's S3 identity) goes here, before the namespace that holds the identity's Secret.
            await workflow.execute_activity_method(
                VolumeActivities.delete_project_storage,
                state.id,
                start_to_close_timeout=STORAGE_CLEANUP_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=1), maximum_attempts=20),
            )
        await workflow.execute_activity_method(
            WorkloadActivities.delete_project_environment,
            state.id,
            start_to_close_timeout=ENVIRONMENT_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
        )
        state.environment_quota = None
        await workflow.execute_activity_method(
            ProjectCleanup.close_workload_records, state.id, start_to_close_timeout=RECORD_TIMEOUT
        )
        self._mail(project_mail.deleted(state, [m.user_id for m in state.details.members], reason))
        self._set_status(ProjectStatus.deleted)
        await self._flush()

    async def _ledger_empties(self, within: timedelta) -> bool:
        """Wait up to `within` for every workload to release, answering requests meanwhile."""
        give_up = workflow.now() + within
        while self._state.ledger:
            left = give_up - workflow.now()
            if left <= timedelta(0):
                return False
            await self._sleep_until_changed(self._state.version, self._wakeups, wake_in=left)
            await self._flush()
        return True

    def _registered(self) -> list[str]:
        return [entry.resource_id for entry in self._state.ledger]

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() > self._max_history

    # ---- side effects, flushed by the main loop -----------------------------------------------

    async def _flush(self) -> None:
        state = self._state
        if state.status in WITH_ENVIRONMENT and state.environment_quota != state.quota:
            # The namespace (and its ResourceQuota) exists from activation and follows quota changes.
            await workflow.execute_activity_method(
                WorkloadActivities.ensure_project_environment,
                ProjectEnvironment(project_id=state.id, quota=state.quota),
                start_to_close_timeout=ENVIRONMENT_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
            )
            state.environment_quota = state.quota
            self._touch()
        while self._outbox:
            message = self._outbox.pop(0)
            try:
                await workflow.execute_activity_method(
                    MailActivities.send_mail,
                    message,
                    start_to_close_timeout=MAIL_TIMEOUT,
                    heartbeat_timeout=HEARTBEAT_TIMEOUT,
                    retry_policy=MAIL_RETRY,
                )
            except ActivityError:
                # Mail is a courtesy: a lost message must never stop the lifecycle.
                workflow.logger.warning("mail %s could not be sent", message.key)
        while self._answers:
            workflow_id, answer = self._answers.pop(0)
            await self._signal_workload(workflow_id, answer.resource_id, WORKLOAD_ADMISSION_SIGNAL, answer)
        while self._to_admit:
            entry = self._to_admit.pop(0)
            await self._signal_workload(entry.workflow_id, entry.resource_id, WORKLOAD_ADMITTED_SIGNAL)
        if self._schedules_stop is not None:
            # Schedules start nothing once the project is not active; at grace they stop firing at all.
            await workflow.execute_activity_method(
                ScheduleActivities.stop_project_schedules,
                self._schedules_stop,
                start_to_close_timeout=SCHEDULES_TIMEOUT,
            )
            self._schedules_stop = None
        if self._schedules_resume:
            await workflow.execute_activity_method(
                ScheduleActivities.resume_project_schedules,
                self._state.id,
                start_to_close_timeout=SCHEDULES_TIMEOUT,
            )
            self._schedules_resume = False
        while self._to_shut_down:
            entry = self._to_shut_down.pop(0)
            notice = ShutdownNotice(project_id=self._state.id, reason=self._state.status.value)
            await self._signal_workload(
                entry.workflow_id, entry.resource_id, WORKLOAD_SHUTDOWN_SIGNAL, notice
            )
        if self._recorded_version < self._state.version:
            version = self._state.version
            await workflow.execute_activity_method(
                ProjectActivities.record_project,
                self._state.model_copy(update={"ledger": []}),  # not in the read model; can be large
                start_to_close_timeout=RECORD_TIMEOUT,
            )
            self._recorded_version = version
        workflow.set_current_details(self._details())

    async def _signal_workload(
        self, workflow_id: str, resource_id: str, signal: str, arg: object = None
    ) -> None:
        handle = workflow.get_external_workflow_handle(workflow_id)
        try:
            await handle.signal(signal, arg if arg is not None else WorkloadEvent(resource_id=resource_id))
        except Exception:
            # The workload's workflow is gone: it can hold no reservation.
            workflow.logger.warning("workload %s is gone; releasing its reservation", workflow_id)
            self._release(resource_id)

    def _details(self) -> str:
        state, panel = self._state, self._panel()
        lines = [
            f"**{state.details.name}** — {state.status.value}",
            f"{state.details.start_at:%Y-%m-%d %H:%M} → {state.details.end_at:%Y-%m-%d %H:%M} UTC",
            f"GPU {panel.in_use.gpu + panel.in_flight.gpu}/{panel.limit.gpu} reserved, "
            f"vCPU {panel.in_use.vcpu + panel.in_flight.vcpu:g}/{panel.limit.vcpu:g}, "
            f"RAM {panel.in_use.ram_gb + panel.in_flight.ram_gb:g}/{panel.limit.ram_gb:g} GB",
        ]
        if panel.queue:
            lines.append(f"{len(panel.queue)} waiting: {panel.queue[0].reason}")
        if state.grace_ends_at:
            lines.append(f"grace period ends {state.grace_ends_at:%Y-%m-%d %H:%M} UTC")
        return "\n".join(lines)

    def _touch(self) -> None:
        self._state.version += 1

    def _set_status(self, status: ProjectStatus) -> None:
        if self._state.status != status:
            self._state.status = status
            search_attributes.status_changed(status.value)
            self._touch()

    def _mail(self, message: MailMessage) -> None:
        self._outbox.append(message)

    def _admin_ids(self) -> list[str]:
        return [m.user_id for m in self._state.details.members if m.role == MemberRole.admin]

    def _shut_down_workloads(self) -> None:
        self._to_shut_down.extend(e for e in self._state.ledger if e not in self._to_shut_down)

    def _panel(self) -> QuotaPanel:
        return self._ledger.panel(self._state.quota)

    def _release(self, resource_id: str) -> None:
        if self._ledger.get(resource_id) is None:
            return
        self._to_admit.extend(self._ledger.release(resource_id, self._state.quota))
        self._wakeups += 1

    async def _recorded(self) -> None:
        """Updates answer only once the read model shows their effect."""
        version = self._state.version
        await workflow.wait_condition(lambda: self._recorded_version >= version)

    def _application(self, application_id: str) -> Application:
        for application in self._state.applications:
            if application.id == application_id:
                return application
        raise ApplicationError(
            f"application {application_id!r} does not exist", type="NotFound", non_retryable=True
        )

    # ---- applications -----------------------------------------------------------------------

    @workflow.update
    async def decide(self, decision: Decision) -> Application:
        self.validate_decide(decision)  # again: another update may have decided it meanwhile
        application = self._application(decision.application_id)
        application.status = ApplicationStatus.approved if decision.approve else ApplicationStatus.rejected
        application.decided_by, application.decided_at = decision.admin, workflow.now()
        application.decision_reason = decision.reason
        state = self._state
        if application.type == ApplicationType.project:
            if decision.approve:
                self._set_status(ProjectStatus.approved)  # the main loop moves it on by the clock
            else:
                self._set_status(ProjectStatus.rejected)
        elif decision.approve and application.type == ApplicationType.extension:
            state.details.end_at += timedelta(days=application.extension_days or 0)
        elif decision.approve and application.type == ApplicationType.quota and application.quota_delta:
            state.quota = state.quota + application.quota_delta
            self._to_admit.extend(self._ledger.admit_from_queue(state.quota))
        self._mail(project_mail.decided(state, application))
        self._touch()
        await self._recorded()
        return application

    @decide.validator
    def validate_decide(self, decision: Decision) -> None:
        application = self._application(decision.application_id)
        if application.status != ApplicationStatus.pending:
            raise conflict(f"application {application.id} is already {application.status.value}")
        if not decision.approve and not decision.reason.strip():
            raise ApplicationError("reason: a rejection needs a reason", type="Invalid", non_retryable=True)
        if application.type != ApplicationType.project and self._state.status not in LIVE:
            raise conflict(f"the project is {self._state.status.value}")
        if (
            decision.approve
            and application.type == ApplicationType.project
            and self._state.details.end_at <= workflow.now()
        ):
            raise conflict("the project's end date has passed; ask the applicant to apply again")

    @workflow.update
    async def withdraw(self, withdrawal: Withdrawal) -> Application:
        self.validate_withdraw(withdrawal)
        application = self._application(withdrawal.application_id)
        application.status = ApplicationStatus.withdrawn
        application.decided_at = workflow.now()
        if application.type == ApplicationType.project:
            self._set_status(ProjectStatus.withdrawn)
        self._touch()
        await self._recorded()
        return application

    @withdraw.validator
    def validate_withdraw(self, withdrawal: Withdrawal) -> None:
        application = self._application(withdrawal.application_id)
        if application.applicant_id != withdrawal.user_id:
            raise ApplicationError(
                "only the applicant may withdraw an application", type="Forbidden", non_retryable=True
            )
        if application.status != ApplicationStatus.pending:
            raise conflict(f"application {application.id} is already {application.status.value}")

    @workflow.update
    async def apply(self, application: Application) -> Application:
        self.validate_apply(application)
        self._state.applications.append(application)
        self._touch()
        await self._recorded()
        return application

    @apply.validator
    def validate_apply(self, application: Application) -> None:
        if any(a.id == application.id for a in self._state.applications):
            raise conflict(f"application {application.id} exists")
        if application.type == ApplicationType.project:
            raise conflict("a project has exactly one project application")
        allowed = (
            LIVE
            if application.type == ApplicationType.extension
            else {ProjectStatus.approved, ProjectStatus.active}
        )
        if self._state.status not in allowed:
            raise conflict(
                f"the project is {self._state.status.value}; "
                f"{application.type.value} applications are not accepted"
            )
        if any(
            a.type == application.type and a.status == ApplicationStatus.pending
            for a in self._state.applications
        ):
            raise conflict(f"a {application.type.value} application is already pending for this project")

    # ---- editing and deletion ---------------------------------------------------------------

    @workflow.update
    async def edit(self, edit: ProjectEdit) -> ProjectState:
        self.validate_edit(edit)
        details = self._state.details
        if edit.name is not None:
            details.name = edit.name
        if edit.description is not None:
            details.description = edit.description
        if edit.members is not None:
            details.members = edit.members
        self._touch()
        await self._recorded()
        return self._state

    @edit.validator
    def validate_edit(self, edit: ProjectEdit) -> None:
        if self._state.status in TERMINAL or self._state.status == ProjectStatus.deleting:
            raise conflict(f"the project is {self._state.status.value}")
        if edit.members is not None and not any(m.role == MemberRole.admin for m in edit.members):
            raise ApplicationError(
                "members: at least one member must be a project admin", type="Invalid", non_retryable=True
            )

    @workflow.update
    async def request_delete(self, request: DeleteRequest) -> ProjectState:
        self.validate_request_delete(request)
        self._state.delete_requested_by = request.username
        self._touch()
        await workflow.wait_condition(lambda: self._state.status in (ProjectStatus.deleting, *TERMINAL))
        return self._state

    @request_delete.validator
    def validate_request_delete(self, request: DeleteRequest) -> None:
        if request.confirmation_code != self._state.delete_code:
            raise ApplicationError(
                "confirmation_code: does not match the code shown for this project",
                type="Invalid",
                non_retryable=True,
            )
        if self._state.status in TERMINAL or self._state.delete_requested_by:
            raise conflict(f"the project is already {self._state.status.value}")

    # ---- quota ledger -----------------------------------------------------------------------

    @workflow.signal(name=PROJECT_ADMISSION_REQUEST_SIGNAL)
    def request_admission(self, request: AdmitRequest) -> None:
        """A workload asks for its reservation; the answer goes back as a signal from the main loop."""
        try:
            self._check_admission(request)
        except ApplicationError as refusal:
            answer = AdmissionAnswer(
                resource_id=request.resource_id, admitted=False, reason=refusal.message, refusal=refusal.type
            )
        else:
            result = self._ledger.admit(request, self._state.quota, workflow.now())
            answer = AdmissionAnswer(resource_id=request.resource_id, **result.model_dump())
        self._answers.append((request.workflow_id, answer))
        self._wakeups += 1

    def _check_admission(self, request: AdmitRequest) -> None:
        """Raise the refusal a request gets for good; a request already in the ledger is a retry."""
        if self._ledger.get(request.resource_id) is not None:
            return
        if self._state.status != ProjectStatus.active or self._state.delete_requested_by:
            raise conflict(
                f"the project is {self._state.status.value}; new resources can be created only "
                "while it is active"
            )
        beyond = self._ledger.exceeds_limit(request.request, self._state.quota)
        if beyond:
            raise ApplicationError(
                "the request exceeds the project's whole quota by "
                + ", ".join(beyond)
                + "; apply for more quota first",
                type="QuotaExceeded",
                non_retryable=True,
            )

    @workflow.update
    def hold_storage(self, request: AdmitRequest) -> QuotaPanel:
        """Reserve a volume's capacity at once, or refuse naming the numbers (manual 5.7.1.2)."""
        self.validate_hold_storage(request)
        short = self._ledger.hold(request, self._state.quota, workflow.now())
        if short:
            panel = self._panel()
            held = self._ledger.get(request.resource_id)
            remaining = panel.remaining.storage_gb + (held.request.storage_gb if held else 0)
            raise ApplicationError(
                f"capacity_gb: {request.request.storage_gb:g} GB does not fit the project's storage quota of "
                f"{panel.limit.storage_gb:g} GB: {panel.limit.storage_gb - remaining:g} GB is held by other "
                f"volumes, {max(remaining, 0):g} GB remains; apply for more storage quota first",
                type="QuotaExceeded",
                non_retryable=True,
            )
        self._wakeups += 1
        return self._panel()

    @hold_storage.validator
    def validate_hold_storage(self, request: AdmitRequest) -> None:
        if self._state.status != ProjectStatus.active or self._state.delete_requested_by:
            raise conflict(
                f"the project is {self._state.status.value}; volumes can be created or grown only while it "
                "is active"
            )

    @workflow.signal
    def release(self, event: WorkloadEvent) -> None:
        self._release(event.resource_id)

    @workflow.signal
    def workload_running(self, event: WorkloadEvent) -> None:
        self._ledger.mark_running(event.resource_id)
        self._wakeups += 1

    # ---- reads ------------------------------------------------------------------------------

    @workflow.update
    async def synced(self) -> ProjectView:
        """Answers once the read model is current; the API creates projects with update-with-start on it."""
        await self._recorded()
        return self.view()

    @workflow.query
    def view(self) -> ProjectView:
        return ProjectView(state=self._state, panel=self._panel())

    @workflow.query
    def quota_panel(self) -> QuotaPanel:
        return self._panel()
