"""Fixtures for the activity tests."""

from tests.kube_double.fixtures import kube_double  # noqa: F401
