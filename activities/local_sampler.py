"""The local runtime's sampler: every running workload's process group, read with psutil and NVML.

A workload's processes are its supervisor's process group (activities/local.py); its requests come from
the spec it was applied with, its GPUs from its launch record. CPU time counts reaped children too, so a
shell that runs short-lived commands still adds up. Network bytes cannot be told apart per process on a
shared host network, so they are said to be unavailable rather than shown as zero.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from activities.counter_rates import CounterRates
from activities.gpu_metrics import GpuProbe, GpuReading, GpuUnavailable
from activities.local_folder import LaunchRecord, WorkloadFolder
from activities.local_supervisor import PID_FILE, PROC, group_members, process_info
from models.base import utcnow
from models.monitoring import MAIN_POD, NO_GPU, Metric, MetricValue, PodSample
from models.volumes import GIB
from models.workloads import WorkloadSpec

logger = logging.getLogger(__name__)

SHARED_NETWORK = (
    "the local runtime's processes share the host's network, which has no per-process byte counters"
)


@dataclass(frozen=True)
class _Usage:
    cpu_seconds: float
    rss_bytes: int
    pids: frozenset[int]


def process_groups() -> dict[int, list[int]]:
    """Every running process by its process group, in one pass over the process table (a round looks up
    many groups; one listing each would read the whole table again for every workload)."""
    if not PROC.is_dir():
        return {}
    groups: dict[int, list[int]] = defaultdict(list)
    for entry in os.scandir(PROC):
        if entry.name.isdigit():
            info = process_info(int(entry.name))
            if info is not None and not info.ended:
                groups[info.process_group].append(int(entry.name))
    return groups


def _group_usage(process_group: int, groups: dict[int, list[int]]) -> _Usage:
    cpu, rss, pids = 0.0, 0, set()
    members = groups.get(process_group) if groups else group_members(process_group)
    for pid in members or []:
        try:
            process = psutil.Process(pid)
            with process.oneshot():
                times = process.cpu_times()
                cpu += times.user + times.system + times.children_user + times.children_system
                rss += process.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue  # it ended between the listing and the reading
        pids.add(pid)
    return _Usage(cpu, rss, frozenset(pids))


class LocalSampler:
    name = "local"

    def __init__(
        self,
        runtime_root: Path,
        gpus: GpuProbe,
        running: Callable[[LaunchRecord], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._root, self._gpus, self._running, self._clock = runtime_root, gpus, running, clock
        self._rates = CounterRates()

    def sample(self) -> list[PodSample]:
        """One reading of every running workload on this host."""
        workloads = []
        for launch_file in sorted(self._root.glob(f"*/*/{PID_FILE}")):
            folder = WorkloadFolder(launch_file.parent)
            launch, spec = folder.launch(), folder.spec()
            if launch is None or spec is None or folder.finished() is not None or not self._running(launch):
                continue
            workloads.append((folder.path, launch, spec))
        gpu_readings, gpu_reason = self._read_gpus() if any(w[1].gpus for w in workloads) else ([], "")
        groups = process_groups() if workloads else {}
        samples = [
            self._sample_one(path, launch, spec, gpu_readings, gpu_reason, groups)
            for path, launch, spec in workloads
        ]
        self._rates.keep_only(path for path, _, _ in workloads)
        return samples

    def _read_gpus(self) -> tuple[list[GpuReading], str]:
        try:
            return self._gpus.read(), ""
        except GpuUnavailable as exc:
            return [], str(exc)

    def _sample_one(
        self,
        path: Path,
        launch: LaunchRecord,
        spec: WorkloadSpec,
        gpus: list[GpuReading],
        gpu_reason: str,
        groups: dict[int, list[int]],
    ) -> PodSample:
        usage = _group_usage(launch.pid, groups)
        resources = spec.main.resources
        values = [
            MetricValue(metric=Metric.memory_percent, value=100 * usage.rss_bytes / (resources.ram_gb * GIB))
        ]
        unavailable = {Metric.network_in: SHARED_NETWORK, Metric.network_out: SHARED_NETWORK}
        cpu_rate = self._rates.rate(path, "cpu", self._clock(), usage.cpu_seconds)
        if cpu_rate is None:
            unavailable[Metric.vcpu_percent] = "the first reading: a rate needs two"
        else:
            values.append(MetricValue(metric=Metric.vcpu_percent, value=100 * cpu_rate / resources.vcpu))
        if not launch.gpus:
            unavailable[Metric.gpu_percent] = unavailable[Metric.gpu_memory_percent] = NO_GPU
        elif gpu_reason:
            unavailable[Metric.gpu_percent] = unavailable[Metric.gpu_memory_percent] = gpu_reason
        else:
            values += _gpu_values(launch.gpus, gpus, usage.pids)
        membership = spec.cluster
        return PodSample(
            kind=spec.kind,
            workload_id=membership.cluster_id if membership else spec.resource_id,
            pod=membership.member if membership else MAIN_POD,
            project_id=spec.project_id,
            at=utcnow(),
            values=values,
            unavailable=unavailable,
        )


def _gpu_values(held: list[str], readings: list[GpuReading], pids: frozenset[int]) -> list[MetricValue]:
    """Per GPU the workload holds, in the order it was handed out (CUDA's 0, 1...): what its own processes
    use, by NVML's per-process readings; the device's utilisation where NVML has no per-process shares (a
    local GPU serves one workload at a time)."""
    by_uuid = {reading.uuid: reading for reading in readings}
    values = []
    for index, uuid in enumerate(held):
        reading = by_uuid.get(uuid)
        if reading is None:
            logger.warning("GPU %s held by a workload is not among NVML's devices", uuid)
            continue
        own = [process for process in reading.processes if process.pid in pids]
        used = sum(process.memory_bytes or 0 for process in own)
        if any(process.utilization_percent is not None for process in reading.processes):
            utilization = sum(process.utilization_percent or 0.0 for process in own)
        else:  # no per-process shares: the device's, if any of its processes is ours
            utilization = reading.utilization_percent if own or not reading.processes else 0.0
        device = str(index)
        values.append(MetricValue(metric=Metric.gpu_percent, value=min(utilization, 100.0), device=device))
        values.append(
            MetricValue(
                metric=Metric.gpu_memory_percent,
                value=100 * used / reading.memory_total_bytes if reading.memory_total_bytes else 0.0,
                device=device,
            )
        )
    return values
