"""The local runtime's GPUs: NVML's devices, handed out by UUID, one running workload per device."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from activities.gpu import GpuDeviceList
from activities.local_folder import LaunchRecord, WorkloadFolder
from activities.local_supervisor import PID_FILE
from models.workloads import WorkloadSpec


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


class LocalGpus:
    """What the workloads' launch records say they hold is what is held: nothing to keep in sync."""

    def __init__(self, root: Path, devices: GpuDeviceList, running: Callable[[LaunchRecord], bool]) -> None:
        self._root, self._devices, self._running = root, devices, running

    def free(self) -> tuple[list[str], int]:
        """Device IDs no running local workload holds, and how many the host has."""
        devices = [device.uuid for device in self._devices()]
        held: set[str] = set()
        for launch_file in self._root.glob(f"*/*/{PID_FILE}"):
            launch = WorkloadFolder(launch_file.parent).launch()
            if launch is not None and launch.gpus and self._running(launch):
                held.update(launch.gpus)
        return [device for device in devices if device not in held], len(devices)

    def take(self, spec: WorkloadSpec) -> list[str] | None:
        """The devices to hand out, or None when too few are free."""
        wanted = spec.main.resources.gpu
        if wanted == 0:
            return []
        free, _ = self.free()
        return free[:wanted] if len(free) >= wanted else None

    def shortage(self, spec: WorkloadSpec) -> str:
        free, total = self.free()
        wanted = spec.main.resources.gpu
        message = f"needs {_plural(wanted, 'GPU')}, {len(free)} free of {total} on this host"
        if total == 0:
            message += ": this host has no NVIDIA GPU (NVML finds none)"
        return message
