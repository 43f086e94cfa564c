"""Committing a running container as a custom image (manual 5.4.4), and deleting custom images.

The image's row is made here, `committing`, with what it offers copied from the image the container was
made from (its services, login methods, GPU stack); its ImageCommitWorkflow (`image-commit-<id>`) does the
commit and lives as long as the image, so a delete (even in the middle of a commit) always goes through it.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, select
from temporalio.client import Client

from config import Settings
from models.accounts import User
from models.base import new_id
from models.containers import Container, ContainerStatus
from models.database import release_connection
from models.images import (
    LIVE_IMAGE_STATUSES,
    CommitSource,
    CustomImage,
    CustomImagePublic,
    ImageCommitInput,
    ImageCommitRequest,
    ImageCommitState,
    ImageDelete,
    ImageStatus,
    PublicImage,
)
from models.lifecycle import AdmitRequest, ProjectStatus, Quota
from models.projects import Project
from services.access import changeable
from services.errors import Conflict, conflict
from services.images import changeable_custom_image, custom_image_public
from services.kinds import CONTAINER, IMAGE
from services.projects import hold_storage, release_hold
from services.workloads import run_update, start_recorded
from workflows.image_commit import ImageCommitWorkflow


def _offers(session: Session, container: Container) -> dict[str, Any]:
    """What the new image offers: the base image's, or the container's own services for a raw image."""
    base = None
    if container.image_id:
        base = session.get(PublicImage, container.image_id) or session.get(CustomImage, container.image_id)
    if base is None:
        return {"services": container.ports}
    return {
        "services": base.services,
        "login_methods": base.login_methods,
        "frameworks": base.frameworks,
        "accelerator": base.accelerator,
        "cuda_versions": base.cuda_versions,
        "os": base.os,
    }


def _check_free(session: Session, project_id: str, container_id: str, name: str, tag: str) -> None:
    live = [status.value for status in LIVE_IMAGE_STATUSES]
    busy = session.exec(
        select(CustomImage.id).where(
            CustomImage.source_container_id == container_id, CustomImage.status == ImageStatus.committing
        )
    ).first()
    if busy is not None:
        raise conflict(f"container {container_id} is being committed already (image {busy}); wait for it")
    taken = session.exec(
        select(CustomImage.id).where(
            CustomImage.project_id == project_id,
            CustomImage.name == name,
            CustomImage.tag == tag,
            CustomImage.status.in_(live),  # type: ignore[attr-defined]
        )
    ).first()
    if taken is not None:
        raise conflict(f"the project has an image {name}:{tag} already; choose another tag", "tag")


async def commit_container(
    client: Client,
    session: Session,
    settings: Settings,
    project_id: str,
    container_id: str,
    user: User,
    body: ImageCommitRequest,
) -> CustomImagePublic:
    container = changeable(session, Container, "container", project_id, container_id, user)
    project = session.get_one(Project, project_id)
    if project.status != ProjectStatus.active:
        raise conflict(f"project {project_id} is {project.status}; images are committed in an active project")
    if container.status != ContainerStatus.running:
        raise conflict(
            f"container {container_id} is {container.status}; only a running container is committed"
        )
    _check_free(session, project_id, container_id, body.name, body.tag)
    image_id = new_id()
    row = CustomImage(
        id=image_id,
        project_id=project_id,
        owner_id=user.id,
        owner=user.username,
        name=body.name,
        tag=body.tag,
        description=body.description,
        type=body.type,
        source_container_id=container_id,
        base_image=container.image,
        stage="queued",
        **_offers(session, container),
    )
    session.add(row)
    session.commit()
    state = ImageCommitState(
        id=image_id,
        project_id=project_id,
        owner_id=user.id,
        owner=user.username,
        source=CommitSource(
            image_id=image_id,
            project_id=project_id,
            container_id=container_id,
            container_kind=CONTAINER.name,
            owner=container.owner,
            name=body.name,
            tag=body.tag,
            base_image=container.image,
        ),
    )
    release_connection(session)
    try:
        await hold_storage(
            client,
            project_id,
            AdmitRequest(
                resource_id=image_id,
                kind=IMAGE.name,
                workflow_id=IMAGE.workflow_id(image_id),
                owner_id=user.id,
                request=Quota(),
            ),
        )
        await start_recorded(
            client,
            IMAGE,
            ImageCommitInput(state=state),
            resource_id=image_id,
            task_queue=settings.temporal_task_queue,
            project_id=project_id,
            owner=user.username,
            status=ImageStatus.committing.value,
            summary=f"Image {body.name}:{body.tag} from container {container_id} by {user.username}",
            recorded=ImageCommitWorkflow.recorded,
        )
    except BaseException:
        await release_hold(client, project_id, image_id)
        fresh = session.get(CustomImage, image_id)
        if fresh is not None:  # nothing half-made
            session.delete(fresh)
            session.commit()
        raise
    session.expire_all()
    return custom_image_public(session.get_one(CustomImage, image_id))


async def delete_image(
    client: Client, session: Session, project_id: str, image_id: str, user: User
) -> CustomImagePublic:
    changeable_custom_image(session, project_id, image_id, user)
    release_connection(session)
    handle = client.get_workflow_handle(IMAGE.workflow_id(image_id))
    try:
        await run_update(
            handle,
            ImageCommitWorkflow.delete,
            ImageDelete(requested_by=user.username),
            ended=f"image {image_id}'s lifecycle has ended",
        )
    except Conflict as gone:
        if "lifecycle has ended" not in gone.message:
            raise
        # Its workflow was ended by an operator: nothing runs for it any more, so the row goes alone.
        row = session.get_one(CustomImage, image_id)
        row.status, row.stage, row.message = ImageStatus.deleted, "deleted", f"deleted by {user.username}"
        session.add(row)
        session.commit()
    session.expire_all()
    return custom_image_public(session.get_one(CustomImage, image_id))
