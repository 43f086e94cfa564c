"""Discovery, injected faults and latency, request counters, watch, and the background loop."""

from __future__ import annotations

import time
from typing import Any

from kubernetes import client, dynamic, watch

from tests.kube_double.conftest import NAMESPACE, Cluster, deployment_body, pod_body
from tests.kube_double.double import KubeDouble


def test_discovery_documents(cluster: Cluster) -> None:
    api = cluster.double.api_client
    core_api: Any = client.CoreApi(api)
    apis: Any = client.ApisApi(api)
    assert core_api.get_api_versions().versions == ["v1"]
    groups = {g.name: g.preferred_version.version for g in apis.get_api_versions().groups}
    assert groups["apps"] == "v1" and groups["autoscaling"] == "v2" and groups["networking.k8s.io"] == "v1"
    core = {r.name: r for r in cluster.core.get_api_resources().resources}
    assert core["pods"].namespaced and core["pods"].kind == "Pod" and "pods/log" in core
    assert not core["namespaces"].namespaced
    apps = {r.name for r in cluster.apps.get_api_resources().resources}
    assert {"deployments", "deployments/scale", "deployments/status", "statefulsets"} <= apps
    assert client.VersionApi(api).get_code().git_version == "v1.33.0"


def test_the_dynamic_client_works_from_discovery(cluster: Cluster) -> None:
    resources: Any = dynamic.DynamicClient(cluster.double.api_client).resources
    config_maps = resources.get(api_version="v1", kind="ConfigMap")
    config_maps.create(body={"metadata": {"name": "dyn"}, "data": {"a": "1"}}, namespace=NAMESPACE)
    assert config_maps.get(name="dyn", namespace=NAMESPACE).data.a == "1"
    deployments = resources.get(api_version="apps/v1", kind="Deployment")
    assert deployments.get(namespace=NAMESPACE).items == []


def test_injected_faults_arrive_at_about_the_configured_rate(cluster: Cluster) -> None:
    cluster.double.knobs.error_rate = 0.25
    outcomes: list[int] = []
    for _ in range(400):
        try:
            cluster.core.list_namespaced_config_map(NAMESPACE)
            outcomes.append(200)
        except client.ApiException as error:
            outcomes.append(int(error.status))
    failures = [code for code in outcomes if code != 200]
    assert 0.18 < len(failures) / len(outcomes) < 0.32
    assert set(failures) == {500, 503}
    assert sum(cluster.double.stats.injected_errors.values()) == len(failures)


def test_faults_are_reproducible_and_can_target_one_verb(cluster: Cluster) -> None:
    knobs = cluster.double.knobs
    knobs.error_rate, knobs.error_statuses, knobs.fault_verbs = 1.0, (503,), frozenset({"create"})
    assert cluster.core.list_namespaced_config_map(NAMESPACE).items == []
    try:
        cluster.core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": "c"}})
        raise AssertionError("the create should have been refused")
    except client.ApiException as error:
        assert error.status == 503 and '"reason": "ServiceUnavailable"' in str(error.body)

    def pattern(seed: int) -> list[bool]:
        cluster.double.reseed(seed)
        knobs.error_rate, knobs.fault_verbs = 0.5, None
        results = []
        for _ in range(20):
            try:
                cluster.core.read_namespace(NAMESPACE)
                results.append(True)
            except client.ApiException:
                results.append(False)
        return results

    assert pattern(7) == pattern(7)


def test_latency_is_added_to_requests(cluster: Cluster) -> None:
    cluster.double.knobs.latency_seconds = 0.002
    cluster.core.list_namespace()
    cluster.core.read_namespace(NAMESPACE)
    assert cluster.double.stats.delayed_requests == 2


def test_requests_are_counted_per_verb_and_resource(cluster: Cluster) -> None:
    before = cluster.double.request_count()
    cluster.core.create_namespaced_pod(NAMESPACE, pod_body("p"))
    cluster.core.read_namespaced_pod("p", NAMESPACE)
    cluster.core.list_namespaced_pod(NAMESPACE)
    cluster.core.list_namespaced_pod(NAMESPACE)
    cluster.core.patch_namespaced_pod("p", NAMESPACE, {"metadata": {"labels": {"a": "b"}}})
    cluster.core.delete_namespaced_pod("p", NAMESPACE)
    double = cluster.double
    assert double.request_count() - before == 6
    assert double.request_count("list", "pods") == 2
    assert double.request_count("create") == 2  # the fixture created the namespace
    assert double.request_count("create", "pods") == double.request_count("patch", "pods") == 1
    assert double.stats.by_verb["delete"] == 1


def test_watch_streams_changes(cluster: Cluster) -> None:
    cluster.core.create_namespaced_config_map(
        NAMESPACE, {"metadata": {"name": "before", "labels": {"w": "1"}}}
    )
    listed = cluster.core.list_namespaced_config_map(NAMESPACE)
    cluster.core.create_namespaced_config_map(
        NAMESPACE, {"metadata": {"name": "after", "labels": {"w": "1"}}}
    )
    cluster.core.patch_namespaced_config_map("after", NAMESPACE, {"data": {"a": "1"}})
    cluster.core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": "unlabelled"}})
    cluster.core.delete_namespaced_config_map("after", NAMESPACE)
    stream = watch.Watch().stream(
        cluster.core.list_namespaced_config_map,
        NAMESPACE,
        label_selector="w=1",
        resource_version=listed.metadata.resource_version,
        timeout_seconds=1,
    )
    seen = []
    for event in stream:
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 3:
            break
    assert seen == [("ADDED", "after"), ("MODIFIED", "after"), ("DELETED", "after")]


def test_watch_from_now_starts_with_what_exists(cluster: Cluster) -> None:
    cluster.core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": "existing"}})
    watcher = watch.Watch()
    for event in watcher.stream(cluster.core.list_namespaced_config_map, NAMESPACE, timeout_seconds=1):
        assert (event["type"], event["object"].metadata.name) == ("ADDED", "existing")
        watcher.stop()


def test_the_background_loop_moves_the_cluster_without_settle(kube_double: KubeDouble) -> None:
    apps: Any = client.AppsV1Api(kube_double.api_client)
    apps.create_namespaced_deployment("default", deployment_body("web", replicas=1))
    deadline = time.monotonic() + 5
    ready = None
    while ready != 1 and time.monotonic() < deadline:  # polls, as the platform's runtime will
        time.sleep(0.005)
        status = apps.read_namespaced_deployment("web", "default").status
        ready = status.ready_replicas if status else None
    assert ready == 1


async def test_the_async_client_works_too(kube_double: KubeDouble) -> None:
    from kubernetes.aio import client as async_client

    async with async_client.ApiClient(async_client.Configuration(host=kube_double.url)) as api:
        core: Any = async_client.CoreV1Api(api)
        await core.create_namespaced_config_map("default", {"metadata": {"name": "from-async"}})
        listed = await core.list_namespaced_config_map("default")
        assert [c.metadata.name for c in listed.items] == ["from-async"]
        try:
            await core.read_namespaced_config_map("missing", "default")
            raise AssertionError("expected a 404")
        except async_client.ApiException as error:
            assert error.status == 404
