"""Activities of a custom image's life: commit a running container, publish the result under the user's tag,
clean up after the commit, delete the image, and record its row. Thin: the runtime's committer does the
work (activities/local_commits.py, activities/kube_commits.py); these heartbeat, report progress and keep
permanent failures (with their reason) apart from what a retry may mend."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from pydantic import BaseModel
from sqlalchemy import Engine
from sqlmodel import Session
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import heartbeating
from activities.registry import Registry, RegistryError
from activities.runtime import CommitFailed
from models.images import CommitProgress, CommitResult, CommitSource, CustomImage, ImageCommitState

PUSH_REFUSED = "PushRefused"
PROGRESS_EVERY_SECONDS = 2.0
ProgressReport = Callable[[CommitProgress], None]


class PublishRequest(BaseModel):
    source: CommitSource
    result: CommitResult


class Published(BaseModel):
    reference: str  # by digest: what workloads made from the image run
    digest: str
    size_bytes: int
    notes: list[str] = []


class ImageCommitter(Protocol):
    """How a runtime commits its containers; every method is idempotent."""

    def commit(self, source: CommitSource, progress: ProgressReport) -> CommitResult: ...

    def publish(self, request: PublishRequest) -> Published: ...

    def clean_up(self, source: CommitSource) -> None: ...

    def remove(self, request: PublishRequest) -> None: ...


def internal_tag(image_id: str) -> str:
    """The tag a commit pushes to first, one per image: a retry that finds it commits nothing again."""
    return f"commit-{image_id}"


def repository_of(prefix: str, source: CommitSource) -> str:
    return "/".join(part for part in (prefix.strip("/"), source.project_id, source.name) if part)


def publish_to_registry(registry: Registry, request: PublishRequest) -> Published:
    """Check the pushed manifest (digest, config digest), then put the same bytes under the user's tag."""
    result = request.result
    pushed = registry.manifest(result.repository, result.internal_tag)
    if pushed is None:
        raise CommitFailed(PUSH_REFUSED, f"{result.repository}:{result.internal_tag} is not in the registry")
    if result.config_digest and pushed.config_digest != result.config_digest:
        raise CommitFailed(
            "DigestMismatch",
            f"the registry holds config {pushed.config_digest}, the commit made {result.config_digest}",
        )
    if result.digest and pushed.digest != result.digest:
        raise CommitFailed(
            "DigestMismatch", f"the registry holds {pushed.digest}, the commit made {result.digest}"
        )
    registry.put_manifest(result.repository, request.source.tag, pushed.body, pushed.media_type)
    return Published(
        reference=f"{registry.address}/{result.repository}@{pushed.digest}",
        digest=pushed.digest,
        size_bytes=result.size_bytes,
        notes=result.notes,
    )


@contextmanager
def commit_call() -> Iterator[None]:
    """Heartbeat while the committer works; a refusal no retry can change fails at once, with its reason."""
    with heartbeating():
        try:
            yield
        except CommitFailed as exc:
            raise ApplicationError(exc.message[:2000], type=exc.reason, non_retryable=True) from exc
        except RegistryError as exc:
            if not exc.permanent:
                raise
            raise ApplicationError(str(exc)[:2000], type=PUSH_REFUSED, non_retryable=True) from exc


class ImageCommitActivities:
    def __init__(self, engine: Engine, committer: ImageCommitter) -> None:
        self._engine = engine
        self._committer = committer

    def all(self) -> list[Callable[..., object]]:
        return [
            self.record_image,
            self.commit_container,
            self.publish_image,
            self.clean_up_commit,
            self.delete_image,
        ]

    @activity.defn
    def record_image(self, state: ImageCommitState) -> None:
        """Write the columns the workflow owns; an older snapshot never wins."""
        with Session(self._engine) as session:
            row = session.get(CustomImage, state.id, with_for_update=True)
            if row is None or row.version > state.version:
                return
            row.sqlmodel_update(state.record())
            if state.stage != "committing":
                row.progress_bytes = None
            session.add(row)
            session.commit()

    def _progress(self, image_id: str) -> ProgressReport:
        last = [0.0]

        def report(progress: CommitProgress) -> None:
            activity.heartbeat(progress.model_dump())  # the Temporal UI shows the pending activity's details
            now = time.monotonic()
            if now - last[0] < PROGRESS_EVERY_SECONDS:
                return
            last[0] = now
            with Session(self._engine) as session:
                row = session.get(CustomImage, image_id)
                if row is not None:
                    row.stage, row.progress_bytes = progress.stage, progress.bytes
                    session.add(row)
                    session.commit()

        return report

    @activity.defn
    def commit_container(self, source: CommitSource) -> CommitResult:
        with commit_call():
            return self._committer.commit(source, self._progress(source.image_id))

    @activity.defn
    def publish_image(self, request: PublishRequest) -> Published:
        with commit_call():
            return self._committer.publish(request)

    @activity.defn
    def clean_up_commit(self, source: CommitSource) -> None:
        with commit_call():
            self._committer.clean_up(source)

    @activity.defn
    def delete_image(self, request: PublishRequest) -> None:
        with commit_call():
            self._committer.remove(request)
