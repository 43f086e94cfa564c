"""The four patch flavours, and server-side apply's create-then-update, idempotence and field ownership."""

from __future__ import annotations

from typing import Any

from tests.kube_double.conftest import NAMESPACE, Cluster, deployment_body, status_of

MERGE = "application/merge-patch+json"
APPLY = "application/apply-patch+yaml"


def config_map(data: dict[str, str], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "labels": labels or {}},
        "data": data,
    }


def apply(cluster: Cluster, body: dict[str, Any], manager: str = "mlcp") -> tuple[Any, int]:
    response = cluster.core.patch_namespaced_config_map_with_http_info(
        "settings", NAMESPACE, body, field_manager=manager, _content_type=APPLY
    )
    data, status, _headers = response
    return data, status


def test_merge_patch_replaces_lists_and_null_deletes(cluster: Cluster) -> None:
    cluster.apps.create_namespaced_deployment(NAMESPACE, deployment_body("web"))
    patch = {
        "metadata": {"labels": {"app": None, "team": "ml"}},
        "spec": {"template": {"spec": {"containers": [{"name": "main", "image": "nginx:1.27"}]}}},
    }
    patched = cluster.apps.patch_namespaced_deployment("web", NAMESPACE, patch, _content_type=MERGE)
    assert patched.metadata.labels == {"team": "ml"}
    container = patched.spec.template.spec.containers[0]
    assert container.image == "nginx:1.27" and container.command is None  # the list was replaced whole


def test_strategic_merge_patch_merges_containers_by_name(cluster: Cluster) -> None:
    cluster.apps.create_namespaced_deployment(NAMESPACE, deployment_body("web"))
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "nginx:1.27"}]}}}}
    patched = cluster.apps.patch_namespaced_deployment("web", NAMESPACE, patch)  # the client's default type
    container = patched.spec.template.spec.containers[0]
    assert container.image == "nginx:1.27" and container.command == ["sleep", "infinity"]
    sidecar = {"spec": {"template": {"spec": {"containers": [{"name": "log", "image": "fluent-bit:3"}]}}}}
    patched = cluster.apps.patch_namespaced_deployment("web", NAMESPACE, sidecar)
    assert [c.name for c in patched.spec.template.spec.containers] == ["main", "log"]


def test_json_patch(cluster: Cluster) -> None:
    cluster.core.create_namespaced_config_map(NAMESPACE, config_map({"a": "1", "b": "2"}))
    operations = [
        {"op": "test", "path": "/data/a", "value": "1"},
        {"op": "replace", "path": "/data/a", "value": "10"},
        {"op": "remove", "path": "/data/b"},
        {"op": "add", "path": "/metadata/annotations", "value": {"example.com/owner": "ml"}},
        {"op": "replace", "path": "/metadata/annotations/example.com~1owner", "value": "platform"},
        {"op": "copy", "from": "/data/a", "path": "/data/c"},
    ]
    patched = cluster.core.patch_namespaced_config_map("settings", NAMESPACE, operations)
    assert patched.data == {"a": "10", "c": "10"}
    assert patched.metadata.annotations == {"example.com/owner": "platform"}
    failing = [{"op": "test", "path": "/data/a", "value": "wrong"}]
    assert status_of(lambda: cluster.core.patch_namespaced_config_map("settings", NAMESPACE, failing)) == 422
    missing = [{"op": "remove", "path": "/data/nothing"}]
    assert status_of(lambda: cluster.core.patch_namespaced_config_map("settings", NAMESPACE, missing)) == 422


def test_patching_a_missing_object_is_not_found(cluster: Cluster) -> None:
    assert status_of(lambda: cluster.core.patch_namespaced_config_map("nope", NAMESPACE, {"data": {}})) == 404


def test_server_side_apply_creates_then_updates(cluster: Cluster) -> None:
    created, created_status = apply(cluster, config_map({"a": "1"}))
    updated, updated_status = apply(cluster, config_map({"a": "2"}))
    assert (created_status, updated_status) == (201, 200)
    assert updated.metadata.uid == created.metadata.uid and updated.data == {"a": "2"}
    manager = updated.metadata.managed_fields[0]
    assert (manager.manager, manager.operation) == ("mlcp", "Apply")


def test_server_side_apply_is_idempotent(cluster: Cluster) -> None:
    first, _ = apply(cluster, config_map({"a": "1"}, {"app": "web"}))
    second, status = apply(cluster, config_map({"a": "1"}, {"app": "web"}))
    assert status == 200
    assert second.metadata.uid == first.metadata.uid
    assert second.metadata.resource_version == first.metadata.resource_version
    assert len(cluster.core.list_namespaced_config_map(NAMESPACE).items) == 1


def test_server_side_apply_removes_fields_the_manager_dropped(cluster: Cluster) -> None:
    apply(cluster, config_map({"a": "1", "b": "2"}, {"app": "web", "old": "yes"}))
    cluster.core.patch_namespaced_config_map("settings", NAMESPACE, {"data": {"theirs": "kept"}})
    reapplied, _ = apply(cluster, config_map({"a": "1"}, {"app": "web"}))
    assert reapplied.data == {"a": "1", "theirs": "kept"}
    assert reapplied.metadata.labels == {"app": "web"}


def test_server_side_apply_needs_a_field_manager_and_the_right_kind(cluster: Cluster) -> None:
    no_manager = lambda: cluster.core.patch_namespaced_config_map(  # noqa: E731
        "settings", NAMESPACE, config_map({}), _content_type=APPLY
    )
    assert status_of(no_manager) == 400
    wrong_kind = {**config_map({}), "kind": "Secret"}
    assert status_of(lambda: apply(cluster, wrong_kind)) == 400


def test_server_side_apply_of_a_deployment(cluster: Cluster) -> None:
    body = {"apiVersion": "apps/v1", "kind": "Deployment", **deployment_body("web")}
    response = cluster.apps.patch_namespaced_deployment_with_http_info(
        "web", NAMESPACE, body, field_manager="mlcp", force=True, _content_type=APPLY
    )
    data, status, _headers = response
    assert status == 201 and data.spec.replicas == 2
    body["spec"]["replicas"] = 4
    again = cluster.apps.patch_namespaced_deployment(
        "web", NAMESPACE, body, field_manager="mlcp", _content_type=APPLY
    )
    assert again.spec.replicas == 4 and again.metadata.generation == 2
