"""Commits on Kubernetes: a Job on the container's node runs `nerdctl commit` and `nerdctl push`.

The Job lives in a namespace of its own, `MLCP_COMMIT_NAMESPACE` (Pod Security keeps hostPath out of project
namespaces and the platform's restricted one), pinned
to the pod's node by node affinity on its name, tolerating every taint, with the node's containerd socket
and the registry's push credentials (a dockerconfigjson Secret) mounted. Its name derives from the image ID
and `backoffLimit` is 0, so a retried activity adopts the Job it made instead of committing twice; and the
push goes to an internal tag per image ID first: when that manifest exists, the commit was done and no Job
is made at all. The Job writes its result (config digest, size) or its failure to its termination message.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

from activities.image_commits import (
    PUSH_REFUSED,
    ProgressReport,
    Published,
    PublishRequest,
    internal_tag,
    publish_to_registry,
    repository_of,
)
from activities.kube import KubernetesRuntime
from activities.kube_manifests import CONTAINER_NAME, LABEL_MANAGED_BY, MANAGED_BY, label_value, pod_selector
from activities.registry import Registry
from activities.runtime import LABEL_KIND, LABEL_PROJECT, LABEL_RESOURCE_ID, CommitFailed, namespace_name
from config import Settings
from models.images import CommitProgress, CommitResult, CommitSource

KIND = "image-commit"
PUSH_SECRET = "mlcp-registry-push"
POLL_SECONDS = 2.0
DEADLINE_SECONDS = 3600
# The commit script's exit codes, so a failure is named for what it was.
EXIT_REASONS = {2: "CommitFailed", 3: PUSH_REFUSED, 4: "ContainerNotRunning"}
NOTES = [
    "the container's writable layer is captured on top of its image; running processes, memory and GPU state "
    "are not",
    "mounted volumes, Secrets, emptyDir and /dev/shm are not part of the image",
    "the pod's command, arguments, environment and working directory are not kept: the image's own "
    "entrypoint and settings apply to containers made from it",
]
COMMIT_SCRIPT = r"""
set -u
n() { nerdctl --address "$CONTAINERD_SOCKET" --namespace k8s.io "$@"; }
say() { printf '%s' "$1" | tail -c 1000 > /dev/termination-log; }
owner=$(n inspect --format '{{index .Config.Labels "io.kubernetes.pod.uid"}}' "$CONTAINER_ID" 2>&1) \
  || { say "container $CONTAINER_ID is not on this node: $owner"; exit 4; }
[ "$owner" = "$POD_UID" ] || { say "container $CONTAINER_ID no longer belongs to pod $POD_UID"; exit 4; }
out=$(n commit --pause=true "$CONTAINER_ID" "$TARGET" 2>&1) || { say "commit: $out"; exit 2; }
out=$(n push $PUSH_FLAGS "$TARGET" 2>&1) || { say "push: $out"; exit 3; }
config=$(n image inspect --format '{{.Id}}' "$TARGET")
size=$(n image inspect --format '{{.Size}}' "$TARGET")
n rmi "$TARGET" >/dev/null 2>&1
say "{\"config_digest\":\"$config\",\"size_bytes\":${size:-0}}"
"""


def job_name(image_id: str) -> str:
    return f"{KIND}-{image_id}"


def _labels(source: CommitSource) -> dict[str, str]:
    return {
        LABEL_PROJECT: label_value(source.project_id),
        LABEL_KIND: KIND,
        LABEL_RESOURCE_ID: label_value(source.image_id),
        LABEL_MANAGED_BY: MANAGED_BY,
    }


def push_secret_manifest(namespace: str, registry: str, username: str, password: str) -> dict[str, Any]:
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    config = {"auths": {registry: {"auth": auth}}} if username else {"auths": {}}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": PUSH_SECRET, "namespace": namespace, "labels": {LABEL_MANAGED_BY: MANAGED_BY}},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()},
    }


def commit_job_manifest(
    source: CommitSource,
    namespace: str,
    node: str,
    container_id: str,
    pod_uid: str,
    target: str,
    settings: Settings,
) -> dict[str, Any]:
    labels = _labels(source)
    socket_folder = settings.containerd_socket.rsplit("/", 1)[0] or "/"
    env = {
        "CONTAINER_ID": container_id,
        "POD_UID": pod_uid,
        "TARGET": target,
        "CONTAINERD_SOCKET": settings.containerd_socket,
        "PUSH_FLAGS": "--insecure-registry" if settings.registry_insecure else "",
        "DOCKER_CONFIG": "/etc/mlcp/registry",
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(source.image_id), "namespace": namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,  # a failed commit is reported, not run again behind the workflow's back
            "activeDeadlineSeconds": DEADLINE_SECONDS,
            "ttlSecondsAfterFinished": DEADLINE_SECONDS,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [
                                    {
                                        "matchFields": [
                                            {"key": "metadata.name", "operator": "In", "values": [node]}
                                        ]
                                    }
                                ]
                            }
                        }
                    },
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [
                        {
                            "name": "commit",
                            "image": settings.commit_image or settings.platform_image,
                            "command": ["/bin/sh", "-c", COMMIT_SCRIPT],
                            "env": [{"name": key, "value": value} for key, value in env.items()],
                            "securityContext": {"runAsUser": 0},
                            "terminationMessagePolicy": "File",
                            "volumeMounts": [
                                {"name": "containerd", "mountPath": socket_folder},
                                {"name": "registry", "mountPath": "/etc/mlcp/registry", "readOnly": True},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "containerd", "hostPath": {"path": socket_folder, "type": "Directory"}},
                        {
                            "name": "registry",
                            "secret": {
                                "secretName": PUSH_SECRET,
                                "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                            },
                        },
                    ],
                },
            },
        },
    }


class KubernetesCommitter:
    def __init__(
        self,
        runtime: KubernetesRuntime,
        registry: Registry | None,
        settings: Settings,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._runtime = runtime
        self._sleep = sleep
        self._registry = registry
        self._settings = settings
        self._namespace = settings.commit_namespace

    def _need_registry(self) -> Registry:
        if self._registry is None:
            raise CommitFailed(
                "NoRegistry", "commits on Kubernetes push to the platform registry: set MLCP_REGISTRY_ADDRESS"
            )
        return self._registry

    def _source_pod(self, source: CommitSource) -> tuple[str, str, str]:
        """(node, containerd container ID, pod UID) of the container's running pod."""
        pods = self._runtime.list_objects(
            "Pod", namespace_name(source.project_id), pod_selector(source.container_kind, source.container_id)
        )
        for pod in pods:
            if (
                pod.get("metadata", {}).get("deletionTimestamp")
                or pod.get("status", {}).get("phase") != "Running"
            ):
                continue
            for status in pod["status"].get("containerStatuses") or []:
                if status.get("name") != CONTAINER_NAME or "running" not in (status.get("state") or {}):
                    continue
                runtime_id = str(status.get("containerID", ""))
                scheme, _, container_id = runtime_id.partition("://")
                if scheme != "containerd":
                    raise CommitFailed(
                        "NotContainerd",
                        f"the container runs on {scheme or 'an unknown runtime'}, not containerd",
                    )
                return str(pod["spec"].get("nodeName", "")), container_id, str(pod["metadata"]["uid"])
        raise CommitFailed("ContainerNotRunning", f"container {source.container_id} has no running pod")

    def _result(
        self, registry: Registry, repository: str, tag: str, config_digest: str, size: int
    ) -> CommitResult:
        pushed = registry.manifest(repository, tag)
        if pushed is None:
            raise CommitFailed(
                PUSH_REFUSED, f"the commit Job finished but {repository}:{tag} is not in the registry"
            )
        if not size:
            layers = json.loads(pushed.body).get("layers", [])
            size = sum(int(layer.get("size", 0)) for layer in layers)
        return CommitResult(
            repository=repository,
            internal_tag=tag,
            digest=pushed.digest,
            config_digest=config_digest or pushed.config_digest,
            size_bytes=size,
            notes=NOTES,
            registry=registry.address,
        )

    def commit(self, source: CommitSource, progress: ProgressReport) -> CommitResult:
        registry = self._need_registry()
        repository = repository_of(self._settings.registry_repository_prefix, source)
        tag = internal_tag(source.image_id)
        if registry.manifest(repository, tag) is not None:  # pushed by an earlier attempt: nothing to redo
            return self._result(registry, repository, tag, "", 0)
        node, container_id, pod_uid = self._source_pod(source)
        progress(CommitProgress(stage="committing", message=f"commit Job on node {node}"))
        self._runtime.apply_object(
            push_secret_manifest(
                self._namespace,
                registry.address,
                self._settings.registry_username,
                self._settings.registry_password.get_secret_value(),
            )
        )
        target = f"{registry.address}/{repository}:{tag}"
        self._runtime.apply_object(
            commit_job_manifest(source, self._namespace, node, container_id, pod_uid, target, self._settings)
        )
        outcome = self._wait(source, progress, lambda: registry.manifest(repository, tag) is not None)
        return self._result(
            registry,
            repository,
            tag,
            str(outcome.get("config_digest", "")),
            int(outcome.get("size_bytes") or 0),
        )

    def _wait(
        self, source: CommitSource, progress: ProgressReport, pushed: Callable[[], bool]
    ) -> dict[str, Any]:
        """Poll the Job until it ends; its termination message is the result or the failure's reason."""
        name = job_name(source.image_id)
        while True:
            job = self._runtime.read_object("Job", self._namespace, name)
            if job is None:  # removed after it finished (its TTL, or by hand): the registry tells
                if pushed():
                    return {}
                raise CommitFailed("CommitFailed", f"the commit Job {name} disappeared before it pushed")
            conditions = {
                c["type"]: c
                for c in job.get("status", {}).get("conditions") or []
                if c.get("status") == "True"
            }
            if "Complete" in conditions or "Failed" in conditions:
                code, message = self._termination(source)
                if "Complete" in conditions and code == 0:
                    try:
                        return dict(json.loads(message))
                    except ValueError:
                        raise CommitFailed("CommitFailed", f"the commit Job answered {message!r}") from None
                if conditions.get("Failed", {}).get("reason") == "DeadlineExceeded":
                    raise CommitFailed("TimedOut", f"the commit did not finish within {DEADLINE_SECONDS} s")
                raise CommitFailed(
                    EXIT_REASONS.get(code or 0, "CommitFailed"), message or f"exit code {code}"
                )
            progress(CommitProgress(stage="committing", message=f"commit Job {name} is running"))
            self._sleep(POLL_SECONDS)

    def _termination(self, source: CommitSource) -> tuple[int | None, str]:
        pods = self._runtime.list_objects("Pod", self._namespace, {"job-name": job_name(source.image_id)})
        for pod in pods:
            for status in pod.get("status", {}).get("containerStatuses") or []:
                terminated = (status.get("state") or {}).get("terminated")
                if terminated:
                    return terminated.get("exitCode"), str(terminated.get("message", "")).strip()
        return None, ""

    def publish(self, request: PublishRequest) -> Published:
        return publish_to_registry(self._need_registry(), request)

    def clean_up(self, source: CommitSource) -> None:
        self._runtime.delete_object("Job", self._namespace, job_name(source.image_id))

    def remove(self, request: PublishRequest) -> None:
        if self._registry is None:
            return
        source, result = request.source, request.result
        repository = result.repository or repository_of(self._settings.registry_repository_prefix, source)
        digest = result.digest
        if not digest:
            pushed = self._registry.manifest(repository, internal_tag(source.image_id))
            digest = pushed.digest if pushed else ""
        if digest:
            self._registry.delete_manifest(repository, digest)
