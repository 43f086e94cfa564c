"""Requests and replies, path parsing, and the endpoints beyond plain verbs: discovery, logs, scale, watch."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from tests.kube_double import errors
from tests.kube_double import resources as r
from tests.kube_double.kubelet import Kubelet
from tests.kube_double.patching import PatchError, json_patch, merge_patch
from tests.kube_double.selectors import parse_field_selector, parse_label_selector, selector_to_text
from tests.kube_double.storage import WatchEvent
from tests.kube_double.store import Store

VERSION = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.0",
    "gitCommit": "kube-double",
    "gitTreeState": "clean",
    "buildDate": "2025-04-23T00:00:00Z",
    "goVersion": "go1.24.2",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_WAITING = ("ContainerCreating", "ErrImagePull", "ImagePullBackOff", "PodInitializing")
WATCH_POLL_SECONDS = 0.005


@dataclass(frozen=True)
class Call:
    method: str
    segments: list[str]
    query: dict[str, str]
    content_type: str
    body: Any


@dataclass
class Reply:
    status: int
    document: Any = None
    text: str | None = None
    stream: Iterator[str] | None = None


def failure(error: errors.KubeError) -> Reply:
    return Reply(error.code, error.status())


def not_found() -> errors.KubeError:
    return errors.KubeError(404, "NotFound", "the server could not find the requested resource", {})


@dataclass(frozen=True)
class Target:
    resource: r.ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None

    @property
    def scope(self) -> str:
        return self.namespace or ""


def parse_target(segments: list[str]) -> Target | None:
    if segments[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", segments[2:]
    elif len(segments) >= 3 and segments[0] == "apis":
        group, version, rest = segments[1], segments[2], segments[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        inner = r.lookup(group, version, rest[2])
        if inner is not None and inner.namespaced:
            namespace, rest = rest[1], rest[2:]
    resource = r.lookup(group, version, rest[0]) if rest else None
    if resource is None or len(rest) > 3 or (resource.namespaced and namespace is None and len(rest) > 1):
        return None
    return Target(resource, namespace, rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None)


def integer(query: dict[str, str], name: str, default: int = 0) -> int:
    try:
        value = int(query.get(name) or default)
    except ValueError as error:
        raise errors.bad_request(f"{name} must be an integer") from error
    if value < 0:
        raise errors.bad_request(f"{name} must not be negative")
    return value


def discovery(segments: list[str]) -> Reply | None:
    """The documents clients read to learn what the server offers; None for any other path."""
    key = tuple(segments)
    if key in (("healthz",), ("readyz",), ("livez",)):
        return Reply(200, text="ok")
    if key == ("version",):
        return Reply(200, VERSION)
    if key == ("api",):
        return Reply(200, r.api_versions())
    if key == ("api", "v1"):
        return Reply(200, r.api_resource_list("", "v1"))
    if key == ("apis",):
        return Reply(200, r.api_group_list())
    if len(key) == 2 and key[0] == "apis" and key[1] and key[1] in r.GROUP_VERSIONS:
        return Reply(200, r.api_group(key[1]))
    if len(key) == 3 and key[0] == "apis" and key[1] and key[2] in r.GROUP_VERSIONS.get(key[1], []):
        return Reply(200, r.api_resource_list(key[1], key[2]))
    return None


def pod_log(store: Store, kubelet: Kubelet, target: Target, query: dict[str, str]) -> Reply:
    with store.lock:
        pod = store.get(r.PODS, target.scope, str(target.name))
        containers = {c["name"]: c for c in pod["spec"]["containers"]}
        chosen = query.get("container")
        if chosen is None and len(containers) != 1:
            raise errors.bad_request(
                f"a container name must be specified for pod {target.name}, choose one of: "
                f"[{' '.join(containers)}]"
            )
        name = chosen or next(iter(containers))
        if name not in containers:
            raise errors.bad_request(f"container {name} is not valid for pod {target.name}")
        statuses = {s["name"]: s for s in pod["status"].get("containerStatuses") or []}
        state = statuses.get(name, {}).get("state", {"waiting": {"reason": "ContainerCreating"}})
        waiting = (state.get("waiting") or {}).get("reason")
        if waiting in _WAITING:
            raise errors.bad_request(
                f'container "{name}" in pod "{target.name}" is waiting to start: {waiting}'
            )
        text = kubelet.log_text(pod, containers[name])
    if "tailLines" in query:
        lines = text.splitlines(keepends=True)
        tail = integer(query, "tailLines")
        text = "".join(lines[len(lines) - tail :]) if tail else ""
    return Reply(200, text=text)


def _scale_document(obj: dict[str, Any]) -> dict[str, Any]:
    metadata = obj["metadata"]
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: metadata[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in metadata
        },
        "spec": {"replicas": obj["spec"].get("replicas", 1)},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": selector_to_text(obj["spec"].get("selector")),
        },
    }


def scale(store: Store, verb: str, target: Target, call: Call) -> Reply:
    """The `scale` subresource of deployments, replica sets and stateful sets (autoscaling/v1 Scale)."""
    resource, name = target.resource, str(target.name)
    with store.lock:
        current = store.get(resource, target.scope, name)
        document = _scale_document(current)
        if verb == "get":
            return Reply(200, document)
        try:
            if verb == "update":
                wanted = call.body
            elif call.content_type.startswith("application/json-patch+json"):
                wanted = json_patch(document, call.body)
            elif verb == "patch":
                wanted = merge_patch(document, call.body)
            else:
                raise errors.method_not_allowed("the scale subresource supports get, update and patch")
        except PatchError as error:
            raise errors.KubeError(422, "Invalid", str(error)) from error
        replicas = ((wanted or {}).get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise errors.invalid(
                resource,
                name,
                [("spec.replicas", f"Invalid value: {replicas}: must be greater than or equal to 0")],
            )
        if (wanted.get("metadata") or {}).get("resourceVersion") not in (
            None,
            "",
            document["metadata"]["resourceVersion"],
        ):
            raise errors.stale(resource, name)
        current["spec"]["replicas"] = replicas
        return Reply(200, _scale_document(store.replace(resource, target.scope, name, current)))


def watch(store: Store, target: Target, query: dict[str, str], stopping: Callable[[], bool]) -> Reply:
    """A stream of ADDED/MODIFIED/DELETED events as JSON lines, from `resourceVersion` or from now
    (then starting with ADDED for what exists). Events are filtered on the object's new state."""
    try:
        labels = parse_label_selector(query.get("labelSelector"))
        fields = parse_field_selector(query.get("fieldSelector"))
    except ValueError as error:
        raise errors.bad_request(str(error)) from error
    since = integer(query, "resourceVersion")
    deadline = time.monotonic() + integer(query, "timeoutSeconds", 1800)

    def wanted(resource: r.ResourceType, obj: dict[str, Any]) -> bool:
        metadata = obj["metadata"]
        return (
            resource is target.resource
            and target.namespace in (None, metadata.get("namespace"))
            and labels.matches(metadata.get("labels"))
            and fields.matches(obj)
        )

    with store.lock:
        initial: list[dict[str, Any]] = []
        if since == 0:
            since = store.revision
            initial = [
                {"type": "ADDED", "object": copy.deepcopy(o)}
                for o in store.items(target.resource, target.namespace)
                if wanted(target.resource, o)
            ]

    def stream() -> Iterator[str]:
        nonlocal since
        for line in initial:
            yield json.dumps(line) + "\n"
        while not stopping() and time.monotonic() < deadline:
            events: list[WatchEvent] | None = store.events_since(since)
            if events is None:
                gone = errors.KubeError(410, "Expired", f"too old resource version: {since}")
                yield json.dumps({"type": "ERROR", "object": gone.status()}) + "\n"
                return
            for event in events:
                since = event.revision
                if wanted(event.resource, event.obj):
                    yield json.dumps({"type": event.type, "object": event.obj}) + "\n"
            time.sleep(WATCH_POLL_SECONDS)

    return Reply(200, stream=stream())
