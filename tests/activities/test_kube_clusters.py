"""Training clusters on the Kubernetes runtime, over HTTP against the API double: the member pods, the
shared objects (anchor, headless Service, SSH key), the hostfile written into the launcher, and removal.

Exec is stood in for by running the hostfile script with /bin/sh against a temporary folder in place of
the launcher's /etc/mlcp, so the script itself is what the tests exercise.
"""

from __future__ import annotations

import base64
import logging
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from activities.kube import KubernetesRuntime
from activities.kube_clusters import (
    HOSTFILE_SCRIPT,
    HostfileNotWritten,
    KubeClusters,
    hostfile_command,
)
from activities.kube_exec import ClusterNotReady
from models.clusters import (
    DISCOVER_HOSTS_SCRIPT,
    HOSTFILE_FOLDER,
    ClusterHosts,
    ClusterPlace,
    ClusterType,
    hostfile_files,
)
from models.workloads import (
    ClusterMembership,
    Credentials,
    ResourceRequest,
    ServicePort,
    WorkloadRole,
    WorkloadSpec,
    WorkloadState,
)
from services.kinds import runtime_kinds
from tests.activities.kube_harness import NAMESPACE, PROJECT, PUBLIC_KEY, Kube
from tests.kube_double import resources as r

CLUSTER_ID = "k1uster"
DOMAIN = "cluster.example"
SEARCH = f"cluster-{CLUSTER_ID}.{NAMESPACE}.svc.{DOMAIN}"
PLACE = ClusterPlace(
    project_id=PROJECT,
    cluster_id=CLUSTER_ID,
    owner="alice@example.com",
    name="ring",
    type=ClusterType.deepspeed,
)
CLUSTER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIClusterKeyStandIn mlcp-cluster"


def member(name: str) -> WorkloadSpec:
    """A member's spec as the cluster workflow makes it: one role, the launcher exposed, workers not."""
    launcher = name == "launcher"
    ports = [ServicePort(name="ssh", port=22)] + (
        [ServicePort(name="jupyter", port=8888)] if launcher else []
    )
    role = WorkloadRole(
        image="registry.example/deepspeed:0.14",
        resources=ResourceRequest(vcpu=2, ram_gb=4),
        ports=ports,
        expose=launcher,
        env={"MLCP_HOSTFILE": "/tmp/not-the-platforms"},
    )
    keys = ([PUBLIC_KEY] if launcher else []) + [CLUSTER_KEY]
    return WorkloadSpec(
        project_id=PROJECT,
        resource_id=f"{CLUSTER_ID}-{name}",
        kind="cluster",
        owner="alice@example.com",
        name=f"ring-{name}",
        roles=[role],
        credentials=Credentials(authorized_keys=keys),
        cluster=ClusterMembership(cluster_id=CLUSTER_ID, member=name),
    )


LAUNCHER, WORKER = member("launcher"), member("worker-00")


@dataclass
class LauncherFolder:
    """Exec into the launcher: the command runs here, with `folder` standing in for /etc/mlcp."""

    folder: Path
    calls: list[tuple[str, str]] = field(default_factory=list)
    answer: tuple[int, str] | None = None
    failure: Exception | None = None

    def __call__(self, namespace: str, pod: str, argv: Sequence[str]) -> tuple[int, str]:
        self.calls.append((namespace, pod))
        if self.failure is not None:
            raise self.failure
        if self.answer is not None:
            return self.answer
        assert list(argv[:3]) == ["sh", "-c", HOSTFILE_SCRIPT] and argv[4] == HOSTFILE_FOLDER
        done = run_script([*argv[:4], str(self.folder), *argv[5:]])
        return done.returncode, done.stdout + done.stderr


def run_script(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", *argv[1:]], capture_output=True, text=True, timeout=10, check=False)


@pytest.fixture
def launcher(tmp_path: Path) -> LauncherFolder:
    return LauncherFolder(tmp_path / "etc-mlcp")


@pytest.fixture
def runtime(kube: Kube, launcher: LauncherFolder) -> KubernetesRuntime:
    kube.project()
    return KubernetesRuntime(
        kube.double.api_client,
        runtime_kinds(),
        sleep=kube.sleeps.append,
        cluster_domain=DOMAIN,
        pod_exec=launcher,
    )


def pod(kube: Kube, spec: WorkloadSpec) -> dict[str, Any]:
    return kube.one(r.PODS, f"cluster-{spec.resource_id}")


def decoded(secret: dict[str, Any], key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()


def hosts(generation: int, cluster_type: ClusterType = ClusterType.deepspeed) -> ClusterHosts:
    return ClusterHosts(
        project_id=PROJECT,
        cluster_id=CLUSTER_ID,
        owner="alice@example.com",
        type=cluster_type,
        hosts=["worker-00", "worker-01"],
        slots=2,
        generation=generation,
    )


def files_in(folder: Path) -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(folder.iterdir())}


# Member pods.


def test_members_are_named_hosts_of_the_cluster_owned_by_its_anchor(
    kube: Kube, runtime: KubernetesRuntime
) -> None:
    runtime.prepare_cluster(PLACE)
    for spec in (LAUNCHER, WORKER, LAUNCHER):  # applying again changes nothing
        runtime.apply(spec)
    kube.settle()
    anchor = kube.one(r.CONFIG_MAPS, f"cluster-{CLUSTER_ID}")
    launcher, worker = pod(kube, LAUNCHER), pod(kube, WORKER)
    for spec, obj, name in ((LAUNCHER, launcher, "launcher"), (WORKER, worker, "worker-00")):
        metadata, pod_spec = obj["metadata"], obj["spec"]
        assert (pod_spec["hostname"], pod_spec["subdomain"]) == (name, f"cluster-{CLUSTER_ID}")
        assert pod_spec["dnsConfig"] == {"searches": [SEARCH]} and pod_spec["restartPolicy"] == "Always"
        assert metadata["labels"]["mlcp.io/cluster"] == CLUSTER_ID
        assert metadata["labels"]["mlcp.io/cluster-member"] == name
        assert metadata["labels"]["mlcp.io/resource-id"] == f"{CLUSTER_ID}-{name}"
        assert [(o["kind"], o["uid"]) for o in metadata["ownerReferences"]] == [
            ("ConfigMap", anchor["metadata"]["uid"])
        ]
        env = {e["name"]: e.get("value") for e in pod_spec["containers"][0]["env"]}
        assert (env["MLCP_CLUSTER_ID"], env["MLCP_CLUSTER_MEMBER"]) == (CLUSTER_ID, name)
        assert runtime.status(PROJECT, spec.kind, spec.resource_id).state == WorkloadState.running
        assert runtime.events(PROJECT, spec.kind, spec.resource_id)
    assert len(kube.objects(r.PODS)) == 2

    env = {e["name"]: e.get("value") for e in launcher["spec"]["containers"][0]["env"]}
    assert env["MLCP_HOSTFILE"] == "/etc/mlcp/hostfile"  # the platform's, not the user's variable
    assert (env["MLCP_HOSTS"], env["MLCP_DISCOVER_HOSTS"]) == (
        "/etc/mlcp/hosts",
        "/etc/mlcp/discover_hosts.sh",
    )
    volumes = {v["name"]: v for v in launcher["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in launcher["spec"]["containers"][0]["volumeMounts"]}
    key = mounts["/root/.ssh/id_ed25519"]
    assert key["subPath"] == "id_ed25519"
    assert volumes[key["name"]]["secret"]["secretName"] == f"cluster-{CLUSTER_ID}-ssh"
    assert volumes[key["name"]]["secret"]["items"] == [
        {"key": "id_ed25519", "path": "id_ed25519", "mode": 0o400}
    ]
    config = mounts["/root/.ssh/config"]
    assert config["subPath"] == "config"
    assert volumes[config["name"]]["configMap"]["name"] == f"cluster-{CLUSTER_ID}"
    assert volumes[config["name"]]["configMap"]["items"] == [{"key": "ssh_config", "path": "config"}]
    assert volumes[mounts["/etc/mlcp"]["name"]] == {"name": mounts["/etc/mlcp"]["name"], "emptyDir": {}}

    worker_env = {e["name"] for e in worker["spec"]["containers"][0]["env"]}
    assert "MLCP_HOSTS" not in worker_env
    worker_mounts = {m["mountPath"] for m in worker["spec"]["containers"][0]["volumeMounts"]}
    assert worker_mounts == {"/etc/mlcp/credentials"}
    worker_keys = decoded(kube.one(r.SECRETS, f"cluster-{WORKER.resource_id}-credentials"), "authorized_keys")
    assert worker_keys == CLUSTER_KEY + "\n"

    # Workers serve SSH to the launcher only: no NodePorts, no opened ports.
    assert kube.names(r.SERVICES) == [
        f"cluster-{CLUSTER_ID}",
        f"cluster-{CLUSTER_ID}-launcher-jupyter",
        f"cluster-{CLUSTER_ID}-launcher-ssh",
    ]
    assert kube.names(r.NETWORK_POLICIES) == [f"cluster-{CLUSTER_ID}-launcher-ports", "mlcp-isolate"]
    endpoints = runtime.status(PROJECT, LAUNCHER.kind, LAUNCHER.resource_id).endpoints
    assert [(e.name, e.node_port is not None) for e in endpoints] == [("ssh", True), ("jupyter", True)]

    runtime.delete(PROJECT, WORKER.kind, WORKER.resource_id)
    kube.settle()
    assert runtime.status(PROJECT, WORKER.kind, WORKER.resource_id).state == WorkloadState.gone
    assert f"cluster-{WORKER.resource_id}-credentials" not in kube.names(r.SECRETS)


def test_a_member_of_a_cluster_not_prepared_yet_waits_with_a_retryable_error(
    kube: Kube, runtime: KubernetesRuntime
) -> None:
    with pytest.raises(ClusterNotReady, match="prepare"):
        runtime.apply(WORKER)
    assert kube.objects(r.PODS) == []


# The shared objects.


def test_prepare_twice_leaves_one_immutable_key_and_answers_the_same_public_key(
    kube: Kube, runtime: KubernetesRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    first = runtime.prepare_cluster(PLACE)
    second = runtime.prepare_cluster(PLACE)
    assert first == second and first.startswith("ssh-ed25519 ") and "PRIVATE" not in first
    (secret,) = kube.objects(r.SECRETS)
    assert secret["metadata"]["name"] == f"cluster-{CLUSTER_ID}-ssh" and secret["immutable"] is True
    assert decoded(secret, "id_ed25519.pub").strip() == first
    private = decoded(secret, "id_ed25519")
    assert "OPENSSH PRIVATE KEY" in private and private.splitlines()[1] not in caplog.text

    anchor = kube.one(r.CONFIG_MAPS, f"cluster-{CLUSTER_ID}")
    labels = anchor["metadata"]["labels"]
    assert (labels["mlcp.io/kind"], labels["mlcp.io/resource-id"], labels["mlcp.io/cluster"]) == (
        "cluster",
        CLUSTER_ID,
        CLUSTER_ID,
    )
    config = anchor["data"]["ssh_config"]
    for line in ("Host *", "User root", "IdentityFile /root/.ssh/id_ed25519", "StrictHostKeyChecking no"):
        assert line in config
    service = kube.one(r.SERVICES, f"cluster-{CLUSTER_ID}")["spec"]
    assert service["clusterIP"] == "None" and service["selector"] == {"mlcp.io/cluster": CLUSTER_ID}
    assert service["publishNotReadyAddresses"] is False
    assert [(p["name"], p["port"]) for p in service["ports"]] == [("ssh", 22)]
    for obj in (secret, kube.one(r.SERVICES, f"cluster-{CLUSTER_ID}")):
        assert [o["uid"] for o in obj["metadata"]["ownerReferences"]] == [anchor["metadata"]["uid"]]


class _RacedSecret:
    """The runtime's objects, except that the first read of the key Secret misses one made meanwhile."""

    def __init__(self, runtime: KubernetesRuntime) -> None:
        self.runtime, self.missed = runtime, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runtime, name)

    def read_object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if kind == "Secret" and not self.missed:
            self.missed = True
            return None
        return self.runtime.read_object(kind, namespace, name)


def test_a_key_another_attempt_created_first_is_the_one_kept(
    kube: Kube, runtime: KubernetesRuntime, launcher: LauncherFolder
) -> None:
    made = runtime.prepare_cluster(PLACE)
    raced = KubeClusters(_RacedSecret(runtime), launcher, DOMAIN)
    assert raced.prepare(PLACE) == made
    assert kube.double.request_count("create", "secrets") == 2  # the second answered 409
    assert len(kube.objects(r.SECRETS)) == 1


# The hostfile.


@pytest.mark.parametrize(
    ("cluster_type", "hostfile"),
    [
        (ClusterType.deepspeed, "worker-00 slots=2\nworker-01 slots=2\n"),
        (ClusterType.horovod, "worker-00:2\nworker-01:2\n"),
    ],
)
def test_publish_writes_the_hostfile_into_the_launcher_and_the_anchor(
    kube: Kube,
    runtime: KubernetesRuntime,
    launcher: LauncherFolder,
    cluster_type: ClusterType,
    hostfile: str,
) -> None:
    runtime.prepare_cluster(PLACE)
    runtime.apply(LAUNCHER)
    kube.settle()
    runtime.publish_hosts(hosts(3, cluster_type))
    written = {
        "discover_hosts.sh": DISCOVER_HOSTS_SCRIPT,
        "generation": "3\n",
        "hostfile": hostfile,
        "hosts": "worker-00:2\nworker-01:2\n",
    }
    assert files_in(launcher.folder) == written
    assert launcher.calls == [(NAMESPACE, f"cluster-{CLUSTER_ID}-launcher")]
    assert stat.S_IMODE((launcher.folder / "discover_hosts.sh").stat().st_mode) == 0o755
    discovered = subprocess.run([launcher.folder / "discover_hosts.sh"], capture_output=True, text=True)
    assert discovered.stdout == written["hosts"]
    anchor = kube.one(r.CONFIG_MAPS, f"cluster-{CLUSTER_ID}")
    assert {key: anchor["data"][key] for key in written} == written

    # A re-prepare owns only ssh_config: the published hostfile stays.
    runtime.prepare_cluster(PLACE)
    assert kube.one(r.CONFIG_MAPS, f"cluster-{CLUSTER_ID}")["data"]["generation"] == "3\n"


def test_a_generation_is_written_once_and_an_older_one_never(
    kube: Kube, runtime: KubernetesRuntime, launcher: LauncherFolder
) -> None:
    runtime.prepare_cluster(PLACE)
    runtime.apply(LAUNCHER)
    kube.settle()
    runtime.publish_hosts(hosts(2))
    (launcher.folder / "hostfile").write_text("edited by hand\n")
    applies = kube.double.request_count("patch", "configmaps")
    runtime.publish_hosts(hosts(2))
    runtime.publish_hosts(hosts(1))
    assert (launcher.folder / "hostfile").read_text() == "edited by hand\n"
    assert kube.double.request_count("patch", "configmaps") == applies  # the anchor already has it
    runtime.publish_hosts(hosts(10))  # numerically newer, not lexically
    assert (launcher.folder / "hostfile").read_text() == "worker-00 slots=2\nworker-01 slots=2\n"
    assert (launcher.folder / "generation").read_text() == "10\n"
    assert len(launcher.calls) == 4


def test_the_script_carries_any_content_creates_its_folder_and_leaves_no_temporary_files(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "etc" / "mlcp"
    odd = {"hostfile": 'it\'s $HOME `id` "quoted"\n\\n\n', "generation": "7\n"}
    done = run_script(hostfile_command(odd, 7, folder=str(folder)))
    assert done.returncode == 0, done.stderr
    assert files_in(folder) == odd and sorted(p.name for p in folder.iterdir()) == ["generation", "hostfile"]
    (folder / "generation").write_text("garbage\n")  # unreadable: treated as none written
    assert run_script(hostfile_command(hostfile_files(hosts(1)), 1, folder=str(folder))).returncode == 0
    assert (folder / "generation").read_text() == "1\n"
    assert hostfile_command(odd, 7)[-3] == "generation"  # the rest first, the generation last


def test_publish_waits_for_a_running_launcher_and_reports_a_failed_write(
    kube: Kube, runtime: KubernetesRuntime, launcher: LauncherFolder
) -> None:
    with pytest.raises(ClusterNotReady, match="prepare"):
        runtime.publish_hosts(hosts(1))
    runtime.prepare_cluster(PLACE)
    with pytest.raises(ClusterNotReady, match="absent"):
        runtime.publish_hosts(hosts(1))
    kube.double.knobs.pod_start_delay = 60
    runtime.apply(LAUNCHER)
    kube.double.settle(advance_clock=False)
    with pytest.raises(ClusterNotReady, match="Pending"):
        runtime.publish_hosts(hosts(1))
    assert launcher.calls == []
    kube.settle()
    launcher.failure = ClusterNotReady("exec into the launcher failed: connection refused")
    with pytest.raises(ClusterNotReady, match="connection refused"):
        runtime.publish_hosts(hosts(1))
    launcher.failure, launcher.answer = None, (1, "mv: cannot move: Read-only file system\n")
    with pytest.raises(HostfileNotWritten, match="exited with 1: mv: cannot move: Read-only"):
        runtime.publish_hosts(hosts(1))


# Removal.


def test_delete_cluster_removes_every_object_and_says_so_only_once_all_are_gone(
    kube: Kube, runtime: KubernetesRuntime
) -> None:
    runtime.prepare_cluster(PLACE)
    runtime.apply(LAUNCHER)
    runtime.apply(WORKER)
    kube.settle()
    core = client.CoreV1Api(kube.double.api_client)
    held = f"cluster-{WORKER.resource_id}"
    core.patch_namespaced_pod(held, NAMESPACE, {"metadata": {"finalizers": ["example.com/hold"]}})
    assert runtime.delete_cluster(PROJECT, CLUSTER_ID) is False  # the held pod is still terminating
    assert [p["metadata"]["name"] for p in kube.objects(r.PODS)] == [held]
    core.patch_namespaced_pod(held, NAMESPACE, {"metadata": {"finalizers": None}})
    assert runtime.delete_cluster(PROJECT, CLUSTER_ID) is True
    kube.settle()
    assert kube.objects(r.PODS) == [] and kube.objects(r.SERVICES) == []
    assert kube.objects(r.SECRETS) == [] and kube.objects(r.CONFIG_MAPS) == []
    assert kube.names(r.NETWORK_POLICIES) == ["mlcp-isolate"]
    assert runtime.delete_cluster(PROJECT, CLUSTER_ID) is True  # nothing there is done
