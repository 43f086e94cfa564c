"""Workflow tests use the Temporal environments from tests/conftest.py."""
