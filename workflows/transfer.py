"""TransferWorkflow: one per transfer service (`transfer-<id>`), from its creation to its deletion.

A transfer service lives as a container does (the shared lifecycle, workflows/workload.py, by way of the
container's steps): it is admitted by the project, applied, looked at rarely, and removed when deleted or
when the project enters its grace period; only its kind and its read model are its own.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.transfers import TransferRecords
    from models.containers import ContainerInput, ContainerStatus
    from workflows.container import ContainerWorkflow

KIND = "transfer"


@workflow.defn
class TransferWorkflow(ContainerWorkflow):
    kind = KIND
    record_activity = TransferRecords.record_transfer

    @workflow.init
    def __init__(self, input: ContainerInput) -> None:
        super().__init__(input)

    @workflow.run
    async def run(self, input: ContainerInput) -> ContainerStatus:
        return ContainerStatus(await self._live())
