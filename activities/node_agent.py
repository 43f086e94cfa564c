"""The node agent (`mlcp agent`, a DaemonSet where no Prometheus is configured): every round it reads this
node's workload pods from their cgroup v2 files, /proc and NVML, and writes the samples itself.

Runs with the host's PIDs and read-only views of the host's /sys/fs/cgroup and /proc
(deploy/kubernetes/agent/agent.yaml), so a pod's files are found by its uid, as kubelet names its cgroup.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from activities.counter_rates import CounterRates
from activities.gpu_metrics import GpuProbe, GpuReading, GpuUnavailable, NvmlProbe
from activities.kube_pod_inventory import (
    NO_CPU_REQUEST,
    NO_MEMORY_REQUEST,
    WorkloadPod,
    list_workload_pods,
)
from activities.sampling import sample_forever
from models.monitoring import NO_GPU, SAMPLE_INTERVAL_SECONDS, Metric, MetricValue, PodSample
from models.volumes import GIB

logger = logging.getLogger(__name__)

SAMPLER = "agent"
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_ROOT = Path("/proc")
FIRST_READING = "a rate needs two readings; the next round has one"
NO_GPU_PROCESS = "no process of the pod runs on a GPU now (NVML tells a GPU's pod only by its processes)"
CGROUP_METRICS = (Metric.vcpu_percent, Metric.memory_percent, Metric.network_in, Metric.network_out)
GPU_METRICS = (Metric.gpu_percent, Metric.gpu_memory_percent)
# kubelet writes the uid with '_' for '-' under the systemd driver, as it is under the cgroupfs one.
_POD_UID_IN_PATH = re.compile(r"pod([0-9a-f]{8}(?:[-_][0-9a-f]{4}){3}[-_][0-9a-f]{12})")
_SEARCH_DEPTH = 4  # below the root, for kubelets with a cgroup root of their own (kind: kubelet.slice)


def cgroup_v1_problem(root: Path) -> str:
    """Why `root` is not a cgroup v2 hierarchy this agent can read; "" when it is one."""
    if (root / "cgroup.controllers").is_file():
        return ""
    if any((root / name).is_dir() for name in ("cpu", "cpuacct", "memory", "unified")):
        return (
            f"{root} is a cgroup v1 (or hybrid) hierarchy, which the node agent does not read: boot the "
            "node with the unified hierarchy (systemd.unified_cgroup_hierarchy=1) or sample with Prometheus"
        )
    return f"{root} holds no cgroup v2 hierarchy (is the host's /sys/fs/cgroup mounted there?)"


def pod_cgroup(root: Path, uid: str) -> Path | None:
    """The pod's cgroup as kubelet names it under the systemd driver or the cgroupfs one, for each QoS class
    (Guaranteed pods sit directly under kubepods); else the first match a few levels down."""
    systemd, names = uid.replace("-", "_"), {f"pod{uid}", f"pod{uid.replace('-', '_')}"}
    candidates = [root / "kubepods.slice" / f"kubepods-pod{systemd}.slice", root / "kubepods" / f"pod{uid}"]
    for qos in ("burstable", "besteffort"):
        slice_ = root / "kubepods.slice" / f"kubepods-{qos}.slice" / f"kubepods-{qos}-pod{systemd}.slice"
        candidates += [slice_, root / "kubepods" / qos / f"pod{uid}"]
    found = next((path for path in candidates if path.is_dir()), None)
    if found is not None:
        return found
    for folder, children, _ in os.walk(root):
        depth = len(Path(folder).relative_to(root).parts)
        for child in children:
            if any(child.endswith(name) or child.endswith(name + ".slice") for name in names):
                return Path(folder) / child
        if depth >= _SEARCH_DEPTH:
            children.clear()
    return None


def read_keyed(path: Path) -> dict[str, int]:
    """A flat-keyed cgroup file (cpu.stat, memory.stat): `name value` per line."""
    pairs = (line.split() for line in path.read_text().splitlines())
    return {fields[0]: int(fields[1]) for fields in pairs if len(fields) == 2}


def any_pid(cgroup: Path) -> int | None:
    """A process of the pod: cgroup v2 keeps processes in the leaves (containers, the sandbox), so the pod's
    own cgroup.procs is empty and its children are searched."""
    for folder, _, files in os.walk(cgroup):
        if "cgroup.procs" in files:
            for line in (Path(folder) / "cgroup.procs").read_text().split():
                return int(line)
    return None


def network_bytes(proc: Path, pid: int) -> tuple[int, int]:
    """Bytes received and sent on every interface but loopback of `pid`'s network namespace."""
    received = sent = 0
    for line in (proc / str(pid) / "net" / "dev").read_text().splitlines()[2:]:
        interface, _, counters = line.partition(":")
        fields = counters.split()
        if interface.strip() != "lo" and len(fields) >= 9:
            received, sent = received + int(fields[0]), sent + int(fields[8])
    return received, sent


def pid_pod_uid(proc: Path, pid: int) -> str | None:
    """Whose pod `pid` runs in, by the pod uid in its cgroup path (which reads `/../..` from inside a
    cgroup namespace, so only the uid in it is trusted)."""
    try:
        text = (proc / str(pid) / "cgroup").read_text()
    except OSError:
        return None  # gone since NVML listed it
    match = _POD_UID_IN_PATH.search(text)
    return match.group(1).replace("_", "-") if match else None


class NodeAgent:
    name = SAMPLER

    def __init__(
        self,
        pods: Callable[[], list[WorkloadPod]],
        gpus: GpuProbe,
        cgroup_root: Path = CGROUP_ROOT,
        proc_root: Path = PROC_ROOT,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._pods, self._gpus = pods, gpus
        self.cgroup_root, self.proc_root = cgroup_root, proc_root
        self._clock, self._now = clock, now
        self._rates = CounterRates()
        self._cgroups: dict[str, Path] = {}  # by pod uid: found once, as the search may walk the tree
        self.cgroup_problem = cgroup_v1_problem(cgroup_root)

    def sample(self) -> list[PodSample]:
        pods = self._pods()
        self._rates.keep_only(pod.uid for pod in pods)
        self._cgroups = {pod.uid: self._cgroups[pod.uid] for pod in pods if pod.uid in self._cgroups}
        at, tick = self._now(), self._clock()
        gpus, gpu_problem = self._gpus_by_pod() if any(pod.gpus for pod in pods) else ({}, "")
        samples = []
        for pod in pods:
            sample = PodSample(
                kind=pod.kind, workload_id=pod.workload_id, pod=pod.pod, project_id=pod.project_id, at=at
            )
            self._read_cgroup(sample, pod, tick)
            self._put_gpus(sample, pod, gpus.get(pod.uid), gpu_problem)
            samples.append(sample)
        values, unavailable = sum(len(s.values) for s in samples), sum(len(s.unavailable) for s in samples)
        logger.debug("sampled %d pods: %d values, %d unavailable", len(samples), values, unavailable)
        return samples

    def close(self) -> None:
        """Let go of NVML, where the probe holds it (GpuProbe itself only reads)."""
        close = getattr(self._gpus, "close", None)
        if callable(close):
            close()

    @staticmethod
    def _put_gpus(sample: PodSample, pod: WorkloadPod, gpus: list[GpuReading] | None, problem: str) -> None:
        """The pod's GPUs numbered 0, 1... in NVML's order, or why there are none."""
        if pod.gpus == 0 or problem or not gpus:
            reason = NO_GPU if pod.gpus == 0 else problem or NO_GPU_PROCESS
            sample.unavailable |= dict.fromkeys(GPU_METRICS, reason)
            return
        for device, gpu in enumerate(gpus):
            memory = gpu.memory_used_bytes / gpu.memory_total_bytes * 100 if gpu.memory_total_bytes else 0.0
            for metric, value in zip(GPU_METRICS, (gpu.utilization_percent, memory), strict=True):
                sample.values.append(MetricValue(metric=metric, value=value, device=str(device)))

    def _gpus_by_pod(self) -> tuple[dict[str, list[GpuReading]], str]:
        """Each pod's GPUs, in NVML's order (the probe's), by the pods of the processes on them."""
        try:
            readings = self._gpus.read()
        except GpuUnavailable as exc:
            return {}, str(exc)
        by_pod: dict[str, list[GpuReading]] = {}
        for reading in readings:
            for uid in {pid_pod_uid(self.proc_root, process.pid) for process in reading.processes} - {None}:
                by_pod.setdefault(str(uid), []).append(reading)
        return by_pod, ""

    def _read_cgroup(self, sample: PodSample, pod: WorkloadPod, tick: float) -> None:
        if self.cgroup_problem:
            sample.unavailable |= dict.fromkeys(CGROUP_METRICS, self.cgroup_problem)
            return
        cgroup = self._cgroups.get(pod.uid) or pod_cgroup(self.cgroup_root, pod.uid)
        if cgroup is None:
            reason = f"no cgroup of pod {pod.uid} under {self.cgroup_root}"
            sample.unavailable |= dict.fromkeys(CGROUP_METRICS, reason)
            return
        self._cgroups[pod.uid] = cgroup
        readings: dict[Metric, float | str | None] = {}
        try:
            cpu_seconds = read_keyed(cgroup / "cpu.stat")["usage_usec"] / 1e6
            cores = self._rates.rate(pod.uid, "cpu", tick, cpu_seconds)
            readings[Metric.vcpu_percent] = _percent(cores, pod.vcpu, NO_CPU_REQUEST)
            in_use = int((cgroup / "memory.current").read_text())
            working_set = max(in_use - read_keyed(cgroup / "memory.stat").get("inactive_file", 0), 0)
            readings[Metric.memory_percent] = _percent(working_set / GIB, pod.ram_gb, NO_MEMORY_REQUEST)
            pid = any_pid(cgroup)
            if pid is None:
                readings |= dict.fromkeys((Metric.network_in, Metric.network_out), "the pod has no process")
            else:
                received, sent = network_bytes(self.proc_root, pid)
                readings[Metric.network_in] = self._rates.rate(pod.uid, "received", tick, received)
                readings[Metric.network_out] = self._rates.rate(pod.uid, "sent", tick, sent)
        except (OSError, ValueError, KeyError) as exc:  # the pod ended between listing and reading
            self._cgroups.pop(pod.uid, None)
            reason = f"cannot read the pod's cgroup or /proc files: {exc!r}"
            readings |= {metric: reason for metric in CGROUP_METRICS if metric not in readings}
        for metric, reading in readings.items():
            if reading is None:
                sample.unavailable[metric] = FIRST_READING
            elif isinstance(reading, str):
                sample.unavailable[metric] = reading
            else:
                sample.values.append(MetricValue(metric=metric, value=reading))


def _percent(used: float | None, requested: float, no_request: str) -> float | str | None:
    if requested <= 0:
        return no_request
    return None if used is None else used / requested * 100


def run_agent(
    database_url: str,
    node_name: str,
    kubeconfig: str = "",
    interval: float = SAMPLE_INTERVAL_SECONDS,
    cgroup_root: Path = CGROUP_ROOT,
    proc_root: Path = PROC_ROOT,
) -> None:
    """The agent's process: samples this node's pods into the database until SIGTERM or SIGINT."""
    from kubernetes import client

    from activities.kube import kube_api_client
    from models.database import make_engine

    api = kube_api_client(kubeconfig)
    core = client.CoreV1Api(api)
    engine = make_engine(database_url)
    agent = NodeAgent(lambda: list_workload_pods(core, node_name), NvmlProbe(), cgroup_root, proc_root)
    if agent.cgroup_problem:
        logger.error("CPU, memory and network go unsampled on node %s: %s", node_name, agent.cgroup_problem)

    async def until_stopped() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await sample_forever(agent, engine, interval, stop)

    logger.info(
        "node agent on %s: every %gs, cgroups %s, processes %s", node_name, interval, cgroup_root, proc_root
    )
    try:
        asyncio.run(until_stopped())
    finally:
        agent.close()
        engine.dispose()
        api.close()
