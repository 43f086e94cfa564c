"""The double's own tests: typed API handles on a fresh double, stepped by hand for determinism."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client

from tests.kube_double.double import KubeDouble
from tests.kube_double.fixtures import kube_double  # noqa: F401

NAMESPACE = "team-a"


@dataclass
class Cluster:
    """The official typed APIs. Held as Any: the generated models make every field Optional, and these
    tests read fields directly (a None where a value belongs fails the test anyway)."""

    double: KubeDouble
    core: Any
    apps: Any
    batch: Any
    networking: Any
    autoscaling: Any

    def settle(self) -> None:
        self.double.settle()


@pytest.fixture
def cluster(kube_double: KubeDouble) -> Cluster:  # noqa: F811
    """A double with the background loop off (tests call settle()) and namespace `team-a`."""
    kube_double.knobs.auto_step = False
    api = kube_double.api_client
    core: Any = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": NAMESPACE}})
    return Cluster(
        kube_double,
        core,
        client.AppsV1Api(api),
        client.BatchV1Api(api),
        client.NetworkingV1Api(api),
        client.AutoscalingV2Api(api),
    )


def pod_body(
    name: str,
    *,
    command: list[str] | None = None,
    labels: dict[str, str] | None = None,
    requests: dict[str, str] | None = None,
    image: str = "busybox:1.36",
    restart_policy: str = "Always",
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": image, "command": command or ["sleep", "infinity"]}
    if requests:
        container["resources"] = {"requests": requests, "limits": requests}
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"containers": [container], "restartPolicy": restart_policy},
    }


def template(
    labels: dict[str, str], command: list[str] | None = None, restart_policy: str = "Always"
) -> dict[str, Any]:
    body = pod_body("unused", command=command, labels=labels, restart_policy=restart_policy)
    del body["metadata"]["name"]
    return body


def deployment_body(name: str, replicas: int = 2) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": template(labels)},
    }


def job_body(name: str, command: list[str], backoff_limit: int = 0, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            **spec,
            "template": template({"app": name}, command, restart_policy="Never"),
        },
    }


def status_of(call: Callable[[], Any]) -> int:
    """The HTTP status an API call fails with (the test fails if it succeeds)."""
    try:
        call()
    except client.ApiException as error:
        return int(error.status)
    raise AssertionError("the call was expected to fail")
