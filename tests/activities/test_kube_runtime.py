"""The Kubernetes runtime over HTTP against the stateful Kubernetes API double: what becomes of projects,
containers and jobs, and how faults and refusals are met."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from kubernetes import client

from activities.kube import DEFAULT_RETRY_DELAYS, KubernetesApiError, KubernetesRuntime
from activities.runtime import LABEL_PROJECT
from config import Settings
from models.lifecycle import Quota
from models.workloads import ProjectEnvironment, ResourceRequest, WorkloadState
from services.kinds import runtime_kinds
from tests.activities.kube_cases import FLOWS, MISSING_IMAGE, Cluster
from tests.activities.kube_harness import (
    CONTAINER,
    JOB,
    NAMESPACE,
    PASSWORD_HASH,
    PROJECT,
    QUOTA,
    Kube,
    status_of,
)
from tests.kube_double import resources as r
from tests.kube_double.double import KubeDouble
from tests.kube_double.knobs import NodePool
from tests.specs import with_main

# Projects.


def test_ensure_project_twice_leaves_one_namespace_quota_and_policy(kube: Kube) -> None:
    kube.project()
    kube.project()
    namespace = kube.one(r.NAMESPACES, NAMESPACE)
    assert namespace["metadata"]["labels"][LABEL_PROJECT] == PROJECT
    assert kube.names(r.RESOURCE_QUOTAS) == ["mlcp-quota"]
    assert kube.one(r.RESOURCE_QUOTAS, "mlcp-quota")["spec"]["hard"] == {
        "requests.nvidia.com/gpu": "8",
        "requests.cpu": "32000m",
        "requests.memory": "128Gi",
    }
    assert kube.names(r.NETWORK_POLICIES) == ["mlcp-isolate"]
    policy = kube.one(r.NETWORK_POLICIES, "mlcp-isolate")["spec"]
    assert policy["podSelector"] == {} and policy["ingress"] == [{"from": [{"podSelector": {}}]}]


def test_a_quota_change_patches_the_quota_and_the_same_quota_changes_nothing(kube: Kube) -> None:
    kube.project()
    before = kube.one(r.RESOURCE_QUOTAS, "mlcp-quota")
    kube.project(Quota(gpu=2, vcpu=8.5, ram_gb=32, storage_gb=50))
    after = kube.one(r.RESOURCE_QUOTAS, "mlcp-quota")
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["spec"]["hard"]["requests.nvidia.com/gpu"] == "2"
    assert after["spec"]["hard"]["requests.cpu"] == "8500m"
    kube.project(Quota(gpu=2, vcpu=8.5, ram_gb=32, storage_gb=50))
    again = kube.one(r.RESOURCE_QUOTAS, "mlcp-quota")
    assert again["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"]


def test_delete_project_removes_everything_and_absent_is_success(kube: Kube) -> None:
    kube.project()
    kube.runtime.apply(CONTAINER)
    kube.settle()
    kube.runtime.delete_project(PROJECT)
    kube.runtime.delete_project(PROJECT)  # terminating: the API answers 409
    kube.settle()
    assert NAMESPACE not in kube.names(r.NAMESPACES)
    assert kube.objects(r.PODS) == [] and kube.objects(r.SERVICES) == []
    kube.runtime.delete_project(PROJECT)  # gone: 404
    assert status_of(kube, CONTAINER).state == WorkloadState.gone


# Containers: what becomes of them.


def test_too_many_gpus_wait_unschedulable_then_run_with_node_port_endpoints(kube: Kube) -> None:
    kube.double.set_nodes(NodePool(count=1, gpu=2))
    kube.project()
    big = with_main(CONTAINER, resources=ResourceRequest(gpu=4, vcpu=4, ram_gb=16))
    assert kube.runtime.apply(big).state == WorkloadState.pending
    kube.settle()
    waiting = status_of(kube, big)
    assert (waiting.state, waiting.reason) == (WorkloadState.pending, "Unschedulable")
    assert "Insufficient nvidia.com/gpu" in waiting.message
    assert "FailedScheduling" in [e.reason for e in kube.runtime.events(PROJECT, big.kind, big.resource_id)]
    kube.double.set_nodes(NodePool(count=1, gpu=8))
    kube.settle()
    running = status_of(kube, big)
    assert running.state == WorkloadState.running and running.started_at is not None
    node_ports = {
        o["spec"]["ports"][0]["name"]: o["spec"]["ports"][0]["nodePort"] for o in kube.objects(r.SERVICES)
    }
    (pod,) = kube.objects(r.PODS)
    assert [(e.name, e.port, e.host, e.node_port) for e in running.endpoints] == [
        ("ssh", 22, pod["status"]["hostIP"], node_ports["ssh"]),
        ("jupyter", 8888, pod["status"]["hostIP"], node_ports["jupyter"]),
    ]


def test_a_starting_pod_is_creating_and_a_configured_node_host_is_the_endpoint_host(
    kube: Kube,
) -> None:
    runtime = KubernetesRuntime(kube.double.api_client, runtime_kinds(), node_host="gpu.example.org")
    kube.double.knobs.pod_start_delay = 60
    kube.project()
    runtime.apply(CONTAINER)
    kube.double.settle(advance_clock=False)
    creating = status_of(kube, CONTAINER)
    assert (creating.state, creating.reason) == (WorkloadState.creating, "ContainerCreating")
    kube.settle()
    running = runtime.status(PROJECT, CONTAINER.kind, CONTAINER.resource_id)
    assert running.state == WorkloadState.running
    assert {e.host for e in running.endpoints} == {"gpu.example.org"}


def test_a_gpu_model_runs_only_on_nodes_labelled_with_it(kube: Kube) -> None:
    kube.double.set_nodes(
        NodePool(count=1, gpu=4), NodePool(count=1, gpu=4, labels={"mlcp.io/gpu-model": "A100"})
    )
    kube.project()
    for model, state in (("A100", WorkloadState.running), ("H100", WorkloadState.pending)):
        spec = with_main(
            CONTAINER.model_copy(update={"resource_id": model.lower()}),
            resources=ResourceRequest(gpu=1, vcpu=1, ram_gb=1, gpu_model=model),
        )
        kube.runtime.apply(spec)
        kube.settle()
        assert status_of(kube, spec).state == state
    assert {p["spec"].get("nodeName") for p in kube.objects(r.PODS)} == {"node-1", None}


def test_an_image_that_cannot_be_pulled_fails_with_kubernetes_reason(kube: Kube) -> None:
    kube.double.knobs.image_pull_failures = ["registry.example/*"]
    kube.project()
    kube.runtime.apply(CONTAINER)
    kube.settle()
    failed = status_of(kube, CONTAINER)
    assert (failed.state, failed.reason) == (WorkloadState.failed, "ImagePullBackOff")
    assert "registry.example/pytorch:2.3" in failed.message
    assert kube.runtime.logs(PROJECT, CONTAINER.kind, CONTAINER.resource_id) == ""


def test_a_crash_loop_fails_with_kubernetes_reason_and_the_exit_code(kube: Kube) -> None:
    kube.project()
    crashing = with_main(CONTAINER, command=["sh", "-c", "echo missing CUDA; exit 2"])
    kube.runtime.apply(crashing)
    kube.settle()
    failed = status_of(kube, crashing)
    assert (failed.state, failed.reason, failed.exit_code) == (WorkloadState.failed, "CrashLoopBackOff", 2)
    assert "BackOff" in [e.reason for e in kube.runtime.events(PROJECT, crashing.kind, crashing.resource_id)]


def test_a_pod_the_project_quota_refuses_waits_with_the_api_message(kube: Kube) -> None:
    kube.project(Quota(gpu=0, vcpu=32, ram_gb=128, storage_gb=10))
    kube.runtime.apply(CONTAINER)
    kube.settle()
    refused = status_of(kube, CONTAINER)
    assert (refused.state, refused.reason) == (WorkloadState.pending, "FailedCreate")
    assert "exceeded quota: mlcp-quota" in refused.message


def test_events_are_the_workloads_own_and_newest_last(kube: Kube) -> None:
    kube.project()
    kube.runtime.apply(CONTAINER)
    kube.runtime.apply(JOB)
    kube.settle()
    events = kube.runtime.events(PROJECT, CONTAINER.kind, CONTAINER.resource_id)
    reasons = [e.reason for e in events]
    assert reasons.index("ScalingReplicaSet") < reasons.index("Scheduled") < reasons.index("Started")
    assert not any("j0b1" in e.message for e in events)
    times = [e.at for e in events]
    assert None not in times and times == sorted(times)  # type: ignore[type-var]


def test_delete_takes_the_workload_and_everything_it_owns(kube: Kube) -> None:
    kube.project()
    kube.runtime.apply(CONTAINER)
    kube.settle()
    kube.runtime.delete(PROJECT, CONTAINER.kind, CONTAINER.resource_id)
    kube.runtime.delete(PROJECT, CONTAINER.kind, CONTAINER.resource_id)
    assert status_of(kube, CONTAINER).state != WorkloadState.gone  # foreground: pods go first
    kube.settle()
    assert status_of(kube, CONTAINER).state == WorkloadState.gone
    for resource in (r.DEPLOYMENTS, r.REPLICA_SETS, r.PODS, r.SERVICES, r.SECRETS):
        assert kube.objects(resource) == [], resource.plural
    assert kube.names(r.NETWORK_POLICIES) == ["mlcp-isolate"]
    kube.runtime.delete(PROJECT, CONTAINER.kind, CONTAINER.resource_id)  # NotFound is done
    assert kube.double.request_count("delete", "deployments.apps") == 3


def test_nothing_there_reads_as_gone_with_no_logs_or_events(kube: Kube) -> None:
    assert status_of(kube, JOB).state == WorkloadState.gone
    assert kube.runtime.logs(PROJECT, JOB.kind, JOB.resource_id) == ""
    assert kube.runtime.events(PROJECT, JOB.kind, JOB.resource_id) == []
    kube.runtime.delete(PROJECT, JOB.kind, JOB.resource_id)
    kube.runtime.delete_project(PROJECT)


# Jobs.


def test_a_job_succeeds_with_exit_code_zero_and_its_log(kube: Kube) -> None:
    kube.project()
    kube.double.knobs.run_seconds = 120
    assert kube.runtime.apply(JOB).state == WorkloadState.pending
    kube.double.settle(advance_clock=False)
    assert status_of(kube, JOB).state == WorkloadState.running
    kube.settle()
    done = status_of(kube, JOB)
    assert (done.state, done.exit_code, done.reason) == (WorkloadState.succeeded, 0, "Completed")
    assert done.finished_at is not None
    assert kube.runtime.logs(PROJECT, JOB.kind, JOB.resource_id) == "epoch 1\ndone\n"
    assert kube.runtime.logs(PROJECT, JOB.kind, JOB.resource_id, tail_lines=1) == "done\n"
    assert len(kube.objects(r.PODS)) == 1


def test_a_failing_job_reports_its_exit_code_reason_and_log(kube: Kube) -> None:
    kube.project()
    failing = with_main(JOB, command=["sh", "-c", "echo loading; echo out of memory; exit 3"])
    kube.runtime.apply(failing)
    kube.settle()
    failed = status_of(kube, failing)
    assert (failed.state, failed.reason, failed.exit_code) == (WorkloadState.failed, "Error", 3)
    assert "3" in failed.message
    assert kube.runtime.logs(PROJECT, JOB.kind, JOB.resource_id) == "loading\nout of memory\n"
    assert len(kube.objects(r.PODS)) == 1  # no retries


def test_a_job_past_its_deadline_fails_with_deadline_exceeded(kube: Kube) -> None:
    kube.project()
    kube.double.knobs.run_seconds = 7200
    kube.runtime.apply(JOB.model_copy(update={"active_deadline_seconds": 60}))
    kube.settle()
    failed = status_of(kube, JOB)
    assert (failed.state, failed.reason) == (WorkloadState.failed, "DeadlineExceeded")


# Faults and refusals.


def test_transient_faults_are_retried_and_every_call_still_succeeds(
    kube: Kube, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    kube.double.reseed(3)
    kube.double.knobs.error_rate = 0.3
    kube.project()
    kube.runtime.apply(CONTAINER)
    kube.runtime.apply(CONTAINER)
    kube.settle()
    assert status_of(kube, CONTAINER).state == WorkloadState.running
    assert kube.runtime.logs(PROJECT, CONTAINER.kind, CONTAINER.resource_id) == ""
    assert kube.runtime.events(PROJECT, CONTAINER.kind, CONTAINER.resource_id)
    kube.runtime.delete(PROJECT, CONTAINER.kind, CONTAINER.resource_id)
    kube.settle()
    assert status_of(kube, CONTAINER).state == WorkloadState.gone
    assert sum(kube.double.stats.injected_errors.values()) >= 5 and kube.sleeps
    assert len(kube.names(r.NAMESPACES)) == 5 and kube.names(r.RESOURCE_QUOTAS) == ["mlcp-quota"]
    assert "retrying" in caplog.text and PASSWORD_HASH not in caplog.text


def test_apply_conflicts_are_retried(kube: Kube) -> None:
    kube.project()
    knobs = kube.double.knobs
    knobs.error_rate, knobs.error_statuses, knobs.fault_verbs = 0.5, (409,), frozenset({"patch"})
    kube.double.reseed(1)
    kube.runtime.apply(CONTAINER)
    assert kube.double.stats.injected_errors[409] > 0
    assert kube.names(r.SERVICES) == ["container-c0ntainer1-jupyter", "container-c0ntainer1-ssh"]


def test_an_outage_longer_than_the_retries_raises_a_transient_error(kube: Kube) -> None:
    kube.double.knobs.error_rate = 1.0
    with pytest.raises(KubernetesApiError) as raised:
        kube.project()
    assert raised.value.status in (500, 503) and raised.value.transient
    assert kube.sleeps == list(DEFAULT_RETRY_DELAYS)
    assert "mlcp-" in str(raised.value)


def test_client_errors_raise_at_once_with_the_api_reason(kube: Kube) -> None:
    with pytest.raises(KubernetesApiError) as missing:
        kube.runtime.apply(JOB)  # before the project's namespace exists
    assert (missing.value.status, missing.value.reason, missing.value.transient) == (404, "NotFound", False)
    kube.project()
    kube.runtime.apply(JOB)
    with pytest.raises(KubernetesApiError) as invalid:
        kube.runtime.apply(with_main(JOB, command=["python", "other.py"]))
    assert (invalid.value.status, invalid.value.reason) == (422, "Invalid")
    assert "immutable" in invalid.value.message
    assert kube.sleeps == []


def test_an_unreachable_server_is_a_transient_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    configuration = client.Configuration(host=f"http://127.0.0.1:{port}")
    configuration.retries = 0
    sleeps: list[float] = []
    with client.ApiClient(configuration) as api_client:
        runtime = KubernetesRuntime(api_client, runtime_kinds(), retry_delays=(0.1,), sleep=sleeps.append)
        with pytest.raises(KubernetesApiError) as raised:
            runtime.status(PROJECT, JOB.kind, JOB.resource_id)
    assert raised.value.status is None and raised.value.transient and sleeps == [0.1]


def test_from_settings_reads_the_configured_kubeconfig(
    kube_double: KubeDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: double\n"
        f"clusters: [{{name: double, cluster: {{server: '{kube_double.url}'}}}}]\n"
        "users: [{name: tester, user: {token: not-checked}}]\n"
        "contexts: [{name: double, context: {cluster: double, user: tester}}]\n"
    )
    runtime = KubernetesRuntime.from_settings(
        Settings(kubeconfig=str(kubeconfig), node_host="gpu.example.org"), runtime_kinds()
    )
    try:
        assert (runtime.name, runtime.node_host) == ("kubernetes", "gpu.example.org")
        runtime.ensure_project(ProjectEnvironment(project_id=PROJECT, quota=QUOTA))
    finally:
        runtime.close()
    assert NAMESPACE in [o["metadata"]["name"] for o in kube_double.objects(r.NAMESPACES)]


# The flows that also run against real k3s (tests/activities/test_kube_k3s.py).


@pytest.mark.parametrize("flow", FLOWS)
def test_core_flow_on_the_double(kube_double: KubeDouble, flow: str) -> None:
    kube_double.knobs.auto_step = False
    kube_double.knobs.image_pull_failures = [MISSING_IMAGE]

    def until(condition: Callable[[], bool], what: str) -> None:
        kube_double.settle()
        assert condition(), f"the cluster settled without: {what}"

    FLOWS[flow](Cluster(KubernetesRuntime(kube_double.api_client, runtime_kinds()), until), "flowproject1")
