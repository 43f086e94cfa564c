"""Image and service figures on this machine: a local commit's snapshot (throughput, the same digest again,
restore), a push to a local distribution registry, and how soon a local container's services answer and
what they hold in memory.

    .venv/bin/python -m benchmarks.images --megabytes 256 --files 2000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

import asyncssh

from activities.local import LocalRuntime
from activities.local_environment import tools_folder
from activities.local_services import jupyter_state
from activities.local_supervisor import group_members
from activities.oci_layout import ImageStore
from activities.registry import Registry
from models.workloads import Credentials, ResourceRequest, ServicePort, WorkloadState
from services.containers import hash_password
from services.kinds import runtime_kinds
from tests.activities.test_image_commits import _serve_registry
from tests.specs import one_role_spec

MIB = 1024 * 1024
PASSWORD = "benchmark password"


def make_tree(root: Path, megabytes: int, files: int) -> None:
    """Half random (incompressible), half text, in folders of 100 files."""
    size = megabytes * MIB // files
    for number in range(files):
        folder = root / f"d{number // 100}"
        folder.mkdir(parents=True, exist_ok=True)
        data = os.urandom(size) if number % 2 else (b"epoch %d loss 0.25\n" % number) * (size // 20 + 1)
        (folder / f"f{number}.bin").write_bytes(data[:size])


def snapshot(home: Path, megabytes: int, files: int) -> None:
    tree = home / "tree"
    make_tree(tree, megabytes, files)
    store = ImageStore(home / "store")
    began = time.perf_counter()
    first = store.snapshot(tree, lambda _: None)
    took = time.perf_counter() - began
    rate, image_size = megabytes / took, first.size_bytes / MIB
    print(
        f"snapshot of {megabytes} MiB, {files} files: {took:.1f} s ({rate:.0f} MiB/s), {image_size:.0f} MiB"
    )
    began = time.perf_counter()
    again = store.snapshot(tree, lambda _: None)
    same = again.digest == first.digest
    print(f"the same tree again: {time.perf_counter() - began:.1f} s, same digest: {same}")
    restored = home / "restored"
    restored.mkdir()
    began = time.perf_counter()
    store.restore(first.digest, restored)
    print(f"restore: {time.perf_counter() - began:.1f} s")
    if shutil.which("docker-registry"):
        for address in _serve_registry(home / "registry"):
            registry = Registry(address, insecure=True)
            began = time.perf_counter()
            for blob in reversed(store.blobs_of(first.digest)[1:]):
                registry.push_blob("bench/tree", blob, store.blob_path(blob))
            registry.put_manifest(
                "bench/tree", "v1", store.blob(first.digest), "application/vnd.oci.image.manifest.v1+json"
            )
            took = time.perf_counter() - began
            print(
                f"push to a local docker-registry: {took:.1f} s ({first.size_bytes / MIB / took:.0f} MiB/s)"
            )


def group_rss(process_group: int) -> float:
    """MiB resident in the group's processes; the SSH sessions' own shells are in groups of their own."""
    total = 0
    for pid in group_members(process_group):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total / MIB


def services(home: Path) -> None:
    tools = tools_folder(None)
    ports = [ServicePort(name="ssh", port=22)]
    if jupyter_state(tools) == "ready":
        ports += [ServicePort(name="jupyterlab", port=8889), ServicePort(name="webterminal", port=7681)]
    else:
        print("Jupyter is not installed (mlcp install-tools): SSH alone")
    runtime = LocalRuntime(home, runtime_kinds(), tools=tools)
    spec = one_role_spec(
        project_id="bench",
        resource_id="svc",
        kind="container",
        owner="bench",
        name="svc",
        image="python:3.11",
        resources=ResourceRequest(vcpu=1, ram_gb=1),
        ports=ports,
        credentials=Credentials(password_hash=hash_password(PASSWORD)),
    )
    began = time.perf_counter()
    runtime.apply(spec)
    while (status := runtime.status("bench", "container", "svc")).state != WorkloadState.running:
        time.sleep(0.05)
    print(f"{', '.join(p.name for p in ports)} listening {time.perf_counter() - began:.1f} s after the apply")
    ssh = next(e for e in status.endpoints if e.name == "ssh")

    async def login() -> float:
        started = time.perf_counter()
        async with asyncssh.connect(
            "127.0.0.1",
            ssh.node_port or 0,
            username="u",
            password=PASSWORD,
            known_hosts=None,
            client_keys=None,
        ) as connection:
            await connection.run("true", check=True)
        return time.perf_counter() - started

    timings = sorted(asyncio.run(login()) for _ in range(5))
    print(f"SSH password login and a command (median of 5): {timings[2] * 1000:.0f} ms")
    pid = int(
        (home / "runtime" / "mlcp-bench" / "container-svc" / "pid")
        .read_text()
        .split('"pid":')[1]
        .split(",")[0]
    )
    print(f"memory of the container's process group: {group_rss(pid):.0f} MiB")
    runtime.delete_project("bench")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=int, default=256)
    parser.add_argument("--files", type=int, default=2000)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        snapshot(Path(folder), options.megabytes, options.files)
    with tempfile.TemporaryDirectory() as folder:
        services(Path(folder))


if __name__ == "__main__":
    main()
