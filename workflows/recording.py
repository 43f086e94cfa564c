"""Writing a data kind's state to its read model from its workflow, once per version."""

from __future__ import annotations

from typing import Any, Protocol

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.workload import RECORD_RETRY, RECORD_TIMEOUT


class Versioned(Protocol):
    version: int


class ReadModel:
    """Records a state through its record activity when its version has moved past the last one recorded;
    `version` is what the read model shows, for the updates that answer once it does."""

    def __init__(self, record_activity: Any) -> None:
        self._activity = record_activity
        self.version = -1

    async def record(self, state: Versioned) -> None:
        if self.version >= state.version:
            return
        version = state.version
        await workflow.execute_activity_method(
            self._activity, state, start_to_close_timeout=RECORD_TIMEOUT, retry_policy=RECORD_RETRY
        )
        self.version = max(self.version, version)

    def shows(self, state: Versioned) -> bool:
        return self.version >= state.version
