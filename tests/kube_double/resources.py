"""The resource types the double serves, and the discovery documents that describe them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status: bool = True
    scale: bool = False
    # The real API answers DELETE with the object itself for these, with a Status for the rest.
    returns_deleted_object: bool = False
    dns_label_names: bool = False
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def describe(self, name: str) -> str:
        """How the real API names an object in messages: `deployments.apps "web"`."""
        return f'{self.key} "{name}"'


NAMESPACES = ResourceType(
    "", "v1", "namespaces", "Namespace", namespaced=False, dns_label_names=True, short_names=("ns",)
)
NODES = ResourceType("", "v1", "nodes", "Node", namespaced=False, short_names=("no",))
PODS = ResourceType("", "v1", "pods", "Pod", returns_deleted_object=True, short_names=("po",))
SERVICES = ResourceType(
    "", "v1", "services", "Service", returns_deleted_object=True, dns_label_names=True, short_names=("svc",)
)
SECRETS = ResourceType("", "v1", "secrets", "Secret", status=False)
CONFIG_MAPS = ResourceType("", "v1", "configmaps", "ConfigMap", status=False, short_names=("cm",))
SERVICE_ACCOUNTS = ResourceType(
    "",
    "v1",
    "serviceaccounts",
    "ServiceAccount",
    status=False,
    returns_deleted_object=True,
    short_names=("sa",),
)
PVCS = ResourceType(
    "",
    "v1",
    "persistentvolumeclaims",
    "PersistentVolumeClaim",
    returns_deleted_object=True,
    short_names=("pvc",),
)
PERSISTENT_VOLUMES = ResourceType(
    "",
    "v1",
    "persistentvolumes",
    "PersistentVolume",
    namespaced=False,
    returns_deleted_object=True,
    short_names=("pv",),
)
RESOURCE_QUOTAS = ResourceType(
    "", "v1", "resourcequotas", "ResourceQuota", returns_deleted_object=True, short_names=("quota",)
)
LIMIT_RANGES = ResourceType("", "v1", "limitranges", "LimitRange", status=False, short_names=("limits",))
EVENTS = ResourceType("", "v1", "events", "Event", status=False, short_names=("ev",))
ENDPOINTS = ResourceType("", "v1", "endpoints", "Endpoints", status=False, short_names=("ep",))
DEPLOYMENTS = ResourceType("apps", "v1", "deployments", "Deployment", scale=True, short_names=("deploy",))
REPLICA_SETS = ResourceType("apps", "v1", "replicasets", "ReplicaSet", scale=True, short_names=("rs",))
STATEFUL_SETS = ResourceType("apps", "v1", "statefulsets", "StatefulSet", scale=True, short_names=("sts",))
JOBS = ResourceType("batch", "v1", "jobs", "Job")
CRON_JOBS = ResourceType("batch", "v1", "cronjobs", "CronJob", short_names=("cj",))
NETWORK_POLICIES = ResourceType(
    "networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", status=False, short_names=("netpol",)
)
INGRESSES = ResourceType("networking.k8s.io", "v1", "ingresses", "Ingress", short_names=("ing",))
INGRESS_CLASSES = ResourceType(
    "networking.k8s.io", "v1", "ingressclasses", "IngressClass", namespaced=False, status=False
)
HPAS = ResourceType(
    "autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", short_names=("hpa",)
)
_RBAC = "rbac.authorization.k8s.io"
ROLES = ResourceType(_RBAC, "v1", "roles", "Role", status=False)
ROLE_BINDINGS = ResourceType(_RBAC, "v1", "rolebindings", "RoleBinding", status=False)
CLUSTER_ROLES = ResourceType(_RBAC, "v1", "clusterroles", "ClusterRole", namespaced=False, status=False)
CLUSTER_ROLE_BINDINGS = ResourceType(
    _RBAC, "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False, status=False
)

RESOURCES: tuple[ResourceType, ...] = (
    NAMESPACES,
    NODES,
    PODS,
    SERVICES,
    SECRETS,
    CONFIG_MAPS,
    SERVICE_ACCOUNTS,
    PVCS,
    PERSISTENT_VOLUMES,
    RESOURCE_QUOTAS,
    LIMIT_RANGES,
    EVENTS,
    ENDPOINTS,
    DEPLOYMENTS,
    REPLICA_SETS,
    STATEFUL_SETS,
    JOBS,
    CRON_JOBS,
    NETWORK_POLICIES,
    INGRESSES,
    INGRESS_CLASSES,
    HPAS,
    ROLES,
    ROLE_BINDINGS,
    CLUSTER_ROLES,
    CLUSTER_ROLE_BINDINGS,
)
_BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
_BY_KIND = {(r.api_version, r.kind): r for r in RESOURCES}
GROUP_VERSIONS: dict[str, list[str]] = {}
for _resource in RESOURCES:
    if _resource.version not in GROUP_VERSIONS.setdefault(_resource.group, []):
        GROUP_VERSIONS[_resource.group].append(_resource.version)


def lookup(group: str, version: str, plural: str) -> ResourceType | None:
    return _BY_PATH.get((group, version, plural))


def by_kind(api_version: str, kind: str) -> ResourceType | None:
    return _BY_KIND.get((api_version, kind))


def api_versions() -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}],
    }


def api_group(group: str) -> dict[str, Any]:
    versions = [{"groupVersion": f"{group}/{v}", "version": v} for v in GROUP_VERSIONS[group]]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": versions,
        "preferredVersion": versions[0],
    }


def api_group_list() -> dict[str, Any]:
    groups = [api_group(group) for group in GROUP_VERSIONS if group]
    for group in groups:
        del group["kind"], group["apiVersion"]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def _subresource(resource: ResourceType, name: str, kind: str, verbs: list[str]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": f"{resource.plural}/{name}",
        "singularName": "",
        "namespaced": resource.namespaced,
        "kind": kind,
        "verbs": verbs,
    }
    if kind == "Scale":
        entry.update(group="autoscaling", version="v1")
    return entry


def api_resource_list(group: str, version: str) -> dict[str, Any]:
    entries: list[dict[str, Any]] = []
    for resource in RESOURCES:
        if (resource.group, resource.version) != (group, version):
            continue
        verbs = [v for v in ALL_VERBS if not (resource is NAMESPACES and v == "deletecollection")]
        entry: dict[str, Any] = {
            "name": resource.plural,
            "singularName": resource.kind.lower(),
            "namespaced": resource.namespaced,
            "kind": resource.kind,
            "verbs": verbs,
        }
        if resource.short_names:
            entry["shortNames"] = list(resource.short_names)
        entries.append(entry)
        if resource.status:
            entries.append(_subresource(resource, "status", resource.kind, ["get", "patch", "update"]))
        if resource.scale:
            entries.append(_subresource(resource, "scale", "Scale", ["get", "patch", "update"]))
        if resource is PODS:
            entries.append(_subresource(resource, "log", "Pod", ["get"]))
    group_version = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": entries,
    }
