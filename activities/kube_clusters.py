"""Training clusters on Kubernetes: each member is a bare Pod (stable names, so ordinals survive), and the
cluster's shared pieces hang off one anchor ConfigMap `cluster-<id>`.

The anchor owns the headless Service that gives every ready member a DNS name (`worker-00` through the
pods' search domain), the Secret with the cluster's SSH keypair and every member pod, so deleting it takes
the whole cluster along. It also records the last published hostfile; the launcher holds the copy it reads,
written into an emptyDir by exec, because a ConfigMap volume is refreshed too late and a subPath one never.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, Protocol

from activities.kube_exec import ClusterNotReady, PodExec
from activities.kube_manifests import (
    LABEL_MANAGED_BY,
    MANAGED_BY,
    label_value,
    object_metadata,
    owner_reference,
    pod_template,
)
from activities.runtime import (
    LABEL_KIND,
    LABEL_OWNER,
    LABEL_PROJECT,
    LABEL_RESOURCE_ID,
    Manifest,
    namespace_name,
    workload_name,
)
from models.clusters import (
    DISCOVER_HOSTS_ENV,
    HOSTFILE_ENV,
    HOSTFILE_FOLDER,
    HOSTS_ENV,
    LAUNCHER,
    ClusterHosts,
    ClusterPlace,
    hostfile_files,
    member_resource_id,
)
from models.workloads import WorkloadSpec

KIND = "cluster"
LABEL_CLUSTER = "mlcp.io/cluster"
LABEL_MEMBER = "mlcp.io/cluster-member"
KEY_FILE = "id_ed25519"
PUBLIC_KEY_FILE = f"{KEY_FILE}.pub"
SSH_CONFIG_KEY = "ssh_config"
SSH_FOLDER = "/root/.ssh"
# The anchor's hostfile keys are written by this manager, not applied by `mlcp`: a re-prepare keeps them.
HOSTFILE_MANAGER = "mlcp-hostfile"
SSH_CONFIG = (
    "Host *\n"
    "  User root\n"
    f"  IdentityFile {SSH_FOLDER}/{KEY_FILE}\n"
    "  IdentitiesOnly yes\n"
    # Each worker's host key is made at its start, and made again when the worker is re-created.
    "  StrictHostKeyChecking no\n"
    "  UserKnownHostsFile /dev/null\n"
    "  LogLevel ERROR\n"
)
_OUTPUT_SHOWN = 2000
_LABELLED_KINDS = ("Pod", "Service", "Secret", "ConfigMap")  # pods first, then what they use


class HostfileNotWritten(RuntimeError):
    """The launcher ran the write and it failed; the message carries the script's output (no secrets)."""


def anchor_name(cluster_id: str) -> str:
    """The anchor ConfigMap's and the headless Service's name, and the pods' subdomain."""
    return workload_name(KIND, cluster_id)


def key_secret_name(cluster_id: str) -> str:
    return f"{anchor_name(cluster_id)}-ssh"


def member_pod_name(cluster_id: str, member: str) -> str:
    return workload_name(KIND, member_resource_id(cluster_id, member))


def search_domain(namespace: str, cluster_id: str, cluster_domain: str) -> str:
    return f"{anchor_name(cluster_id)}.{namespace}.svc.{cluster_domain}"


# Manifests.


def cluster_labels(place: ClusterPlace) -> dict[str, str]:
    return {
        LABEL_PROJECT: label_value(place.project_id),
        LABEL_OWNER: label_value(place.owner),
        LABEL_KIND: KIND,
        LABEL_RESOURCE_ID: label_value(place.cluster_id),
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_CLUSTER: place.cluster_id,
    }


def _metadata(place: ClusterPlace, name: str, owner: Manifest | None = None) -> dict[str, Any]:
    return object_metadata(place.project_id, name, cluster_labels(place), owner)


def anchor_manifest(place: ClusterPlace) -> Manifest:
    """Only `ssh_config`: the hostfile keys belong to HOSTFILE_MANAGER, so applying this never drops them."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(place, anchor_name(place.cluster_id)),
        "data": {SSH_CONFIG_KEY: SSH_CONFIG},
    }


def headless_service_manifest(place: ClusterPlace, anchor: Manifest) -> Manifest:
    """Ready members only: the hostfile never names a worker that is not serving SSH yet anyway."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(place, anchor_name(place.cluster_id), anchor),
        "spec": {
            "clusterIP": "None",
            "selector": {LABEL_CLUSTER: place.cluster_id},
            "publishNotReadyAddresses": False,
            "ports": [{"name": "ssh", "port": 22, "targetPort": 22, "protocol": "TCP"}],
        },
    }


def key_secret_manifest(place: ClusterPlace, anchor: Manifest, private_key: str, public_key: str) -> Manifest:
    """Immutable: a second attempt can never replace the key a running member already trusts."""
    files = {KEY_FILE: private_key, PUBLIC_KEY_FILE: public_key}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(place, key_secret_name(place.cluster_id), anchor),
        "type": "Opaque",
        "immutable": True,
        "data": {key: base64.b64encode(text.encode()).decode() for key, text in files.items()},
    }


def hostfile_record(hosts: ClusterHosts, files: Mapping[str, str]) -> Manifest:
    """The anchor's hostfile keys alone, applied by HOSTFILE_MANAGER: the anchor's apply never owns them."""
    metadata = {"name": anchor_name(hosts.cluster_id), "namespace": namespace_name(hosts.project_id)}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": dict(files)}


def _launcher_volumes(cluster_id: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    key = {
        "secretName": key_secret_name(cluster_id),
        "items": [{"key": KEY_FILE, "path": KEY_FILE, "mode": 0o400}],
        "defaultMode": 0o400,
    }
    ssh_config = {"name": anchor_name(cluster_id), "items": [{"key": SSH_CONFIG_KEY, "path": "config"}]}
    return [
        (
            {"name": "cluster-key", "secret": key},
            {"name": "cluster-key", "mountPath": f"{SSH_FOLDER}/{KEY_FILE}", "subPath": KEY_FILE},
        ),
        (
            {"name": "cluster-ssh-config", "configMap": ssh_config},
            {"name": "cluster-ssh-config", "mountPath": f"{SSH_FOLDER}/config", "subPath": "config"},
        ),
        ({"name": "cluster-hosts", "emptyDir": {}}, {"name": "cluster-hosts", "mountPath": HOSTFILE_FOLDER}),
    ]


def cluster_pod_manifest(spec: WorkloadSpec) -> Manifest:
    """A member's bare Pod, named after it and resolvable as it (`hostname`) under the cluster's Service.

    Workers trust the cluster key through their credentials (its public half is in their authorized keys);
    the launcher also holds the private half, its ssh_config and the hostfile's folder. The runtime adds
    what needs the API (the anchor's uid) or its settings (the search domain): see `place_member`.
    """
    membership = spec.cluster
    if membership is None:
        raise ValueError("a cluster pod's spec names its cluster and member")
    cluster_id, member = membership.cluster_id, membership.member
    env = {"MLCP_CLUSTER_ID": cluster_id, "MLCP_CLUSTER_MEMBER": member}
    volumes: list[tuple[dict[str, Any], dict[str, Any]]] = []
    if membership.is_launcher:
        env |= {
            HOSTFILE_ENV: f"{HOSTFILE_FOLDER}/hostfile",
            HOSTS_ENV: f"{HOSTFILE_FOLDER}/hosts",
            DISCOVER_HOSTS_ENV: f"{HOSTFILE_FOLDER}/discover_hosts.sh",
        }
        volumes = _launcher_volumes(cluster_id)
    template = pod_template(spec, "Always", env=env, volumes=volumes)
    labels = {**template["metadata"]["labels"], LABEL_CLUSTER: cluster_id, LABEL_MEMBER: member}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": workload_name(spec.kind, spec.resource_id),
            "namespace": namespace_name(spec.project_id),
            "labels": labels,
        },
        "spec": {**template["spec"], "hostname": member, "subdomain": anchor_name(cluster_id)},
    }


def place_member(pod: Manifest, anchor: Manifest, cluster_domain: str) -> Manifest:
    """The member pod owned by the anchor, searching the cluster's domain so bare member names resolve."""
    metadata, namespace = pod["metadata"], pod["metadata"]["namespace"]
    cluster_id = metadata["labels"][LABEL_CLUSTER]
    dns = {"searches": [search_domain(namespace, cluster_id, cluster_domain)]}
    return {
        **pod,
        "metadata": {**metadata, "ownerReferences": [owner_reference(anchor)]},
        "spec": {**pod["spec"], "dnsConfig": dns},
    }


# The hostfile, written inside the launcher.

# Writes each file under a temporary name and renames it into place (generation last), so a reader sees a
# whole old or a whole new hostfile; a generation already there, or a newer one, leaves everything as is.
# Arguments: folder, generation, then (name, base64 content, mode) per file.
HOSTFILE_SCRIPT = """set -eu
folder=$1
generation=$2
shift 2
current=$(cat "$folder/generation" 2>/dev/null || true)
case $current in ''|*[!0-9]*) current=0 ;; esac
if [ "$current" -ge "$generation" ]; then exit 0; fi
mkdir -p "$folder"
while [ $# -ge 3 ]; do
  printf '%s' "$2" | base64 -d > "$folder/.$1.new"
  chmod "$3" "$folder/.$1.new"
  mv -f "$folder/.$1.new" "$folder/$1"
  shift 3
done
"""


def hostfile_command(files: Mapping[str, str], generation: int, folder: str = HOSTFILE_FOLDER) -> list[str]:
    """The argv that writes `files` into `folder`; content goes base64-encoded, never parsed by the shell."""
    names = sorted(files, key=lambda name: name == "generation")  # stable: generation last, the rest in order
    argv = ["sh", "-c", HOSTFILE_SCRIPT, "mlcp-hostfile", folder, str(generation)]
    for name in names:
        mode = "755" if name.endswith(".sh") else "644"
        argv += [name, base64.b64encode(files[name].encode()).decode(), mode]
    return argv


def _generation(anchor: Manifest) -> int:
    text = str((anchor.get("data") or {}).get("generation", "0")).strip()
    return int(text) if text.isdigit() else 0


# The cluster-wide steps.


class ClusterObjects(Protocol):
    """The runtime's object calls (retried, NotFound as None) that the cluster steps go through."""

    def apply_object(self, manifest: Manifest, field_manager: str = ...) -> dict[str, Any]: ...

    def create_object(self, manifest: Manifest) -> dict[str, Any] | None: ...

    def read_object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    def list_objects(self, kind: str, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]: ...

    def delete_object(self, kind: str, namespace: str, name: str) -> None: ...


class KubeClusters:
    def __init__(self, objects: ClusterObjects, pod_exec: PodExec, cluster_domain: str) -> None:
        self._objects, self._exec, self._domain = objects, pod_exec, cluster_domain

    def member(self, pod: Manifest) -> Manifest:
        """A member's pod ready to apply; a cluster not prepared yet is a wait, not a failure."""
        namespace, cluster_id = pod["metadata"]["namespace"], pod["metadata"]["labels"][LABEL_CLUSTER]
        anchor = self._objects.read_object("ConfigMap", namespace, anchor_name(cluster_id))
        if anchor is None:
            raise ClusterNotReady(f"cluster {cluster_id} has no anchor in {namespace} yet: prepare it first")
        return place_member(pod, anchor, self._domain)

    def prepare(self, place: ClusterPlace) -> str:
        anchor = self._objects.apply_object(anchor_manifest(place))
        self._objects.apply_object(headless_service_manifest(place, anchor))
        namespace, name = namespace_name(place.project_id), key_secret_name(place.cluster_id)
        secret = self._objects.read_object("Secret", namespace, name)
        if secret is None:
            secret = self._objects.create_object(self._new_key_secret(place, anchor))
            # None: another attempt created it first, and its key is the one to keep.
            secret = secret or self._objects.read_object("Secret", namespace, name)
        if secret is None:
            raise ClusterNotReady(f"the SSH key Secret {namespace}/{name} vanished while it was made")
        try:
            return base64.b64decode((secret.get("data") or {})[PUBLIC_KEY_FILE]).decode().strip()
        except (KeyError, binascii.Error, UnicodeDecodeError) as error:
            raise RuntimeError(f"the Secret {namespace}/{name} holds no readable public key") from error

    @staticmethod
    def _new_key_secret(place: ClusterPlace, anchor: Manifest) -> Manifest:
        import asyncssh  # only here: nothing else of the runtime needs it

        key = asyncssh.generate_private_key("ssh-ed25519", comment=f"mlcp-cluster-{place.cluster_id}")
        public = key.export_public_key().decode().strip() + "\n"
        return key_secret_manifest(place, anchor, key.export_private_key().decode(), public)

    def publish(self, hosts: ClusterHosts) -> None:
        namespace, cluster_id = namespace_name(hosts.project_id), hosts.cluster_id
        anchor = self._objects.read_object("ConfigMap", namespace, anchor_name(cluster_id))
        if anchor is None:
            raise ClusterNotReady(f"cluster {cluster_id} has no anchor in {namespace}: prepare it first")
        files = hostfile_files(hosts)
        if _generation(anchor) < hosts.generation:
            self._objects.apply_object(hostfile_record(hosts, files), HOSTFILE_MANAGER)
        pod_name = member_pod_name(cluster_id, LAUNCHER)
        launcher = self._objects.read_object("Pod", namespace, pod_name)
        phase = ((launcher or {}).get("status") or {}).get("phase")
        if launcher is None or launcher["metadata"].get("deletionTimestamp") or phase != "Running":
            raise ClusterNotReady(f"the launcher {namespace}/{pod_name} is not running ({phase or 'absent'})")
        code, output = self._exec(namespace, pod_name, hostfile_command(files, hosts.generation))
        if code != 0:
            raise HostfileNotWritten(
                f"writing hostfile generation {hosts.generation} into {pod_name} exited with {code}: "
                + output[-_OUTPUT_SHOWN:]
            )

    def delete(self, project_id: str, cluster_id: str) -> bool:
        """Pods first (they own their own children), then the anchor and what it owns; everything found
        by the cluster label, so nothing is left to a garbage collector that may be slow or absent."""
        namespace, selector = namespace_name(project_id), {LABEL_CLUSTER: cluster_id}
        for kind in _LABELLED_KINDS:
            for obj in self._objects.list_objects(kind, namespace, selector):
                if not obj["metadata"].get("deletionTimestamp"):
                    self._objects.delete_object(kind, namespace, obj["metadata"]["name"])
        for kind, name in (
            ("Service", anchor_name(cluster_id)),
            ("Secret", key_secret_name(cluster_id)),
            ("ConfigMap", anchor_name(cluster_id)),
        ):
            self._objects.delete_object(kind, namespace, name)
        left = any(self._objects.list_objects(kind, namespace, selector) for kind in _LABELLED_KINDS)
        return not left and self._objects.read_object("ConfigMap", namespace, anchor_name(cluster_id)) is None
