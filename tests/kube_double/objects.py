"""Small helpers the controllers and the kubelet share: conditions, events, ownership, pod state."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
from typing import Any

from tests.kube_double import resources as r
from tests.kube_double.errors import KubeError
from tests.kube_double.knobs import Clock, Knobs
from tests.kube_double.selectors import parse_label_selector
from tests.kube_double.store import Store

TERMINAL = ("Succeeded", "Failed")
_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def uid_of(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["uid"])


def deleting(obj: dict[str, Any]) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp"))


def controller_uid(obj: dict[str, Any]) -> str | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def owned_by(resource: r.ResourceType, store: Store, owner: dict[str, Any]) -> list[dict[str, Any]]:
    """Live objects of `resource` in the owner's namespace whose controller is `owner`."""
    namespace, uid = owner["metadata"].get("namespace"), uid_of(owner)
    return [o for o in store.items(resource, namespace) if controller_uid(o) == uid and not deleting(o)]


def owner_reference(resource: r.ResourceType, owner: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "name": owner["metadata"]["name"],
        "uid": uid_of(owner),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def template_hash(template: Any) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(_HASH_ALPHABET[b % len(_HASH_ALPHABET)] for b in digest[:10])


def pod_from_template(
    template: dict[str, Any],
    owner_resource: r.ResourceType,
    owner: dict[str, Any],
    extra_labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    metadata = copy.deepcopy(template.get("metadata") or {})
    metadata["labels"] = {**(metadata.get("labels") or {}), **(extra_labels or {})}
    metadata["ownerReferences"] = [owner_reference(owner_resource, owner)]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": copy.deepcopy(template.get("spec")),
    }


def condition(conditions: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == kind), None)


def set_condition(
    clock: Clock,
    conditions: list[dict[str, Any]] | None,
    kind: str,
    status: str,
    reason: str | None = None,
    message: str | None = None,
    update_time: bool = False,
) -> list[dict[str, Any]]:
    """A copy of `conditions` with `kind` set; timestamps move only when something about it changed."""
    result = [copy.deepcopy(c) for c in conditions or []]
    existing = condition(result, kind)
    wanted: dict[str, Any] = {"type": kind, "status": status}
    if reason:
        wanted["reason"] = reason
    if message:
        wanted["message"] = message
    if existing is not None and all(existing.get(k) == v for k, v in wanted.items()):
        return result
    now = clock.timestamp()
    if existing is not None and existing.get("status") == status:
        wanted["lastTransitionTime"] = existing.get("lastTransitionTime", now)
    else:
        wanted["lastTransitionTime"] = now
    if update_time:
        wanted["lastUpdateTime"] = now
    if existing is None:
        result.append(wanted)
    else:
        result[result.index(existing)] = wanted
    return result


def record_event(
    store: Store,
    obj: dict[str, Any],
    reason: str,
    message: str,
    kind: str = "Normal",
    component: str = "kubelet",
) -> None:
    resource = r.by_kind(obj.get("apiVersion", ""), obj.get("kind", ""))
    metadata = obj["metadata"]
    namespace = metadata.get("namespace") or "default"
    now = store.clock.timestamp()
    event: dict[str, Any] = {
        "metadata": {
            # Like the real API's time-based suffix, later events sort after earlier ones.
            "name": f"{metadata['name']}.{store.revision + 1:016x}",
            "namespace": namespace,
        },
        "involvedObject": {
            "kind": obj.get("kind"),
            "namespace": metadata.get("namespace"),
            "name": metadata["name"],
            "uid": metadata["uid"],
            "apiVersion": obj.get("apiVersion"),
            "resourceVersion": metadata.get("resourceVersion"),
        },
        "reason": reason,
        "message": message,
        "type": kind,
        "count": 1,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": "",
    }
    if resource is not None and not resource.namespaced:
        del event["involvedObject"]["namespace"]
    with contextlib.suppress(KubeError):  # the namespace is going away; the real API drops these too
        store.create(r.EVENTS, namespace, event)


def matches_rule(rules: dict[str, Any] | list[str], labels: dict[str, str] | None) -> Any:
    """The value of the first rule whose label selector matches (True for list rules), or None."""
    for selector in rules:
        if parse_label_selector(selector).matches(labels):
            return rules[selector] if isinstance(rules, dict) else True
    return None


def pod_ready(pod: dict[str, Any]) -> bool:
    ready = condition((pod.get("status") or {}).get("conditions") or [], "Ready")
    return ready is not None and ready.get("status") == "True" and not deleting(pod)


def without_zeros(status: dict[str, Any], *fields: str) -> dict[str, Any]:
    """Drop zero counters, as the real API's `omitempty` does."""
    return {k: v for k, v in status.items() if not (k in fields and v == 0)}


class ControllerBase:
    """What every control loop needs: the store, the knobs, the clock, and safe writes."""

    def __init__(self, store: Store, knobs: Knobs, clock: Clock) -> None:
        self.store, self.knobs, self.clock = store, knobs, clock

    def _create(
        self, resource: r.ResourceType, owner: dict[str, Any], body: dict[str, Any], component: str
    ) -> dict[str, Any] | None:
        """Create on behalf of a controller; a refusal (quota, terminating namespace) becomes an event."""
        try:
            return self.store.create(resource, owner["metadata"]["namespace"], body)
        except KubeError as error:
            message = f"Error creating: {error.message}"
            if not any(
                e["reason"] == "FailedCreate"
                and e["message"] == message
                and e["involvedObject"]["uid"] == uid_of(owner)
                for e in self.store.items(r.EVENTS, owner["metadata"]["namespace"])
            ):
                record_event(self.store, owner, "FailedCreate", message, "Warning", component)
            return None

    def _save_status(self, resource: r.ResourceType, obj: dict[str, Any], status: dict[str, Any]) -> None:
        current = self.store.find(resource, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        if current is not None and uid_of(current) == uid_of(obj):
            self.store.save(resource, {**current, "status": status})

    def _delete(self, resource: r.ResourceType, obj: dict[str, Any], options: dict[str, Any]) -> None:
        with contextlib.suppress(KubeError):  # already gone
            self.store.delete(
                resource, obj["metadata"].get("namespace", ""), obj["metadata"]["name"], options
            )
