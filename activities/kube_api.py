"""The Kubernetes API as the runtime calls it: its errors, kept free of request bodies, and the typed
client's methods per kind, answered as the API's own JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

_TRANSIENT_STATUSES = frozenset({0, 429, 500, 502, 503, 504})


class KubernetesApiError(RuntimeError):
    """The API server refused a call, or stayed unreachable through the in-call retries.

    `status` is the HTTP status (None when the server was unreachable); callers make 4xx such as
    422 Invalid non-retryable and let everything else retry.
    """

    def __init__(self, operation: str, status: int | None, reason: str, message: str) -> None:
        self.operation, self.status, self.reason, self.message = operation, status, reason, message
        shown = status if status is not None else "unreachable"
        super().__init__(f"{operation}: {shown} {reason}" + (f": {message}" if message else ""))

    @property
    def transient(self) -> bool:
        return self.status is None or self.status in _TRANSIENT_STATUSES

    @classmethod
    def from_api_exception(cls, operation: str, error: ApiException) -> KubernetesApiError:
        """Only the Status reason and message are kept: request bodies (secrets) never reach a log."""
        reason, message = str(error.reason or ""), ""
        try:
            body = json.loads(error.body or "{}")
        except (TypeError, ValueError):
            body = {}
        if isinstance(body, dict):
            reason, message = str(body.get("reason") or reason), str(body.get("message") or "")
        return cls(operation, int(error.status or 0), reason, message)


@dataclass(frozen=True)
class Resource:
    """One kind's methods on the official typed API, e.g. `patch_namespaced_service`."""

    api: Any
    suffix: str
    namespaced: bool = True

    def method(self, verb: str) -> Callable[..., Any]:
        scope = "_namespaced" if self.namespaced else ""
        method: Callable[..., Any] = getattr(self.api, f"{verb}{scope}_{self.suffix}")
        return method

    def address(self, namespace: str, name: str) -> tuple[str, ...]:
        return (name, namespace) if self.namespaced else (name,)


def body_of(response: Any) -> Any:
    """The JSON body of a raw response: the API's own shape, free of the typed models' None fields."""
    try:
        return json.loads(response.data or b"null")
    finally:
        response.release_conn()
