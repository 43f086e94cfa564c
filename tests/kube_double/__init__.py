"""A stateful Kubernetes API test double that the official `kubernetes` client talks to over HTTP."""
