"""Fixtures for the activity tests."""

from tests.activities.kube_harness import kube  # noqa: F401
from tests.kube_double.fixtures import kube_double  # noqa: F401
