"""What a local workload's process is given and told: its environment (labels, GPUs, the S3 identity of
its project for s3 mounts) and what the local runtime cannot honour of its spec."""

from __future__ import annotations

import os

from activities import local_mounts
from activities.object_storage import AccessKeys
from activities.runtime import RuntimeKind
from models.volumes import s3_bucket_variable
from models.workloads import WorkloadSpec

# Only what a program needs to find its tools and speak the host's language: the worker's own
# settings (MLCP_* secrets among them) stay out of workloads.
INHERITED_ENV = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "LD_LIBRARY_PATH"}
    | {"CUDA_HOME", "CUDA_PATH"}
)


def unsupported(spec: WorkloadSpec, kind: RuntimeKind) -> list[str]:
    """What this spec asks for that a process on this host cannot honour, said plainly."""
    role = spec.main
    notes = [f"image {role.image} is not pulled: the process runs on the host's own filesystem"]
    if not kind.runs_to_completion and not role.command:
        notes.append(
            "the image's own entrypoint cannot run here: an idle process keeps the container running"
        )
    if role.ports:
        notes.append("node ports: services are reachable on 127.0.0.1 at the port the process listens on")
    notes.append("vcpu/ram limits are not enforced: the process shares the host's CPUs and memory")
    if role.resources.shm_gb is not None:
        notes.append("shared memory size is not set: the process uses the host's /dev/shm")
    if role.resources.gpu and role.resources.gpu_model:
        notes.append(f"GPU model {role.resources.gpu_model} is not matched: any free GPU here is handed out")
    if spec.credentials and (spec.credentials.password_hash or spec.credentials.authorized_keys):
        notes.append(
            "credentials (password, SSH keys) are not installed: the process runs as the worker's user"
        )
    folders = [mount for mount in spec.mounts if mount.volume_type == "nfs"]
    if folders and local_mounts.bubblewrap() is None:
        paths = ", ".join(mount.mount_path for mount in folders)
        notes.append(
            f"volume mounts ({paths}) are links, so read-only is not enforced: "
            + local_mounts.why_no_bubblewrap()
        )
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
