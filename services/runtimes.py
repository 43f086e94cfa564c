"""The workload runtime the settings choose, built with every registered kind."""

from __future__ import annotations

from activities.runtime import WorkloadRuntime
from config import Settings
from services.kinds import runtime_kinds


def runtime_from_settings(settings: Settings) -> WorkloadRuntime:
    if settings.runtime == "kubernetes":
        from activities.kube import KubernetesRuntime

        return KubernetesRuntime.from_settings(settings, runtime_kinds())
    from activities.local import LocalRuntime

    return LocalRuntime.from_settings(settings, runtime_kinds())
