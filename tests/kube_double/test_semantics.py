"""Status bodies, resource versions, conflicts, validation, selectors, paging and deletion semantics."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client

from tests.kube_double.conftest import NAMESPACE, Cluster, deployment_body, pod_body, status_of


def failure_of(call: Any) -> tuple[int, dict[str, Any]]:
    try:
        call()
    except client.ApiException as error:
        return int(error.status), json.loads(str(error.body))
    raise AssertionError("the call was expected to fail")


def test_not_found_carries_a_status_body(cluster: Cluster) -> None:
    code, body = failure_of(lambda: cluster.apps.read_namespaced_deployment("ghost", NAMESPACE))
    assert code == 404
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'deployments.apps "ghost" not found',
        "reason": "NotFound",
        "code": 404,
        "details": {"name": "ghost", "kind": "deployments", "group": "apps"},
    }


def test_objects_in_a_missing_namespace_are_not_found(cluster: Cluster) -> None:
    code, body = failure_of(
        lambda: cluster.core.create_namespaced_config_map("nowhere", {"metadata": {"name": "c"}})
    )
    assert code == 404 and body["details"] == {"name": "nowhere", "kind": "namespaces"}
    assert status_of(lambda: cluster.core.read_namespaced_config_map("c", "nowhere")) == 404
    assert status_of(lambda: cluster.core.delete_namespaced_config_map("c", "nowhere")) == 404
    assert cluster.core.list_namespaced_config_map("nowhere").items == []  # as the real API answers


def test_creating_twice_is_already_exists(cluster: Cluster) -> None:
    cluster.core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": "c"}})
    code, body = failure_of(
        lambda: cluster.core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": "c"}})
    )
    assert (code, body["reason"], body["details"]["name"], body["details"]["kind"]) == (
        409,
        "AlreadyExists",
        "c",
        "configmaps",
    )


@pytest.mark.parametrize("name", ["Upper", "under_score", "-leading", "x" * 254, ""])
def test_object_names_must_be_dns_subdomains(cluster: Cluster, name: str) -> None:
    code, body = failure_of(
        lambda: cluster.core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": name}})
    )
    assert code == 422 and body["reason"] == "Invalid"
    assert body["details"]["causes"][0]["field"] == "metadata.name"


@pytest.mark.parametrize("create", ["namespace", "service"])
def test_namespace_and_service_names_must_be_dns_labels(cluster: Cluster, create: str) -> None:
    if create == "namespace":
        code, body = failure_of(lambda: cluster.core.create_namespace({"metadata": {"name": "a.b"}}))
    else:
        service = {"metadata": {"name": "a.b"}, "spec": {"ports": [{"port": 80}]}}
        code, body = failure_of(lambda: cluster.core.create_namespaced_service(NAMESPACE, service))
    assert code == 422 and "RFC 1123 label" in body["message"]


def test_invalid_specs_name_the_field(cluster: Cluster) -> None:
    no_image = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "main"}]}}
    code, body = failure_of(lambda: cluster.core.create_namespaced_pod(NAMESPACE, no_image))
    assert code == 422 and body["details"]["causes"][0]["field"] == "spec.containers[0].image"
    mismatched = deployment_body("web")
    mismatched["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    code, body = failure_of(lambda: cluster.apps.create_namespaced_deployment(NAMESPACE, mismatched))
    assert code == 422 and "`selector` does not match template `labels`" in body["message"]


def test_resource_versions_increase_across_all_objects(cluster: Cluster) -> None:
    versions = [
        int(
            cluster.core.create_namespaced_config_map(
                NAMESPACE, {"metadata": {"name": f"c{i}"}}
            ).metadata.resource_version
        )
        for i in range(3)
    ]
    secret = cluster.core.create_namespaced_secret(NAMESPACE, {"metadata": {"name": "s"}})
    assert versions == sorted(versions) and int(secret.metadata.resource_version) > versions[-1]
    listed = cluster.core.list_namespaced_config_map(NAMESPACE)
    assert int(listed.metadata.resource_version) >= int(secret.metadata.resource_version)


def test_replace_with_a_stale_resource_version_conflicts(cluster: Cluster) -> None:
    original = cluster.core.create_namespaced_config_map(
        NAMESPACE, {"metadata": {"name": "c"}, "data": {"a": "1"}}
    )
    cluster.core.patch_namespaced_config_map("c", NAMESPACE, {"data": {"a": "2"}})
    original.data = {"a": "3"}
    code, body = failure_of(lambda: cluster.core.replace_namespaced_config_map("c", NAMESPACE, original))
    assert (code, body["reason"]) == (409, "Conflict")
    assert "the object has been modified" in body["message"]
    original.metadata.resource_version = None  # an unconditional update is allowed
    assert cluster.core.replace_namespaced_config_map("c", NAMESPACE, original).data == {"a": "3"}


def test_a_patch_naming_a_stale_resource_version_conflicts(cluster: Cluster) -> None:
    created = cluster.core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": "c"}})
    cluster.core.patch_namespaced_config_map("c", NAMESPACE, {"data": {"a": "1"}})
    stale = {"metadata": {"resourceVersion": created.metadata.resource_version}, "data": {"a": "2"}}
    assert status_of(lambda: cluster.core.patch_namespaced_config_map("c", NAMESPACE, stale)) == 409


def test_generation_moves_with_the_spec_only(cluster: Cluster) -> None:
    created = cluster.apps.create_namespaced_deployment(NAMESPACE, deployment_body("web"))
    assert created.metadata.generation == 1
    labelled = cluster.apps.patch_namespaced_deployment(
        "web", NAMESPACE, {"metadata": {"labels": {"x": "y"}}}
    )
    assert labelled.metadata.generation == 1
    scaled = cluster.apps.patch_namespaced_deployment("web", NAMESPACE, {"spec": {"replicas": 5}})
    assert scaled.metadata.generation == 2
    unchanged = cluster.apps.patch_namespaced_deployment("web", NAMESPACE, {"spec": {"replicas": 5}})
    assert unchanged.metadata.resource_version == scaled.metadata.resource_version  # no-op writes nothing


def test_immutable_fields_are_refused(cluster: Cluster) -> None:
    cluster.apps.create_namespaced_deployment(NAMESPACE, deployment_body("web"))
    patch = {
        "spec": {
            "selector": {"matchLabels": {"app": "web", "new": "x"}},
            "template": {"metadata": {"labels": {"app": "web", "new": "x"}}},
        }
    }
    code, body = failure_of(lambda: cluster.apps.patch_namespaced_deployment("web", NAMESPACE, patch))
    assert code == 422 and "field is immutable" in body["message"]
    cluster.core.create_namespaced_pod(NAMESPACE, pod_body("p"))
    code, _ = failure_of(
        lambda: cluster.core.patch_namespaced_pod("p", NAMESPACE, {"spec": {"hostname": "h"}})
    )
    assert code == 422
    image = {"spec": {"containers": [{"name": "main", "image": "busybox:1.37"}]}}
    assert cluster.core.patch_namespaced_pod("p", NAMESPACE, image).spec.containers[0].image == "busybox:1.37"


def test_label_selectors(cluster: Cluster) -> None:
    for name, labels in [
        ("a", {"app": "web", "tier": "front"}),
        ("b", {"app": "web", "tier": "back"}),
        ("c", {"app": "db"}),
        ("d", {}),
    ]:
        cluster.core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": name, "labels": labels}})

    def names(selector: str) -> list[str]:
        items = cluster.core.list_namespaced_config_map(NAMESPACE, label_selector=selector).items
        return [i.metadata.name for i in items]

    assert names("app=web") == ["a", "b"]
    assert names("app==web,tier=back") == ["b"]
    assert names("app!=web") == ["c", "d"]
    assert names("tier in (front, back)") == ["a", "b"]
    assert names("app notin (web)") == ["c", "d"]
    assert names("tier") == ["a", "b"]
    assert names("!tier") == ["c", "d"]
    assert names("app,!tier") == ["c"]
    assert names("") == ["a", "b", "c", "d"]
    assert status_of(lambda: names("app in web")) == 400


def test_field_selectors(cluster: Cluster) -> None:
    for name in ("one", "two"):
        cluster.core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": name}})
    by_name = cluster.core.list_namespaced_config_map(NAMESPACE, field_selector="metadata.name=two")
    assert [i.metadata.name for i in by_name.items] == ["two"]
    others = cluster.core.list_config_map_for_all_namespaces(
        field_selector=f"metadata.namespace!={NAMESPACE}"
    )
    assert all(i.metadata.namespace != NAMESPACE for i in others.items)


def test_paging_with_limit_and_continue(cluster: Cluster) -> None:
    for i in range(5):
        cluster.core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": f"c{i}"}})
    first = cluster.core.list_namespaced_config_map(NAMESPACE, limit=2)
    assert [i.metadata.name for i in first.items] == ["c0", "c1"]
    assert first.metadata.remaining_item_count == 3
    rest = cluster.core.list_namespaced_config_map(NAMESPACE, limit=10, _continue=first.metadata._continue)
    assert [i.metadata.name for i in rest.items] == ["c2", "c3", "c4"] and not rest.metadata._continue


def test_generate_name(cluster: Cluster) -> None:
    created = cluster.core.create_namespaced_config_map(NAMESPACE, {"metadata": {"generateName": "cfg-"}})
    assert created.metadata.name.startswith("cfg-") and len(created.metadata.name) == 9


def test_status_subresource(cluster: Cluster) -> None:
    cluster.apps.create_namespaced_deployment(
        NAMESPACE, {**deployment_body("web"), "status": {"replicas": 9}}
    )
    assert (
        cluster.apps.read_namespaced_deployment("web", NAMESPACE).status is None
    )  # status dropped on create
    ignored = cluster.apps.patch_namespaced_deployment("web", NAMESPACE, {"status": {"replicas": 7}})
    assert ignored.status is None
    patched = cluster.apps.patch_namespaced_deployment_status(
        "web", NAMESPACE, {"status": {"replicas": 7}, "spec": {"replicas": 99}}
    )
    assert patched.status.replicas == 7 and patched.spec.replicas == 2
    current = cluster.apps.read_namespaced_deployment_status("web", NAMESPACE)
    current.status.ready_replicas = 1
    replaced = cluster.apps.replace_namespaced_deployment_status("web", NAMESPACE, current)
    assert replaced.status.ready_replicas == 1 and replaced.status.replicas == 7


def test_scale_subresource(cluster: Cluster) -> None:
    cluster.apps.create_namespaced_deployment(NAMESPACE, deployment_body("web", replicas=1))
    scale = cluster.apps.read_namespaced_deployment_scale("web", NAMESPACE)
    assert scale.spec.replicas == 1 and scale.status.selector == "app=web"
    cluster.apps.patch_namespaced_deployment_scale("web", NAMESPACE, {"spec": {"replicas": 3}})
    assert cluster.apps.read_namespaced_deployment("web", NAMESPACE).spec.replicas == 3


def test_delete_collection_with_a_selector(cluster: Cluster) -> None:
    for name, app in [("a", "x"), ("b", "x"), ("c", "y")]:
        cluster.core.create_namespaced_config_map(
            NAMESPACE, {"metadata": {"name": name, "labels": {"app": app}}}
        )
    result = cluster.core.delete_collection_namespaced_config_map(NAMESPACE, label_selector="app=x")
    assert result.status == "Success"
    assert [c.metadata.name for c in cluster.core.list_namespaced_config_map(NAMESPACE).items] == ["c"]


def test_delete_preconditions(cluster: Cluster) -> None:
    cluster.core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": "c"}})
    stale = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid="not-the-uid"))
    assert status_of(lambda: cluster.core.delete_namespaced_config_map("c", NAMESPACE, body=stale)) == 409
    cluster.core.delete_namespaced_config_map("c", NAMESPACE)


def test_finalizers_hold_deletion_until_cleared(cluster: Cluster) -> None:
    cluster.core.create_namespaced_config_map(
        NAMESPACE, {"metadata": {"name": "c", "finalizers": ["example.com/keep"]}}
    )
    cluster.core.delete_namespaced_config_map("c", NAMESPACE)
    held = cluster.core.read_namespaced_config_map("c", NAMESPACE)
    assert held.metadata.deletion_timestamp is not None
    cluster.core.patch_namespaced_config_map("c", NAMESPACE, {"metadata": {"finalizers": None}})
    assert status_of(lambda: cluster.core.read_namespaced_config_map("c", NAMESPACE)) == 404


def test_dry_run_changes_nothing(cluster: Cluster) -> None:
    cluster.core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": "c"}}, dry_run="All")
    assert status_of(lambda: cluster.core.read_namespaced_config_map("c", NAMESPACE)) == 404


def test_unknown_resources_are_not_found(cluster: Cluster) -> None:
    custom = client.CustomObjectsApi(cluster.double.api_client)
    code, body = failure_of(lambda: custom.list_cluster_custom_object("example.com", "v1", "widgets"))
    assert (code, body["reason"]) == (404, "NotFound")
