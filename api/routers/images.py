"""Images (鏡像管理, manual 5.8): the public catalog, a project's custom images, committing a container."""

from __future__ import annotations

from fastapi import APIRouter, Query, Response

from api.deps import AdminUser, CurrentUser, Limit, Offset, PathId, SessionDep, SettingsDep, TemporalDep
from models.base import Page
from models.images import (
    Accelerator,
    CustomImagePublic,
    CustomImageUpdate,
    ImageCommitRequest,
    ImageStatus,
    ImageType,
    PublicImageCreate,
    PublicImagePublic,
    PublicImageUpdate,
)
from services import image_commits, images

router = APIRouter(tags=["images"])
PUBLIC = "/api/v1/images/public"
CUSTOM = "/api/v1/projects/{project_id}/images"
NameFilter = Query(None, max_length=64, description="Part of the name")
ServiceFilter = Query(None, max_length=15, description="Images offering this service (ssh, jupyterlab...)")


@router.get(PUBLIC, response_model=Page[PublicImagePublic], description="The public images (公用鏡像).")
def list_public_images(
    _: CurrentUser,
    session: SessionDep,
    name: str | None = NameFilter,
    accelerator: Accelerator | None = None,
    service: str | None = ServiceFilter,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[PublicImagePublic]:
    return images.list_public_images(
        session, name=name, accelerator=accelerator, service=service, limit=limit, offset=offset
    )


@router.post(
    PUBLIC, response_model=PublicImagePublic, status_code=201, description="Publish an image (admins)."
)
def create_public_image(body: PublicImageCreate, admin: AdminUser, session: SessionDep) -> PublicImagePublic:
    return images.create_public_image(session, admin, body)


@router.get(PUBLIC + "/{image_id}", response_model=PublicImagePublic)
def get_public_image(image_id: PathId, _: CurrentUser, session: SessionDep) -> PublicImagePublic:
    return images.public_image_public(images.public_image(session, image_id))


@router.patch(PUBLIC + "/{image_id}", response_model=PublicImagePublic, description="Change it (admins).")
def update_public_image(
    image_id: PathId, body: PublicImageUpdate, _: AdminUser, session: SessionDep
) -> PublicImagePublic:
    return images.update_public_image(session, image_id, body)


@router.delete(
    PUBLIC + "/{image_id}",
    status_code=204,
    description="Withdraw it (admins). Workloads made from it keep running; templates naming it are refused "
    "at their next run.",
)
def delete_public_image(image_id: PathId, _: AdminUser, session: SessionDep) -> Response:
    images.delete_public_image(session, image_id)
    return Response(status_code=204)


@router.get(
    CUSTOM,
    response_model=Page[CustomImagePublic],
    description="The project's custom images (自定義鏡像) visible to you: its project images and your "
    "private ones (project admins see every member's).",
)
def list_custom_images(
    project_id: PathId,
    user: CurrentUser,
    session: SessionDep,
    name: str | None = NameFilter,
    type: ImageType | None = None,
    accelerator: Accelerator | None = None,
    status: ImageStatus | None = None,
    service: str | None = ServiceFilter,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[CustomImagePublic]:
    return images.list_custom_images(
        session,
        project_id,
        user,
        name=name,
        type=type,
        accelerator=accelerator,
        status=status,
        service=service,
        limit=limit,
        offset=offset,
    )


@router.get(
    CUSTOM + "/{image_id}",
    response_model=CustomImagePublic,
    description="With the commit's stage and progress while committing, and its notes once done.",
)
def get_custom_image(
    project_id: PathId, image_id: PathId, user: CurrentUser, session: SessionDep
) -> CustomImagePublic:
    row, _ = images.readable_custom_image(session, project_id, image_id, user)
    return images.custom_image_public(row)


@router.patch(
    CUSTOM + "/{image_id}",
    response_model=CustomImagePublic,
    description="Change the description or the type (owner or project admin).",
)
def update_custom_image(
    project_id: PathId, image_id: PathId, body: CustomImageUpdate, user: CurrentUser, session: SessionDep
) -> CustomImagePublic:
    return images.update_custom_image(session, project_id, image_id, user, body)


@router.delete(
    CUSTOM + "/{image_id}",
    response_model=CustomImagePublic,
    description="Delete it (owner or project admin); a commit still running is stopped and cleaned up.",
)
async def delete_custom_image(
    project_id: PathId, image_id: PathId, user: CurrentUser, session: SessionDep, client: TemporalDep
) -> CustomImagePublic:
    return await image_commits.delete_image(client, session, project_id, image_id, user)


@router.post(
    "/api/v1/projects/{project_id}/containers/{container_id}/commit",
    response_model=CustomImagePublic,
    status_code=202,
    description="Commit a running container as a custom image (建立自定義鏡像); follow its status on the "
    "image. One commit per container at a time.",
)
async def commit_container(
    project_id: PathId,
    container_id: PathId,
    body: ImageCommitRequest,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
) -> CustomImagePublic:
    return await image_commits.commit_container(
        client, session, settings, project_id, container_id, user, body
    )
