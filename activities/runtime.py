"""The runtime interface every workload goes through, and what a runtime needs to know of each kind.

A runtime is given the kinds it may run (the registry's runtime view, services/kinds.py) when it is built:
it never branches on a kind's name, and a kind it was not given is refused, never run as another.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from models.clusters import ClusterHosts, ClusterPlace
from models.workloads import MAIN_ROLE, ProjectEnvironment, RuntimeEvent, WorkloadSpec, WorkloadStatus

LABEL_PROJECT = "mlcp.io/project"
LABEL_OWNER = "mlcp.io/owner"
LABEL_KIND = "mlcp.io/kind"
LABEL_RESOURCE_ID = "mlcp.io/resource-id"
FIELD_MANAGER = "mlcp"

Manifest = dict[str, Any]


def namespace_name(project_id: str) -> str:
    return f"mlcp-{project_id}"


def workload_name(kind: str, resource_id: str) -> str:
    """Kubernetes object names and local folder names derive from the resource ID, never from user input."""
    return f"{kind}-{resource_id}"


@dataclass(frozen=True)
class RuntimeKind:
    """How both runtimes realise one kind of workload.

    `controller` is the Kubernetes object that owns everything else of a workload (its Secret, Services and
    policy point at it, so deleting it takes them along), `controller_manifest` builds it from a spec, and
    `outcome` reads a finished controller's final status (None: it never finishes on its own).
    `runs_to_completion` tells the local runtime that the command is meant to end: it must be given, exit
    code 0 is success, the active deadline applies; otherwise an ending process is a failure and a missing
    command is stood in for by an idle process.
    """

    name: str
    controller: str
    controller_manifest: Callable[[WorkloadSpec], Manifest]
    outcome: Callable[[Manifest, Manifest | None], WorkloadStatus | None] | None
    runs_to_completion: bool
    roles: tuple[str, ...] = (MAIN_ROLE,)  # the roles the runtimes realise for it, in the spec's order


KindTable = Mapping[str, RuntimeKind]


class UnknownWorkloadKind(ValueError):
    """A spec names a kind the runtime was not given: refused, never run as some other kind."""


def kind_of(kinds: KindTable, name: str) -> RuntimeKind:
    found = kinds.get(name)
    if found is None:
        known = ", ".join(sorted(kinds)) or "none"
        raise UnknownWorkloadKind(f"no workload kind {name!r} is registered (known: {known})")
    return found


def check_spec(kinds: KindTable, spec: WorkloadSpec) -> RuntimeKind:
    """The spec's kind, once it is known to fit what the runtimes can build for that kind."""
    kind = kind_of(kinds, spec.kind)
    names = tuple(role.name for role in spec.roles)
    if names != kind.roles:
        raise UnknownWorkloadKind(f"a {kind.name} has the roles {kind.roles}; the spec gives {names}")
    if len(kind.roles) == 1 and spec.main.count != 1:
        raise UnknownWorkloadKind(f"a {kind.name} runs exactly one replica")
    return kind


class WorkloadRuntime(Protocol):
    """Every method is idempotent: a retried call leaves the world as one call would.

    Methods block (Kubernetes client, subprocesses); activities call them from the worker's thread pool.
    """

    name: str

    def ensure_project(self, environment: ProjectEnvironment) -> None:
        """Create or update the project's place: namespace, ResourceQuota and NetworkPolicy on Kubernetes."""
        ...

    def delete_project(self, project_id: str) -> None:
        """Remove the project's place and anything left in it, found by its labels; absent is success."""
        ...

    def apply(self, spec: WorkloadSpec) -> WorkloadStatus:
        """Create or patch the workload (and its services and secret); returns its status now."""
        ...

    def status(self, project_id: str, kind: str, resource_id: str) -> WorkloadStatus:
        """Current status; state ``gone`` when the runtime holds nothing for it."""
        ...

    def logs(self, project_id: str, kind: str, resource_id: str, tail_lines: int = 200) -> str: ...

    def events(self, project_id: str, kind: str, resource_id: str) -> list[RuntimeEvent]: ...

    def delete(self, project_id: str, kind: str, resource_id: str) -> None:
        """Stop and remove the workload with everything it owns; absent is success."""
        ...

    # A training cluster's pods are workloads of their own (a spec with `cluster` set); these are the
    # cluster's shared pieces.

    def prepare_cluster(self, place: ClusterPlace) -> str:
        """Create (once) what the cluster's pods share: host names they resolve, an SSH keypair generated
        here whose private half stays in the runtime, the hostfile's home. Returns the public key."""
        ...

    def publish_hosts(self, hosts: ClusterHosts) -> None:
        """Write the hostfile into the running launcher atomically (write, then rename), unless it already
        holds this generation or a newer one."""
        ...

    def delete_cluster(self, project_id: str, cluster_id: str) -> bool:
        """Delete every pod of the cluster and its shared pieces; True once nothing of it is left."""
        ...


class CommitFailed(Exception):
    """A commit no retry can help: the container is not running, not on containerd, the push was refused."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message
