"""The Kubernetes workload runtime: projects are namespaces; each workload is its kind's controller object
(a Deployment for containers, a Job for jobs: the registry says which) with its Secret, Services and policy.

Every write is a server-side apply (field manager `mlcp`, forced) of a complete object with a stable
name, so a retried call leaves exactly one object (the exception, a training cluster's key Secret, is
created once and read after); deletes treat NotFound as done. Transient API failures are retried briefly
inside a call, and Temporal retries the activity beyond that. The client blocks, so the activities calling
this run in the worker's thread pool.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from activities.kube_api import KubernetesApiError, Resource, body_of
from activities.kube_clusters import KubeClusters
from activities.kube_exec import KubernetesPodExec, PodExec
from activities.kube_manifests import (
    CONTAINER_NAME,
    isolation_policy_manifest,
    namespace_manifest,
    pod_selector,
    ports_policy_manifest,
    resource_quota_manifest,
    secret_manifest,
    selector_text,
    service_manifests,
)
from activities.kube_status import newest_pod, runtime_events, workload_status
from activities.runtime import (
    FIELD_MANAGER,
    KindTable,
    Manifest,
    check_spec,
    kind_of,
    namespace_name,
    workload_name,
)
from config import Settings
from models.clusters import ClusterHosts, ClusterPlace
from models.workloads import ProjectEnvironment, RuntimeEvent, WorkloadSpec, WorkloadState, WorkloadStatus

logger = logging.getLogger(__name__)

APPLY_PATCH = "application/apply-patch+yaml"
# Short in-call retries for blips; longer outages are the activity retry policy's business.
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0)
_CHILD_KINDS = ("Secret", "Service", "NetworkPolicy")


def kube_api_client(kubeconfig: str = "") -> client.ApiClient:
    """From `kubeconfig` when given; else in-cluster inside a pod; else the default kubeconfig."""
    configuration = client.Configuration()
    if not kubeconfig and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(config_file=kubeconfig or None, client_configuration=configuration)
    return client.ApiClient(configuration)


class KubernetesRuntime:
    name = "kubernetes"

    def __init__(
        self,
        api_client: client.ApiClient,
        kinds: KindTable,
        *,
        node_host: str = "",
        homes: tuple[str, str] | None = None,
        s3_claims: bool = False,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        sleep: Callable[[float], None] = time.sleep,
        cluster_domain: str = "cluster.local",
        pod_exec: PodExec | None = None,  # how a training cluster's hostfile reaches its launcher
    ) -> None:
        self.api_client = api_client
        self.kinds = kinds
        self.node_host = node_host
        self._homes = homes  # (NFS server, export path) of the users' homes
        self._s3_claims = s3_claims  # s3 volumes have claims of an S3 CSI StorageClass
        self._retry_delays = tuple(retry_delays)
        self._sleep = sleep
        core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
        batch, networking = client.BatchV1Api(api_client), client.NetworkingV1Api(api_client)
        self._resources = {
            "Namespace": Resource(core, "namespace", namespaced=False),
            "ResourceQuota": Resource(core, "resource_quota"),
            "NetworkPolicy": Resource(networking, "network_policy"),
            "Deployment": Resource(apps, "deployment"),
            "Job": Resource(batch, "job"),
            "Service": Resource(core, "service"),
            "Secret": Resource(core, "secret"),
            "ConfigMap": Resource(core, "config_map"),
            "Pod": Resource(core, "pod"),
            "Event": Resource(core, "event"),
            "PersistentVolumeClaim": Resource(core, "persistent_volume_claim"),
            "PersistentVolume": Resource(core, "persistent_volume", namespaced=False),
        }
        self._core = core
        exec_in = pod_exec or KubernetesPodExec(api_client.configuration)
        self._clusters = KubeClusters(self, exec_in, cluster_domain)

    @classmethod
    def from_settings(cls, settings: Settings, kinds: KindTable) -> KubernetesRuntime:
        homes = (
            (settings.nfs_server, settings.nfs_path.rstrip("/") + "/homes") if settings.nfs_server else None
        )
        return cls(
            kube_api_client(settings.kubeconfig),
            kinds,
            node_host=settings.node_host,
            homes=homes,
            s3_claims=bool(settings.s3_csi_storage_class),
            cluster_domain=settings.kube_cluster_domain,
        )

    def close(self) -> None:
        self.api_client.close()

    # The one place calls go through: retries, NotFound, clear errors.

    def _call(
        self,
        operation: str,
        method: Callable[..., Any],
        *args: Any,
        absent_ok: frozenset[int] = frozenset(),
        retry_conflicts: bool = False,
        **kwargs: Any,
    ) -> Any:
        """`method(*args, **kwargs)`, retried on transient failures; None for a status in `absent_ok`.

        Every call made through here is idempotent (apply, read, list, delete), so repeating one whose
        answer was lost is safe.
        """
        for delay in (*self._retry_delays, None):
            cause: Exception
            try:
                return method(*args, **kwargs)
            except ApiException as error:
                if error.status in absent_ok:
                    return None
                cause, failure = error, KubernetesApiError.from_api_exception(operation, error)
                retry = failure.transient or (retry_conflicts and failure.status == 409)
            except (urllib3.exceptions.HTTPError, OSError) as error:
                cause = error
                failure = KubernetesApiError(operation, None, type(error).__name__, str(error))
                retry = True
            if not retry or delay is None:
                raise failure from cause
            logger.warning(
                "Kubernetes %s failed (%s %s); retrying in %gs",
                operation,
                failure.status,
                failure.reason,
                delay,
            )
            self._sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _apply(self, manifest: Manifest, field_manager: str = FIELD_MANAGER) -> dict[str, Any]:
        kind, metadata = manifest["kind"], manifest["metadata"]
        resource = self._resources[kind]
        response = self._call(
            f"apply {kind} {metadata.get('namespace', '')}/{metadata['name']}",
            resource.method("patch"),
            *resource.address(metadata.get("namespace", ""), metadata["name"]),
            body=manifest,
            field_manager=field_manager,
            force=True,
            _content_type=APPLY_PATCH,
            _preload_content=False,
            retry_conflicts=True,
        )
        applied: dict[str, Any] = body_of(response)
        return applied

    def _read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        resource = self._resources[kind]
        response = self._call(
            f"read {kind} {namespace}/{name}",
            resource.method("read"),
            *resource.address(namespace, name),
            absent_ok=frozenset({404}),
            _preload_content=False,
        )
        return None if response is None else body_of(response)

    def _list(
        self, kind: str, namespace: str, selector: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Objects in a namespace; a namespace that does not exist lists as empty, as the API answers."""
        resource = self._resources[kind]
        response = self._call(
            f"list {kind} in {namespace}",
            resource.method("list"),
            *((namespace,) if resource.namespaced else ()),
            label_selector=selector_text(selector) if selector else None,
            _preload_content=False,
        )
        items: list[dict[str, Any]] = body_of(response).get("items") or []
        return items

    def _delete(self, kind: str, namespace: str, name: str, policy: str) -> None:
        """Delete; NotFound means done. A namespace already terminating answers 409, also done."""
        resource = self._resources[kind]
        absent = frozenset({404, 409}) if kind == "Namespace" else frozenset({404})
        response = self._call(
            f"delete {kind} {namespace}/{name}",
            resource.method("delete"),
            *resource.address(namespace, name),
            propagation_policy=policy,
            absent_ok=absent,
            _preload_content=False,
        )
        if response is not None:
            body_of(response)  # read to the end, or the pooled connection carries its leftovers

    # Objects of other parts (volumes, their claims and secrets: activities/kube_volumes.py).

    def apply_object(self, manifest: Manifest, field_manager: str = FIELD_MANAGER) -> dict[str, Any]:
        return self._apply(manifest, field_manager)

    def create_object(self, manifest: Manifest) -> dict[str, Any] | None:
        """Create; None when it exists already (409), which only a read can tell apart from an update."""
        kind, metadata = manifest["kind"], manifest["metadata"]
        resource, namespace = self._resources[kind], metadata.get("namespace", "")
        response = self._call(
            f"create {kind} {namespace}/{metadata['name']}",
            resource.method("create"),
            *((namespace,) if resource.namespaced else ()),
            body=manifest,
            field_manager=FIELD_MANAGER,
            absent_ok=frozenset({409}),
            _preload_content=False,
        )
        return None if response is None else body_of(response)

    def read_object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self._read(kind, namespace, name)

    def list_objects(self, kind: str, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        return self._list(kind, namespace, selector)

    def delete_object(self, kind: str, namespace: str, name: str) -> None:
        self._delete(kind, namespace, name, "Background")

    # Projects.

    def ensure_project(self, environment: ProjectEnvironment) -> None:
        self._apply(namespace_manifest(environment.project_id))
        self._apply(resource_quota_manifest(environment))
        self._apply(isolation_policy_manifest(environment.project_id))

    def delete_project(self, project_id: str) -> None:
        self._delete("Namespace", "", namespace_name(project_id), "Background")

    # Workloads.

    def apply(self, spec: WorkloadSpec) -> WorkloadStatus:
        """Apply the Deployment or Job first: its uid is what the Secret, Services and policy point at,
        so deleting the workload takes them along. Children the spec no longer asks for are removed."""
        spec = self._with_storage(spec)
        controller = check_spec(self.kinds, spec).controller_manifest(spec)
        owner = self._apply(controller if spec.cluster is None else self._clusters.member(controller))
        secret = secret_manifest(spec, owner)
        policy = ports_policy_manifest(spec, owner)
        children = [c for c in (secret, *service_manifests(spec, owner), policy) if c is not None]
        for child in children:
            self._apply(child)
        self._prune(spec, {(c["kind"], c["metadata"]["name"]) for c in children})
        return self.status(spec.project_id, spec.kind, spec.resource_id)

    def _with_storage(self, spec: WorkloadSpec) -> WorkloadSpec:
        """Mounts learn from this runtime's settings where homes are and whether s3 volumes have claims."""
        mounts = []
        for mount in spec.mounts:
            if mount.volume_type == "home":
                if self._homes is None:
                    raise ValueError(
                        "a home is mounted but MLCP_NFS_SERVER is not set: homes live on the export"
                    )
                server, root = self._homes
                mount = mount.model_copy(update={"nfs_server": server, "nfs_path": f"{root}/{spec.owner}"})
            elif mount.volume_type == "s3" and self._s3_claims:
                mount = mount.model_copy(update={"via_claim": True})
            mounts.append(mount)
        return spec.model_copy(update={"mounts": mounts})

    def _prune(self, spec: WorkloadSpec, wanted: set[tuple[str, str]]) -> None:
        namespace, selector = namespace_name(spec.project_id), pod_selector(spec.kind, spec.resource_id)
        for kind in _CHILD_KINDS:
            for obj in self._list(kind, namespace, selector):
                if (kind, obj["metadata"]["name"]) not in wanted:
                    self._delete(kind, namespace, obj["metadata"]["name"], "Background")

    def status(self, project_id: str, kind: str, resource_id: str) -> WorkloadStatus:
        namespace, name = namespace_name(project_id), workload_name(kind, resource_id)
        runtime_kind = kind_of(self.kinds, kind)
        workload = self._read(runtime_kind.controller, namespace, name)
        if workload is None:
            return WorkloadStatus(state=WorkloadState.gone)
        selector = pod_selector(kind, resource_id)
        pods = self._list("Pod", namespace, selector)
        running = any((p.get("status") or {}).get("phase") == "Running" for p in pods)
        services = self._list("Service", namespace, selector) if running else []
        events = None if pods else self.events(project_id, kind, resource_id)
        return workload_status(workload, pods, services, self.node_host, events, runtime_kind.outcome)

    def logs(self, project_id: str, kind: str, resource_id: str, tail_lines: int = 200) -> str:
        """The tail of the newest pod's log; a container that has not started (or no pod) reads as ""."""
        namespace = namespace_name(project_id)
        pod = newest_pod(self._list("Pod", namespace, pod_selector(kind, resource_id)))
        if pod is None:
            return ""
        pod_name = pod["metadata"]["name"]
        # A container waiting to start answers 400; one in a crash loop still has its last run's log.
        for previous in (False, True):
            response = self._call(
                f"read log of Pod {namespace}/{pod_name}",
                self._core.read_namespaced_pod_log,
                pod_name,
                namespace,
                container=CONTAINER_NAME,
                tail_lines=tail_lines,
                previous=previous or None,
                absent_ok=frozenset({400, 404}),
                _preload_content=False,
            )
            if response is not None:
                try:
                    return str(response.data.decode("utf-8", errors="replace"))
                finally:
                    response.release_conn()
        return ""

    def events(self, project_id: str, kind: str, resource_id: str) -> list[RuntimeEvent]:
        namespace = namespace_name(project_id)
        return runtime_events(self._list("Event", namespace), workload_name(kind, resource_id))

    def delete(self, project_id: str, kind: str, resource_id: str) -> None:
        """Foreground: the workload stays visible (not `gone`) until its pods have released their GPUs."""
        namespace, name = namespace_name(project_id), workload_name(kind, resource_id)
        self._delete(kind_of(self.kinds, kind).controller, namespace, name, "Foreground")

    # Training clusters: their shared pieces (activities/kube_clusters.py).

    def prepare_cluster(self, place: ClusterPlace) -> str:
        return self._clusters.prepare(place)

    def publish_hosts(self, hosts: ClusterHosts) -> None:
        self._clusters.publish(hosts)

    def delete_cluster(self, project_id: str, cluster_id: str) -> bool:
        return self._clusters.delete(project_id, cluster_id)
