"""Commits on the local runtime: a container's own folder (`files/`) as a deterministic OCI image.

The snapshot goes to the local image store (`MLCP_HOME/images`, an OCI image layout) under the image's
internal tag, and is pushed to the platform registry when one is set; a container made from the image
starts with the folder restored (activities/local.py). The same tree gives the same digest, so a retried
commit makes nothing new.
"""

from __future__ import annotations

from activities.image_commits import (
    ProgressReport,
    Published,
    PublishRequest,
    internal_tag,
    publish_to_registry,
    repository_of,
)
from activities.local import LocalRuntime
from activities.oci_layout import MANIFEST_TYPE, ImageStore
from activities.registry import Registry
from models.images import CommitProgress, CommitResult, CommitSource

LOCAL_REGISTRY = "mlcp.local"  # the reference's domain for an image only this host's store holds


class LocalCommitter:
    def __init__(self, runtime: LocalRuntime, registry: Registry | None, repository_prefix: str) -> None:
        self._runtime = runtime
        self._store: ImageStore = runtime.images
        self._registry = registry
        self._prefix = repository_prefix

    def _notes(self, source: CommitSource) -> list[str]:
        spec = self._runtime.spec_of(source.project_id, source.container_kind, source.container_id)
        notes = [
            "the container's own folder (its SSH and Jupyter home) is captured; running processes and "
            "memory are not",
            "file times are set to 1970 and owners to root, so the same files always give the same digest",
        ]
        if spec is not None and spec.mounts:
            paths = ", ".join(mount.mount_path for mount in spec.mounts)
            notes.append(f"mounted volumes ({paths}) are not captured: they stay in their volumes")
        return notes

    def commit(self, source: CommitSource, progress: ProgressReport) -> CommitResult:
        repository = repository_of(self._prefix, source)
        tag = internal_tag(source.image_id)
        notes = self._notes(source)
        digest = self._store.tagged(f"{repository}:{tag}")
        if digest is None:
            folder = self._runtime.commit_folder(
                source.project_id, source.container_kind, source.container_id
            )
            progress(CommitProgress(stage="committing", bytes=0))
            snapshot = self._store.snapshot(
                folder,
                lambda read: progress(CommitProgress(stage="committing", bytes=read)),
            )
            digest = snapshot.digest
            self._store.tag(
                f"{repository}:{tag}",
                digest,
                {"io.mlcp.source": source.container_id, "io.mlcp.base": source.base_image},
            )
        blobs = self._store.blobs_of(digest)
        manifest = self._store.manifest(digest)
        size = sum(self._store.blob_path(blob).stat().st_size for blob in blobs)
        if self._registry is not None:
            progress(CommitProgress(stage="pushing", bytes=0))
            pushed = 0
            for blob in reversed(blobs[1:]):  # layers and config first, the manifest naming them last
                self._registry.push_blob(repository, blob, self._store.blob_path(blob))
                pushed += self._store.blob_path(blob).stat().st_size
                progress(CommitProgress(stage="pushing", bytes=pushed))
            if self._registry.manifest(repository, tag) is None:
                self._registry.put_manifest(repository, tag, self._store.blob(digest), MANIFEST_TYPE)
        return CommitResult(
            repository=repository,
            internal_tag=tag,
            digest=digest,
            config_digest=manifest["config"]["digest"],
            size_bytes=size,
            notes=notes,
            registry=self._registry.address if self._registry else "",
        )

    def publish(self, request: PublishRequest) -> Published:
        result = request.result
        self._store.tag(f"{result.repository}:{request.source.tag}", result.digest)
        if self._registry is not None and result.registry:
            return publish_to_registry(self._registry, request)
        return Published(
            reference=f"{LOCAL_REGISTRY}/{result.repository}@{result.digest}",
            digest=result.digest,
            size_bytes=result.size_bytes,
            notes=[*result.notes, "kept on this host only: no registry is set (MLCP_REGISTRY_ADDRESS)"],
        )

    def clean_up(self, source: CommitSource) -> None:
        """Nothing is left behind: the snapshot is written straight into the store."""

    def remove(self, request: PublishRequest) -> None:
        source, result = request.source, request.result
        repository = result.repository or repository_of(self._prefix, source)
        for tag in (internal_tag(source.image_id), source.tag):
            self._store.untag_exact(f"{repository}:{tag}")
        if self._registry is not None and result.registry and result.digest:
            self._registry.delete_manifest(repository, result.digest)
