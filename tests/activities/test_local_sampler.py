"""The local sampler against real processes on this host, and against an NVML stand-in with two GPUs."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from activities.gpu_metrics import GpuProcess, GpuReading, GpuUnavailable, NvmlProbe
from activities.local import LocalRuntime, is_running
from activities.local_folder import LaunchRecord, WorkloadFolder
from activities.local_sampler import SHARED_NETWORK, LocalSampler
from activities.local_supervisor import group_members, process_info
from models.base import utcnow
from models.lifecycle import Quota
from models.monitoring import NO_GPU, Metric, PodSample
from models.workloads import ClusterMembership, ProjectEnvironment, ResourceRequest, WorkloadState
from services.kinds import runtime_kinds
from tests.activities.test_local_runtime import PROJECT, fake_devices, log_line, wait_for
from tests.specs import one_role_spec

BUSY_LOOP = [sys.executable, "-c", "while True: pass"]
IDLE = [
    sys.executable,
    "-c",
    "import time\nblock = bytearray(64 * 1024 * 1024)\nprint('settled', flush=True)\ntime.sleep(3600)",
]
GIB = 1024**3


@dataclass
class StandInGpus:
    """Two GPUs; each reports the processes the test maps onto it (by a workload's process group)."""

    processes: dict[str, list[GpuProcess]] = field(default_factory=dict)
    unavailable: str = ""

    def read(self) -> list[GpuReading]:
        if self.unavailable:
            raise GpuUnavailable(self.unavailable)
        return [
            GpuReading(
                uuid=f"GPU-fake-{index}",
                utilization_percent=90.0,  # the device's; a workload's own share comes from its processes
                memory_used_bytes=40 * GIB,
                memory_total_bytes=80 * GIB,
                processes=self.processes.get(f"GPU-fake-{index}", []),
            )
            for index in range(2)
        ]


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[LocalRuntime]:
    runtime = LocalRuntime(tmp_path, runtime_kinds(), gpu_devices=fake_devices(2), stop_grace_seconds=5)
    runtime.ensure_project(ProjectEnvironment(project_id=PROJECT, quota=Quota(gpu=2, vcpu=8, ram_gb=16)))
    yield runtime
    runtime.delete_project(PROJECT)


def start(runtime: LocalRuntime, resource_id: str, command: list[str], gpu: int = 0, vcpu: float = 1) -> int:
    spec = one_role_spec(
        project_id=PROJECT,
        resource_id=resource_id,
        kind="job",
        owner="alice",
        name=resource_id,
        image="python:3.11",
        command=command,
        resources=ResourceRequest(gpu=gpu, vcpu=vcpu, ram_gb=1),
    )
    runtime.apply(spec)
    wait_for(lambda: runtime.status(PROJECT, "job", resource_id).state == WorkloadState.running, "running")
    if command is IDLE:  # its start-up (the interpreter, the allocation) is over before it is measured idle
        log_line(runtime, "job", resource_id, "settled")
    launch = WorkloadFolder(runtime.root / f"mlcp-{PROJECT}" / f"job-{resource_id}").launch()
    assert launch is not None
    return launch.pid


def by_id(samples: list[PodSample]) -> dict[str, PodSample]:
    return {sample.workload_id: sample for sample in samples}


def value(sample: PodSample, metric: Metric, device: str = "") -> float:
    return next(v.value for v in sample.values if v.metric == metric and v.device == device)


def test_a_busy_loop_shows_more_than_half_a_core_and_an_idle_process_its_memory(
    runtime: LocalRuntime,
) -> None:
    start(runtime, "busy", BUSY_LOOP)
    start(runtime, "idle", IDLE)
    sampler = LocalSampler(runtime.root, StandInGpus(), is_running)
    first = by_id(sampler.sample())
    assert first["busy"].unavailable[Metric.vcpu_percent].startswith("the first reading")
    time.sleep(1.5)
    second = by_id(sampler.sample())
    busy, idle = second["busy"], second["idle"]
    assert value(busy, Metric.vcpu_percent) > 50
    assert value(idle, Metric.vcpu_percent) < 20
    # 64 MiB resident of the 1 GiB requested, plus the interpreter
    assert 6 < value(idle, Metric.memory_percent) < 50
    for sample in (busy, idle):
        assert (sample.kind, sample.pod, sample.project_id) == ("job", "main", PROJECT)
        assert sample.unavailable[Metric.network_in] == SHARED_NETWORK
        assert sample.unavailable[Metric.gpu_percent] == NO_GPU
        assert not any(v.metric in (Metric.gpu_percent, Metric.network_in) for v in sample.values)


def test_each_gpu_workload_gets_its_own_processes_share(runtime: LocalRuntime) -> None:
    first_pid = start(runtime, "first", IDLE, gpu=1)
    second_pid = start(runtime, "second", IDLE, gpu=1)
    gpus = StandInGpus()
    # The first workload's process uses GPU 0 heavily; the second's uses GPU 1 lightly; a stranger on GPU 1.
    gpus.processes = {
        "GPU-fake-0": [
            GpuProcess(pid=group_members(first_pid)[0], memory_bytes=20 * GIB, utilization_percent=75)
        ],
        "GPU-fake-1": [
            GpuProcess(pid=second_pid, memory_bytes=8 * GIB, utilization_percent=10),
            GpuProcess(pid=1, memory_bytes=30 * GIB, utilization_percent=80),
        ],
    }
    samples = by_id(LocalSampler(runtime.root, gpus, is_running).sample())
    first, second = samples["first"], samples["second"]
    # Each sees its one GPU as its GPU 0, whichever device it was handed.
    assert value(first, Metric.gpu_percent, "0") == 75
    assert value(first, Metric.gpu_memory_percent, "0") == 25
    assert value(second, Metric.gpu_percent, "0") == 10
    assert value(second, Metric.gpu_memory_percent, "0") == 10
    assert Metric.gpu_percent not in first.unavailable


def test_no_gpu_reading_says_why_instead_of_inventing_one(runtime: LocalRuntime) -> None:
    start(runtime, "gpu", IDLE, gpu=1)
    gpus = StandInGpus(unavailable="no NVIDIA driver here (NVML: Driver Not Loaded)")
    sample = LocalSampler(runtime.root, gpus, is_running).sample()[0]
    assert sample.unavailable[Metric.gpu_percent] == gpus.unavailable
    assert not any(v.metric == Metric.gpu_memory_percent for v in sample.values)


def test_a_cluster_pod_is_sampled_under_its_cluster(tmp_path: Path) -> None:
    # A pod's folder as the local runtime leaves it, around a real process group.
    process = subprocess.Popen(IDLE, start_new_session=True)
    try:
        info = process_info(process.pid)
        assert info is not None
        spec = one_role_spec(
            project_id=PROJECT,
            resource_id="k1-worker-00",
            kind="cluster",
            owner="alice",
            name="train",
            image="python:3.11",
            resources=ResourceRequest(vcpu=1, ram_gb=1),
            cluster=ClusterMembership(cluster_id="k1", member="worker-00"),
        )
        folder = WorkloadFolder(tmp_path / f"mlcp-{PROJECT}" / "cluster-k1-worker-00")
        folder.path.mkdir(parents=True)
        folder.write_spec(spec)
        folder.write_launch(LaunchRecord(pid=process.pid, start_ticks=info.start_ticks, started_at=utcnow()))
        sample = LocalSampler(tmp_path, StandInGpus(), is_running).sample()[0]
    finally:
        process.kill()
        process.wait()
    assert (sample.kind, sample.workload_id, sample.pod) == ("cluster", "k1", "worker-00")
    assert value(sample, Metric.memory_percent) > 0


def test_the_real_nvml_where_a_gpu_exists() -> None:
    try:
        readings = NvmlProbe().read()
    except GpuUnavailable as exc:
        pytest.skip(f"no GPU to read here: {exc}")
    assert readings and all(0 <= r.utilization_percent <= 100 and r.memory_total_bytes > 0 for r in readings)
