"""The container API's core flows again, with the worker on the Kubernetes runtime against the API double."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import Settings
from tests.api import test_projects
from tests.api.test_containers import (
    test_a_container_beyond_the_quota_waits_and_starts_after_the_first_is_deleted,
    test_a_member_creates_a_running_container_and_deletes_it,
)
from tests.kube_double.double import KubeDouble
from tests.kube_double.fixtures import kube_double  # noqa: F401

platform = test_projects.platform
people = test_projects.people

__all__ = [
    "test_a_container_beyond_the_quota_waits_and_starts_after_the_first_is_deleted",
    "test_a_member_creates_a_running_container_and_deletes_it",
]


@pytest.fixture
def settings(settings: Settings, kube_double: KubeDouble, tmp_path: Path) -> Settings:  # noqa: F811
    kubeconfig = kube_double.write_kubeconfig(tmp_path / "kubeconfig")
    return settings.model_copy(update={"runtime": "kubernetes", "kubeconfig": str(kubeconfig)})
