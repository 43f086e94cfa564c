"""Owner-reference garbage collection with each propagation policy, and namespace deletion."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from tests.kube_double.conftest import NAMESPACE, Cluster, deployment_body, status_of


def owned_config_map(cluster: Cluster, name: str, owner: Any | None = None) -> Any:
    metadata: dict[str, Any] = {"name": name}
    if owner is not None:
        metadata["ownerReferences"] = [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": owner.metadata.name,
                "uid": owner.metadata.uid,
                "blockOwnerDeletion": True,
            }
        ]
    return cluster.core.create_namespaced_config_map(NAMESPACE, {"metadata": metadata})


def names(cluster: Cluster) -> list[str]:
    return [c.metadata.name for c in cluster.core.list_namespaced_config_map(NAMESPACE).items]


def test_background_deletion_cascades_through_owner_chains(cluster: Cluster) -> None:
    root = owned_config_map(cluster, "root")
    child = owned_config_map(cluster, "child", root)
    owned_config_map(cluster, "grandchild", child)
    owned_config_map(cluster, "bystander")
    cluster.core.delete_namespaced_config_map("root", NAMESPACE)
    assert names(cluster) == ["bystander", "child", "grandchild"]  # the collector has not run yet
    cluster.settle()
    assert names(cluster) == ["bystander"]


def test_orphan_deletion_keeps_dependents_without_the_reference(cluster: Cluster) -> None:
    root = owned_config_map(cluster, "root")
    owned_config_map(cluster, "child", root)
    cluster.core.delete_namespaced_config_map("root", NAMESPACE, propagation_policy="Orphan")
    cluster.settle()
    assert names(cluster) == ["child"]
    assert cluster.core.read_namespaced_config_map("child", NAMESPACE).metadata.owner_references is None


def test_foreground_deletion_removes_dependents_first(cluster: Cluster) -> None:
    root = owned_config_map(cluster, "root")
    owned_config_map(cluster, "child", root)
    options = client.V1DeleteOptions(propagation_policy="Foreground")
    deleting = cluster.core.delete_namespaced_config_map("root", NAMESPACE, body=options)
    assert deleting["metadata"]["finalizers"] == ["foregroundDeletion"]
    assert cluster.core.read_namespaced_config_map("root", NAMESPACE).metadata.deletion_timestamp is not None
    cluster.settle()
    assert names(cluster) == []


def test_an_object_with_a_surviving_owner_is_kept(cluster: Cluster) -> None:
    first, second = owned_config_map(cluster, "first"), owned_config_map(cluster, "second")
    both = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": o.metadata.name, "uid": o.metadata.uid}
        for o in (first, second)
    ]
    cluster.core.create_namespaced_secret(
        NAMESPACE, {"metadata": {"name": "shared", "ownerReferences": both}}
    )
    cluster.core.delete_namespaced_config_map("first", NAMESPACE)
    cluster.settle()
    kept = cluster.core.read_namespaced_secret("shared", NAMESPACE)
    assert [ref.name for ref in kept.metadata.owner_references] == ["second"]


def test_deleting_a_deployment_removes_its_replica_sets_and_pods(cluster: Cluster) -> None:
    cluster.apps.create_namespaced_deployment(NAMESPACE, deployment_body("web", replicas=2))
    cluster.settle()
    assert len(cluster.core.list_namespaced_pod(NAMESPACE).items) == 2
    cluster.apps.delete_namespaced_deployment("web", NAMESPACE)
    cluster.settle()
    assert cluster.apps.list_namespaced_replica_set(NAMESPACE).items == []
    assert cluster.core.list_namespaced_pod(NAMESPACE).items == []


def test_namespace_deletion_removes_everything_in_it(cluster: Cluster) -> None:
    cluster.core.create_namespace({"metadata": {"name": "doomed"}})
    cluster.core.create_namespaced_config_map("doomed", {"metadata": {"name": "c"}})
    cluster.apps.create_namespaced_deployment("doomed", deployment_body("web"))
    cluster.core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": "elsewhere"}})
    cluster.settle()
    terminating = cluster.core.delete_namespace("doomed")
    assert terminating["status"]["phase"] == "Terminating"
    refused = status_of(
        lambda: cluster.core.create_namespaced_config_map("doomed", {"metadata": {"name": "d"}})
    )
    assert refused == 403
    assert status_of(lambda: cluster.core.delete_namespace("doomed")) == 409
    cluster.settle()
    assert status_of(lambda: cluster.core.read_namespace("doomed")) == 404
    assert cluster.core.list_namespaced_config_map("doomed").items == []
    assert cluster.core.list_namespaced_pod("doomed").items == []
    assert names(cluster) == ["elsewhere"]
    cluster.core.create_namespace({"metadata": {"name": "doomed"}})  # the name is free again
