"""deploy/: the manifests parse, agree with each other, and agree with the code they run."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import typer
import yaml

from cli import app as mlcp_cli
from config import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MANIFESTS = DEPLOY / "kubernetes"
NAMESPACE = "mlcp-system"
COMMITS = "mlcp-commits"
PART_OF = {"app.kubernetes.io/part-of": "mlcp"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
# What the platform manages in project namespaces, by API group.
MANAGED = {
    ("", "pods"),
    ("", "services"),
    ("", "secrets"),
    ("", "configmaps"),
    ("", "persistentvolumeclaims"),
    ("", "resourcequotas"),
    ("", "namespaces"),
    ("apps", "deployments"),
    ("apps", "statefulsets"),
    ("batch", "jobs"),
    ("networking.k8s.io", "networkpolicies"),
    ("networking.k8s.io", "ingresses"),
    ("autoscaling", "horizontalpodautoscalers"),
}
READ_ONLY = {("", "events"), ("events.k8s.io", "events")}
READ = {"get", "list", "watch"}
WRITE = {"create", "update", "patch", "delete"}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _objects(include_example: bool = True) -> list[dict[str, Any]]:
    files = sorted(MANIFESTS.glob("*.yaml"))
    return [
        doc
        for path in files
        if path.name != "kustomization.yaml" and (include_example or ".example." not in path.name)
        for doc in _documents(path)
    ]


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in _objects() if o["kind"] == kind}


def _workloads() -> list[tuple[str, dict[str, Any]]]:
    """(name, pod template) of every Deployment and Job."""
    return [
        (o["metadata"]["name"], o["spec"]["template"])
        for o in _objects()
        if o["kind"] in {"Deployment", "Job"}
    ]


def test_every_file_parses_and_every_object_is_named_labelled_and_placed() -> None:
    objects = _objects()
    assert {o["kind"] for o in objects} >= {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "Job",
    }
    for obj in objects:
        assert obj["apiVersion"] and obj["metadata"]["name"], obj
        assert PART_OF.items() <= obj["metadata"].get("labels", {}).items(), obj["metadata"]["name"]
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in obj["metadata"], obj["metadata"]["name"]
        else:
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]["name"]
    duplicates = [
        key for key, n in Counter((o["kind"], o["metadata"]["name"]) for o in objects).items() if n > 1
    ]
    assert not duplicates
    namespaces = _by_kind("Namespace")
    assert set(namespaces) == {NAMESPACE, COMMITS}
    levels = {
        name: ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
        for name, ns in namespaces.items()
    }
    # The platform runs restricted; only commit Jobs, which mount a node's containerd socket, run privileged.
    assert levels == {NAMESPACE: "restricted", COMMITS: "privileged"}
    assert Settings().commit_namespace == COMMITS


def test_kustomization_applies_every_manifest_but_the_secret_example() -> None:
    (kustomization,) = _documents(MANIFESTS / "kustomization.yaml")
    expected = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert sorted(kustomization["resources"]) == sorted(expected)


def test_cluster_role_grants_exactly_what_the_platform_manages() -> None:
    (role,) = _by_kind("ClusterRole").values()
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == {
        **dict.fromkeys(MANAGED, READ | WRITE),
        **dict.fromkeys(READ_ONLY, READ),
        ("", "pods/log"): {"get"},
        ("", "pods/exec"): {"get", "create"},
    }


def test_binding_ties_the_role_to_the_service_account_the_workloads_use() -> None:
    (binding,) = _by_kind("ClusterRoleBinding").values()
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": next(iter(_by_kind("ClusterRole"))),
    }
    (subject,) = binding["subjects"]
    assert subject["kind"] == "ServiceAccount"
    assert subject["name"] in _by_kind("ServiceAccount")
    assert subject["namespace"] == NAMESPACE
    for name, template in _workloads():
        account = template["spec"].get("serviceAccountName")
        if account is None:  # the migration Job needs no Kubernetes API
            assert template["spec"]["automountServiceAccountToken"] is False, name
        else:
            assert account == subject["name"], name


def test_workloads_run_real_mlcp_commands_from_one_image() -> None:
    commands = set(typer.main.get_command(mlcp_cli).commands)  # type: ignore[attr-defined]
    run = {}
    images = set()
    for name, template in _workloads():
        (container,) = template["spec"]["containers"]
        (command,) = container["args"]
        assert command in commands, f"{name} runs `mlcp {command}`, which does not exist"
        run[name] = command
        images.add(container["image"])
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert run == {"mlcp-api": "api", "mlcp-worker": "worker", "mlcp-migrate": "migrate"}
    assert len(images) == 1
    assert _by_kind("Job")["mlcp-migrate"]["spec"]["template"]["spec"]["restartPolicy"] in {
        "Never",
        "OnFailure",
    }


def test_workload_settings_come_from_the_config_map_and_secret_and_are_real_settings() -> None:
    config_maps, secrets = _by_kind("ConfigMap"), _by_kind("Secret")
    for name, template in _workloads():
        (container,) = template["spec"]["containers"]
        sources = container["envFrom"]
        assert {s["configMapRef"]["name"] for s in sources if "configMapRef" in s} <= set(config_maps), name
        assert {s["secretRef"]["name"] for s in sources if "secretRef" in s} <= set(secrets), name
        assert len(sources) == 2, name
    (config,) = config_maps.values()
    (secret,) = secrets.values()
    settings = {**config["data"], **secret["stringData"]}
    assert config["data"]["MLCP_RUNTIME"] == "kubernetes"
    assert {"MLCP_TEMPORAL_ADDRESS", "MLCP_SMTP_HOST", "MLCP_SMTP_PORT", "MLCP_SMTP_SENDER"} <= set(
        config["data"]
    )
    assert {"MLCP_DATABASE_URL", "MLCP_SMTP_PASSWORD"} <= set(secret["stringData"])
    assert all(isinstance(value, str) for value in config["data"].values()), (
        "ConfigMap values must be strings"
    )
    known = {f"MLCP_{field.upper()}" for field in Settings.model_fields}
    assert set(settings) <= known, f"not settings: {set(settings) - known}"
    # Secrets stay out of the ConfigMap.
    assert not {key for key in config["data"] if "PASSWORD" in key or "DATABASE_URL" in key}


def test_service_selects_the_api_pods_and_targets_their_port() -> None:
    service = _by_kind("Service")["mlcp-api"]
    deployment = _by_kind("Deployment")["mlcp-api"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    port_names = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_dockerfile_builds_on_python_311_slim_with_mlcp_as_entry_point() -> None:
    lines = [line.strip() for line in (DEPLOY / "Dockerfile").read_text().splitlines()]
    assert [line for line in lines if line.startswith("FROM ")][-1] == "FROM python:3.11-slim"
    assert 'ENTRYPOINT ["mlcp"]' in lines
    assert any(line.startswith("USER ") and not line.endswith(" root") for line in lines)
