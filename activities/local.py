"""The local runtime: workloads as process groups on this host, the embedded default of ``make run``.

Each workload lives in ``<home>/runtime/<namespace>/<workload>/``, which is also its working folder:

- ``spec.json``: the spec it was applied with
- ``log``: the command's stdout and stderr, kept as ``<namespace>/logs/<workload>.log`` after deletion
- ``launching``: written just before a process is started, with the GPUs it is given; a retried apply that
  finds it without ``pid`` looks for the process by its labels before starting another, so a worker killed
  between the two never runs a command twice
- ``pid``: the supervisor's PID and start time (so a recycled PID is never taken for ours), when it
  started, its deadline and the GPUs it holds
- ``exit``: how the command ended, written by the supervisor (activities/local_supervisor.py)
- ``events.jsonl``: what happened to it, one event a line

All state is on disk, so a restarted worker carries on where the last one stopped, and the supervisors
it started keep running meanwhile. Every process starts with its project, kind and resource ID in its
environment (``MLCP_PROJECT_ID``...): those are its labels, by which a project's deletion finds anything
left. GPUs are NVML's devices, handed out with CUDA_VISIBLE_DEVICES and held
while the workload runs. What a process on this host cannot honour (images, node ports, resource limits,
credentials) is said plainly in every status's ``unsupported``.
"""

from __future__ import annotations

import contextlib
import fcntl
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from activities import local_clusters, local_mounts, local_supervisor
from activities.gpu import GpuDeviceList, nvml_devices
from activities.heartbeat import not_interrupted
from activities.local_environment import (
    SERVICES_COMMAND,
    credential_files,
    serves,
    services_environment,
    storage_environment,
    tools_folder,
    workload_environment,
    workload_labels,
)
from activities.local_folder import (
    ARCHIVE_FOLDER,
    FILES_FOLDER,
    RESTORED_FILE,
    ExitRecord,
    LaunchRecord,
    WorkloadFolder,
)
from activities.local_gpus import LocalGpus
from activities.local_status import status_of
from activities.local_supervisor import (
    group_members,
    labelled_groups,
    process_info,
    signal_group,
    write_atomically,
)
from activities.oci_layout import ImageStore
from activities.runtime import (
    CommitFailed,
    KindTable,
    RuntimeKind,
    check_spec,
    kind_of,
    namespace_name,
    workload_name,
)
from activities.storage import LocalStorage
from config import Settings
from models.base import utcnow
from models.clusters import ClusterHosts, ClusterPlace
from models.workloads import (
    ProjectEnvironment,
    RuntimeEvent,
    WorkloadSpec,
    WorkloadState,
    WorkloadStatus,
)

RUNTIME_FOLDER = "runtime"
CLUSTER_KIND = "cluster"  # a cluster's pods and its shared folder are named after it, as on Kubernetes
PROJECT_FILE = "project.json"
LOCK_FILE = ".lock"
IMAGES_FOLDER = "images"
STOP_GRACE_SECONDS = 10.0  # between SIGTERM and SIGKILL on delete
KILL_WAIT_SECONDS = 5.0
POLL_SECONDS = 0.05
SUPERVISOR_SCRIPT = Path(local_supervisor.__file__).resolve()
# An idle process stands in for an image's own entrypoint, so a container without a command runs.
# Its one log line says so, since the log is where a user looks first.
KEEP_ALIVE = [
    sys.executable,
    "-I",
    "-u",
    "-c",
    "import time\nprint('mlcp local runtime: no image runs here; this idle process keeps the container up')"
    "\nwhile True: time.sleep(3600)",
]


# Children belong to the worker process, not to one runtime object: whichever object looks next reaps them.
_children: dict[int, subprocess.Popen[bytes]] = {}
_children_lock = threading.Lock()


def _reap_children() -> None:
    with _children_lock:
        for pid, child in list(_children.items()):
            if child.poll() is not None:
                del _children[pid]


def is_running(launch: LaunchRecord) -> bool:
    _reap_children()
    info = process_info(launch.pid)
    return info is not None and info.start_ticks == launch.start_ticks and not info.ended


class LocalRuntime:
    name = "local"

    def __init__(
        self,
        home: Path,
        kinds: KindTable,
        gpu_devices: GpuDeviceList = nvml_devices,
        stop_grace_seconds: float = STOP_GRACE_SECONDS,
        tools: Path | None = None,
    ) -> None:
        self.root = home.resolve() / RUNTIME_FOLDER
        self.kinds = kinds
        self.storage = LocalStorage(home)
        self.images = ImageStore(home.resolve() / IMAGES_FOLDER)
        # Where Jupyter is installed; by default none is (a folder of this home), so services say so at once.
        self.tools = (tools or home / "tools").resolve()
        self._gpus = LocalGpus(self.root, gpu_devices, is_running)
        self._stop_grace_seconds = stop_grace_seconds

    @classmethod
    def from_settings(cls, settings: Settings, kinds: KindTable) -> LocalRuntime:
        return cls(settings.home, kinds, tools=tools_folder(settings.tools_dir))

    # --- projects

    def ensure_project(self, environment: ProjectEnvironment) -> None:
        folder = self._project_folder(environment.project_id)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        # The quota is recorded for operators; admission against it is the project workflow's.
        write_atomically(folder / PROJECT_FILE, environment.model_dump_json(indent=2))

    def delete_project(self, project_id: str) -> None:
        folder = self._project_folder(project_id)
        if folder.is_dir():
            for entry in folder.iterdir():
                if entry.is_dir() and entry.name != ARCHIVE_FOLDER:
                    self._delete(WorkloadFolder(entry))
        # Whatever still runs with the project's label: a record lost, a folder removed by hand.
        for group in labelled_groups(workload_labels(project_id)):
            self._stop_group(group)
        with self._host_lock(), contextlib.suppress(FileNotFoundError):
            shutil.rmtree(folder)

    # --- workloads

    def apply(self, spec: WorkloadSpec) -> WorkloadStatus:
        kind = check_spec(self.kinds, spec)
        folder = self._folder(spec.project_id, spec.kind, spec.resource_id)
        with self._host_lock():
            folder.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            launch = folder.launch() or self._adopt(folder, spec)
            if folder.finished() is not None or (launch is not None and is_running(launch)):
                return self._status(folder)
            if launch is not None and kind.runs_to_completion:
                return self._status(folder)  # lost: starting it again would run the command twice
            folder.write_spec(spec)
            if kind.runs_to_completion and not spec.main.command:
                message = (
                    f"a {kind.name} needs a command here: the local runtime cannot run the image's own "
                    "entrypoint"
                )
                folder.write_finished(ExitRecord(exit_code=None, reason="NoCommand", message=message))
                return self._status(folder)
            gpus = self._gpus.take(spec)
            if gpus is None:
                folder.warn_once("FailedScheduling", self._gpus.shortage(spec))
            else:
                if launch is not None:
                    self._stop(launch)  # what the lost supervisor left running would run twice
                self._launch(folder, spec, kind, gpus, again=launch is not None)
            return self._status(folder)

    def status(self, project_id: str, kind: str, resource_id: str) -> WorkloadStatus:
        kind_of(self.kinds, kind)
        return self._status(self._folder(project_id, kind, resource_id))

    def logs(self, project_id: str, kind: str, resource_id: str, tail_lines: int = 200) -> str:
        return self._folder(project_id, kind, resource_id).logs(tail_lines)

    def events(self, project_id: str, kind: str, resource_id: str) -> list[RuntimeEvent]:
        return self._folder(project_id, kind, resource_id).events()

    def delete(self, project_id: str, kind: str, resource_id: str) -> None:
        kind_of(self.kinds, kind)
        self._delete(self._folder(project_id, kind, resource_id))

    # --- training clusters (activities/local_clusters.py)

    def prepare_cluster(self, place: ClusterPlace) -> str:
        folder = self._folder(place.project_id, CLUSTER_KIND, place.cluster_id).path
        with self._host_lock():
            return local_clusters.ensure_keypair(folder)

    def publish_hosts(self, hosts: ClusterHosts) -> None:
        members = {
            host: self._member_folder(hosts.project_id, hosts.cluster_id, host).path for host in hosts.hosts
        }
        launcher = self._member_folder(hosts.project_id, hosts.cluster_id, "launcher").path
        cluster = self._folder(hosts.project_id, CLUSTER_KIND, hosts.cluster_id).path
        local_clusters.write_hosts(launcher, cluster, hosts, members)

    def delete_cluster(self, project_id: str, cluster_id: str) -> bool:
        project = self._project_folder(project_id)
        prefix = f"{workload_name(CLUSTER_KIND, cluster_id)}-"
        members = (
            [entry for entry in project.iterdir() if entry.name.startswith(prefix)]
            if project.is_dir()
            else []
        )
        for entry in members:
            self._delete(WorkloadFolder(entry))
        self._delete(self._folder(project_id, CLUSTER_KIND, cluster_id))
        return not any(entry.exists() for entry in members)

    def _member_folder(self, project_id: str, cluster_id: str, member: str) -> WorkloadFolder:
        return self._folder(project_id, CLUSTER_KIND, f"{cluster_id}-{member}")

    def _cluster_folder(self, spec: WorkloadSpec) -> Path:
        assert spec.cluster is not None
        return self._folder(spec.project_id, CLUSTER_KIND, spec.cluster.cluster_id).path

    # --- commits (activities/local_commits.py)

    def spec_of(self, project_id: str, kind: str, resource_id: str) -> WorkloadSpec | None:
        return self._folder(project_id, kind, resource_id).spec()

    def commit_folder(self, project_id: str, kind: str, resource_id: str) -> Path:
        """The own folder of a running workload, which a commit captures."""
        folder = self._folder(project_id, kind, resource_id)
        state = self._status(folder).state
        if state not in (WorkloadState.running, WorkloadState.creating):
            raise CommitFailed(
                "ContainerNotRunning", f"{workload_name(kind, resource_id)} is {state.value}, not running"
            )
        files = folder.path / FILES_FOLDER
        files.mkdir(exist_ok=True)
        return files

    def _restore(self, folder: WorkloadFolder, spec: WorkloadSpec) -> None:
        """A container made from a committed image starts with the image's files in its folder, once."""
        _, _, digest = spec.main.image.partition("@")
        marker = folder.path / RESTORED_FILE
        if not digest or marker.exists() or not self.images.has(digest):
            return
        files = folder.path / FILES_FOLDER
        files.mkdir(exist_ok=True)
        written = self.images.restore(digest, files)
        marker.write_text(digest)
        folder.add_event("Normal", "Restored", f"{written} files and folders of image {digest[:19]} restored")

    # --- places

    def _project_folder(self, project_id: str) -> Path:
        return self.root / namespace_name(project_id)

    def _folder(self, project_id: str, kind: str, resource_id: str) -> WorkloadFolder:
        return WorkloadFolder(self._project_folder(project_id) / workload_name(kind, resource_id))

    @contextlib.contextmanager
    def _host_lock(self) -> Iterator[None]:
        """One decision at a time on this host, across threads and worker processes alike."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        with (self.root / LOCK_FILE).open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    # --- processes

    def _launch(
        self, folder: WorkloadFolder, spec: WorkloadSpec, kind: RuntimeKind, gpus: list[str], again: bool
    ) -> None:
        deadline = spec.active_deadline_seconds if kind.runs_to_completion else None
        supervisor = [sys.executable, "-I", str(SUPERVISOR_SCRIPT)]
        if deadline is not None:
            supervisor += ["--deadline", str(deadline)]
        command = spec.main.command
        mounts = self._host_mounts(spec)
        workdir = next((mount.mount_path for mount in spec.mounts if mount.workdir), None)
        env = workload_environment(spec, gpus)
        env.update(storage_environment(spec, self.storage.identity(spec.project_id)))
        env.update(credential_files(folder.path, spec))
        env.update(services_environment(folder.path, spec, self.tools))
        hostname = None
        if spec.cluster is not None:
            hostname = spec.cluster.member
            launcher = self._member_folder(spec.project_id, spec.cluster.cluster_id, "launcher")
            env.update(
                local_clusters.member_environment(launcher.path, self._cluster_folder(spec), spec.cluster)
            )
        self._restore(folder, spec)
        if not command and serves(spec):
            command = SERVICES_COMMAND
        # Started and recorded as one step: a cancelled activity must not leave a process nobody records.
        with not_interrupted():
            intent = LaunchRecord(
                pid=0, start_ticks=0, started_at=utcnow(), gpus=gpus, deadline_seconds=deadline
            )
            folder.write_launching(intent)
            local_mounts.prepare(folder.path, mounts, link=local_mounts.bubblewrap() is None)
            with folder.log.open("ab") as log:
                child = subprocess.Popen(
                    [
                        *supervisor,
                        "--",
                        *local_mounts.wrapped(command or KEEP_ALIVE, mounts, workdir, hostname),
                    ],
                    cwd=folder.path,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,  # its own group, away from the worker's signals and lifetime
                )
            with _children_lock:
                _children[child.pid] = child
            info = process_info(child.pid)  # our unreaped child, so listed even if it has already ended
            self._record_launch(folder, child.pid, info.start_ticks if info else 0, gpus, deadline)
        what = (
            "the servers of its services"
            if command is SERVICES_COMMAND
            else shlex.join(command)
            if command
            else "an idle process in place of the image's entrypoint"
        )
        message = f"started {what} as process group {child.pid}"
        if gpus:
            message += f" with GPUs {', '.join(gpus)}"
        if again:
            message += "; the previous process was lost"
        folder.add_event("Normal", "Started", message)

    def _host_mounts(self, spec: WorkloadSpec) -> list[local_mounts.HostMount]:
        mounts = []
        for mount in spec.mounts:
            if mount.volume_type == "home":
                mounts.append(
                    local_mounts.HostMount(
                        self.storage.ensure_home_folder(spec.owner), mount.mount_path, mount.read_only
                    )
                )
                continue
            if mount.volume_type != "nfs":
                continue
            source = self.storage.volume_folder(spec.project_id, mount.volume_id)
            if mount.sub_path:
                source = source / mount.sub_path
                source.mkdir(parents=True, exist_ok=True)
            mounts.append(local_mounts.HostMount(source, mount.mount_path, mount.read_only))
        return mounts

    @staticmethod
    def _record_launch(
        folder: WorkloadFolder, pid: int, start_ticks: int, gpus: list[str], deadline: int | None
    ) -> LaunchRecord:
        launch = LaunchRecord(
            pid=pid, start_ticks=start_ticks, started_at=utcnow(), gpus=gpus, deadline_seconds=deadline
        )
        folder.write_launch(launch)
        folder.clear_launching()
        return launch

    def _adopt(self, folder: WorkloadFolder, spec: WorkloadSpec) -> LaunchRecord | None:
        """A process started by an apply that was killed before recording it: found by its labels."""
        intent = folder.launching()
        if intent is None:
            return None
        for group in labelled_groups(workload_labels(spec.project_id, spec.kind, spec.resource_id)):
            info = process_info(group)
            if info is not None:
                deadline = (
                    spec.active_deadline_seconds
                    if kind_of(self.kinds, spec.kind).runs_to_completion
                    else None
                )
                folder.add_event("Normal", "Adopted", f"process group {group} was started but not recorded")
                return self._record_launch(folder, group, info.start_ticks, intent.gpus, deadline)
        folder.clear_launching()  # it never started
        return None

    @staticmethod
    def _owns_group(launch: LaunchRecord) -> bool:
        # A group's number is its first leader's PID and is not reused while any member lives, so the
        # group is ours when that PID is our supervisor or held by no process at all.
        info = process_info(launch.pid)
        return info is None or info.start_ticks == launch.start_ticks

    @staticmethod
    def _wait_group_gone(process_group: int, seconds: float) -> bool:
        give_up = time.monotonic() + seconds
        while group_members(process_group):
            if time.monotonic() >= give_up:
                return False
            time.sleep(POLL_SECONDS)
            _reap_children()
        return True

    def _stop(self, launch: LaunchRecord) -> None:
        if self._owns_group(launch):
            self._stop_group(launch.pid)

    def _stop_group(self, process_group: int) -> None:
        """SIGTERM, then SIGKILL after the grace period; raises if the group outlives both."""
        if not group_members(process_group):
            return
        signal_group(process_group, signal.SIGTERM)
        if self._wait_group_gone(process_group, self._stop_grace_seconds):
            return
        signal_group(process_group, signal.SIGKILL)
        if not self._wait_group_gone(process_group, KILL_WAIT_SECONDS):
            raise RuntimeError(f"process group {process_group} is still running after SIGKILL")

    def _delete(self, folder: WorkloadFolder) -> None:
        if not folder.exists():
            return
        launch = folder.launch()
        if launch is not None:
            self._stop(launch)
        spec = folder.spec()
        if spec is not None:  # and whatever an interrupted apply started without recording it
            for group in labelled_groups(workload_labels(spec.project_id, spec.kind, spec.resource_id)):
                self._stop_group(group)
        with self._host_lock():
            folder.archive_log()
            local_mounts.clean_up(folder.path)
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(folder.path)

    # --- status

    def _status(self, folder: WorkloadFolder) -> WorkloadStatus:
        spec = folder.spec()
        if spec is None:
            return WorkloadStatus(state=WorkloadState.gone)
        return status_of(folder, spec, kind_of(self.kinds, spec.kind), is_running, self._gpus.shortage)
