"""Volumes on the Kubernetes runtime, against the API double: claims and static volumes, the project's S3
identity as a Secret, and what a pod mounting them is given."""

from __future__ import annotations

from pathlib import Path

from activities.kube_volumes import KubernetesStorage
from activities.object_storage import AccessKeys
from activities.storage import VolumePlace
from models.workloads import ResourceRequest, VolumeMount
from tests.activities.kube_harness import NAMESPACE, PROJECT, Kube, pod_spec
from tests.kube_double import resources as r
from tests.specs import one_role_spec

NFS = VolumePlace(project_id=PROJECT, volume_id="v0lume1", type="nfs")


def test_static_nfs_volumes_are_a_volume_and_claim_per_volume_made_and_removed_idempotently(
    kube: Kube, tmp_path: Path
) -> None:
    kube.project()
    storage = KubernetesStorage(
        kube.runtime, nfs_server="nfs.example", nfs_path="/exports/mlcp", nfs_mount=tmp_path
    )
    storage.ensure_volume(NFS)
    storage.ensure_volume(NFS)
    claim = kube.one(r.PVCS, "volume-v0lume1")
    assert claim["spec"]["volumeName"] == f"mlcp-{PROJECT}-volume-v0lume1"
    assert claim["metadata"]["labels"]["mlcp.io/resource-id"] == "v0lume1"
    volume = kube.double.objects(r.PERSISTENT_VOLUMES, None)[0]
    assert volume["spec"]["nfs"] == {"server": "nfs.example", "path": f"/exports/mlcp/{PROJECT}/v0lume1"}
    assert volume["spec"]["claimRef"] == {"namespace": NAMESPACE, "name": "volume-v0lume1"}
    folder = tmp_path / PROJECT / "v0lume1"
    assert folder.is_dir()
    (folder / "a.bin").write_bytes(b"x" * 10)
    assert storage.usage_bytes(NFS) == 10

    clone = NFS.model_copy(update={"volume_id": "c1one", "clone_of": "v0lume1"})
    storage.ensure_volume(clone)
    assert storage.copy_volume(NFS, clone) and (tmp_path / PROJECT / "c1one" / "a.bin").exists()

    storage.delete_volume(NFS)
    storage.delete_volume(NFS)  # absent is success
    assert kube.names(r.PVCS) == ["volume-c1one"] and not folder.exists()
    storage.delete_project_volumes(PROJECT)
    assert kube.double.objects(r.PERSISTENT_VOLUMES, None) == []


def test_a_storage_class_makes_claims_and_clones_from_the_source(kube: Kube) -> None:
    kube.project()
    storage = KubernetesStorage(kube.runtime, nfs_storage_class="nfs-csi")
    storage.ensure_volume(NFS)
    clone = NFS.model_copy(update={"volume_id": "c1one", "clone_of": "v0lume1"})
    storage.ensure_volume(clone)
    spec = kube.one(r.PVCS, "volume-c1one")["spec"]
    assert spec["storageClassName"] == "nfs-csi"
    assert spec["dataSource"] == {"kind": "PersistentVolumeClaim", "name": "volume-v0lume1"}
    assert storage.copy_volume(NFS, clone) is False  # the driver cloned it
    assert storage.usage_bytes(NFS) is None  # not mounted on the worker: it cannot tell


def test_the_identity_is_a_secret_and_pods_get_their_mounts(kube: Kube) -> None:
    kube.project()
    storage = KubernetesStorage(kube.runtime, nfs_server="nfs.example")
    assert storage.identity(PROJECT) is None
    storage.store_identity(PROJECT, AccessKeys("AKIA1", "s3cret"))
    assert storage.identity(PROJECT) == AccessKeys("AKIA1", "s3cret")
    kube.runtime._homes = ("nfs.example", "/exports/mlcp/homes")
    spec = one_role_spec(
        project_id=PROJECT,
        resource_id="c0ntainer1",
        kind="container",
        owner="alice",
        name="box",
        image="busybox",
        resources=ResourceRequest(vcpu=1, ram_gb=1),
        env={"AWS_ENDPOINT_URL": "http://s3.example"},
    ).model_copy(
        update={
            "mounts": [
                VolumeMount(volume_id="v0lume1", mount_path="/data", read_only=True),
                VolumeMount(volume_id="bucket1", volume_type="s3", mount_path="/datasets"),
                VolumeMount(volume_id="home", volume_type="home", mount_path="/home/alice", workdir=True),
            ]
        }
    )
    kube.runtime.apply(spec)
    pod = pod_spec(kube)
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["volume-0"]["persistentVolumeClaim"] == {"claimName": "volume-v0lume1", "readOnly": True}
    assert volumes["home"]["nfs"] == {
        "server": "nfs.example",
        "path": "/exports/mlcp/homes/alice",
        "readOnly": False,
    }
    mounts = {mount["mountPath"]: mount for mount in pod["containers"][0]["volumeMounts"]}
    assert (
        mounts["/data"]["readOnly"] is True
        and "/datasets" not in mounts
        and mounts["/home/alice"]["name"] == "home"
    )
    env = {entry["name"]: entry for entry in pod["containers"][0]["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "mlcp-storage-identity",
        "key": "secret-key",
    }
    assert "value" not in env["AWS_SECRET_ACCESS_KEY"]
    storage.delete_identity(PROJECT)
    assert storage.identity(PROJECT) is None


def test_with_an_s3_csi_driver_the_bucket_claim_is_mounted_too(kube: Kube) -> None:
    kube.project()
    storage = KubernetesStorage(kube.runtime, s3_storage_class="csi-s3")
    bucket = VolumePlace(project_id=PROJECT, volume_id="bucket1", type="s3", capacity_gb=5)
    storage.ensure_volume(bucket)
    claim = kube.one(r.PVCS, "volume-bucket1")
    assert claim["spec"]["storageClassName"] == "csi-s3"
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert claim["metadata"]["annotations"]["mlcp.io/bucket"] == f"mlcp-{PROJECT}-bucket1"
    kube.runtime._s3_claims = True
    spec = one_role_spec(
        project_id=PROJECT,
        resource_id="c0ntainer1",
        kind="container",
        owner="alice",
        name="box",
        image="busybox",
        resources=ResourceRequest(vcpu=1, ram_gb=1),
    ).model_copy(
        update={"mounts": [VolumeMount(volume_id="bucket1", volume_type="s3", mount_path="/datasets")]}
    )
    kube.runtime.apply(spec)
    pod = pod_spec(kube)
    assert pod["volumes"] == [
        {"name": "volume-0", "persistentVolumeClaim": {"claimName": "volume-bucket1", "readOnly": False}}
    ]
    assert pod["containers"][0]["volumeMounts"] == [
        {"name": "volume-0", "mountPath": "/datasets", "readOnly": False}
    ]
