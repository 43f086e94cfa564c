"""A stand-in workload that speaks the project protocol (kept small: the sandbox re-imports it)."""

from __future__ import annotations

import asyncio

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from models.lifecycle import (
        PROJECT_ADMISSION_REQUEST_SIGNAL,
        WORKLOAD_ADMISSION_SIGNAL,
        WORKLOAD_ADMITTED_SIGNAL,
        WORKLOAD_SHUTDOWN_SIGNAL,
        AdmissionAnswer,
        AdmitRequest,
        Quota,
        ShutdownNotice,
        WorkloadEvent,
    )


@workflow.defn
class FakeWorkloadWorkflow:
    """Speaks the workload side of the project protocol: admission answers, admitted and shutdown signals.
    The test sends the admission request on its behalf."""

    def __init__(self) -> None:
        self.admitted = False
        self.answers: list[AdmissionAnswer] = []
        self.shutdown_reason: str | None = None

    @workflow.run
    async def run(self, project_workflow_id: str, resource_id: str) -> str:
        await workflow.wait_condition(lambda: self.shutdown_reason is not None)
        await workflow.get_external_workflow_handle(project_workflow_id).signal(
            "release", WorkloadEvent(resource_id=resource_id)
        )
        return self.shutdown_reason or ""

    @workflow.signal(name=WORKLOAD_ADMISSION_SIGNAL)
    def admission_answered(self, answer: AdmissionAnswer) -> None:
        self.answers.append(answer)
        self.admitted = self.admitted or answer.admitted

    @workflow.signal(name=WORKLOAD_ADMITTED_SIGNAL)
    def project_admitted(self, event: WorkloadEvent) -> None:
        self.admitted = True

    @workflow.signal(name=WORKLOAD_SHUTDOWN_SIGNAL)
    def project_shutdown(self, notice: ShutdownNotice) -> None:
        self.shutdown_reason = notice.reason

    @workflow.query
    def admission_answers(self) -> list[AdmissionAnswer]:
        return self.answers

    @workflow.query
    def is_admitted(self) -> bool:
        return self.admitted

    @workflow.query
    def shutdown_reason_query(self) -> str | None:
        return self.shutdown_reason


@workflow.defn
class StubbornWorkload:
    """Registers in its project's ledger and then ignores its shutdown and its own cancellation."""

    @workflow.run
    async def run(self, project_workflow_id: str, resource_id: str) -> None:
        request = AdmitRequest(
            resource_id=resource_id,
            kind="job",
            workflow_id=workflow.info().workflow_id,
            owner_id="bob",
            request=Quota(vcpu=1, ram_gb=1),
        )
        await workflow.get_external_workflow_handle(project_workflow_id).signal(
            PROJECT_ADMISSION_REQUEST_SIGNAL, request
        )
        while True:
            try:
                await workflow.wait_condition(lambda: False)
            except asyncio.CancelledError:
                continue
