"""Volumes on Kubernetes: a claim `volume-<id>` per volume in the project's namespace, the S3 identity as a
Secret beside it.

NFS volumes are either a static PersistentVolume on the NFS server from the settings (a sub-folder per
project and volume, bound to its claim by name, reclaimed with the claim) or a claim of the StorageClass
named in the settings (csi-driver-nfs makes the sub-folder; a clone is a claim with the source as its
data source). Where the worker has the export mounted (`nfs_mount`), it also measures, copies and removes
the sub-folders itself. An s3 volume gets a claim only when an S3 CSI StorageClass is named; otherwise
its workloads reach the bucket through the endpoint and identity in their environment.
"""

from __future__ import annotations

import base64
import contextlib
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from activities.kube_manifests import (
    STORAGE_ACCESS_KEY,
    STORAGE_IDENTITY_SECRET,
    STORAGE_SECRET_KEY,
    binary_quantity,
    project_labels,
    volume_claim_name,
)
from activities.object_storage import AccessKeys, bucket_name
from activities.runtime import LABEL_KIND, LABEL_RESOURCE_ID, Manifest, namespace_name
from activities.storage import VolumePlace, copy_folder, folder_usage

if TYPE_CHECKING:
    from activities.kube import KubernetesRuntime

NOMINAL_NFS_SIZE = "1Gi"  # an export has no size of its own; claims need one


def persistent_volume_name(place: VolumePlace) -> str:
    # Cluster-scoped: the project goes into the name so two projects' volumes never meet.
    return f"mlcp-{place.project_id}-volume-{place.volume_id}"


def volume_labels(place: VolumePlace) -> dict[str, str]:
    return {**project_labels(place.project_id), LABEL_KIND: "volume", LABEL_RESOURCE_ID: place.volume_id}


def nfs_sub_path(export: str, place: VolumePlace) -> str:
    return f"{export.rstrip('/')}/{place.project_id}/{place.volume_id}"


def persistent_volume_manifest(place: VolumePlace, server: str, export: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": persistent_volume_name(place), "labels": volume_labels(place)},
        "spec": {
            "capacity": {"storage": NOMINAL_NFS_SIZE},
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",  # the platform removes the folder itself
            "storageClassName": "",
            "mountOptions": ["nfsvers=4.1"],
            "nfs": {"server": server, "path": nfs_sub_path(export, place)},
            "claimRef": {
                "namespace": namespace_name(place.project_id),
                "name": volume_claim_name(place.volume_id),
            },
        },
    }


def claim_manifest(place: VolumePlace, storage_class: str, static_volume: str | None = None) -> Manifest:
    size = binary_quantity(place.capacity_gb) if place.capacity_gb else NOMINAL_NFS_SIZE
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": size}},
        "storageClassName": storage_class,
    }
    if static_volume is not None:
        spec["volumeName"] = static_volume
    if place.clone_of and static_volume is None:
        spec["dataSource"] = {"kind": "PersistentVolumeClaim", "name": volume_claim_name(place.clone_of)}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": volume_claim_name(place.volume_id),
            "namespace": namespace_name(place.project_id),
            "labels": volume_labels(place),
            "annotations": {"mlcp.io/bucket": bucket_name(place.project_id, place.volume_id)}
            if place.type == "s3"
            else {},
        },
        "spec": spec,
    }


def identity_secret_manifest(project_id: str, keys: AccessKeys) -> Manifest:
    data = {STORAGE_ACCESS_KEY: keys.access_key, STORAGE_SECRET_KEY: keys.secret_key}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": STORAGE_IDENTITY_SECRET,
            "namespace": namespace_name(project_id),
            "labels": project_labels(project_id),
        },
        "type": "Opaque",
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
    }


class KubernetesStorage:
    def __init__(
        self,
        runtime: KubernetesRuntime,
        *,
        nfs_server: str = "",
        nfs_path: str = "/exports/mlcp",
        nfs_storage_class: str = "",
        nfs_mount: Path | None = None,
        s3_storage_class: str = "",
    ) -> None:
        self._kube = runtime
        self._server = nfs_server
        self._export = nfs_path
        self._storage_class = nfs_storage_class
        self._mount = nfs_mount
        self._s3_class = s3_storage_class

    def _folder(self, place: VolumePlace) -> Path | None:
        return None if self._mount is None else self._mount / place.project_id / place.volume_id

    def ensure_volume(self, place: VolumePlace) -> None:
        if place.type == "s3":
            if self._s3_class:
                self._kube.apply_object(claim_manifest(place, self._s3_class))
            return
        if self._storage_class:
            self._kube.apply_object(claim_manifest(place, self._storage_class))
            return
        if not self._server:
            raise ValueError(
                "NFS volumes on Kubernetes need MLCP_NFS_SERVER (static volumes) or MLCP_NFS_STORAGE_CLASS"
            )
        folder = self._folder(place)
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True, mode=0o777)
        volume = persistent_volume_manifest(place, self._server, self._export)
        self._kube.apply_object(volume)
        self._kube.apply_object(claim_manifest(place, "", static_volume=volume["metadata"]["name"]))

    def delete_volume(self, place: VolumePlace) -> None:
        namespace = namespace_name(place.project_id)
        self._kube.delete_object("PersistentVolumeClaim", namespace, volume_claim_name(place.volume_id))
        if place.type == "nfs" and not self._storage_class:
            self._kube.delete_object("PersistentVolume", "", persistent_volume_name(place))
        folder = self._folder(place)
        if folder is not None:
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(folder)

    def usage_bytes(self, place: VolumePlace) -> int | None:
        folder = self._folder(place)
        if place.type != "nfs" or folder is None:
            return None
        return folder_usage(folder) if folder.is_dir() else 0

    def copy_volume(self, source: VolumePlace, target: VolumePlace) -> bool:
        if self._storage_class:
            return False  # the claim was made with the source as its data source
        source_folder, target_folder = self._folder(source), self._folder(target)
        if source_folder is None or target_folder is None:
            raise ValueError("cloning a static NFS volume needs MLCP_NFS_MOUNT: the worker copies the files")
        copy_folder(source_folder, target_folder)
        return True

    def delete_project_volumes(self, project_id: str) -> None:
        # Claims go with the namespace; static volumes are cluster-scoped and found by their labels.
        for volume in self._kube.list_objects("PersistentVolume", "", project_labels(project_id)):
            self._kube.delete_object("PersistentVolume", "", volume["metadata"]["name"])
        if self._mount is not None:
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(self._mount / project_id)

    def ensure_home(self, username: str) -> str:
        """Homes are folders `homes/<username>` on the NFS export, mounted inline by the pods that ask."""
        if not self._server or self._mount is None:
            raise ValueError(
                "home folders on Kubernetes need MLCP_NFS_SERVER and MLCP_NFS_MOUNT (the worker makes each "
                "home on the export it has mounted)"
            )
        home = self._mount / "homes" / username
        home.mkdir(parents=True, exist_ok=True, mode=0o777)
        return f"{self._server}:{self._export.rstrip('/')}/homes/{username}"

    def store_identity(self, project_id: str, keys: AccessKeys) -> None:
        self._kube.apply_object(identity_secret_manifest(project_id, keys))

    def identity(self, project_id: str) -> AccessKeys | None:
        secret = self._kube.read_object("Secret", namespace_name(project_id), STORAGE_IDENTITY_SECRET)
        if secret is None:
            return None
        data = {key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}
        return AccessKeys(data[STORAGE_ACCESS_KEY], data[STORAGE_SECRET_KEY])

    def delete_identity(self, project_id: str) -> None:
        self._kube.delete_object("Secret", namespace_name(project_id), STORAGE_IDENTITY_SECRET)
