"""Pure builders of the Kubernetes objects a project and a workload consist of.

Every object is a complete apply configuration (apiVersion, kind, metadata, spec): server-side apply
sends exactly what mlcp wants to own, so applying the same spec twice changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from activities.runtime import (
    LABEL_KIND,
    LABEL_OWNER,
    LABEL_PROJECT,
    LABEL_RESOURCE_ID,
    Manifest,
    namespace_name,
    workload_name,
)
from models.workloads import ProjectEnvironment, WorkloadSpec

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_GPU_MODEL = "mlcp.io/gpu-model"
MANAGED_BY = "mlcp"
GPU_RESOURCE = "nvidia.com/gpu"
QUOTA_NAME = "mlcp-quota"
ISOLATION_POLICY_NAME = "mlcp-isolate"
CONTAINER_NAME = "main"
STORAGE_IDENTITY_SECRET = "mlcp-storage-identity"
STORAGE_ACCESS_KEY = "access-key"  # the keys of that Secret
STORAGE_SECRET_KEY = "secret-key"
CREDENTIALS_MOUNT = "/etc/mlcp/credentials"
PASSWORD_HASH_KEY = "password-hash"
AUTHORIZED_KEYS_KEY = "authorized_keys"
PASSWORD_HASH_ENV = "MLCP_PASSWORD_HASH_FILE"
AUTHORIZED_KEYS_ENV = "MLCP_AUTHORIZED_KEYS_FILE"
# Images built on NVIDIA's bases see every GPU of the node unless told otherwise; a CPU-only workload
# must not use GPUs another workload was given.
NO_GPU_ENV = {"NVIDIA_VISIBLE_DEVICES": "void"}

_LABEL_VALUE_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_LABEL_VALUE_MAX = 63


def label_value(text: str) -> str:
    """`text` as a valid label value: unsafe characters become '-', ends are alphanumeric, 63 at most.

    A value that had to change gets a short digest of the original, so two users whose names differ
    only in unsafe characters still carry different labels.
    """
    cleaned = _LABEL_VALUE_UNSAFE.sub("-", text).strip("-_.")
    if cleaned == text and len(text) <= _LABEL_VALUE_MAX:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    stem = cleaned[: _LABEL_VALUE_MAX - len(digest) - 1].strip("-_.")
    return f"{stem}-{digest}" if stem else digest


def binary_quantity(gigabytes: float) -> str:
    """GiB as a Kubernetes quantity: whole GiB stay `NGi`, fractions become whole MiB."""
    if float(gigabytes).is_integer():
        return f"{int(gigabytes)}Gi"
    return f"{round(gigabytes * 1024)}Mi"


def cpu_quantity(vcpu: float) -> str:
    return f"{round(vcpu * 1000)}m"


# Projects.


def project_labels(project_id: str) -> dict[str, str]:
    return {LABEL_PROJECT: label_value(project_id), LABEL_MANAGED_BY: MANAGED_BY}


def namespace_manifest(project_id: str) -> Manifest:
    labels = {
        **project_labels(project_id),
        # Workloads need no privileges; baseline still allows root, which sshd-based images use.
        "pod-security.kubernetes.io/enforce": "baseline",
    }
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace_name(project_id), "labels": labels},
    }


def resource_quota_manifest(environment: ProjectEnvironment) -> Manifest:
    quota = environment.quota
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {
            "name": QUOTA_NAME,
            "namespace": namespace_name(environment.project_id),
            "labels": project_labels(environment.project_id),
        },
        "spec": {
            "hard": {
                f"requests.{GPU_RESOURCE}": str(quota.gpu),
                "requests.cpu": cpu_quantity(quota.vcpu),
                # No requests.storage: the project's ledger holds s3 capacities, and an NFS claim's size
                # is nominal (an export has none of its own), so counting claims would refuse them.
                "requests.memory": binary_quantity(quota.ram_gb),
            }
        },
    }


def isolation_policy_manifest(project_id: str) -> Manifest:
    """Pods of a project accept traffic only from pods of the same project.

    The policy selects every pod, so other namespaces (other projects) are refused; each workload's
    own policy (`ports_policy_manifest`) then opens exactly its declared service ports to NodePort
    traffic. Egress stays open: workloads install packages and fetch data.
    """
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": ISOLATION_POLICY_NAME,
            "namespace": namespace_name(project_id),
            "labels": project_labels(project_id),
        },
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {}}]}],
        },
    }


# Workloads.


def workload_labels(spec: WorkloadSpec) -> dict[str, str]:
    return {
        LABEL_PROJECT: label_value(spec.project_id),
        LABEL_OWNER: label_value(spec.owner),
        LABEL_KIND: spec.kind,
        LABEL_RESOURCE_ID: label_value(spec.resource_id),
        LABEL_MANAGED_BY: MANAGED_BY,
    }


def pod_selector(kind: str, resource_id: str) -> dict[str, str]:
    """What picks a workload's pods and children; stable for its whole life (selectors are immutable)."""
    return {LABEL_KIND: kind, LABEL_RESOURCE_ID: label_value(resource_id)}


def selector_text(labels: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def service_name(spec: WorkloadSpec, port_name: str) -> str:
    return f"{workload_name(spec.kind, spec.resource_id)}-{port_name}"


def secret_name(kind: str, resource_id: str) -> str:
    return f"{workload_name(kind, resource_id)}-credentials"


def ports_policy_name(kind: str, resource_id: str) -> str:
    return f"{workload_name(kind, resource_id)}-ports"


def owner_reference(owner: Manifest) -> dict[str, Any]:
    """A reference from a child to an applied Deployment or Job (as read back, with its uid)."""
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "blockOwnerDeletion": True,
    }


def object_metadata(
    project_id: str, name: str, labels: dict[str, str], owner: Manifest | None = None
) -> dict[str, Any]:
    """An object's name in its project's namespace, its labels, and the applied object that owns it."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace_name(project_id), "labels": labels}
    if owner is not None:
        metadata["ownerReferences"] = [owner_reference(owner)]
    return metadata


def _metadata(spec: WorkloadSpec, name: str, owner: Manifest | None = None) -> dict[str, Any]:
    return object_metadata(spec.project_id, name, workload_labels(spec), owner)


def _credential_files(spec: WorkloadSpec) -> dict[str, str]:
    credentials = spec.credentials
    if credentials is None:
        return {}
    files = {}
    if credentials.password_hash:
        files[PASSWORD_HASH_KEY] = credentials.password_hash + "\n"
    if credentials.authorized_keys:
        files[AUTHORIZED_KEYS_KEY] = "".join(key.strip() + "\n" for key in credentials.authorized_keys)
    return files


def secret_manifest(spec: WorkloadSpec, owner: Manifest) -> Manifest | None:
    """The password hash and public keys as files, or None when the workload has neither.

    Sent as base64 `data`, not `stringData`: apply then owns exactly the keys it sends, so a key the
    user removed disappears on the next apply.
    """
    files = _credential_files(spec)
    if not files:
        return None
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(spec, secret_name(spec.kind, spec.resource_id), owner),
        "type": "Opaque",
        "data": {key: base64.b64encode(text.encode()).decode() for key, text in files.items()},
    }


def service_manifests(spec: WorkloadSpec, owner: Manifest) -> list[Manifest]:
    """One NodePort Service per declared port of an exposed role; the API server picks the node port."""
    if not spec.main.expose:
        return []
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _metadata(spec, service_name(spec, port.name), owner),
            "spec": {
                "type": "NodePort",
                "selector": pod_selector(spec.kind, spec.resource_id),
                "ports": [{"name": port.name, "port": port.port, "targetPort": port.port, "protocol": "TCP"}],
            },
        }
        for port in spec.main.ports
    ]


def ports_policy_manifest(spec: WorkloadSpec, owner: Manifest) -> Manifest | None:
    """Opens the workload's declared ports to traffic from anywhere, as its NodePorts already do.

    Users connect from outside the cluster, and kube-proxy may present that traffic with a node's or a
    client's address, so the source cannot be narrowed; every other port stays closed to other projects.
    """
    ports = spec.main.ports
    if not ports or not spec.main.expose:
        return None  # the project's isolation policy still lets its own pods in
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(spec, ports_policy_name(spec.kind, spec.resource_id), owner),
        "spec": {
            "podSelector": {"matchLabels": pod_selector(spec.kind, spec.resource_id)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}],
                    "ports": [{"protocol": "TCP", "port": port.port} for port in ports],
                }
            ],
        },
    }


def _resources(spec: WorkloadSpec) -> dict[str, Any]:
    request = spec.main.resources
    amounts = {"cpu": cpu_quantity(request.vcpu), "memory": binary_quantity(request.ram_gb)}
    if request.gpu:
        amounts[GPU_RESOURCE] = str(request.gpu)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _environment(spec: WorkloadSpec, platform: Mapping[str, str]) -> list[dict[str, Any]]:
    variables = {} if spec.main.resources.gpu else dict(NO_GPU_ENV)
    variables.update(spec.main.env)
    variables.update(platform)  # what the platform sets wins over a user's variable of the same name
    files = _credential_files(spec)
    if PASSWORD_HASH_KEY in files:
        variables[PASSWORD_HASH_ENV] = f"{CREDENTIALS_MOUNT}/{PASSWORD_HASH_KEY}"
    if AUTHORIZED_KEYS_KEY in files:
        variables[AUTHORIZED_KEYS_ENV] = f"{CREDENTIALS_MOUNT}/{AUTHORIZED_KEYS_KEY}"
    entries: list[dict[str, Any]] = [
        {"name": name, "value": value} for name, value in sorted(variables.items())
    ]
    if any(mount.volume_type == "s3" for mount in spec.mounts):
        # The project's S3 identity, from the Secret the volume lifecycle keeps in the namespace.
        for name, key in (
            ("AWS_ACCESS_KEY_ID", STORAGE_ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", STORAGE_SECRET_KEY),
        ):
            entries.append(
                {"name": name, "valueFrom": {"secretKeyRef": {"name": STORAGE_IDENTITY_SECRET, "key": key}}}
            )
    return entries


def volume_claim_name(volume_id: str) -> str:
    return workload_name("volume", volume_id)


def _volumes(spec: WorkloadSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pod's volumes and the main container's mounts: shared memory, credentials, project volumes."""
    resources = spec.main.resources
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if resources.shm_gb:
        # Counts against the memory limit, as shared memory does on any Linux host.
        volumes.append(
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": binary_quantity(resources.shm_gb)}}
        )
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})
    if _credential_files(spec):
        secret = {"secretName": secret_name(spec.kind, spec.resource_id), "defaultMode": 0o400}
        volumes.append({"name": "credentials", "secret": secret})
        mounts.append({"name": "credentials", "mountPath": CREDENTIALS_MOUNT, "readOnly": True})
    claimed: dict[str, str] = {}
    for mount in spec.mounts:
        if mount.volume_type == "home" and mount.volume_id not in claimed:
            # The owner's home on the NFS export (the runtime fills in where): the same in every project.
            claimed[mount.volume_id] = "home"
            source = {"server": mount.nfs_server, "path": mount.nfs_path, "readOnly": mount.read_only}
            volumes.append({"name": "home", "nfs": source})
        if mount.volume_type == "s3" and not mount.via_claim:
            continue  # without an S3 CSI driver the pod reaches the bucket through its environment only
        if mount.volume_id not in claimed:
            # One pod volume per project volume, however many places it is mounted at.
            claimed[mount.volume_id] = name = f"volume-{len(claimed)}"
            claim = {"claimName": volume_claim_name(mount.volume_id), "readOnly": mount.read_only}
            volumes.append({"name": name, "persistentVolumeClaim": claim})
        name = claimed[mount.volume_id]
        entry: dict[str, Any] = {"name": name, "mountPath": mount.mount_path, "readOnly": mount.read_only}
        if mount.sub_path:
            entry["subPath"] = mount.sub_path
        mounts.append(entry)
    return volumes, mounts


def pod_template(
    spec: WorkloadSpec,
    restart_policy: str,
    env: Mapping[str, str] | None = None,
    volumes: Sequence[tuple[dict[str, Any], dict[str, Any]]] = (),  # (pod volume, main container's mount)
) -> dict[str, Any]:
    role = spec.main
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": role.image,
        "env": _environment(spec, env or {}),
        "resources": _resources(spec),
    }
    if role.command:
        container["command"] = list(role.command)
    if role.ports:
        container["ports"] = [
            {"name": port.name, "containerPort": port.port, "protocol": "TCP"} for port in role.ports
        ]
    pod_volumes, mounts = _volumes(spec)
    pod_volumes += [volume for volume, _ in volumes]
    mounts += [mount for _, mount in volumes]
    if mounts:
        container["volumeMounts"] = mounts
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "restartPolicy": restart_policy,
        "automountServiceAccountToken": False,  # user code gets no credentials for the cluster
        "enableServiceLinks": False,
    }
    if pod_volumes:
        pod_spec["volumes"] = pod_volumes
    if role.resources.gpu_model:
        pod_spec["nodeSelector"] = {LABEL_GPU_MODEL: label_value(role.resources.gpu_model)}
    return {"metadata": {"labels": workload_labels(spec)}, "spec": pod_spec}


def deployment_manifest(spec: WorkloadSpec) -> Manifest:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(spec, workload_name(spec.kind, spec.resource_id)),
        "spec": {
            "replicas": 1,
            # A rolling update would hold the GPUs twice; the old pod goes before the new one starts.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": pod_selector(spec.kind, spec.resource_id)},
            "template": pod_template(spec, "Always"),
        },
    }


def job_manifest(spec: WorkloadSpec) -> Manifest:
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,  # a failed run is reported, never silently repeated
        "template": pod_template(spec, "Never"),
    }
    if spec.active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(spec, workload_name(spec.kind, spec.resource_id)),
        "spec": job_spec,
    }
