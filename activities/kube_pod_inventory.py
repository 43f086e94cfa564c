"""The running workload pods of the Kubernetes runtime, as the samplers need them: whose they are (kind,
workload, member, project) and what they requested, which every percentage is measured against.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from kubernetes.client import CoreV1Api, V1Pod, V1ResourceRequirements
from kubernetes.utils import parse_quantity

from activities.kube_clusters import KIND as CLUSTER_KIND
from activities.kube_clusters import LABEL_CLUSTER, LABEL_MEMBER
from activities.kube_commits import KIND as COMMIT_KIND
from activities.kube_manifests import GPU_RESOURCE, LABEL_MANAGED_BY, MANAGED_BY
from activities.runtime import LABEL_KIND, LABEL_PROJECT, LABEL_RESOURCE_ID, namespace_name
from models.monitoring import MAIN_POD
from models.volumes import GIB

# Image commits run as mlcp Jobs too, but belong to an image, not to a workload anyone monitors.
WORKLOAD_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_KIND},{LABEL_KIND}!={COMMIT_KIND}"
_NAMESPACE_PREFIX = namespace_name("")
# A cluster pod's resource id is `<cluster id>-<member>` (models.clusters.member_resource_id); the labels
# say the same, and this reads pods labelled before LABEL_MEMBER existed.
_MEMBER_RESOURCE_ID = re.compile(r"^(?P<cluster>[a-z0-9]{1,32})-(?P<member>launcher|worker-[0-9]{2,3})$")
_PAGE = 500
REQUEST_TIMEOUT = 30.0  # seconds

# Why a pod has no percentage, whichever sampler read it: there is nothing requested to measure against.
NO_CPU_REQUEST = "the pod requests no CPU, so there is nothing to measure against"
NO_MEMORY_REQUEST = "the pod requests no memory, so there is nothing to measure against"


@dataclass(frozen=True)
class WorkloadPod:
    namespace: str
    name: str  # the Kubernetes pod's name
    uid: str  # what kubelet names the pod's cgroup after
    kind: str  # container, job, transfer, cluster
    workload_id: str  # a container's or job's resource id; a cluster's id for each of its pods
    pod: str  # MAIN_POD, or a cluster member: launcher, worker-00...
    project_id: str
    vcpu: float  # requested, summed over the pod's containers
    ram_gb: float  # GiB requested
    gpus: int
    container_ids: tuple[str, ...] = ()  # without the runtime's scheme (containerd://)


def _requested(resources: V1ResourceRequirements | None, name: str) -> Decimal:
    requests = (resources.requests if resources else None) or {}
    return parse_quantity(requests[name]) if name in requests else Decimal(0)


def _container_id(text: str) -> str:
    return text.split("://", 1)[-1]


def workload_pod(pod: V1Pod) -> WorkloadPod | None:
    """What `pod` is to the platform; None for a pod that is not a workload's (no mlcp labels)."""
    metadata, spec = pod.metadata, pod.spec
    labels = (metadata.labels if metadata else None) or {}
    kind, resource_id = labels.get(LABEL_KIND), labels.get(LABEL_RESOURCE_ID)
    if metadata is None or spec is None or not kind or not resource_id or kind == COMMIT_KIND:
        return None
    namespace = metadata.namespace or ""
    # The namespace holds the project id verbatim; its label may be shortened to fit a label value.
    if namespace.startswith(_NAMESPACE_PREFIX):
        project_id = namespace.removeprefix(_NAMESPACE_PREFIX)
    else:
        project_id = labels.get(LABEL_PROJECT, "")
    workload_id, member = resource_id, MAIN_POD
    if kind == CLUSTER_KIND:
        parsed = _MEMBER_RESOURCE_ID.match(resource_id)
        cluster_id = labels.get(LABEL_CLUSTER) or (parsed.group("cluster") if parsed else None)
        member_name = labels.get(LABEL_MEMBER) or (parsed.group("member") if parsed else None)
        if not cluster_id or not member_name:
            return None  # a cluster pod that names no member cannot be put on any series
        workload_id, member = cluster_id, member_name
    containers = spec.containers or []
    statuses = (pod.status.container_statuses if pod.status else None) or []
    return WorkloadPod(
        namespace=namespace,
        name=metadata.name or "",
        uid=metadata.uid or "",
        kind=kind,
        workload_id=workload_id,
        pod=member,
        project_id=project_id,
        vcpu=float(sum(_requested(c.resources, "cpu") for c in containers)),
        ram_gb=float(sum(_requested(c.resources, "memory") for c in containers)) / GIB,
        gpus=int(sum(_requested(c.resources, GPU_RESOURCE) for c in containers)),
        container_ids=tuple(_container_id(s.container_id) for s in statuses if s.container_id),
    )


def list_workload_pods(core: CoreV1Api, node_name: str | None = None) -> list[WorkloadPod]:
    """Every running workload pod of every project, or only those on `node_name`. A stuck API server
    fails the call after REQUEST_TIMEOUT rather than stalling every later round."""
    fields = "status.phase=Running" + (f",spec.nodeName={node_name}" if node_name else "")
    found: list[WorkloadPod] = []
    token: str | None = None
    while True:
        page = core.list_pod_for_all_namespaces(
            label_selector=WORKLOAD_SELECTOR,
            field_selector=fields,
            limit=_PAGE,
            _continue=token,
            _request_timeout=REQUEST_TIMEOUT,
        )
        found.extend(p for p in (workload_pod(item) for item in page.items or []) if p is not None)
        token = page.metadata._continue if page.metadata else None
        if not token:
            return found
