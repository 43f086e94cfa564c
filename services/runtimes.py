"""The workload runtime the settings choose, built with every registered kind, and its storage."""

from __future__ import annotations

from activities.image_commits import ImageCommitter
from activities.object_storage import ObjectStore
from activities.registry import Registry
from activities.runtime import WorkloadRuntime
from activities.storage import LocalStorage, VolumeStorage
from config import Settings
from services.kinds import runtime_kinds


def runtime_from_settings(settings: Settings) -> WorkloadRuntime:
    if settings.runtime == "kubernetes":
        from activities.kube import KubernetesRuntime

        return KubernetesRuntime.from_settings(settings, runtime_kinds())
    from activities.local import LocalRuntime

    return LocalRuntime.from_settings(settings, runtime_kinds())


def storage_for(settings: Settings, runtime: WorkloadRuntime) -> VolumeStorage:
    """Where the runtime keeps NFS volumes and the projects' S3 identities."""
    from activities.kube import KubernetesRuntime

    if isinstance(runtime, KubernetesRuntime):
        from activities.kube_volumes import KubernetesStorage

        return KubernetesStorage(
            runtime,
            nfs_server=settings.nfs_server,
            nfs_path=settings.nfs_path,
            nfs_storage_class=settings.nfs_storage_class,
            nfs_mount=settings.nfs_mount,
            s3_storage_class=settings.s3_csi_storage_class,
        )
    return LocalStorage(settings.home)


def object_store(settings: Settings) -> ObjectStore:
    """The S3 server with the platform's admin identity; refuses plainly when none is configured."""
    return ObjectStore(
        settings.s3_endpoint,
        settings.s3_access_key,
        settings.s3_secret_key.get_secret_value(),
        secure=settings.s3_secure,
        region=settings.s3_region,
    )


def registry(settings: Settings) -> Registry | None:
    """The platform's image registry, if one is set."""
    if not settings.registry_address:
        return None
    return Registry(
        settings.registry_address,
        settings.registry_username,
        settings.registry_password.get_secret_value(),
        insecure=settings.registry_insecure,
    )


def committer_for(settings: Settings, runtime: WorkloadRuntime) -> ImageCommitter:
    """How the runtime commits containers: a commit Job on Kubernetes, a folder snapshot locally."""
    from activities.kube import KubernetesRuntime
    from activities.local import LocalRuntime

    if isinstance(runtime, KubernetesRuntime):
        from activities.kube_commits import KubernetesCommitter

        return KubernetesCommitter(runtime, registry(settings), settings)
    if isinstance(runtime, LocalRuntime):
        from activities.local_commits import LocalCommitter

        return LocalCommitter(runtime, registry(settings), settings.registry_repository_prefix)
    raise TypeError(f"the {runtime.name} runtime cannot commit containers")
