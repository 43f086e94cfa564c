"""Failures as the real API reports them: a `Status` body with the HTTP code, reason and details."""

from __future__ import annotations

from typing import Any

from tests.kube_double.resources import ResourceType


class KubeError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(resource: ResourceType, name: str, **extra: Any) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name, "kind": resource.plural, **extra}
    if resource.group:
        details["group"] = resource.group
    return details


def not_found(resource: ResourceType, name: str) -> KubeError:
    return KubeError(404, "NotFound", f"{resource.describe(name)} not found", _details(resource, name))


def already_exists(resource: ResourceType, name: str) -> KubeError:
    return KubeError(
        409, "AlreadyExists", f"{resource.describe(name)} already exists", _details(resource, name)
    )


def conflict(resource: ResourceType, name: str, why: str) -> KubeError:
    return KubeError(
        409,
        "Conflict",
        f"Operation cannot be fulfilled on {resource.describe(name)}: {why}",
        _details(resource, name),
    )


def stale(resource: ResourceType, name: str) -> KubeError:
    return conflict(
        resource,
        name,
        "the object has been modified; please apply your changes to the latest version and try again",
    )


def invalid(resource: ResourceType, name: str, causes: list[tuple[str, str]]) -> KubeError:
    """422 listing each offending field, as `Kind "name" is invalid: field: message`."""
    summary = ", ".join(f"{field}: {message}" for field, message in causes)
    if len(causes) > 1:
        summary = f"[{summary}]"
    details = _details(
        resource,
        name,
        causes=[
            {"reason": "FieldValueInvalid", "message": message, "field": field} for field, message in causes
        ],
    )
    details["kind"] = resource.kind
    return KubeError(422, "Invalid", f'{resource.kind} "{name}" is invalid: {summary}', details)


def forbidden(resource: ResourceType, name: str, why: str) -> KubeError:
    return KubeError(
        403, "Forbidden", f"{resource.describe(name)} is forbidden: {why}", _details(resource, name)
    )


def bad_request(message: str) -> KubeError:
    return KubeError(400, "BadRequest", message)


def method_not_allowed(message: str) -> KubeError:
    return KubeError(405, "MethodNotAllowed", message)


def success(resource: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    metadata = obj.get("metadata", {})
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": _details(resource, metadata.get("name", ""), uid=metadata.get("uid", "")),
    }
