"""The lifecycle every workload kind shares: one main loop, with the steps each kind makes its own.

A workload asks its project for quota by signal and learns the answer by signal (admitted, queued with its
place, or refused for good); it applies itself to the runtime, looks at it with back-off, removes it and
waits until the runtime holds nothing, then gives the reservation back. Every change of state is recorded to
the read model before the workflow waits again.

A delete always wins: a delete request or the project's shutdown interrupts a runtime call in flight (the
activity heartbeats, so its cancellation reaches it within seconds; a read is left behind instead, since it
changes nothing and may be stuck where no cancellation reaches) and the teardown follows; a workflow
that is cancelled tears down the same way before it ends. Every runtime call is retried a bounded number of
times: a failure that never clears ends the workload `failed` with its reason, and a runtime that cannot
remove it is given up on after `removal_timeout`, so every lifecycle ends and gives its reservation back.

The kinds (`workflows/container.py`, `workflows/job.py`) are the `@workflow.defn` classes: they say what
their statuses mean, how to follow what the runtime reports, and how often to look.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as ActivityTimeout
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from activities.heartbeat import HEARTBEAT_TIMEOUT
    from activities.workloads import WorkloadActivities, WorkloadRef
    from models.lifecycle import (
        PROJECT_ADMISSION_REQUEST_SIGNAL,
        WORKLOAD_ADMISSION_SIGNAL,
        WORKLOAD_ADMITTED_SIGNAL,
        WORKLOAD_SHUTDOWN_SIGNAL,
        AdmissionAnswer,
        AdmitRequest,
        ShutdownNotice,
        WorkloadEvent,
    )
    from models.workload_lifecycle import (
        WorkloadDelete,
        WorkloadInput,
        WorkloadLifecycleState,
        WorkloadTimings,
    )
    from models.workloads import WorkloadState as RuntimeState
    from models.workloads import WorkloadStatus
    from workflows import search_attributes

# The project workflow's signal names (workflows/project.py), kept as strings so this module stays light.
PROJECT_RELEASE = "release"
PROJECT_WORKLOAD_RUNNING = "workload_running"
RUNNING = "running"  # the status every kind runs in, while its running period is open
RECORD_TIMEOUT = timedelta(seconds=10)
ANSWER_WAIT = timedelta(minutes=10)  # longer only if the project's workflow is gone, with its ledger
POLL_BACKOFF = 1.5  # 1, 1.5, 2.3, 3.4 ... s: a quick start is seen quickly, a slow one costs few polls
# Bounded: about 1.5 minutes of retries for a change, 15 for a look, then the failure is the workload's.
APPLY_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=30), maximum_attempts=6)
LOOK_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=1), maximum_attempts=18)
RECORD_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=10), maximum_attempts=30)
SHUTDOWN_MESSAGES = {
    "grace": "the project's end date has passed (grace period)",
    "deleting": "the project is being deleted",
}
CANCELLED_MESSAGE = "its workflow was cancelled"
# Histories from before reads were abandoned replay with the cancellation they waited for.
ABANDONED_READS_PATCH = "abandon-interrupted-reads"


def project_workflow_id(project_id: str) -> str:
    return f"project-{project_id}"


def workload_workflow_id(kind: str, resource_id: str) -> str:
    return f"{kind}-{resource_id}"


class DeleteAnswer(BaseModel):
    """What a delete request answers with: where the workload stands once its teardown has begun."""

    status: str
    reason: str = ""
    message: str = ""


class _Interrupted:
    """A runtime call cut short by a delete or the project's shutdown."""


INTERRUPTED = _Interrupted()


async def interruptible(
    activity: Callable[..., Any],
    arg: Any,
    within: timedelta,
    retry: RetryPolicy,
    stopping: Callable[[], bool],
    *,
    reads_only: bool = False,
) -> Any:
    """Run a runtime activity unless a stop comes first: then it is cancelled (and its cancellation waited
    for, so nothing it does lands after the teardown) and INTERRUPTED comes back. A call that `reads_only`
    is abandoned instead: the stop goes on at once, even while the read is stuck in a network call that
    no cancellation interrupts, and its answer is dropped."""
    cancellation = ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
    if reads_only and workflow.patched(ABANDONED_READS_PATCH):
        cancellation = ActivityCancellationType.ABANDON
    handle = workflow.start_activity_method(
        activity,
        arg,
        start_to_close_timeout=within,
        heartbeat_timeout=HEARTBEAT_TIMEOUT,
        retry_policy=retry,
        cancellation_type=cancellation,
    )
    try:
        await workflow.wait_condition(lambda: handle.done() or stopping())
    except asyncio.CancelledError:
        await cancel_activity(handle)  # the workflow itself is cancelled: its teardown comes next
        raise
    if handle.done():
        return await handle
    await cancel_activity(handle)
    return INTERRUPTED


async def delete_until_gone(
    activity: Callable[..., Any], arg: Any, timings: WorkloadTimings, gone: Callable[[Any], bool]
) -> str:
    """Run a delete activity again and again, backing off, until `gone` holds of its answer. Bounded: "" once
    gone, else why it was given up on (a failure no retry fixed, or the runtime still holding it after
    `removal_timeout`)."""
    give_up = workflow.now() + timings.removal_timeout
    delay = timings.first_poll
    while True:
        try:
            answer = await workflow.execute_activity_method(
                activity,
                arg,
                start_to_close_timeout=timings.delete_timeout,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=APPLY_RETRY,
            )
        except ActivityError as exc:
            reason, message = failure_of(exc)
            return f"the runtime could not remove it ({reason}: {message})"
        if gone(answer):
            return ""
        if workflow.now() >= give_up:
            return f"the runtime still held it {timings.removal_timeout} after the delete"
        await workflow.sleep(delay)
        delay = min(delay * POLL_BACKOFF, timings.gone_max_poll)


async def cancel_activity(handle: workflow.ActivityHandle[Any]) -> None:
    handle.cancel()
    with contextlib.suppress(ActivityError, asyncio.CancelledError):
        await handle


def failure_of(error: ActivityError) -> tuple[str, str]:
    """A failed activity as (reason, message) for the workload's status."""
    cause = error.cause
    if isinstance(cause, ApplicationError):
        return cause.type or "RuntimeError", cause.message
    if isinstance(cause, ActivityTimeout):
        return "RuntimeTimeout", "the runtime did not answer in time, even after retries"
    return "RuntimeError", str(cause or error)


class WorkloadLifecycle(ABC):
    kind: ClassVar[str]
    status_enum: ClassVar[type[StrEnum]]
    outcomes: ClassVar[frozenset[str]] = frozenset()  # final results that keep the workload listed as is
    record_activity: ClassVar[Callable[..., Any]]

    state_class: ClassVar[type[WorkloadLifecycleState]]

    _state: WorkloadLifecycleState
    _timings: WorkloadTimings
    _max_history_events: int
    _input: WorkloadInput

    def _open(self, input: WorkloadInput, **fields: Any) -> None:
        """Take the input: resume the state continue-as-new carried, or begin one."""
        self._input, self._timings = input, input.timings
        self._max_history_events = input.max_history_events
        self._state = input.resume or self.state_class(
            id=input.id,
            project_id=input.project_id,
            owner_id=input.owner_id,
            owner=input.owner,
            name=input.spec.name,
            spec_id=input.spec_id,
            spec=input.spec,
            created_at=input.created_at,
            **fields,
        )
        self._begin()

    def _begin(self) -> None:
        self._recorded_version = -1
        self._wakeups = 0  # every signal and update counts, so waits notice them
        self._poll_delay = self._timings.first_poll
        self._removal_note = ""

    # ---- statuses, by the names every kind shares --------------------------------------------

    def _status(self, name: str) -> StrEnum:
        return self.status_enum(name)

    def _is(self, *names: str) -> bool:
        return self._state.status in names

    # ---- the main loop -----------------------------------------------------------------------

    async def _live(self) -> StrEnum:
        self._announce()
        try:
            while True:
                await self._record()
                if self._over():
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    await self._record()
                    return self._status(self._state.status)
                if not self._stopping() and self._should_continue_as_new():
                    # A delete arriving meanwhile waits for the teardown, so it must not hold this up.
                    await workflow.wait_condition(
                        lambda: workflow.all_handlers_finished() or self._stop_reason() is not None
                    )
                    if self._stop_reason() is None:
                        await self._record()
                        workflow.continue_as_new(self._resume_input())
                    continue
                if self._stopping():
                    await self._tear_down()
                else:
                    await self._step()
        except asyncio.CancelledError:
            # Cancelled from outside (an operator, or a project whose deletion ran out of patience): the
            # runtime objects go and the reservation goes back before the workflow ends as cancelled.
            self._state.cancelled = True
            if self._state.status in self.outcomes:
                await self._clean_up()
            elif not self._over():
                await self._tear_down()
            await self._record()
            raise

    def _over(self) -> bool:
        """Nothing is left to do: removed and released, with its final status recorded."""
        return self._is("deleted") or (self._is("failed") and not self._state.registered)

    def _stopping(self) -> bool:
        """A delete, the project's shutdown or the kind's own end stops it before any outcome."""
        if self._is("deleting"):
            return True
        return self._stop_reason() is not None and self._state.status not in self.outcomes

    def _stop_reason(self) -> str | None:
        state = self._state
        if state.cancelled:
            return CANCELLED_MESSAGE
        if state.delete_requested_by:
            return f"deleted by {state.delete_requested_by}"
        if state.shutdown_reason:
            return SHUTDOWN_MESSAGES.get(state.shutdown_reason, f"the project is {state.shutdown_reason}")
        return None

    async def _step(self) -> None:
        """The next step of a workload that is not stopping."""
        state = self._state
        if self._is("waiting") and not state.admission_requested:
            await self._request_admission()
        elif self._is("waiting"):
            await self._wait_for(lambda: state.admitted or not self._is("waiting"))
            if state.admitted and self._is("waiting"):
                self._set(self._status("creating"), "", "admitted: starting")
        elif self._state.status in self.outcomes:
            await self._clean_up()
        elif self._is("creating") and not state.applied:
            status = await self._apply_workload()
            self._poll_delay = self._timings.first_poll
            if status is not None:
                await self._follow(status)
        else:
            await self._watch()

    async def _watch(self) -> None:
        """Look at the runtime, less often the longer it runs."""
        await self._wait_for(lambda: False, self._poll_delay)
        self._poll_delay = min(self._poll_delay * POLL_BACKOFF, self._timings.max_poll)
        await self._look()

    @abstractmethod
    async def _follow(self, status: WorkloadStatus) -> None:
        """Take the runtime's word for where the workload is: each kind reads it its own way."""

    async def _tear_down(self) -> None:
        """Stop it: remove what the runtime holds, give the reservation back, end with why."""
        if not self._is("deleting"):
            self._set(self._status("deleting"), "", self._teardown_message(self._stop_reason() or "deleted"))
            await self._record()
        await self._remove_workload()
        await self._release()
        self._stopped()

    def _teardown_message(self, reason: str) -> str:
        return reason

    def _stopped(self) -> None:
        """The final status once torn down."""
        self._set(self._status("deleted"), "", self._final_message(self._state.message))

    async def _clean_up(self) -> None:
        """After an outcome: the runtime's objects go and the reservation goes back; the outcome stays."""
        await self._remove_workload()
        await self._release()

    def _final_message(self, message: str) -> str:
        return f"{message}; {self._removal_note}" if self._removal_note else message

    def _resume_input(self) -> WorkloadInput:
        return self._input.model_copy(update={"resume": self._state})

    def _announce(self) -> None:
        state = self._state
        search_attributes.announce(state.project_id, state.owner, self.kind, state.status)

    # ---- waiting -----------------------------------------------------------------------------

    async def _wait_for(self, ready: Callable[[], bool], wake_in: timedelta | None = None) -> None:
        """Sleep until `ready()` holds, a signal or update arrives, or `_deadline(wake_in)` comes."""
        wakeups, deadline = self._wakeups, self._deadline(wake_in)
        timeout = None if deadline is None else deadline - workflow.now()
        if timeout is not None and timeout <= timedelta(0):
            return
        with contextlib.suppress(TimeoutError):
            # A change not yet recorded (one a signal made while a step was running) also ends the wait.
            await workflow.wait_condition(
                lambda: self._wakeups != wakeups or ready() or self._recorded_version < self._state.version,
                timeout=timeout,
            )

    def _deadline(self, wake_in: timedelta | None) -> datetime | None:
        return None if wake_in is None else workflow.now() + wake_in

    # ---- the project's ledger ----------------------------------------------------------------

    async def _request_admission(self) -> None:
        """Ask the project for quota; its answer arrives as a signal (admission_answered)."""
        state = self._state
        request = AdmitRequest(
            resource_id=state.spec.resource_id,
            kind=self.kind,
            workflow_id=workflow.info().workflow_id,
            owner_id=state.owner_id,
            request=state.spec.quota(),
        )
        project = workflow.get_external_workflow_handle(project_workflow_id(state.spec.project_id))
        try:
            await project.signal(PROJECT_ADMISSION_REQUEST_SIGNAL, request)
        except Exception:
            message = f"project {state.spec.project_id} has no running lifecycle"
            self._set(self._status("failed"), "Conflict", message)
            return
        state.admission_requested = True
        if not state.admitted:
            self._set(self._status("waiting"), "Admitting", "asking the project for quota")

    async def _release(self) -> None:
        state = self._state
        if state.admission_requested and not state.admission_answered:
            # The project answers every request; a reservation it made meanwhile must go back.
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda: state.admission_answered, timeout=ANSWER_WAIT)
        if state.registered:
            await self._signal_project(PROJECT_RELEASE)
            state.registered = state.admitted = False
        state.queue_position = None

    async def _report_running(self) -> None:
        if not self._state.running_reported:
            await self._signal_project(PROJECT_WORKLOAD_RUNNING)
            self._state.running_reported = True

    async def _signal_project(self, signal: str) -> None:
        spec = self._state.spec
        handle = workflow.get_external_workflow_handle(project_workflow_id(spec.project_id))
        try:
            await handle.signal(signal, WorkloadEvent(resource_id=spec.resource_id))
        except Exception:
            # The project's workflow has ended: it holds no ledger any more.
            workflow.logger.warning("project %s is gone; %s not delivered", spec.project_id, signal)

    # ---- the runtime -------------------------------------------------------------------------

    async def _interruptible(
        self,
        activity: Callable[..., Any],
        arg: Any,
        within: timedelta,
        retry: RetryPolicy,
        reads_only: bool = False,
    ) -> Any:
        return await interruptible(activity, arg, within, retry, self._stopping, reads_only=reads_only)

    async def _apply_workload(self) -> WorkloadStatus | None:
        """Apply the spec; None when a stop interrupted it or it failed for good (the state says why)."""
        state = self._state
        state.applied = True  # even an interrupted or refused apply may have created part of it
        try:
            status = await self._interruptible(
                WorkloadActivities.apply_workload, state.spec, self._timings.apply_timeout, APPLY_RETRY
            )
        except ActivityError as exc:
            self._runtime_failed(*failure_of(exc))
            return None
        return None if status is INTERRUPTED else status

    async def _look(self) -> None:
        """Ask the runtime how the workload stands, and follow its answer."""
        try:
            status = await self._interruptible(
                WorkloadActivities.workload_status,
                self._ref(),
                self._timings.apply_timeout,
                LOOK_RETRY,
                reads_only=True,
            )
        except ActivityError as exc:
            self._runtime_failed(*failure_of(exc))
            return
        if status is not INTERRUPTED:
            await self._follow(status)

    def _runtime_failed(self, reason: str, message: str) -> None:
        self._set(self._status("failed"), reason, message)

    async def _remove_workload(self) -> None:
        """Delete it and wait until the runtime holds nothing: a deleted workload may hold its GPUs a while
        (Kubernetes deletes in the foreground), and the next in line must find them free. Bounded: a
        runtime that cannot remove it is given up on, said in the final message."""
        state = self._state
        if not state.applied:
            return
        self._removal_note = await delete_until_gone(
            WorkloadActivities.delete_workload,
            self._ref(),
            self._timings,
            lambda status: status.state == RuntimeState.gone,
        )
        if self._removal_note:
            workflow.logger.warning("%s %s: %s", self.kind, state.spec.resource_id, self._removal_note)
        state.applied = False

    # ---- bookkeeping -------------------------------------------------------------------------

    def _ref(self) -> WorkloadRef:
        spec = self._state.spec
        return WorkloadRef(project_id=spec.project_id, kind=spec.kind, resource_id=spec.resource_id)

    def _set(self, status: StrEnum, reason: str, message: str) -> None:
        state = self._state
        if (state.status, state.reason, state.message) == (status, reason, message):
            return
        if state.status != status:
            search_attributes.status_changed(status.value)
            if status.value == RUNNING:
                state.run_started_at, state.run_stopped_at = workflow.now(), None
            elif state.status == RUNNING:
                state.run_stopped_at = workflow.now()
        state.status, state.reason, state.message = status, reason, message
        state.version += 1

    async def _record(self) -> None:
        if self._recorded_version < self._state.version:
            version = self._state.version
            self._state.as_of = workflow.now()
            try:
                await workflow.execute_activity_method(
                    self.record_activity,
                    self._state,
                    start_to_close_timeout=RECORD_TIMEOUT,
                    retry_policy=RECORD_RETRY,
                )
            except ActivityError:
                # The read model is behind, not the lifecycle: the next change writes it whole again.
                workflow.logger.exception("%s %s: could not record", self.kind, self._state.spec.resource_id)
            self._recorded_version = max(self._recorded_version, version)
        workflow.set_current_details(self._details())

    def _details(self) -> str:
        state, role = self._state, self._state.spec.main
        resources = role.resources
        lines = [
            f"**{state.name}** ({role.image}) — {state.status}",
            f"{resources.gpu} GPU, {resources.vcpu:g} vCPU, {resources.ram_gb:g} GB RAM; owner {state.owner}",
            *self._detail_lines(),
        ]
        if state.message or state.reason:
            lines.append(": ".join(part for part in (state.reason, state.message) if part))
        return "\n".join(lines)

    def _detail_lines(self) -> list[str]:
        return []

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or (
            info.get_current_history_length() > self._max_history_events
        )

    # ---- handlers every workload has ---------------------------------------------------------

    @workflow.signal(name=WORKLOAD_ADMISSION_SIGNAL)
    def admission_answered(self, answer: AdmissionAnswer) -> None:
        state = self._state
        self._wakeups += 1
        state.admission_answered = True
        state.registered = state.registered or answer.refusal is None  # so a teardown gives it back
        if state.admitted or not self._is("waiting"):
            return  # admitted from the queue already, or stopping
        if answer.refusal:
            self._set(self._status("failed"), answer.refusal, answer.reason)
            return
        if answer.admitted:
            state.admitted = True
            state.queue_position = None
        else:
            state.queue_position = answer.position
            self._set(self._status("waiting"), "Queued", f"{answer.reason}, position {answer.position}")

    @workflow.update
    async def recorded(self) -> None:
        """Answers once the read model holds the workload; the API starts workloads with update-with-start
        on it, so a 201 means the row is there."""
        await workflow.wait_condition(lambda: self._recorded_version >= 0)

    @workflow.signal(name=WORKLOAD_ADMITTED_SIGNAL)
    def project_admitted(self, event: WorkloadEvent) -> None:
        """A queued workload's turn has come."""
        self._state.registered = self._state.admitted = self._state.admission_answered = True
        self._state.queue_position = None
        self._wakeups += 1

    @workflow.signal(name=WORKLOAD_SHUTDOWN_SIGNAL)
    def project_shutdown(self, notice: ShutdownNotice) -> None:
        self._state.shutdown_reason = notice.reason
        self._wakeups += 1

    @workflow.update
    async def delete(self, request: WorkloadDelete) -> DeleteAnswer:
        """Stops it (or, after an outcome, hides it once its cleanup is done); answers once the teardown
        has begun."""
        state = self._state
        state.delete_requested_by = state.delete_requested_by or request.username
        self._wakeups += 1
        await workflow.wait_condition(lambda: self._is("deleting", "deleted") or self._over())
        return DeleteAnswer(status=state.status, reason=state.reason, message=state.message)

    @delete.validator
    def validate_delete(self, request: WorkloadDelete) -> None:
        if self._is("deleted"):
            raise ApplicationError(f"the {self.kind} is already deleted", type="Conflict", non_retryable=True)
