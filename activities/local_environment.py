"""What a local workload's process is given and told: its environment (labels, GPUs, the S3 identity of
its project for s3 mounts) and what the local runtime cannot honour of its spec."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import NamedTuple

from activities import local_mounts, local_services
from activities.kube_manifests import AUTHORIZED_KEYS_ENV, PASSWORD_HASH_ENV
from activities.local_folder import CREDENTIALS_FOLDER, FILES_FOLDER, SERVICES_FILE
from activities.local_supervisor import write_atomically
from activities.object_storage import AccessKeys
from activities.runtime import RuntimeKind
from models.volumes import s3_bucket_variable
from models.workloads import Endpoint, WorkloadSpec

LOOPBACK = "127.0.0.1"

# Only what a program needs to find its tools and speak the host's language: the worker's own
# settings (MLCP_* secrets among them) stay out of workloads.
INHERITED_ENV = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "LD_LIBRARY_PATH"}
    | {"CUDA_HOME", "CUDA_PATH"}
)


def unsupported(spec: WorkloadSpec, kind: RuntimeKind, restored: bool = False) -> list[str]:
    """What this spec asks for that a process on this host cannot honour, said plainly."""
    role = spec.main
    if restored:
        notes = [
            f"image {role.image}: its files were restored into the container's own folder from the local "
            "image store; programs come from the host's own filesystem"
        ]
    else:
        notes = [f"image {role.image} is not pulled: the process runs on the host's own filesystem"]
    if not kind.runs_to_completion and not role.command:
        notes.append(
            "the image's own entrypoint cannot run here: the platform's own servers provide its services"
            if role.ports
            else "the image's own entrypoint cannot run here: an idle process keeps the container running"
        )
    if role.ports:
        notes.append(
            "node ports: each service listens on its own free port of 127.0.0.1, shown in its endpoint"
        )
    notes.append("vcpu/ram limits are not enforced: the process shares the host's CPUs and memory")
    if role.resources.shm_gb is not None:
        notes.append("shared memory size is not set: the process uses the host's /dev/shm")
    if role.resources.gpu and role.resources.gpu_model:
        notes.append(f"GPU model {role.resources.gpu_model} is not matched: any free GPU here is handed out")
    if serves(spec) and spec.credentials:
        notes.append(
            "SSH takes any user name and runs the shell as the worker's user (not root), in the container's "
            "folder"
        )
    elif spec.credentials and (spec.credentials.password_hash or spec.credentials.authorized_keys):
        notes.append(
            "credentials (password, SSH keys) are not installed for a user: the process runs as the worker's "
            f"user and finds them in the files ${PASSWORD_HASH_ENV} and ${AUTHORIZED_KEYS_ENV}"
        )
    folders = [mount for mount in spec.mounts if mount.volume_type == "nfs"]
    if folders and local_mounts.bubblewrap() is None:
        paths = ", ".join(mount.mount_path for mount in folders)
        notes.append(
            f"volume mounts ({paths}) are links, so read-only is not enforced: "
            + local_mounts.why_no_bubblewrap()
        )
    if spec.cluster is not None and local_mounts.bubblewrap() is None:
        notes.append(
            f"host name: `hostname` answers this host's name, not {spec.cluster.member}: "
            + local_mounts.why_no_bubblewrap()
        )
    if spec.cluster is not None and spec.cluster.is_launcher and shutil.which("ssh") is None:
        notes.append("the launcher cannot reach its workers: no OpenSSH client (Debian: openssh-client)")
    for mount in spec.mounts:
        if mount.volume_type == "s3":
            notes.append(
                f"s3 volume {mount.volume_id} is not mounted at {mount.mount_path} (no S3 filesystem here): "
                "reach its bucket through AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and "
                f"{s3_bucket_variable(mount.mount_path)}"
            )
    return notes


def workload_labels(
    project_id: str, kind: str | None = None, resource_id: str | None = None
) -> dict[str, str]:
    """The environment variables that label a workload's processes, as far as they are given."""
    labels = {"MLCP_PROJECT_ID": project_id}
    if kind is not None:
        labels["MLCP_WORKLOAD_KIND"] = kind
    if resource_id is not None:
        labels["MLCP_RESOURCE_ID"] = resource_id
    return labels


def storage_environment(spec: WorkloadSpec, keys: AccessKeys | None) -> dict[str, str]:
    """The project's S3 identity for s3 mounts (the endpoint and buckets are in the spec's own environment);
    the working folder a mount asked to be."""
    env: dict[str, str] = {}
    if keys is not None and any(mount.volume_type == "s3" for mount in spec.mounts):
        env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = keys.access_key, keys.secret_key
    workdir = next((mount.mount_path for mount in spec.mounts if mount.workdir), None)
    if workdir:
        env["MLCP_WORKDIR"] = workdir
    return env


def credential_files(folder: Path, spec: WorkloadSpec) -> dict[str, str]:
    """The password hash and public keys as 0600 files in the workload's folder, as a Kubernetes Secret's
    files are in a pod; the variables that say where they are."""
    credentials = spec.credentials
    if credentials is None:
        return {}
    env: dict[str, str] = {}
    secrets = folder / CREDENTIALS_FOLDER
    for variable, name, text in (
        (PASSWORD_HASH_ENV, "password-hash", credentials.password_hash or ""),
        (AUTHORIZED_KEYS_ENV, "authorized_keys", "".join(key + "\n" for key in credentials.authorized_keys)),
    ):
        if text:
            secrets.mkdir(mode=0o700, exist_ok=True)
            write_atomically(secrets / name, text, mode=0o600)
            env[variable] = str(secrets / name)
    return env


def workload_environment(spec: WorkloadSpec, gpus: list[str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key in INHERITED_ENV or key.startswith("LC_")}
    env.update(spec.main.env)
    env.update(
        # Empty when no GPU was asked for, so CUDA sees none rather than every GPU on the host.
        CUDA_VISIBLE_DEVICES=",".join(gpus),
        MLCP_WORKLOAD_NAME=spec.name,
        MLCP_OWNER=spec.owner,
        **workload_labels(spec.project_id, spec.kind, spec.resource_id),
    )
    return env


# ---- the container's services (activities/local_services.py) --------------------------------------

SERVICES_SCRIPT = Path(local_services.__file__).resolve()
# Not isolated (-I): the script imports asyncssh from the platform's environment, nothing else of it.
SERVICES_COMMAND = [sys.executable, "-E", "-s", "-u", str(SERVICES_SCRIPT)]
WAITING_STATES = frozenset({"starting", "installing"})


def tools_folder(configured: Path | None) -> Path:
    """Where the local runtime installs the tools its services run (Jupyter): beside the platform's venv."""
    return configured or Path(sys.prefix) / "mlcp-tools"


def serves(spec: WorkloadSpec) -> bool:
    """A container without a command of its own runs the platform's servers for its image's services."""
    return not spec.main.command and bool(spec.main.ports)


def services_environment(folder: Path, spec: WorkloadSpec, tools: Path) -> dict[str, str]:
    if not serves(spec):
        return {}
    secrets = folder / CREDENTIALS_FOLDER
    secrets.mkdir(mode=0o700, exist_ok=True)
    (folder / FILES_FOLDER).mkdir(exist_ok=True)
    return {
        "MLCP_CONTAINER_FILES": str(folder / FILES_FOLDER),
        "MLCP_SERVICES": json.dumps([port.model_dump() for port in spec.main.ports]),
        "MLCP_SERVICES_FILE": str(folder / SERVICES_FILE),
        "MLCP_SSH_HOST_KEY_FILE": str(secrets / "ssh_host_ed25519_key"),
        "MLCP_TOOLS_DIR": str(tools),
    }


class ServiceView(NamedTuple):
    waiting: str  # empty once every service listens or has said why it cannot
    endpoints: list[Endpoint]
    notes: list[str]


def service_view(folder: Path, spec: WorkloadSpec) -> ServiceView:
    """What the services process reports: endpoints only for what listens."""
    try:
        entries: dict[str, dict[str, object]] = json.loads((folder / SERVICES_FILE).read_text())
    except (OSError, ValueError):
        return ServiceView("starting its services", [], [])
    waiting = [
        f"{name}: {entry.get('message') or entry.get('state')}"
        for name, entry in entries.items()
        if entry.get("state") in WAITING_STATES
    ]
    endpoints, notes = [], []
    for port in spec.main.ports:
        entry = entries.get(port.name, {})
        if entry.get("state") == "ready":
            listening = int(str(entry["port"]))
            endpoints.append(Endpoint(name=port.name, port=port.port, host=LOOPBACK, node_port=listening))
        elif entry.get("state") == "unavailable":
            notes.append(f"service {port.name}: {entry.get('message')}")
    message = ("starting its services; " + "; ".join(waiting)) if waiting else ""
    return ServiceView(message, endpoints, notes)
