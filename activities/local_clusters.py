"""Training clusters on the local runtime: the launcher and each worker are process groups of their own, each
in its own UTS namespace (bubblewrap), so `hostname` answers `launcher` or `worker-00` as on Kubernetes.

Every worker runs an SSH server on a loopback port that trusts the cluster's key; the launcher reaches them by
name through an `ssh` on its PATH that reads the cluster's ssh_config (OpenSSH takes `~` from the password
database, not from HOME, so a config in the container's home would not be read). The hostfile, the
`host:slots` list and `discover_hosts.sh` live in the launcher's folder, at the paths its environment names,
and are replaced atomically, generation by generation, exactly as on Kubernetes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from activities.local_supervisor import write_atomically
from models.clusters import (
    DISCOVER_HOSTS_ENV,
    HOSTFILE_ENV,
    HOSTS_ENV,
    ClusterHosts,
    hostfile_files,
)
from models.workloads import ClusterMembership

KEY_FILE = "id_ed25519"
CLUSTER_FOLDER = "cluster"  # in the launcher's folder: the hostfile's home
SSH_CONFIG_ENV = "MLCP_SSH_CONFIG"
LOOPBACK = "127.0.0.1"


def ensure_keypair(folder: Path) -> str:
    """The cluster's SSH keypair, made once; the private key stays in this folder (0600)."""
    import asyncssh

    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    private, public = folder / KEY_FILE, folder / f"{KEY_FILE}.pub"
    if not public.exists():
        key = asyncssh.generate_private_key("ssh-ed25519", comment="mlcp-cluster")
        write_atomically(private, key.export_private_key().decode(), mode=0o600)
        write_atomically(public, key.export_public_key().decode().strip() + "\n")
    return public.read_text().strip()


def member_environment(
    launcher_folder: Path, cluster_folder: Path, membership: ClusterMembership
) -> dict[str, str]:
    """What a pod of the cluster sees: who it is and, on the launcher, where its hostfile and ssh are."""
    env = {"MLCP_CLUSTER_ID": membership.cluster_id, "MLCP_CLUSTER_MEMBER": membership.member}
    if not membership.is_launcher:
        return env
    home = launcher_folder / CLUSTER_FOLDER
    home.mkdir(parents=True, exist_ok=True)
    bin_folder = home / "bin"
    bin_folder.mkdir(exist_ok=True)
    ssh = shutil.which("ssh") or "ssh"
    config = home / "ssh_config"
    write_atomically(bin_folder / "ssh", f'#!/bin/sh\nexec {ssh} -F "${SSH_CONFIG_ENV}" "$@"\n', mode=0o755)
    if not config.exists():
        write_atomically(config, _ssh_config(cluster_folder, {}))
    return env | {
        HOSTFILE_ENV: str(home / "hostfile"),
        HOSTS_ENV: str(home / "hosts"),
        DISCOVER_HOSTS_ENV: str(home / "discover_hosts.sh"),
        SSH_CONFIG_ENV: str(config),
        "PATH": f"{bin_folder}:{os.environ.get('PATH', '/usr/bin:/bin')}",
    }


def ssh_port(member_folder: Path) -> int | None:
    """Where a worker's SSH server listens, once it does."""
    try:
        entries = json.loads((member_folder / "services.json").read_text())
    except (OSError, ValueError):
        return None
    entry = entries.get("ssh") or {}
    return int(entry["port"]) if entry.get("state") == "ready" and "port" in entry else None


def _ssh_config(cluster_folder: Path, ports: dict[str, int]) -> str:
    lines = ["# Written by mlcp at every hostfile generation: the cluster's hosts and its key.", ""]
    for host, port in ports.items():
        lines += [f"Host {host}", f"  HostName {LOOPBACK}", f"  Port {port}", ""]
    lines += [
        "Host *",
        "  User root",
        f"  IdentityFile {cluster_folder / KEY_FILE}",
        "  IdentitiesOnly yes",
        # Each worker's host key is made at its start, and re-made with a re-created worker.
        "  StrictHostKeyChecking no",
        "  UserKnownHostsFile /dev/null",
        "  LogLevel ERROR",
        "",
    ]
    return "\n".join(lines)


def written_generation(launcher_folder: Path) -> int:
    try:
        return int((launcher_folder / CLUSTER_FOLDER / "generation").read_text())
    except (OSError, ValueError):
        return 0


def write_hosts(
    launcher_folder: Path, cluster_folder: Path, hosts: ClusterHosts, member_folders: dict[str, Path]
) -> None:
    """The hostfile generation into the launcher's folder, each file replaced whole; an older or equal
    generation changes nothing. The ssh_config first, so every host the hostfile names can be reached."""
    if written_generation(launcher_folder) >= hosts.generation:
        return
    home = launcher_folder / CLUSTER_FOLDER
    home.mkdir(parents=True, exist_ok=True)
    ports = {}
    for host in hosts.hosts:
        port = ssh_port(member_folders[host])
        if port is None:
            raise RuntimeError(f"{host} is not listening for SSH yet; the hostfile waits for it")
        ports[host] = port
    write_atomically(home / "ssh_config", _ssh_config(cluster_folder, ports))
    for name, text in hostfile_files(hosts).items():
        write_atomically(home / name, text, mode=0o755 if name.endswith(".sh") else 0o644)
