"""The runtime's core flows against a real cluster: k3s in Docker through testcontainers.

Where no Docker engine answers, every test here is skipped with the reason. The k3s image can be
changed with MLCP_TEST_K3S_IMAGE (e.g. to a mirror).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from activities.kube import KubernetesRuntime
from config import Settings
from services.kinds import runtime_kinds
from tests.activities.kube_cases import FLOWS, Cluster

K3S_IMAGE = os.environ.get("MLCP_TEST_K3S_IMAGE", "rancher/k3s:v1.31.2-k3s1")
DEADLINE_SECONDS = 240.0


def _docker_missing() -> str | None:
    try:
        import docker

        docker.from_env().ping()
    except Exception as error:  # any failure to reach the engine means this lane cannot run
        return f"no Docker engine to run k3s in ({type(error).__name__}: {error})"
    return None


_MISSING = _docker_missing()
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")


@pytest.fixture(scope="module")
def k3s_kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from testcontainers.community.k3s import K3SContainer

    with K3SContainer(K3S_IMAGE) as k3s:
        kubeconfig = tmp_path_factory.mktemp("k3s") / "kubeconfig"
        kubeconfig.write_text(k3s.config_yaml())
        yield kubeconfig


def poll(condition: Callable[[], bool], what: str) -> None:
    """A real cluster moves in real time, so this is the one place that waits on the clock."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"k3s did not reach '{what}' within {DEADLINE_SECONDS:g}s")
        time.sleep(1.0)


@pytest.fixture
def cluster(k3s_kubeconfig: Path) -> Iterator[Cluster]:
    runtime = KubernetesRuntime.from_settings(Settings(kubeconfig=str(k3s_kubeconfig)), runtime_kinds())
    try:
        yield Cluster(runtime, poll)
    finally:
        runtime.close()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("flow", FLOWS)
def test_core_flow_on_k3s(cluster: Cluster, flow: str) -> None:
    FLOWS[flow](cluster, "k3s" + flow.replace("-", ""))
