"""A real training cluster on the local runtime: three process groups with host names of their own, the
launcher reaching each host its hostfile lists over SSH, before and after scaling."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from activities import local_mounts
from activities.local import LocalRuntime
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
from tests.activities.test_local_runtime import PROJECT, fake_devices
from tests.activities.test_local_services import run_over_ssh
from tests.specs import cluster_state

CLUSTER_ID = "k1"
START_SECONDS = 60.0

pytestmark = pytest.mark.skipif(
    local_mounts.bubblewrap() is None or shutil.which("ssh") is None,
    reason="a local cluster needs bubblewrap (its pods' host names) and an OpenSSH client (the launcher's)",
)


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[LocalRuntime]:
    runtime = LocalRuntime(
        tmp_path, runtime_kinds(), gpu_devices=fake_devices(0), stop_grace_seconds=5, tools=tmp_path / "t"
    )
    yield runtime
    runtime.delete_project(PROJECT)


def _start(runtime: LocalRuntime, state: ClusterState, name: str) -> int:
    """Apply one pod and wait until it runs; its SSH port."""
    member = ClusterMember(name=name, ordinal=None if name == LAUNCHER else int(name[-2:]))
    runtime.apply(member_spec(state, member))
    give_up = time.monotonic() + START_SECONDS
    while True:
        status = runtime.status(PROJECT, "cluster", member_resource_id(CLUSTER_ID, name))
        if status.state == WorkloadState.running:
            return next(e.node_port for e in status.endpoints if e.name == "ssh")  # type: ignore[return-value]
        assert status.state in (WorkloadState.creating, WorkloadState.pending), status
        assert time.monotonic() < give_up, f"{name} is still {status.state}: {status.message}"
        time.sleep(0.1)


def _publish(runtime: LocalRuntime, hosts: list[str], generation: int) -> None:
    runtime.publish_hosts(
        ClusterHosts(
            project_id=PROJECT,
            cluster_id=CLUSTER_ID,
            owner="alice",
            type=ClusterType.horovod,
            hosts=hosts,
            slots=1,
            generation=generation,
        )
    )


EVERY_HOST = 'for host in $(cut -d: -f1 "$MLCP_HOSTFILE"); do ssh "$host" hostname; done'


def _from_launcher(port: int, key: asyncssh.SSHKey, command: str) -> str:
    result = asyncio.run(run_over_ssh(port, command, client_keys=[key]))
    assert result.exit_status == 0, result.stderr
    return str(result.stdout)


def test_the_launcher_reaches_every_host_of_its_hostfile_before_and_after_scaling(
    runtime: LocalRuntime,
) -> None:
    user_key = asyncssh.generate_private_key("ssh-ed25519")
    public = user_key.export_public_key().decode().strip()
    place = ClusterPlace(
        project_id=PROJECT, cluster_id=CLUSTER_ID, owner="alice", name="train", type=ClusterType.horovod
    )
    key = runtime.prepare_cluster(place)
    assert key.startswith("ssh-ed25519 ") and runtime.prepare_cluster(place) == key  # made once
    state = cluster_state(
        project_id=PROJECT, cluster_id=CLUSTER_ID, workers=2, user_key=public, public_key=key
    )

    launcher = _start(runtime, state, LAUNCHER)
    for ordinal in range(2):
        _start(runtime, state, worker_name(ordinal))
    _publish(runtime, ["worker-00", "worker-01"], 1)
    assert _from_launcher(launcher, user_key, "hostname; cat $MLCP_HOSTFILE") == (
        "launcher\nworker-00:1\nworker-01:1\n"
    )
    assert _from_launcher(launcher, user_key, EVERY_HOST) == "worker-00\nworker-01\n"

    # Scale-out: the new worker joins once it runs; an older generation changes nothing.
    _start(runtime, state, worker_name(2))
    _publish(runtime, ["worker-00", "worker-01", "worker-02"], 2)
    _publish(runtime, ["worker-00"], 1)
    assert _from_launcher(launcher, user_key, EVERY_HOST) == "worker-00\nworker-01\nworker-02\n"
    assert _from_launcher(launcher, user_key, "sh $MLCP_DISCOVER_HOSTS") == (
        "worker-00:1\nworker-01:1\nworker-02:1\n"
    )

    # Scale-in: out of the hostfile first, then deleted.
    _publish(runtime, ["worker-00"], 3)
    for ordinal in (2, 1):
        runtime.delete(PROJECT, "cluster", member_resource_id(CLUSTER_ID, worker_name(ordinal)))
    assert _from_launcher(launcher, user_key, EVERY_HOST) == "worker-00\n"
    assert _from_launcher(launcher, user_key, "cat $(dirname $MLCP_HOSTFILE)/generation") == "3\n"

    assert runtime.delete_cluster(PROJECT, CLUSTER_ID)
    status = runtime.status(PROJECT, "cluster", member_resource_id(CLUSTER_ID, LAUNCHER))
    assert status.state == WorkloadState.gone
