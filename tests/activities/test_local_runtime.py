"""The local runtime with real processes on this host, in a throwaway home folder."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from activities import gpu
from activities.gpu import GpuDevice, nvml_devices
from activities.local import LocalRuntime
from activities.local_environment import unsupported
from activities.local_supervisor import process_info
from config import Settings
from models.lifecycle import Quota
from models.workloads import (
    Credentials,
    ProjectEnvironment,
    ResourceRequest,
    ServicePort,
    WorkloadSpec,
    WorkloadState,
    WorkloadStatus,
)
from services.kinds import runtime_kinds
from services.runtimes import runtime_from_settings
from tests.specs import one_role_spec

PROJECT = "prj1"
JOB = "job"
CONTAINER = "container"
SETTLE_SECONDS = 10.0
T = TypeVar("T")


def make_spec(
    resource_id: str, kind: str = JOB, command: list[str] | None = None, gpu: int = 0, **extra: Any
) -> WorkloadSpec:
    return one_role_spec(
        project_id=PROJECT,
        resource_id=resource_id,
        kind=kind,
        owner="alice",
        name=f"my-{resource_id}",
        image="nvcr.io/nvidia/pytorch:24.01-py3",
        command=command,
        resources=ResourceRequest(gpu=gpu, vcpu=2, ram_gb=4),
        **extra,
    )


def wait_for(probe: Callable[[], T | None], what: str, seconds: float = SETTLE_SECONDS) -> T:
    """Real processes take real time to start and end; poll for the outcome, bounded."""
    give_up = time.monotonic() + seconds
    while (found := probe()) is None or found is False:
        if time.monotonic() > give_up:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)
    return found


def settled(runtime: LocalRuntime, kind: str, resource_id: str) -> WorkloadStatus:
    def probe() -> WorkloadStatus | None:
        status = runtime.status(PROJECT, kind, resource_id)
        return None if status.state == WorkloadState.running else status

    return wait_for(probe, f"{kind} {resource_id} to end")


def log_line(runtime: LocalRuntime, kind: str, resource_id: str, prefix: str) -> str:
    def probe() -> str | None:
        lines = runtime.logs(PROJECT, kind, resource_id).splitlines()
        return next((line.removeprefix(prefix) for line in lines if line.startswith(prefix)), None)

    return wait_for(probe, f"a log line starting {prefix!r}")


def supervisor_pid(home: Path, kind: str, resource_id: str) -> int:
    pid_file = home / "runtime" / f"mlcp-{PROJECT}" / f"{kind}-{resource_id}" / "pid"
    return int(json.loads(pid_file.read_text())["pid"])


def is_running(pid: int) -> bool:
    info = process_info(pid)
    return info is not None and not info.ended  # an orphan's zombie lingers where init does not reap


def fake_devices(count: int) -> Callable[[], list[GpuDevice]]:
    devices = [
        GpuDevice(index=i, uuid=f"GPU-fake-{i}", name="NVIDIA A100", memory_mb=81920) for i in range(count)
    ]
    return lambda: devices


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[LocalRuntime]:
    runtime = LocalRuntime(
        tmp_path, runtime_kinds(), gpu_devices=fake_devices(0), stop_grace_seconds=5, tools=tmp_path / "tools"
    )
    yield runtime
    runtime.delete_project(PROJECT)  # no process outlives its test


def test_echo_job_succeeds_and_its_log_outlives_the_workload(runtime: LocalRuntime) -> None:
    first = runtime.apply(make_spec("hello", command=["echo", "Hello World!"]))
    assert first.state in (WorkloadState.running, WorkloadState.succeeded)

    status = settled(runtime, JOB, "hello")
    assert (status.state, status.reason, status.exit_code) == (WorkloadState.succeeded, "Completed", 0)
    assert status.started_at is not None and status.finished_at is not None
    assert status.started_at <= status.finished_at
    assert runtime.logs(PROJECT, JOB, "hello") == "Hello World!\n"
    assert [event.reason for event in runtime.events(PROJECT, JOB, "hello")] == ["Started", "Exited"]

    runtime.delete(PROJECT, JOB, "hello")
    assert runtime.status(PROJECT, JOB, "hello").state == WorkloadState.gone
    assert runtime.events(PROJECT, JOB, "hello") == []
    assert runtime.logs(PROJECT, JOB, "hello") == "Hello World!\n"
    runtime.delete(PROJECT, JOB, "hello")  # absent is success


def test_failed_job_reports_exit_code_and_last_log_line(runtime: LocalRuntime) -> None:
    runtime.apply(make_spec("boom", command=["sh", "-c", "echo working; echo 'disk full' >&2; exit 3"]))
    status = settled(runtime, JOB, "boom")
    assert (status.state, status.reason, status.exit_code) == (WorkloadState.failed, "Error", 3)
    assert status.message == "disk full"
    assert runtime.events(PROJECT, JOB, "boom")[-1].type == "Warning"


def test_what_a_job_leaves_running_ends_with_it(runtime: LocalRuntime) -> None:
    runtime.apply(make_spec("bg", command=["sh", "-c", "sleep 300 & echo child=$!"]))
    assert settled(runtime, JOB, "bg").state == WorkloadState.succeeded
    child = int(log_line(runtime, JOB, "bg", "child="))
    # The supervisor records the exit, then kills the group: on a loaded machine that takes a moment.
    wait_for(lambda: not is_running(child), "the job's background child to end with it")


def test_command_that_cannot_run_fails_with_127(runtime: LocalRuntime) -> None:
    runtime.apply(make_spec("typo", command=["no-such-program-here", "--flag"]))
    status = settled(runtime, JOB, "typo")
    assert (status.state, status.exit_code) == (WorkloadState.failed, 127)
    assert status.message.startswith("mlcp: cannot run no-such-program-here")


def test_job_without_command_fails_plainly_and_starts_nothing(runtime: LocalRuntime, tmp_path: Path) -> None:
    status = runtime.apply(make_spec("bare"))
    assert (status.state, status.reason, status.exit_code) == (WorkloadState.failed, "NoCommand", None)
    assert "cannot run the image's own entrypoint" in status.message
    assert not list(tmp_path.glob("runtime/*/job-bare/pid"))


def test_apply_twice_starts_one_process(runtime: LocalRuntime, tmp_path: Path) -> None:
    spec = make_spec("twice", kind=CONTAINER)
    assert runtime.apply(spec).state == WorkloadState.running
    pid = supervisor_pid(tmp_path, CONTAINER, "twice")
    assert runtime.apply(spec).state == WorkloadState.running
    assert supervisor_pid(tmp_path, CONTAINER, "twice") == pid
    assert [event.reason for event in runtime.events(PROJECT, CONTAINER, "twice")] == ["Started"]

    # A finished job is not run again either.
    job = make_spec("once", command=["echo", "ran"])
    runtime.apply(job)
    settled(runtime, JOB, "once")
    assert runtime.apply(job).state == WorkloadState.succeeded
    assert runtime.logs(PROJECT, JOB, "once") == "ran\n"


def test_container_without_command_runs_until_deleted(runtime: LocalRuntime, tmp_path: Path) -> None:
    spec = make_spec("idle", kind=CONTAINER, ports=[ServicePort(name="jupyter", port=8888)])
    assert runtime.apply(spec).state == WorkloadState.creating  # until its services say how they stand
    pid = supervisor_pid(tmp_path, CONTAINER, "idle")
    os.kill(pid, 0)  # alive

    def services_settled() -> WorkloadStatus | None:
        status = runtime.status(PROJECT, CONTAINER, "idle")
        return status if status.state == WorkloadState.running else None

    status = wait_for(services_settled, "its services to settle")
    assert status.endpoints == []  # Jupyter is not installed in this home: nothing listens, nothing is shown
    assert any(note.startswith("service jupyter: Jupyter is not installed") for note in status.unsupported)
    assert any("image nvcr.io/nvidia/pytorch:24.01-py3 is not pulled" in note for note in status.unsupported)
    assert any("entrypoint" in note for note in status.unsupported)
    assert any(note.startswith("node ports") for note in status.unsupported)

    runtime.delete(PROJECT, CONTAINER, "idle")
    assert not is_running(pid)
    assert runtime.status(PROJECT, CONTAINER, "idle").state == WorkloadState.gone


def test_delete_takes_down_the_whole_process_group_and_keeps_the_log(runtime: LocalRuntime) -> None:
    command = ["sh", "-c", "sleep 300 & echo child=$!; wait"]
    runtime.apply(make_spec("tree", kind=CONTAINER, command=command))
    child = int(log_line(runtime, CONTAINER, "tree", "child="))
    assert is_running(child)

    runtime.delete(PROJECT, CONTAINER, "tree")
    assert not is_running(child)
    assert runtime.status(PROJECT, CONTAINER, "tree").state == WorkloadState.gone
    assert f"child={child}" in runtime.logs(PROJECT, CONTAINER, "tree")


def test_deadline_stops_a_long_job(runtime: LocalRuntime) -> None:
    runtime.apply(make_spec("slow", command=["sleep", "30"], active_deadline_seconds=1))
    status = settled(runtime, JOB, "slow")
    assert (status.state, status.reason) == (WorkloadState.failed, "DeadlineExceeded")
    assert status.exit_code == 128 + signal.SIGTERM
    assert "deadline of 1 s" in status.message
    reasons = [event.reason for event in runtime.events(PROJECT, JOB, "slow")]
    assert reasons == ["Started", "DeadlineExceeded", "Exited"]


def test_gpu_request_on_a_host_without_gpus_waits_unschedulable(tmp_path: Path) -> None:
    if nvml_devices():
        pytest.skip("NVML finds a GPU on this host")
    runtime = LocalRuntime(tmp_path, runtime_kinds())  # NVML's own answer, not a fixed list
    spec = make_spec("train", command=["echo", "never"], gpu=2)
    for _ in range(2):
        status = runtime.apply(spec)
        assert (status.state, status.reason) == (WorkloadState.pending, "Unschedulable")
        assert (
            status.message
            == "needs 2 GPUs, 0 free of 0 on this host: this host has no NVIDIA GPU (NVML finds none)"
        )
    assert runtime.status(PROJECT, JOB, "train") == status
    assert [event.reason for event in runtime.events(PROJECT, JOB, "train")] == ["FailedScheduling"]
    assert runtime.logs(PROJECT, JOB, "train") == ""
    runtime.delete_project(PROJECT)


def test_gpus_are_handed_out_one_holder_each_and_freed(tmp_path: Path) -> None:
    runtime = LocalRuntime(tmp_path, runtime_kinds(), gpu_devices=fake_devices(2), stop_grace_seconds=5)
    command = ["sh", "-c", 'echo "cuda=$CUDA_VISIBLE_DEVICES"; exec sleep 300']
    try:
        first = runtime.apply(make_spec("a", command=command, gpu=1))
        second = runtime.apply(make_spec("b", command=command, gpu=1))
        assert first.state == second.state == WorkloadState.running
        assert {*first.gpus, *second.gpus} == {"GPU-fake-0", "GPU-fake-1"}
        assert log_line(runtime, JOB, "a", "cuda=") == first.gpus[0]
        assert log_line(runtime, JOB, "b", "cuda=") == second.gpus[0]

        third = runtime.apply(make_spec("c", command=command, gpu=1))
        assert (third.state, third.reason) == (WorkloadState.pending, "Unschedulable")
        assert third.message == "needs 1 GPU, 0 free of 2 on this host"

        # A new runtime object sees the same holders: the ledger is the folders on disk.
        restarted = LocalRuntime(tmp_path, runtime_kinds(), gpu_devices=fake_devices(2))
        assert restarted.apply(make_spec("c", command=command, gpu=1)).state == WorkloadState.pending

        runtime.delete(PROJECT, JOB, "a")
        third = runtime.apply(make_spec("c", command=command, gpu=1))
        assert third.state == WorkloadState.running
        assert third.gpus == first.gpus
    finally:
        runtime.delete_project(PROJECT)


def test_concurrent_applies_start_once_and_never_share_a_gpu(tmp_path: Path) -> None:
    runtime = LocalRuntime(tmp_path, runtime_kinds(), gpu_devices=fake_devices(1), stop_grace_seconds=5)
    specs = [make_spec(name, kind=CONTAINER, gpu=1) for name in ("x", "y") for _ in range(4)]
    try:
        with ThreadPoolExecutor(max_workers=len(specs)) as pool:
            states = sorted(status.state for status in pool.map(runtime.apply, specs))
        assert states == [WorkloadState.pending] * 4 + [WorkloadState.running] * 4
        started = [
            e
            for name in ("x", "y")
            for e in runtime.events(PROJECT, CONTAINER, name)
            if e.reason == "Started"
        ]
        assert len(started) == 1
    finally:
        runtime.delete_project(PROJECT)


def test_environment_is_minimal_and_arguments_reach_the_command_untouched(
    runtime: LocalRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLCP_SMTP_PASSWORD", "worker-secret")
    script = 'echo "cuda=[$CUDA_VISIBLE_DEVICES] project=$MLCP_PROJECT_ID mine=$MY_VAR"'
    script += ' "secret=[$MLCP_SMTP_PASSWORD]"'
    runtime.apply(make_spec("env", command=["sh", "-c", script], env={"MY_VAR": "x y"}))
    runtime.apply(make_spec("argv", command=["printf", "%s|", "a b", "$HOME", "'q'", "; rm -rf /"]))
    settled(runtime, JOB, "env")
    settled(runtime, JOB, "argv")
    assert runtime.logs(PROJECT, JOB, "env") == f"cuda=[] project={PROJECT} mine=x y secret=[]\n"
    assert runtime.logs(PROJECT, JOB, "argv") == "a b|$HOME|'q'|; rm -rf /|"


def test_status_survives_a_new_runtime_on_the_same_home(runtime: LocalRuntime, tmp_path: Path) -> None:
    before = runtime.apply(make_spec("keep", kind=CONTAINER))
    runtime.apply(make_spec("done", command=["sh", "-c", "exit 4"]))
    settled(runtime, JOB, "done")

    restarted = LocalRuntime(tmp_path, runtime_kinds(), gpu_devices=fake_devices(0), stop_grace_seconds=5)
    after = restarted.status(PROJECT, CONTAINER, "keep")
    assert after.state == WorkloadState.running
    assert after.started_at == before.started_at
    assert restarted.status(PROJECT, JOB, "done").exit_code == 4

    pid = supervisor_pid(tmp_path, CONTAINER, "keep")
    restarted.delete(PROJECT, CONTAINER, "keep")
    assert not is_running(pid)


def test_a_lost_container_starts_anew_on_apply_a_lost_job_never_runs_twice(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    script = ["sh", "-c", "echo shell=$$; exec sleep 300"]
    container, job = make_spec("lost", kind=CONTAINER, command=script), make_spec("lostjob", command=script)
    for spec in (container, job):
        runtime.apply(spec)
    old_command = int(log_line(runtime, CONTAINER, "lost", "shell="))
    log_line(runtime, JOB, "lostjob", "shell=")  # the job's command has started, so it may have done work
    for kind, resource in ((CONTAINER, "lost"), (JOB, "lostjob")):
        os.kill(supervisor_pid(tmp_path, kind, resource), signal.SIGKILL)  # as a host's OOM killer might
        status = settled(runtime, kind, resource)
        assert (status.state, status.reason) == (WorkloadState.failed, "Lost")

    assert runtime.apply(container).state == WorkloadState.running
    assert not is_running(old_command)  # what the lost supervisor left behind does not run twice
    assert "the previous process was lost" in runtime.events(PROJECT, CONTAINER, "lost")[-1].message
    # A job's command may have done its work: running it again could do it twice.
    assert (runtime.apply(job).state, runtime.apply(job).reason) == (WorkloadState.failed, "Lost")
    assert [line for line in runtime.logs(PROJECT, JOB, "lostjob").splitlines() if "shell=" in line] != []
    assert len([e for e in runtime.events(PROJECT, JOB, "lostjob") if e.reason == "Started"]) == 1
    runtime.delete(PROJECT, JOB, "lostjob")


def test_logs_tail_reads_the_end_of_a_large_log(runtime: LocalRuntime) -> None:
    runtime.apply(make_spec("seq", command=["seq", "1", "30000"]))  # ~170 KB: several read blocks
    assert settled(runtime, JOB, "seq").state == WorkloadState.succeeded
    assert runtime.logs(PROJECT, JOB, "seq", tail_lines=3) == "29998\n29999\n30000\n"
    assert runtime.logs(PROJECT, JOB, "seq", tail_lines=0) == ""
    assert len(runtime.logs(PROJECT, JOB, "seq").splitlines()) == 200


def test_project_place_is_created_and_removed_with_kept_logs(runtime: LocalRuntime, tmp_path: Path) -> None:
    runtime.ensure_project(ProjectEnvironment(project_id=PROJECT, quota=Quota(gpu=2, vcpu=8, ram_gb=32)))
    runtime.ensure_project(ProjectEnvironment(project_id=PROJECT, quota=Quota(gpu=4, vcpu=8, ram_gb=32)))
    place = tmp_path / "runtime" / f"mlcp-{PROJECT}"
    assert json.loads((place / "project.json").read_text())["quota"]["gpu"] == 4

    runtime.apply(make_spec("gone", command=["echo", "bye"]))
    settled(runtime, JOB, "gone")
    runtime.delete(PROJECT, JOB, "gone")
    runtime.apply(make_spec("live", kind=CONTAINER))
    pid = supervisor_pid(tmp_path, CONTAINER, "live")

    runtime.delete_project(PROJECT)
    assert not place.exists()
    assert not is_running(pid)
    assert runtime.logs(PROJECT, JOB, "gone") == ""
    runtime.delete_project(PROJECT)  # absent is success


def test_unsupported_says_plainly_what_a_host_process_cannot_honour() -> None:
    spec = make_spec(
        "all",
        kind=CONTAINER,
        command=["jupyter", "lab"],
        gpu=1,
        ports=[ServicePort(name="ssh", port=22)],
        credentials=Credentials(authorized_keys=["ssh-ed25519 AAAA alice"]),
    )
    spec.main.resources.shm_gb = 8
    spec.main.resources.gpu_model = "A100"
    assert unsupported(spec, runtime_kinds()["container"]) == [
        "image nvcr.io/nvidia/pytorch:24.01-py3 is not pulled: the process runs on the host's own filesystem",
        "node ports: each service listens on its own free port of 127.0.0.1, shown in its endpoint",
        "vcpu/ram limits are not enforced: the process shares the host's CPUs and memory",
        "shared memory size is not set: the process uses the host's /dev/shm",
        "GPU model A100 is not matched: any free GPU here is handed out",
        "credentials (password, SSH keys) are not installed for a user: the process runs as the worker's "
        "user and finds them in the files $MLCP_PASSWORD_HASH_FILE and $MLCP_AUTHORIZED_KEYS_FILE",
    ]


def test_runtime_from_settings_is_local_under_the_home_folder(tmp_path: Path) -> None:
    runtime = runtime_from_settings(Settings(home=tmp_path, runtime="local"))
    assert isinstance(runtime, LocalRuntime)
    assert runtime.name == "local"
    assert runtime.root == tmp_path.resolve() / "runtime"


class FakeNvml:
    """Stands in for the NVML bindings, which need a driver this host does not have."""

    class NVMLError(Exception):
        pass

    def __init__(self, uuids: list[bytes | str], fail_init: bool = False) -> None:
        self.uuids = uuids
        self.fail_init = fail_init
        self.shut_down = False

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise self.NVMLError("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:
        self.shut_down = True

    def nvmlDeviceGetCount(self) -> int:
        return len(self.uuids)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetUUID(self, handle: int) -> bytes | str:
        return self.uuids[handle]

    def nvmlDeviceGetName(self, handle: int) -> str:
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        return type("Memory", (), {"total": 80 * 1024**3})()


def test_nvml_devices_lists_what_nvml_sees(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNvml([b"GPU-0000", "GPU-1111"])
    monkeypatch.setattr(gpu, "load_nvml", lambda: nvml)
    assert nvml_devices() == [
        GpuDevice(index=0, uuid="GPU-0000", name="NVIDIA H100 80GB HBM3", memory_mb=81920),
        GpuDevice(index=1, uuid="GPU-1111", name="NVIDIA H100 80GB HBM3", memory_mb=81920),
    ]
    assert nvml.shut_down


def test_nvml_devices_is_empty_without_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "load_nvml", lambda: FakeNvml([b"GPU-0000"], fail_init=True))
    assert nvml_devices() == []
    monkeypatch.setattr(gpu, "load_nvml", lambda: None)
    assert nvml_devices() == []
