"""Deployments, stateful sets and jobs driven to their outcomes by the simulated control plane."""

from __future__ import annotations

from typing import Any

from tests.kube_double.conftest import NAMESPACE, Cluster, deployment_body, job_body, template


def conditions(obj: Any) -> dict[str, tuple[str, str | None]]:
    return {c.type: (c.status, c.reason) for c in obj.status.conditions or []}


def pods(cluster: Cluster, selector: str = "") -> list[Any]:
    return list(cluster.core.list_namespaced_pod(NAMESPACE, label_selector=selector).items)


def test_deployment_pods_run_and_report_ready_replicas(cluster: Cluster) -> None:
    cluster.apps.create_namespaced_deployment(NAMESPACE, deployment_body("web", replicas=3))
    assert pods(cluster) == []
    cluster.settle()
    running = pods(cluster, "app=web")
    assert len(running) == 3 and {p.status.phase for p in running} == {"Running"}
    replica_set = cluster.apps.list_namespaced_replica_set(NAMESPACE).items[0]
    assert replica_set.metadata.owner_references[0].kind == "Deployment"
    for pod in running:
        owner = pod.metadata.owner_references[0]
        assert (owner.kind, owner.name, owner.controller) == ("ReplicaSet", replica_set.metadata.name, True)
        assert pod.metadata.name.startswith(f"{replica_set.metadata.name}-")
        assert pod.metadata.labels["pod-template-hash"] == replica_set.metadata.labels["pod-template-hash"]
        assert pod.status.pod_ip and pod.status.host_ip and pod.spec.node_name
        assert pod.status.container_statuses[0].ready
    deployment = cluster.apps.read_namespaced_deployment("web", NAMESPACE)
    status = deployment.status
    assert (status.replicas, status.ready_replicas, status.available_replicas, status.updated_replicas) == (
        3,
        3,
        3,
        3,
    )
    assert status.unavailable_replicas is None and status.observed_generation == 1
    assert conditions(deployment)["Available"] == ("True", "MinimumReplicasAvailable")
    assert conditions(deployment)["Progressing"] == ("True", "NewReplicaSetAvailable")


def test_pods_wait_out_the_start_delay(cluster: Cluster) -> None:
    cluster.double.knobs.pod_start_delay = 30
    cluster.apps.create_namespaced_deployment(NAMESPACE, deployment_body("web", replicas=2))
    cluster.double.settle(advance_clock=False)
    waiting = pods(cluster)
    assert {p.status.phase for p in waiting} == {"Pending"}
    assert all(p.spec.node_name for p in waiting)
    assert {p.status.container_statuses[0].state.waiting.reason for p in waiting} == {"ContainerCreating"}
    assert cluster.apps.read_namespaced_deployment("web", NAMESPACE).status.ready_replicas is None
    cluster.settle()  # moves the double's clock over the delay
    assert {p.status.phase for p in pods(cluster)} == {"Running"}
    assert cluster.apps.read_namespaced_deployment("web", NAMESPACE).status.ready_replicas == 2


def test_deployment_scales_and_rolls_out_a_new_template(cluster: Cluster) -> None:
    cluster.apps.create_namespaced_deployment(NAMESPACE, deployment_body("web", replicas=3))
    cluster.settle()
    cluster.apps.patch_namespaced_deployment_scale("web", NAMESPACE, {"spec": {"replicas": 1}})
    cluster.settle()
    assert len(pods(cluster)) == 1
    image = {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "busybox:1.37"}]}}}}
    cluster.apps.patch_namespaced_deployment("web", NAMESPACE, image)
    cluster.settle()
    replica_sets = cluster.apps.list_namespaced_replica_set(NAMESPACE).items
    assert sorted(rs.spec.replicas for rs in replica_sets) == [0, 1]
    assert [p.spec.containers[0].image for p in pods(cluster)] == ["busybox:1.37"]
    reasons = [
        e.message
        for e in cluster.core.list_namespaced_event(NAMESPACE).items
        if e.reason == "ScalingReplicaSet"
    ]
    assert any("from 3 to 1" in m for m in reasons) and any("to 0" in m for m in reasons)


def test_deleted_pods_are_replaced(cluster: Cluster) -> None:
    cluster.apps.create_namespaced_deployment(NAMESPACE, deployment_body("web", replicas=2))
    cluster.settle()
    victim = pods(cluster)[0].metadata.name
    cluster.core.delete_namespaced_pod(victim, NAMESPACE)
    cluster.settle()
    names = [p.metadata.name for p in pods(cluster)]
    assert len(names) == 2 and victim not in names


def statefulset_body(replicas: int) -> dict[str, Any]:
    labels = {"app": "db"}
    claim = {
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    return {
        "metadata": {"name": "db"},
        "spec": {
            "replicas": replicas,
            "serviceName": "db",
            "selector": {"matchLabels": labels},
            "template": template(labels),
            "volumeClaimTemplates": [claim],
        },
    }


def test_statefulset_creates_ordinal_pods_in_order_with_claims(cluster: Cluster) -> None:
    cluster.double.knobs.pod_start_delay = 5
    cluster.apps.create_namespaced_stateful_set(NAMESPACE, statefulset_body(3))
    cluster.double.settle(advance_clock=False)
    assert [p.metadata.name for p in pods(cluster)] == ["db-0"]  # db-1 waits for db-0 to be ready
    cluster.settle()
    created = pods(cluster)
    assert [p.metadata.name for p in created] == ["db-0", "db-1", "db-2"]
    assert [(p.spec.hostname, p.spec.subdomain) for p in created][1] == ("db-1", "db")
    assert created[2].metadata.labels["statefulset.kubernetes.io/pod-name"] == "db-2"
    claims = cluster.core.list_namespaced_persistent_volume_claim(NAMESPACE).items
    assert [(c.metadata.name, c.status.phase) for c in claims] == [
        ("data-db-0", "Bound"),
        ("data-db-1", "Bound"),
        ("data-db-2", "Bound"),
    ]
    volume = created[1].spec.volumes[0]
    assert (volume.name, volume.persistent_volume_claim.claim_name) == ("data", "data-db-1")
    status = cluster.apps.read_namespaced_stateful_set("db", NAMESPACE).status
    assert (status.replicas, status.ready_replicas, status.current_replicas) == (3, 3, 3)
    cluster.apps.patch_namespaced_stateful_set("db", NAMESPACE, {"spec": {"replicas": 1}})
    cluster.settle()
    assert [p.metadata.name for p in pods(cluster)] == ["db-0"]
    assert len(cluster.core.list_namespaced_persistent_volume_claim(NAMESPACE).items) == 3  # claims are kept


def job_pod(cluster: Cluster, job: str) -> Any:
    (pod,) = pods(cluster, f"job-name={job}")
    return pod


def test_job_success_with_exit_code_and_log(cluster: Cluster) -> None:
    cluster.batch.create_namespaced_job(
        NAMESPACE, job_body("train", ["sh", "-c", "echo epoch 1; echo 'done!'"])
    )
    cluster.settle()
    job = cluster.batch.read_namespaced_job("train", NAMESPACE)
    assert job.status.succeeded == 1 and job.status.failed is None and job.status.active is None
    assert conditions(job)["Complete"] == ("True", "CompletionsReached")
    assert job.status.start_time is not None and job.status.completion_time is not None
    pod = job_pod(cluster, "train")
    assert pod.status.phase == "Succeeded"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (0, "Completed")
    assert cluster.core.read_namespaced_pod_log(pod.metadata.name, NAMESPACE) == "epoch 1\ndone!\n"


def test_job_failure_with_exit_code_and_log(cluster: Cluster) -> None:
    cluster.batch.create_namespaced_job(NAMESPACE, job_body("train", ["sh", "-c", "echo diverged; exit 3"]))
    cluster.settle()
    job = cluster.batch.read_namespaced_job("train", NAMESPACE)
    assert job.status.failed == 1 and job.status.succeeded is None
    assert conditions(job)["Failed"] == ("True", "BackoffLimitExceeded")
    assert "Complete" not in conditions(job)
    pod = job_pod(cluster, "train")
    terminated = pod.status.container_statuses[0].state.terminated
    assert (pod.status.phase, terminated.exit_code, terminated.reason) == ("Failed", 3, "Error")
    assert cluster.core.read_namespaced_pod_log(pod.metadata.name, NAMESPACE) == "diverged\n"
    warnings = [
        e.reason for e in cluster.core.list_namespaced_event(NAMESPACE, field_selector="type=Warning").items
    ]
    assert "BackoffLimitExceeded" in warnings


def test_job_retries_up_to_its_backoff_limit(cluster: Cluster) -> None:
    cluster.batch.create_namespaced_job(NAMESPACE, job_body("flaky", ["false"], backoff_limit=2))
    cluster.double.knobs.exit_codes = {"job-name=flaky": 137}
    cluster.settle()
    job = cluster.batch.read_namespaced_job("flaky", NAMESPACE)
    assert job.status.failed == 3 and conditions(job)["Failed"][0] == "True"
    exit_codes = {
        p.status.container_statuses[0].state.terminated.exit_code for p in pods(cluster, "job-name=flaky")
    }
    assert exit_codes == {137}


def test_log_knob_and_tail_lines(cluster: Cluster) -> None:
    cluster.double.knobs.logs = {"job-name=train": "epoch 1\nepoch 2\nepoch 3\n"}
    cluster.batch.create_namespaced_job(NAMESPACE, job_body("train", ["python", "train.py"]))
    cluster.settle()
    name = job_pod(cluster, "train").metadata.name
    assert cluster.core.read_namespaced_pod_log(name, NAMESPACE, tail_lines=2) == "epoch 2\nepoch 3\n"


def test_job_runs_for_the_configured_time_and_honours_its_deadline(cluster: Cluster) -> None:
    cluster.double.knobs.run_seconds = 600
    cluster.batch.create_namespaced_job(NAMESPACE, job_body("short", ["true"]))
    cluster.batch.create_namespaced_job(NAMESPACE, job_body("capped", ["true"], activeDeadlineSeconds=60))
    cluster.double.settle(advance_clock=False)
    assert cluster.batch.read_namespaced_job("short", NAMESPACE).status.active == 1
    assert job_pod(cluster, "short").status.phase == "Running"
    cluster.settle()
    assert conditions(cluster.batch.read_namespaced_job("short", NAMESPACE))["Complete"][0] == "True"
    capped = cluster.batch.read_namespaced_job("capped", NAMESPACE)
    assert conditions(capped)["Failed"] == ("True", "DeadlineExceeded")
    assert pods(cluster, "job-name=capped") == []  # its running pod was removed


def test_finished_jobs_are_removed_after_their_ttl(cluster: Cluster) -> None:
    cluster.batch.create_namespaced_job(NAMESPACE, job_body("once", ["true"], ttlSecondsAfterFinished=3600))
    cluster.settle()
    assert cluster.batch.list_namespaced_job(NAMESPACE).items == []
    assert pods(cluster) == []


def test_parallel_jobs_and_suspension(cluster: Cluster) -> None:
    cluster.batch.create_namespaced_job(
        NAMESPACE, job_body("sweep", ["true"], completions=3, parallelism=2, suspend=True)
    )
    cluster.settle()
    suspended = cluster.batch.read_namespaced_job("sweep", NAMESPACE)
    assert pods(cluster) == [] and conditions(suspended)["Suspended"][0] == "True"
    cluster.batch.patch_namespaced_job("sweep", NAMESPACE, {"spec": {"suspend": False}})
    cluster.settle()
    job = cluster.batch.read_namespaced_job("sweep", NAMESPACE)
    assert job.status.succeeded == 3 and len(pods(cluster, "job-name=sweep")) == 3
    assert conditions(job)["Suspended"][0] == "False"


def test_suspending_a_running_job_stops_its_deadline(cluster: Cluster) -> None:
    cluster.double.knobs.run_seconds = 100
    cluster.batch.create_namespaced_job(NAMESPACE, job_body("long", ["true"], activeDeadlineSeconds=50))
    cluster.double.settle(advance_clock=False)
    assert job_pod(cluster, "long").status.phase == "Running"
    cluster.batch.patch_namespaced_job("long", NAMESPACE, {"spec": {"suspend": True}})
    cluster.settle()
    suspended = cluster.batch.read_namespaced_job("long", NAMESPACE)
    assert "Failed" not in conditions(suspended) and suspended.status.start_time is None
    cluster.batch.patch_namespaced_job("long", NAMESPACE, {"spec": {"suspend": False}})
    cluster.settle()
    assert conditions(cluster.batch.read_namespaced_job("long", NAMESPACE))["Failed"][1] == "DeadlineExceeded"
