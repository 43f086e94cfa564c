"""Create, get, list, replace, patch and delete every resource kind through the official client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client

from tests.kube_double.conftest import NAMESPACE, Cluster, deployment_body, job_body, pod_body, status_of


@dataclass(frozen=True)
class Kind:
    api: str
    suffix: str
    body: dict[str, Any]


KINDS = [
    Kind("core", "pod", pod_body("web")),
    Kind(
        "core",
        "service",
        {"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}},
    ),
    Kind("core", "secret", {"metadata": {"name": "creds"}, "stringData": {"token": "s3cret"}}),
    Kind("core", "config_map", {"metadata": {"name": "settings"}, "data": {"mode": "fast"}}),
    Kind(
        "core",
        "persistent_volume_claim",
        {
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}},
        },
    ),
    Kind("core", "resource_quota", {"metadata": {"name": "compute"}, "spec": {"hard": {"pods": "10"}}}),
    Kind(
        "core",
        "event",
        {
            "metadata": {"name": "web.1"},
            "reason": "Tested",
            "message": "hello",
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": NAMESPACE},
        },
    ),
    Kind("apps", "deployment", deployment_body("web")),
    Kind(
        "apps",
        "stateful_set",
        {**deployment_body("db"), "spec": {**deployment_body("db")["spec"], "serviceName": "db"}},
    ),
    Kind("batch", "job", job_body("train", ["echo", "hi"])),
    Kind(
        "networking",
        "network_policy",
        {"metadata": {"name": "deny"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}},
    ),
    Kind(
        "networking",
        "ingress",
        {"metadata": {"name": "web"}, "spec": {"rules": [{"host": "web.example.com"}]}},
    ),
    Kind(
        "autoscaling",
        "horizontal_pod_autoscaler",
        {
            "metadata": {"name": "web"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1,
                "maxReplicas": 3,
            },
        },
    ),
]


@pytest.mark.parametrize("kind", KINDS, ids=[k.suffix for k in KINDS])
def test_every_verb_on_every_kind(cluster: Cluster, kind: Kind) -> None:
    api = getattr(cluster, kind.api)
    name = kind.body["metadata"]["name"]

    def call(verb: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(api, f"{verb}_namespaced_{kind.suffix}")(*args, **kwargs)

    created = call("create", NAMESPACE, kind.body)
    assert created.metadata.uid and created.metadata.namespace == NAMESPACE
    assert created.metadata.creation_timestamp is not None
    fetched = call("read", name, NAMESPACE)
    assert fetched.metadata.resource_version == created.metadata.resource_version
    assert [i.metadata.name for i in call("list", NAMESPACE).items] == [name]

    fetched.metadata.labels = {**(fetched.metadata.labels or {}), "tier": "gold"}
    replaced = call("replace", name, NAMESPACE, fetched)
    assert replaced.metadata.labels["tier"] == "gold"
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)

    patched = call("patch", name, NAMESPACE, {"metadata": {"annotations": {"owner": "ml"}}})
    assert patched.metadata.annotations == {"owner": "ml"} and patched.metadata.labels["tier"] == "gold"

    call("delete", name, NAMESPACE)
    assert status_of(lambda: call("read", name, NAMESPACE)) == 404
    assert call("list", NAMESPACE).items == []


def test_typed_models_round_trip(cluster: Cluster) -> None:
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="typed", labels={"app": "typed"}),
        spec=client.V1PodSpec(
            containers=[
                client.V1Container(
                    name="main",
                    image="python:3.11",
                    command=["python", "-c", "print(1)"],
                    resources=client.V1ResourceRequirements(requests={"cpu": "500m", "memory": "1Gi"}),
                )
            ]
        ),
    )
    created = cluster.core.create_namespaced_pod(NAMESPACE, pod)
    assert created.spec.containers[0].resources.requests == {"cpu": "500m", "memory": "1Gi"}
    assert created.status.phase == "Pending" and created.status.qos_class == "Burstable"
    assert created.spec.restart_policy == "Always"


def test_secret_string_data_is_stored_base64(cluster: Cluster) -> None:
    secret = cluster.core.create_namespaced_secret(
        NAMESPACE, {"metadata": {"name": "s"}, "stringData": {"token": "abc"}}
    )
    assert secret.data == {"token": "YWJj"} and secret.string_data is None and secret.type == "Opaque"


def test_namespaces_and_cluster_wide_lists(cluster: Cluster) -> None:
    cluster.core.create_namespace({"metadata": {"name": "team-b"}})
    namespace = cluster.core.read_namespace("team-b")
    assert namespace.status.phase == "Active"
    assert namespace.metadata.labels["kubernetes.io/metadata.name"] == "team-b"
    names = {n.metadata.name for n in cluster.core.list_namespace().items}
    assert {"default", "kube-system", NAMESPACE, "team-b"} <= names
    cluster.core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": "one"}})
    cluster.core.create_namespaced_config_map("team-b", {"metadata": {"name": "two"}})
    everywhere = cluster.core.list_config_map_for_all_namespaces()
    assert {(c.metadata.namespace, c.metadata.name) for c in everywhere.items} == {
        (NAMESPACE, "one"),
        ("team-b", "two"),
    }
    patched = cluster.core.patch_namespace("team-b", {"metadata": {"labels": {"project": "p1"}}})
    assert patched.metadata.labels["project"] == "p1"


def test_nodes_reflect_the_capacity_knob(cluster: Cluster) -> None:
    nodes = cluster.core.list_node().items
    assert [n.metadata.name for n in nodes] == ["node-0", "node-1"]
    assert nodes[0].status.allocatable["nvidia.com/gpu"] == "4"
    assert nodes[0].status.addresses[0].address == "10.0.0.1"


def test_delete_answers_like_the_real_api(cluster: Cluster) -> None:
    cluster.core.create_namespaced_pod(NAMESPACE, pod_body("p"))
    deleted_pod: Any = cluster.core.delete_namespaced_pod("p", NAMESPACE)
    assert type(deleted_pod).__name__ == "V1Pod"  # the typed model, as for a real API server
    assert deleted_pod.metadata.name == "p"
    cluster.apps.create_namespaced_deployment(NAMESPACE, deployment_body("web"))
    status = cluster.apps.delete_namespaced_deployment("web", NAMESPACE)
    assert status["kind"] == "Status" and status["status"] == "Success"
    assert status["details"] == {
        "name": "web",
        "kind": "deployments",
        "group": "apps",
        "uid": status["details"]["uid"],
    }
