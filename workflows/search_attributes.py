"""Custom search attributes every lifecycle sets, so operators find it in the Temporal UI."""

from __future__ import annotations

from temporalio import workflow
from temporalio.common import SearchAttributeKey

PROJECT = SearchAttributeKey.for_keyword("MlcpProject")
OWNER = SearchAttributeKey.for_keyword("MlcpOwner")
KIND = SearchAttributeKey.for_keyword("MlcpKind")
STATUS = SearchAttributeKey.for_keyword("MlcpStatus")

ALL = (PROJECT, OWNER, KIND, STATUS)


def announce(project_id: str, owner: str, kind: str, status: str) -> None:
    """Inside a workflow: the attributes it is found by, set at its start (again after continue-as-new)."""
    workflow.upsert_search_attributes(
        [
            PROJECT.value_set(project_id),
            OWNER.value_set(owner),
            KIND.value_set(kind),
            STATUS.value_set(status),
        ]
    )


def status_changed(status: str) -> None:
    """Inside a workflow: its new status, for the Temporal UI's filters."""
    workflow.upsert_search_attributes([STATUS.value_set(status)])
