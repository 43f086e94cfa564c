"""The node agent against a fake host: a cgroup v2 tree and a /proc folder in tmp_path (both kubelet cgroup
drivers), an NVML stand-in, and pods mapped from the V1Pods the runtime's own manifests describe."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient, V1ListMeta, V1Pod, V1PodList
from sqlmodel import Session, select

from activities import gpu_metrics, node_agent
from activities.gpu_metrics import GpuProcess, GpuReading, GpuUnavailable, NvmlProbe
from activities.kube_clusters import cluster_pod_manifest
from activities.kube_manifests import deployment_manifest, job_manifest
from activities.kube_pod_inventory import (
    WORKLOAD_SELECTOR,
    WorkloadPod,
    list_workload_pods,
    workload_pod,
)
from activities.metric_store import store_samples
from activities.node_agent import FIRST_READING, NO_GPU_PROCESS, NodeAgent, pod_cgroup
from activities.sampling import sample_forever
from models.database import make_engine, migrate
from models.monitoring import NO_GPU, Metric, MetricSample, MetricSource, MetricValue, PodSample
from models.workloads import ClusterMembership, ResourceRequest, WorkloadRole, WorkloadSpec
from tests.activities.kube_cases import container_spec, job_spec

GIB = 2**30
UID_A = "0b3f3c2e-1111-2222-3333-444455556666"
UID_B = "9c8d7e6f-aaaa-bbbb-cccc-ddddeeeeffff"
AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def pod(
    uid: str = UID_A, *, vcpu: float = 2, ram_gb: float = 4, gpus: int = 0, workload: str = "c1"
) -> WorkloadPod:
    return WorkloadPod(
        namespace="mlcp-p1",
        name=f"container-{workload}-x",
        uid=uid,
        kind="container",
        workload_id=workload,
        pod="main",
        project_id="p1",
        vcpu=vcpu,
        ram_gb=ram_gb,
        gpus=gpus,
    )


@dataclass
class Host:
    """A node's /sys/fs/cgroup and /proc: each pod a cgroup with one container holding one process."""

    root: Path
    driver: str = "systemd"
    pids: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cgroups.mkdir(parents=True)
        (self.cgroups / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")

    @property
    def cgroups(self) -> Path:
        return self.root / "cgroup"

    @property
    def proc(self) -> Path:
        return self.root / "proc"

    def pod_path(self, uid: str) -> Path:
        if self.driver == "systemd":
            slice_ = f"kubepods-burstable-pod{uid.replace('-', '_')}.slice"
            return self.cgroups / "kubepods.slice" / "kubepods-burstable.slice" / slice_
        return self.cgroups / "kubepods" / f"pod{uid}"  # a Guaranteed pod, as mlcp's are

    def add_pod(self, uid: str, pid: int) -> None:
        container = self.pod_path(uid) / ("cri-containerd-abc.scope" if self.driver == "systemd" else "abc")
        container.mkdir(parents=True)
        (self.pod_path(uid) / "cgroup.procs").write_text("")  # v2: no process outside the leaves
        (container / "cgroup.procs").write_text(f"{pid}\n{pid + 1}\n")
        self.pids[uid] = pid
        cgroup_line = f"0::/../..{container.relative_to(self.cgroups).as_posix()}\n"
        (self.proc / str(pid)).mkdir(parents=True)
        (self.proc / str(pid) / "cgroup").write_text(cgroup_line)
        self.set(uid, usage_usec=0, memory=0, inactive_file=0, received=0, sent=0)

    def set(
        self, uid: str, *, usage_usec: int, memory: int, inactive_file: int, received: int, sent: int
    ) -> None:
        folder = self.pod_path(uid)
        (folder / "cpu.stat").write_text(f"usage_usec {usage_usec}\nuser_usec {usage_usec}\nsystem_usec 0\n")
        (folder / "memory.current").write_text(f"{memory}\n")
        (folder / "memory.stat").write_text(f"anon {memory}\nfile 0\ninactive_file {inactive_file}\n")
        (self.proc / str(self.pids[uid]) / "net").mkdir(exist_ok=True)
        (self.proc / str(self.pids[uid]) / "net" / "dev").write_text(
            "Inter-|   Receive                                                |  Transmit\n"
            " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets\n"
            f"    lo: 999999 10 0 0 0 0 0 0 999999 10 0 0 0 0 0 0\n"
            f"  eth0: {received} 10 0 0 0 0 0 0 {sent} 10 0 0 0 0 0 0\n"
            f"  net1: {received} 10 0 0 0 0 0 0 0 10 0 0 0 0 0 0\n"
        )


def gpu(utilization: float, memory_percent: int, *pids: int) -> GpuReading:
    """A device of 100 GiB with `memory_percent` of it in use by the processes `pids`."""
    return GpuReading(
        uuid=f"GPU-{utilization}-{memory_percent}",
        utilization_percent=utilization,
        memory_used_bytes=memory_percent * GIB,
        memory_total_bytes=100 * GIB,
        processes=[GpuProcess(pid=pid, memory_bytes=None) for pid in pids],
    )


@dataclass
class FakeGpus:
    """A GpuProbe with no `close`, which the agent does not need of a probe."""

    readings: list[GpuReading] = field(default_factory=list)
    problem: str = ""

    def read(self) -> list[GpuReading]:
        if self.problem:
            raise GpuUnavailable(self.problem)
        return self.readings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def agent_for(
    host: Host, pods: list[WorkloadPod], gpus: FakeGpus | None = None, clock: Clock | None = None
) -> NodeAgent:
    return NodeAgent(
        lambda: pods, gpus or FakeGpus(), host.cgroups, host.proc, clock=clock or Clock(), now=lambda: AT
    )


def values(sample: PodSample) -> dict[tuple[Metric, str], float]:
    return {(value.metric, value.device): value.value for value in sample.values}


@pytest.mark.parametrize("driver", ["systemd", "cgroupfs"])
def test_two_rounds_give_rates_under_either_cgroup_driver(tmp_path: Path, driver: str) -> None:
    host, clock = Host(tmp_path, driver), Clock()
    host.add_pod(UID_A, pid=4242)
    assert pod_cgroup(host.cgroups, UID_A) == host.pod_path(UID_A)
    host.set(UID_A, usage_usec=5_000_000, memory=3 * GIB, inactive_file=GIB, received=1000, sent=500)
    agent = agent_for(host, [pod()], clock=clock)

    (first,) = agent.sample()
    assert values(first) == {(Metric.memory_percent, ""): 50.0}  # (3 - 1 inactive) GiB of 4
    for metric in (Metric.vcpu_percent, Metric.network_in, Metric.network_out):
        assert first.unavailable[metric] == FIRST_READING
    assert first.unavailable[Metric.gpu_percent] == NO_GPU

    clock.now += 10
    host.set(UID_A, usage_usec=20_000_000, memory=GIB, inactive_file=0, received=11_000, sent=2_500)
    (second,) = agent.sample()
    assert values(second) == {
        (Metric.vcpu_percent, ""): 75.0,  # 15 CPU seconds in 10 s is 1.5 of 2 vCPUs
        (Metric.memory_percent, ""): 25.0,
        (Metric.network_in, ""): 2000.0,  # eth0 and net1 each grew 10 kB; loopback is left out
        (Metric.network_out, ""): 200.0,
    }
    assert set(second.unavailable) == {Metric.gpu_percent, Metric.gpu_memory_percent}
    assert (second.kind, second.workload_id, second.pod, second.project_id) == (
        "container",
        "c1",
        "main",
        "p1",
    )


def test_a_busy_counter_gives_the_share_of_the_vcpus_requested(tmp_path: Path) -> None:
    host, clock = Host(tmp_path), Clock()
    host.add_pod(UID_A, pid=10)
    agent = agent_for(host, [pod(vcpu=4)], clock=clock)
    agent.sample()
    clock.now += 10
    host.set(UID_A, usage_usec=40_000_000, memory=0, inactive_file=0, received=0, sent=0)  # 4 cores busy
    (sample,) = agent.sample()
    assert values(sample)[Metric.vcpu_percent, ""] == 100.0
    clock.now += 10
    host.set(UID_A, usage_usec=41_000_000, memory=0, inactive_file=0, received=0, sent=0)
    (sample,) = agent.sample()
    assert values(sample)[Metric.vcpu_percent, ""] == 2.5  # 0.1 core of 4


def test_gpus_are_given_to_the_pods_whose_processes_use_them_in_nvml_order(tmp_path: Path) -> None:
    host = Host(tmp_path, "cgroupfs")
    host.add_pod(UID_A, pid=100)
    host.add_pod(UID_B, pid=200)
    gpus = FakeGpus(
        [
            gpu(10.0, 5, 201),  # B's 2nd process
            gpu(80.0, 50, 100),
            gpu(90.0, 60, 100, 999),  # 999: gone
            gpu(0.0, 0),  # nobody's
        ]
    )
    (proc_b := host.proc / "201").mkdir()
    (proc_b / "cgroup").write_text(f"0::/kubepods/pod{UID_B}/abc\n")
    pods = [pod(UID_A, gpus=2, workload="c1"), pod(UID_B, gpus=1, workload="c2")]
    a, b = agent_for(host, pods, gpus).sample()
    assert {key: v for key, v in values(a).items() if key[0] in node_agent.GPU_METRICS} == {
        (Metric.gpu_percent, "0"): 80.0,
        (Metric.gpu_memory_percent, "0"): 50.0,
        (Metric.gpu_percent, "1"): 90.0,
        (Metric.gpu_memory_percent, "1"): 60.0,
    }
    assert {key: v for key, v in values(b).items() if key[0] in node_agent.GPU_METRICS} == {
        (Metric.gpu_percent, "0"): 10.0,
        (Metric.gpu_memory_percent, "0"): 5.0,
    }


def test_systemd_cgroup_paths_name_the_pod_with_underscores(tmp_path: Path) -> None:
    host = Host(tmp_path, "systemd")
    host.add_pod(UID_A, pid=100)
    gpus = FakeGpus([gpu(42.0, 1, 100)])
    (sample,) = agent_for(host, [pod(gpus=1)], gpus).sample()
    assert values(sample)[Metric.gpu_percent, "0"] == 42.0


def test_a_kubelet_with_a_cgroup_root_of_its_own_is_searched(tmp_path: Path) -> None:
    slices = tmp_path / "kubelet.slice" / "kubelet-kubepods.slice" / "kubelet-kubepods-besteffort.slice"
    found = slices / f"kubelet-kubepods-besteffort-pod{UID_A.replace('-', '_')}.slice"
    found.mkdir(parents=True)
    assert pod_cgroup(tmp_path, UID_A) == found
    assert pod_cgroup(tmp_path, UID_B) is None


def test_without_nvml_gpu_metrics_say_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = Host(tmp_path)
    host.add_pod(UID_A, pid=100)
    host.add_pod(UID_B, pid=200)
    monkeypatch.setattr(gpu_metrics, "load_nvml", lambda: None)
    with pytest.raises(GpuUnavailable, match="NVML is not installed"):
        NvmlProbe().read()
    reason = "no NVIDIA driver here (NVML: Driver Not Loaded)"
    with_gpu, without = agent_for(host, [pod(UID_A, gpus=1), pod(UID_B)], FakeGpus(problem=reason)).sample()
    assert (
        with_gpu.unavailable[Metric.gpu_percent] == with_gpu.unavailable[Metric.gpu_memory_percent] == reason
    )
    assert without.unavailable[Metric.gpu_percent] == NO_GPU


def test_a_gpu_pod_with_no_process_on_a_gpu_says_why(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.add_pod(UID_A, pid=100)
    gpus = FakeGpus([gpu(0.0, 0)])
    (sample,) = agent_for(host, [pod(gpus=1)], gpus).sample()
    assert sample.unavailable[Metric.gpu_percent] == NO_GPU_PROCESS


def test_a_cgroup_v1_host_is_said_unsupported_and_a_missing_cgroup_is_said_missing(tmp_path: Path) -> None:
    v1 = tmp_path / "v1"
    for controller in ("cpu,cpuacct", "cpu", "memory"):
        (v1 / controller).mkdir(parents=True)
    (sample,) = NodeAgent(lambda: [pod()], FakeGpus(), v1, tmp_path / "proc").sample()
    assert "cgroup v1" in sample.unavailable[Metric.vcpu_percent]
    assert "cgroup v1" in sample.unavailable[Metric.network_in]

    host = Host(tmp_path / "v2")
    (sample,) = agent_for(host, [pod()]).sample()
    assert sample.unavailable[Metric.memory_percent] == f"no cgroup of pod {UID_A} under {host.cgroups}"


def test_a_pod_whose_files_vanish_mid_round_is_reported_not_raised(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.add_pod(UID_A, pid=100)
    (host.pod_path(UID_A) / "memory.current").unlink()
    (sample,) = agent_for(host, [pod()]).sample()
    assert sample.unavailable[Metric.vcpu_percent] == FIRST_READING
    assert "cannot read" in sample.unavailable[Metric.memory_percent]


def test_a_round_is_stored_and_read_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mlcp.db'}"
    migrate(url)
    engine = make_engine(url)
    host, clock = Host(tmp_path / "host"), Clock()
    host.add_pod(UID_A, pid=100)
    agent = agent_for(host, [pod()], clock=clock)
    agent.sample()
    clock.now += 10
    host.set(UID_A, usage_usec=10_000_000, memory=2 * GIB, inactive_file=0, received=0, sent=0)
    assert store_samples(engine, "agent", agent.sample()) == 4
    with Session(engine) as session:
        rows = {row.metric: row for row in session.exec(select(MetricSample))}
        (source,) = session.exec(select(MetricSource)).all()
    assert rows["vcpu_percent"].value == 50.0 and rows["memory_percent"].value == 50.0
    assert (rows["vcpu_percent"].workload_id, rows["vcpu_percent"].pod, rows["vcpu_percent"].kind) == (
        "c1",
        "main",
        "container",
    )
    assert source.sampler == "agent"
    assert source.unavailable == {"gpu_percent": NO_GPU, "gpu_memory_percent": NO_GPU}
    engine.dispose()


class NoGpuNvml:
    """pynvml on a node whose driver sees no GPU, counting its shutdowns."""

    class NVMLError(Exception):
        pass

    def __init__(self) -> None:
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 0

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1


def test_the_agent_shuts_nvml_down_once_it_was_started(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    nvml = NoGpuNvml()
    monkeypatch.setattr(gpu_metrics, "load_nvml", lambda: nvml)
    agent = NodeAgent(lambda: [], NvmlProbe(), tmp_path, tmp_path)
    agent.close()  # never started: nothing to shut down
    assert nvml.shutdowns == 0
    agent = NodeAgent(lambda: [pod(gpus=1)], probe := NvmlProbe(), tmp_path, tmp_path)
    (sample,) = agent.sample()
    assert "no NVIDIA GPU" in sample.unavailable[Metric.gpu_percent]
    agent.close()
    agent.close()
    assert nvml.shutdowns == 1
    with pytest.raises(GpuUnavailable, match="no NVIDIA GPU"):
        probe.read()  # started again after a close
    NodeAgent(lambda: [], FakeGpus(), tmp_path, tmp_path).close()  # a probe without close is fine


class FlakySampler:
    """Fails its first round, then samples one value a round; sets `stop` after its third round."""

    name = "agent"

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop, self.loop, self.rounds = stop, asyncio.get_running_loop(), 0

    def sample(self) -> list[PodSample]:
        self.rounds += 1  # sampled in a worker thread: the event is set from the loop's
        if self.rounds >= 3:
            self.loop.call_soon_threadsafe(self.stop.set)
        if self.rounds == 1:
            raise RuntimeError("the API server blinked")
        value = MetricValue(metric=Metric.vcpu_percent, value=float(self.rounds))
        at = AT + timedelta(seconds=self.rounds)
        return [PodSample(kind="container", workload_id="c1", project_id="p1", at=at, values=[value])]


async def test_sampling_goes_on_after_a_failed_round_until_stopped(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    migrate(url)
    engine = make_engine(url)
    stop = asyncio.Event()
    sampler = FlakySampler(stop)
    await asyncio.wait_for(sample_forever(sampler, engine, 0.01, stop), timeout=10)
    assert sampler.rounds == 3
    with Session(engine) as session:
        stored = sorted(row.value for row in session.exec(select(MetricSample)))
    assert stored == [2.0, 3.0]
    engine.dispose()


# The inventory: V1Pods as the runtime's manifests make them.


def as_v1_pod(
    manifest: dict[str, Any], name: str, uid: str, container_id: str = "containerd://abc123"
) -> V1Pod:
    template = manifest["spec"].get("template", manifest)
    metadata = {**template["metadata"], "name": name, "uid": uid}
    metadata["namespace"] = manifest["metadata"]["namespace"]
    status = {
        "phase": "Running",
        "containerStatuses": [
            {
                "name": "main",
                "containerID": container_id,
                "image": "i",
                "imageID": "d",
                "ready": True,
                "restartCount": 0,
            }
        ],
    }
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": template["spec"],
        "status": status,
    }
    pod: V1Pod = ApiClient().deserialize(json.dumps(body), "V1Pod", "application/json")
    return pod


def cluster_worker_spec() -> WorkloadSpec:
    role = WorkloadRole(
        image="registry.example/deepspeed:0.14", resources=ResourceRequest(gpu=2, vcpu=8, ram_gb=64)
    )
    return WorkloadSpec(
        project_id="p9",
        resource_id="k7-worker-03",
        kind="cluster",
        owner="alice",
        name="ring-worker-03",
        roles=[role],
        cluster=ClusterMembership(cluster_id="k7", member="worker-03"),
    )


def test_a_container_a_job_and_a_cluster_worker_are_mapped_from_their_pods() -> None:
    container = workload_pod(
        as_v1_pod(deployment_manifest(container_spec("p1")), "container-devbox1-x", UID_A)
    )
    assert container == WorkloadPod(
        namespace="mlcp-p1",
        name="container-devbox1-x",
        uid=UID_A,
        kind="container",
        workload_id="devbox1",
        pod="main",
        project_id="p1",
        vcpu=0.1,
        ram_gb=0.125,
        gpus=0,
        container_ids=("abc123",),
    )
    job = workload_pod(as_v1_pod(job_manifest(job_spec("p2", "j5", "true")), "job-j5-y", UID_B))
    assert job is not None
    assert (job.kind, job.workload_id, job.pod, job.project_id) == ("job", "j5", "main", "p2")
    worker = workload_pod(
        as_v1_pod(cluster_pod_manifest(cluster_worker_spec()), "cluster-k7-worker-03", UID_A)
    )
    assert worker is not None
    assert (worker.kind, worker.workload_id, worker.pod, worker.project_id) == (
        "cluster",
        "k7",
        "worker-03",
        "p9",
    )
    assert (worker.vcpu, worker.ram_gb, worker.gpus) == (8.0, 64.0, 2)


def test_a_cluster_pod_without_member_labels_is_read_from_its_resource_id() -> None:
    manifest = cluster_pod_manifest(cluster_worker_spec())
    for label in ("mlcp.io/cluster", "mlcp.io/cluster-member"):
        del manifest["metadata"]["labels"][label]
    worker = workload_pod(as_v1_pod(manifest, "cluster-k7-worker-03", UID_A))
    assert worker is not None and (worker.workload_id, worker.pod) == ("k7", "worker-03")


def test_pods_without_mlcp_labels_are_not_workloads() -> None:
    assert workload_pod(V1Pod(metadata=None)) is None
    bare = as_v1_pod(deployment_manifest(container_spec("p1")), "x", UID_A)
    assert bare.metadata is not None
    bare.metadata.labels = {"app": "something-else"}
    assert workload_pod(bare) is None


class PagedCore:
    """CoreV1Api's pod listing in pages of one, remembering how it was asked."""

    def __init__(self, pods: list[V1Pod]) -> None:
        self.pods = pods
        self.calls: list[dict[str, Any]] = []

    def list_pod_for_all_namespaces(self, **kwargs: Any) -> V1PodList:
        self.calls.append(kwargs)
        index = int(kwargs["_continue"] or 0)
        token = str(index + 1) if index + 1 < len(self.pods) else None
        return V1PodList(items=self.pods[index : index + 1], metadata=V1ListMeta(**{"_continue": token}))


def test_the_inventory_lists_running_workload_pods_of_one_node_page_by_page() -> None:
    pods = [
        as_v1_pod(deployment_manifest(container_spec("p1")), "container-devbox1-x", UID_A),
        as_v1_pod(job_manifest(job_spec("p2", "j5", "true")), "job-j5-y", UID_B),
    ]
    core = PagedCore(pods)
    found = list_workload_pods(core, "gpu-node-1")  # type: ignore[arg-type]
    assert [p.workload_id for p in found] == ["devbox1", "j5"]
    assert len(core.calls) == 2
    assert core.calls[0]["label_selector"] == WORKLOAD_SELECTOR
    assert core.calls[0]["field_selector"] == "status.phase=Running,spec.nodeName=gpu-node-1"
    every = PagedCore(pods)
    list_workload_pods(every)  # type: ignore[arg-type]
    assert every.calls[0]["field_selector"] == "status.phase=Running"
