"""Training-cluster figures on this machine's local runtime: how soon a cluster's pods run, how long a
hostfile generation takes to write, a launcher-to-worker SSH hop, scaling out by a worker and in again, and
what one pod holds in memory.

    .venv/bin/python -m benchmarks.clusters --workers 4
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import asyncssh

from activities.local import LocalRuntime
from activities.local_folder import WorkloadFolder
from benchmarks.images import group_rss
from models.clusters import (
    LAUNCHER,
    ClusterHosts,
    ClusterMember,
    ClusterPlace,
    ClusterState,
    ClusterType,
    member_resource_id,
    member_spec,
    worker_name,
)
from models.workloads import WorkloadState
from services.kinds import runtime_kinds
from tests.specs import cluster_state

PROJECT, CLUSTER = "bench", "kbench"
EVERY_HOST = 'for host in $(cut -d: -f1 "$MLCP_HOSTFILE"); do ssh "$host" hostname; done'


def _apply(runtime: LocalRuntime, state: ClusterState, name: str) -> None:
    ordinal = None if name == LAUNCHER else int(name.split("-")[1])
    runtime.apply(member_spec(state, ClusterMember(name=name, ordinal=ordinal)))


def _until_running(runtime: LocalRuntime, names: list[str]) -> dict[str, int]:
    """Each pod's SSH port once all run."""
    ports: dict[str, int] = {}
    while len(ports) < len(names):
        for name in names:
            status = runtime.status(PROJECT, "cluster", member_resource_id(CLUSTER, name))
            if status.state == WorkloadState.running:
                ports[name] = next(e.node_port for e in status.endpoints if e.name == "ssh") or 0
        time.sleep(0.05)
    return ports


def _publish(runtime: LocalRuntime, hosts: list[str], generation: int) -> float:
    began = time.perf_counter()
    runtime.publish_hosts(
        ClusterHosts(
            project_id=PROJECT,
            cluster_id=CLUSTER,
            owner="bench",
            type=ClusterType.horovod,
            hosts=hosts,
            slots=1,
            generation=generation,
        )
    )
    return time.perf_counter() - began


async def _run(port: int, key: asyncssh.SSHKey, command: str) -> tuple[str, float]:
    async with asyncssh.connect(
        "127.0.0.1", port, username="root", known_hosts=None, client_keys=[key]
    ) as connection:
        began = time.perf_counter()
        done = await connection.run(command, check=True)
        return str(done.stdout), time.perf_counter() - began


def _pod_rss(runtime: LocalRuntime, name: str) -> float:
    folder = WorkloadFolder(runtime.root / f"mlcp-{PROJECT}" / f"cluster-{member_resource_id(CLUSTER, name)}")
    launch = folder.launch()
    return group_rss(launch.pid) if launch is not None else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        runtime = LocalRuntime(Path(home), runtime_kinds(), stop_grace_seconds=5, tools=Path(home) / "tools")
        key = asyncssh.generate_private_key("ssh-ed25519")
        place = ClusterPlace(
            project_id=PROJECT, cluster_id=CLUSTER, owner="bench", name="bench", type=ClusterType.horovod
        )
        try:
            began = time.perf_counter()
            public = runtime.prepare_cluster(place)
            prepared = time.perf_counter() - began
            user_key = key.export_public_key().decode().strip()
            state = cluster_state(
                project_id=PROJECT,
                cluster_id=CLUSTER,
                workers=arguments.workers,
                user_key=user_key,
                public_key=public,
            )
            names = [LAUNCHER] + [worker_name(i) for i in range(arguments.workers)]
            began = time.perf_counter()
            for name in names:
                _apply(runtime, state, name)
            ports = _until_running(runtime, names)
            started = time.perf_counter() - began
            print(f"cluster key made in {prepared * 1000:.0f} ms")
            print(f"{len(names)} pods applied and all listening for SSH in {started:.2f} s")
            writes = [_publish(runtime, names[1:], generation) for generation in range(1, 6)]
            print(f"a hostfile generation written in {statistics.median(writes) * 1000:.1f} ms (median of 5)")
            out, hop = asyncio.run(_run(ports[LAUNCHER], key, EVERY_HOST))
            assert out.split() == names[1:], out
            hops = [asyncio.run(_run(ports[LAUNCHER], key, "ssh worker-00 true"))[1] for _ in range(5)]
            print(
                f"from the launcher, ssh to each of {arguments.workers} hosts in {hop:.2f} s; one hop "
                f"{statistics.median(hops) * 1000:.0f} ms (median of 5)"
            )
            extra = worker_name(arguments.workers)
            began = time.perf_counter()
            _apply(runtime, state, extra)
            _until_running(runtime, [extra])
            _publish(runtime, [*names[1:], extra], 6)
            print(f"scale-out by one: running and in the hostfile in {time.perf_counter() - began:.2f} s")
            began = time.perf_counter()
            _publish(runtime, names[1:], 7)
            runtime.delete(PROJECT, "cluster", member_resource_id(CLUSTER, extra))
            print(f"scale-in by one: out of the hostfile and gone in {time.perf_counter() - began:.2f} s")
            print(
                f"memory: the launcher {_pod_rss(runtime, LAUNCHER):.0f} MiB, a worker "
                f"{_pod_rss(runtime, worker_name(0)):.0f} MiB (its SSH server)"
            )
            began = time.perf_counter()
            runtime.delete_cluster(PROJECT, CLUSTER)
            print(f"the whole cluster deleted in {time.perf_counter() - began:.2f} s")
        finally:
            runtime.delete_project(PROJECT)


if __name__ == "__main__":
    main()
