"""Custom search attributes every lifecycle sets, so operators find it in the Temporal UI."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

PROJECT = SearchAttributeKey.for_keyword("MlcpProject")
OWNER = SearchAttributeKey.for_keyword("MlcpOwner")
KIND = SearchAttributeKey.for_keyword("MlcpKind")
STATUS = SearchAttributeKey.for_keyword("MlcpStatus")

ALL = (PROJECT, OWNER, KIND, STATUS)
