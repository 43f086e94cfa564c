"""GPU readings for the samplers: each device's utilisation and memory, and which processes use it.

`GpuProbe` is what a sampler asks; `NvmlProbe` answers from NVML (nvidia-ml-py's `pynvml` module), tests
answer with a stand-in. NVML reports host PIDs, which the local sampler maps to a workload by its process
group and the node agent by its cgroup.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from activities.gpu import load_nvml, nvml_text

logger = logging.getLogger(__name__)


class GpuUnavailable(Exception):
    """No GPU reading can be had here; the message says why, and becomes the series' reason."""


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    memory_bytes: int | None  # None where NVML cannot tell (some drivers, MIG)
    utilization_percent: float | None = None  # its share of the device's SMs over the last interval


@dataclass(frozen=True)
class GpuReading:
    uuid: str
    utilization_percent: float
    memory_used_bytes: int
    memory_total_bytes: int
    processes: list[GpuProcess] = field(default_factory=list)


class GpuProbe(Protocol):
    def read(self) -> list[GpuReading]:
        """Every device now; raises GpuUnavailable when there is no driver, library or device."""
        ...


class NvmlProbe:
    """NVML, initialised once and kept: per-process utilisation needs the last reading's timestamp."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._last_seen: dict[str, int] = {}
        self._lock = threading.Lock()

    def _init(self) -> Any:
        if self._nvml is None:
            nvml = load_nvml()
            if nvml is None:
                raise GpuUnavailable("NVML is not installed (the nvidia-ml-py package provides it)")
            try:
                nvml.nvmlInit()
            except nvml.NVMLError as exc:
                raise GpuUnavailable(f"no NVIDIA driver here (NVML: {exc})") from exc
            self._nvml = nvml
        return self._nvml

    def read(self) -> list[GpuReading]:
        with self._lock:
            nvml = self._init()
            try:
                count = nvml.nvmlDeviceGetCount()
                if count == 0:
                    raise GpuUnavailable("this host has no NVIDIA GPU (NVML finds none)")
                return [self._reading(nvml, nvml.nvmlDeviceGetHandleByIndex(index)) for index in range(count)]
            except nvml.NVMLError as exc:
                raise GpuUnavailable(f"NVML failed to read the GPUs: {exc}") from exc

    def _reading(self, nvml: Any, handle: Any) -> GpuReading:
        uuid = nvml_text(nvml.nvmlDeviceGetUUID(handle))
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        shares = self._process_utilization(nvml, handle, uuid)
        processes = []
        for process in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
            used = getattr(process, "usedGpuMemory", None)
            processes.append(
                GpuProcess(
                    pid=int(process.pid),
                    memory_bytes=int(used) if isinstance(used, int) else None,
                    utilization_percent=shares.get(int(process.pid)),
                )
            )
        return GpuReading(
            uuid=uuid,
            utilization_percent=float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
            memory_used_bytes=int(memory.used),
            memory_total_bytes=int(memory.total),
            processes=processes,
        )

    def _process_utilization(self, nvml: Any, handle: Any, uuid: str) -> dict[int, float]:
        # Samples newer than the last reading's; NVML answers NOT_FOUND when none is newer.
        try:
            samples = nvml.nvmlDeviceGetProcessUtilization(handle, self._last_seen.get(uuid, 0))
        except nvml.NVMLError as exc:
            logger.debug("no per-process GPU utilisation for %s: %s", uuid, exc)
            return {}
        shares: dict[int, float] = {}
        for sample in samples:
            shares[int(sample.pid)] = max(shares.get(int(sample.pid), 0.0), float(sample.smUtil))
            self._last_seen[uuid] = max(self._last_seen.get(uuid, 0), int(sample.timeStamp))
        return shares

    def close(self) -> None:
        """Shut NVML down if it was started; the next `read` starts it again."""
        with self._lock:
            nvml, self._nvml = self._nvml, None
            if nvml is None:
                return
            try:
                nvml.nvmlShutdown()
            except nvml.NVMLError as exc:
                logger.debug("NVML shutdown failed: %s", exc)
