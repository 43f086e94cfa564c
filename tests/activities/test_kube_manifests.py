"""What the Kubernetes runtime asks the cluster for: names, labels, owners, pod templates, credentials."""

from __future__ import annotations

import base64
import re

from activities.kube_manifests import binary_quantity, cpu_quantity, label_value
from activities.runtime import LABEL_KIND, LABEL_OWNER, LABEL_PROJECT, LABEL_RESOURCE_ID
from models.workloads import ResourceRequest, ServicePort
from tests.activities.kube_harness import (
    CONTAINER,
    JOB,
    PASSWORD_HASH,
    PROJECT,
    PUBLIC_KEY,
    WORKLOAD_LABELS,
    Kube,
    pod_spec,
)
from tests.kube_double import resources as r
from tests.specs import with_main

# Names and quantities.


def test_label_values_are_valid_and_keep_different_names_apart() -> None:
    valid = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
    assert label_value("alice") == "alice"
    for text in ("alice@example.com", "alice#example.com", "-x-", "@@@", "名前", "a" * 80):
        assert valid.match(label_value(text)) and 0 < len(label_value(text)) <= 63, text
    assert label_value("alice@example.com") != label_value("alice#example.com")


def test_quantities_are_what_kubernetes_expects() -> None:
    assert (binary_quantity(16), binary_quantity(1.5), binary_quantity(0)) == ("16Gi", "1536Mi", "0Gi")
    assert (cpu_quantity(4), cpu_quantity(0.5)) == ("4000m", "500m")


# Containers: the objects.


def test_apply_twice_leaves_exactly_one_of_every_object(kube: Kube) -> None:
    kube.project()
    kube.runtime.apply(CONTAINER)
    kube.runtime.apply(CONTAINER)
    kube.settle()
    assert kube.names(r.DEPLOYMENTS) == ["container-c0ntainer1"]
    assert len(kube.objects(r.REPLICA_SETS)) == 1 and len(kube.objects(r.PODS)) == 1
    assert kube.names(r.SERVICES) == ["container-c0ntainer1-jupyter", "container-c0ntainer1-ssh"]
    assert kube.names(r.SECRETS) == ["container-c0ntainer1-credentials"]
    assert kube.names(r.NETWORK_POLICIES) == ["container-c0ntainer1-ports", "mlcp-isolate"]
    versions = {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in kube.objects(r.SERVICES)}
    kube.runtime.apply(CONTAINER)
    assert {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in kube.objects(r.SERVICES)} == (
        versions
    )


def test_every_object_is_labelled_and_children_belong_to_the_deployment(kube: Kube) -> None:
    kube.project()
    kube.runtime.apply(CONTAINER)
    deployment = kube.one(r.DEPLOYMENTS, "container-c0ntainer1")
    children = [
        *kube.objects(r.SERVICES),
        *kube.objects(r.SECRETS),
        kube.one(r.NETWORK_POLICIES, "container-c0ntainer1-ports"),
    ]
    for obj in [deployment, *children]:
        labels = obj["metadata"]["labels"]
        assert all(key in labels for key in WORKLOAD_LABELS), obj["metadata"]["name"]
        assert labels[LABEL_OWNER] == label_value("alice@example.com")
        assert (labels[LABEL_KIND], labels[LABEL_RESOURCE_ID]) == ("container", "c0ntainer1")
    for child in children:
        (reference,) = child["metadata"]["ownerReferences"]
        assert (reference["kind"], reference["uid"]) == ("Deployment", deployment["metadata"]["uid"])
    assert deployment["spec"]["template"]["metadata"]["labels"][LABEL_PROJECT] == PROJECT


def test_the_pod_asks_for_gpus_cpu_memory_and_shared_memory(kube: Kube) -> None:
    kube.project()
    kube.runtime.apply(
        with_main(
            CONTAINER,
            resources=CONTAINER.main.resources.model_copy(update={"gpu": 2, "gpu_model": "A100 80GB"}),
        )
    )
    deployment = kube.one(r.DEPLOYMENTS, "container-c0ntainer1")["spec"]
    assert deployment["replicas"] == 1 and deployment["strategy"] == {"type": "Recreate"}
    spec = deployment["template"]["spec"]
    (container,) = spec["containers"]
    amounts = {"cpu": "4000m", "memory": "16Gi", "nvidia.com/gpu": "2"}
    assert container["resources"] == {"requests": amounts, "limits": amounts}
    assert spec["nodeSelector"] == {"mlcp.io/gpu-model": label_value("A100 80GB")}
    assert {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}} in spec["volumes"]
    assert {"name": "shm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [("ssh", 22), ("jupyter", 8888)]
    assert spec["automountServiceAccountToken"] is False
    assert {"name": "WANDB_MODE", "value": "offline"} in container["env"]


def test_a_cpu_only_workload_gets_no_gpus(kube: Kube) -> None:
    kube.project()
    kube.runtime.apply(with_main(CONTAINER, resources=ResourceRequest(vcpu=0.5, ram_gb=2)))
    spec = pod_spec(kube)
    (container,) = spec["containers"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"} in container["env"]
    assert "nodeSelector" not in spec and "shm" not in {v["name"] for v in spec["volumes"]}


def test_credentials_are_files_in_a_secret_mounted_read_only(kube: Kube) -> None:
    kube.project()
    kube.runtime.apply(CONTAINER)
    data = kube.one(r.SECRETS, "container-c0ntainer1-credentials")["data"]
    files = {key: base64.b64decode(value).decode() for key, value in data.items()}
    assert files == {"password-hash": PASSWORD_HASH + "\n", "authorized_keys": PUBLIC_KEY + "\n"}
    spec = pod_spec(kube)
    (container,) = spec["containers"]
    assert {"name": "credentials", "mountPath": "/etc/mlcp/credentials", "readOnly": True} in container[
        "volumeMounts"
    ]
    volume = next(v for v in spec["volumes"] if v["name"] == "credentials")
    assert volume["secret"]["secretName"] == "container-c0ntainer1-credentials"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MLCP_PASSWORD_HASH_FILE"] == "/etc/mlcp/credentials/password-hash"
    assert env["MLCP_AUTHORIZED_KEYS_FILE"] == "/etc/mlcp/credentials/authorized_keys"
    assert PASSWORD_HASH not in str(kube.one(r.DEPLOYMENTS, "container-c0ntainer1"))


def test_reapplying_removes_children_the_spec_no_longer_asks_for(kube: Kube) -> None:
    kube.project()
    kube.runtime.apply(CONTAINER)
    kube.runtime.apply(with_main(CONTAINER, ports=[ServicePort(name="ssh", port=22)]))
    assert kube.names(r.SERVICES) == ["container-c0ntainer1-ssh"]
    kube.runtime.apply(with_main(CONTAINER, ports=[]).model_copy(update={"credentials": None}))
    assert kube.objects(r.SERVICES) == [] and kube.objects(r.SECRETS) == []
    assert kube.names(r.NETWORK_POLICIES) == ["mlcp-isolate"]
    assert "volumes" not in pod_spec(kube) or all(
        v["name"] != "credentials" for v in pod_spec(kube)["volumes"]
    )


def test_a_job_runs_once_with_its_command_env_and_deadline(kube: Kube) -> None:
    kube.project()
    kube.runtime.apply(JOB)
    kube.runtime.apply(JOB)
    job = kube.one(r.JOBS, "job-j0b1")["spec"]
    assert (job["backoffLimit"], job["activeDeadlineSeconds"]) == (0, 3600)
    spec = job["template"]["spec"]
    (container,) = spec["containers"]
    assert spec["restartPolicy"] == "Never" and container["command"] == JOB.main.command
    assert {"name": "EPOCHS", "value": "1"} in container["env"]
    assert container["resources"]["limits"] == {"cpu": "1000m", "memory": "1536Mi"}
    assert "ports" not in container and kube.objects(r.SERVICES) == []
