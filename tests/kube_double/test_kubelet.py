"""Scheduling against node capacity, image pulls, crash loops, logs, services and quotas."""

from __future__ import annotations

from typing import Any

from tests.kube_double.conftest import NAMESPACE, Cluster, deployment_body, pod_body, status_of
from tests.kube_double.knobs import NodePool


def read_pod(cluster: Cluster, name: str) -> Any:
    return cluster.core.read_namespaced_pod(name, NAMESPACE)


def scheduled(pod: Any) -> Any:
    return next(c for c in pod.status.conditions if c.type == "PodScheduled")


def events_for(cluster: Cluster, name: str) -> list[tuple[str, str, str]]:
    items = cluster.core.list_namespaced_event(NAMESPACE, field_selector=f"involvedObject.name={name}").items
    return [(e.type, e.reason, e.message) for e in items]


def test_a_gpu_pod_asking_for_more_than_is_free_stays_pending(cluster: Cluster) -> None:
    cluster.double.set_nodes(NodePool(count=2, gpu=4))
    cluster.core.create_namespaced_pod(NAMESPACE, pod_body("big", requests={"nvidia.com/gpu": "8"}))
    cluster.settle()
    pod = read_pod(cluster, "big")
    assert pod.status.phase == "Pending" and pod.spec.node_name is None
    condition = scheduled(pod)
    assert (condition.status, condition.reason) == ("False", "Unschedulable")
    assert condition.message == "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    assert events_for(cluster, "big") == [("Warning", "FailedScheduling", condition.message)]


def test_capacity_is_shared_and_freed(cluster: Cluster) -> None:
    cluster.double.set_nodes(NodePool(count=1, gpu=4, cpu="8"))
    for name in ("first", "second"):
        cluster.core.create_namespaced_pod(
            NAMESPACE, pod_body(name, requests={"nvidia.com/gpu": "3", "cpu": "2"})
        )
    cluster.settle()
    assert read_pod(cluster, "first").status.phase == "Running"
    assert read_pod(cluster, "second").status.phase == "Pending"
    cluster.core.delete_namespaced_pod("first", NAMESPACE)
    cluster.settle()
    second = read_pod(cluster, "second")
    assert second.status.phase == "Running" and scheduled(second).status == "True"


def test_node_selector_picks_the_gpu_model(cluster: Cluster) -> None:
    product = "nvidia.com/gpu.product"
    cluster.double.set_nodes(
        NodePool(count=1, labels={product: "V100"}), NodePool(count=1, labels={product: "A100"})
    )
    body = pod_body("train", requests={"nvidia.com/gpu": "1"})
    body["spec"]["nodeSelector"] = {product: "A100"}
    cluster.core.create_namespaced_pod(NAMESPACE, body)
    missing = pod_body("h100", requests={"nvidia.com/gpu": "1"})
    missing["spec"]["nodeSelector"] = {product: "H100"}
    cluster.core.create_namespaced_pod(NAMESPACE, missing)
    cluster.settle()
    assert read_pod(cluster, "train").spec.node_name == "node-1"
    assert "didn't match Pod's node affinity/selector" in scheduled(read_pod(cluster, "h100")).message


def test_image_pull_failure(cluster: Cluster) -> None:
    cluster.double.knobs.image_pull_failures = ["registry.invalid/*"]
    cluster.core.create_namespaced_pod(NAMESPACE, pod_body("p", image="registry.invalid/model:1"))
    cluster.double.step()  # scheduled
    cluster.double.step()  # container creating
    cluster.double.step()
    waiting = read_pod(cluster, "p").status.container_statuses[0].state.waiting
    assert waiting.reason == "ErrImagePull"
    cluster.settle()
    pod = read_pod(cluster, "p")
    assert pod.status.phase == "Pending"
    assert pod.status.container_statuses[0].state.waiting.reason == "ImagePullBackOff"
    reasons = [reason for _, reason, _ in events_for(cluster, "p")]
    assert reasons == ["Scheduled", "Failed", "BackOff"]
    assert status_of(lambda: cluster.core.read_namespaced_pod_log("p", NAMESPACE)) == 400


def test_crash_loop_knob_and_failing_commands(cluster: Cluster) -> None:
    cluster.double.knobs.crash_loop = ["app=broken"]
    cluster.core.create_namespaced_pod(NAMESPACE, pod_body("knob", labels={"app": "broken"}))
    cluster.core.create_namespaced_pod(
        NAMESPACE, pod_body("cmd", command=["sh", "-c", "echo starting; exit 2"])
    )
    cluster.settle()
    for name, code in (("knob", 1), ("cmd", 2)):
        pod = read_pod(cluster, name)
        container = pod.status.container_statuses[0]
        assert pod.status.phase == "Running" and not container.ready
        assert container.state.waiting.reason == "CrashLoopBackOff"
        assert container.last_state.terminated.exit_code == code and container.restart_count == 1
        assert ("Warning", "BackOff") in [(kind, reason) for kind, reason, _ in events_for(cluster, name)]
    assert cluster.core.read_namespaced_pod_log("cmd", NAMESPACE) == "starting\n"


def test_crash_looping_deployment_is_not_available(cluster: Cluster) -> None:
    cluster.double.knobs.crash_loop = ["app=web"]
    cluster.apps.create_namespaced_deployment(NAMESPACE, deployment_body("web", replicas=2))
    cluster.settle()
    status = cluster.apps.read_namespaced_deployment("web", NAMESPACE).status
    assert status.ready_replicas is None and status.unavailable_replicas == 2


def test_logs_need_a_container_name_when_there_are_several(cluster: Cluster) -> None:
    body = pod_body("pair", command=["sh", "-c", "echo from main"])
    body["spec"]["containers"].append(
        {"name": "side", "image": "busybox", "command": ["sh", "-c", "echo side"]}
    )
    cluster.core.create_namespaced_pod(NAMESPACE, body)
    cluster.settle()
    assert status_of(lambda: cluster.core.read_namespaced_pod_log("pair", NAMESPACE)) == 400
    assert cluster.core.read_namespaced_pod_log("pair", NAMESPACE, container="side") == "side\n"
    assert status_of(lambda: cluster.core.read_namespaced_pod_log("pair", NAMESPACE, container="x")) == 400


def test_services_get_cluster_ips_and_node_ports(cluster: Cluster) -> None:
    def service(name: str, kind: str, node_port: int | None = None) -> Any:
        port: dict[str, Any] = {"port": 8888, "targetPort": "http"}
        if node_port:
            port["nodePort"] = node_port
        body = {
            "metadata": {"name": name},
            "spec": {"type": kind, "selector": {"app": name}, "ports": [port]},
        }
        return cluster.core.create_namespaced_service(NAMESPACE, body)

    internal, exposed, other = service("a", "ClusterIP"), service("b", "NodePort"), service("c", "NodePort")
    assert internal.spec.cluster_ip.startswith("10.96.") and internal.spec.ports[0].node_port is None
    ports = [exposed.spec.ports[0].node_port, other.spec.ports[0].node_port]
    assert all(30000 <= p <= 32767 for p in ports) and ports[0] != ports[1]
    assert len({internal.spec.cluster_ip, exposed.spec.cluster_ip, other.spec.cluster_ip}) == 3
    assert status_of(lambda: service("d", "NodePort", node_port=ports[0])) == 422
    assert status_of(lambda: service("e", "NodePort", node_port=8080)) == 422
    assert service("f", "NodePort", node_port=31000).spec.ports[0].node_port == 31000
    replaced = cluster.core.read_namespaced_service("b", NAMESPACE)
    replaced.metadata.labels = {"x": "y"}
    assert (
        cluster.core.replace_namespaced_service("b", NAMESPACE, replaced).spec.ports[0].node_port == ports[0]
    )


def test_resource_quota_admission_and_usage(cluster: Cluster) -> None:
    quota: dict[str, Any] = {
        "metadata": {"name": "compute"},
        "spec": {"hard": {"requests.nvidia.com/gpu": "2", "pods": "5", "requests.cpu": "4"}},
    }
    cluster.core.create_namespaced_resource_quota(NAMESPACE, quota)
    cluster.core.create_namespaced_pod(
        NAMESPACE, pod_body("one", requests={"nvidia.com/gpu": "2", "cpu": "1"})
    )
    refused = status_of(
        lambda: cluster.core.create_namespaced_pod(
            NAMESPACE, pod_body("two", requests={"nvidia.com/gpu": "1", "cpu": "1"})
        )
    )
    assert refused == 403
    assert status_of(lambda: cluster.core.create_namespaced_pod(NAMESPACE, pod_body("none"))) == 403
    cluster.settle()
    status = cluster.core.read_namespaced_resource_quota("compute", NAMESPACE).status
    assert status.used == {"requests.nvidia.com/gpu": "2", "pods": "1", "requests.cpu": "1"}
    assert status.hard == quota["spec"]["hard"]


def test_deployments_over_quota_report_failed_create(cluster: Cluster) -> None:
    cluster.core.create_namespaced_resource_quota(
        NAMESPACE, {"metadata": {"name": "q"}, "spec": {"hard": {"pods": "1"}}}
    )
    cluster.apps.create_namespaced_deployment(NAMESPACE, deployment_body("web", replicas=3))
    cluster.settle()
    assert len(cluster.core.list_namespaced_pod(NAMESPACE).items) == 1
    failures = [
        m
        for kind, reason, m in [
            (e.type, e.reason, e.message) for e in cluster.core.list_namespaced_event(NAMESPACE).items
        ]
        if reason == "FailedCreate"
    ]
    assert len(failures) == 1 and "exceeded quota: q" in failures[0]


def test_settle_ends_while_a_finalizer_holds_a_pod(cluster: Cluster) -> None:
    cluster.double.knobs.pod_start_delay = 60
    body = pod_body("held")
    body["metadata"]["finalizers"] = ["example.com/keep"]
    cluster.core.create_namespaced_pod(NAMESPACE, body)
    cluster.double.settle(advance_clock=False)
    cluster.core.delete_namespaced_pod("held", NAMESPACE)
    cluster.settle()
    held = read_pod(cluster, "held")
    assert held.metadata.deletion_timestamp is not None and held.status.phase == "Pending"
