"""The `kube_double` pytest fixture: a fresh Kubernetes API double per test.

Use it from any test package with `from tests.kube_double.fixtures import kube_double  # noqa: F401`
in that package's conftest.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.kube_double.double import KubeDouble


@pytest.fixture
def kube_double() -> Iterator[KubeDouble]:
    """A started double; `.api_client` is a configured `kubernetes.client.ApiClient` (no auth).

    Teardown fails the test if the double itself hit an internal error, since that is a bug in the double.
    """
    double = KubeDouble().start()
    try:
        yield double
    finally:
        double.stop()
    problems = double.stats.internal_errors + double.loop_errors
    assert not problems, "the Kubernetes API double failed internally:\n" + "\n".join(problems)
