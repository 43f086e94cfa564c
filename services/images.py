"""Public and custom images (manual 5.8): who sees and changes them, search and filters, and which image a
workload may run with what (its services, login methods and CUDA versions).

Public images are the platform admins' catalog: everyone reads it. A custom image belongs to its project: a
`project` one is every member's, a `private` one its owner's (the project's admins see it too, as they see
every member's things). Only its owner uses a private image.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from models.accounts import User
from models.base import Page, new_id, utcnow
from models.catalog import GpuModel, GpuVendor
from models.images import (
    CUDA_ON_AMD,
    ROCM_ON_NVIDIA,
    Accelerator,
    CustomImage,
    CustomImagePublic,
    CustomImageUpdate,
    ImageFields,
    ImageStatus,
    ImageType,
    LoginMethod,
    PublicImage,
    PublicImageCreate,
    PublicImagePublic,
    PublicImageUpdate,
    cuda_key,
)
from models.projects import ProjectMember
from models.workloads import ImageChoice, ResourceRequest, ServicePort
from services.access import changes_everything_in, sees_everything_in, visible_project
from services.errors import conflict, forbidden, invalid, not_found


def _columns(row: ImageFields) -> dict[str, Any]:
    return {name: getattr(row, name) for name in type(row).model_fields}


def public_image_public(row: PublicImage) -> PublicImagePublic:
    return PublicImagePublic.model_validate({**_columns(row), "services": row.service_ports()})


def custom_image_public(row: CustomImage) -> CustomImagePublic:
    return CustomImagePublic.model_validate(
        {**_columns(row), "services": row.service_ports(), "uploader": row.owner}
    )


def _offers_service(row: ImageFields, service: str | None) -> bool:
    return service is None or any(port["name"] == service for port in row.services)


def _paged(rows: list[Any], limit: int, offset: int) -> tuple[list[Any], int]:
    return rows[offset : offset + limit], len(rows)


def _filtered(
    query: SelectOfScalar[Any], table: type[ImageFields], name: str | None, accelerator: Accelerator | None
) -> SelectOfScalar[Any]:
    if name:
        query = query.where(col(table.name).contains(name.lower()))
    if accelerator is not None:
        query = query.where(table.accelerator == accelerator)
    return query.order_by(col(table.updated_at).desc(), col(table.id))


# ---- public images ---------------------------------------------------------------------------------


def list_public_images(
    session: Session,
    *,
    name: str | None,
    accelerator: Accelerator | None,
    service: str | None,
    limit: int,
    offset: int,
) -> Page[PublicImagePublic]:
    rows = session.exec(_filtered(select(PublicImage), PublicImage, name, accelerator)).all()
    # Services are a JSON list: filtered here, which is cheap for a catalog of images.
    matching = [row for row in rows if _offers_service(row, service)]
    page, total = _paged(matching, limit, offset)
    return Page(items=[public_image_public(row) for row in page], total=total, limit=limit, offset=offset)


def public_image(session: Session, image_id: str) -> PublicImage:
    row = session.get(PublicImage, image_id)
    if row is None:
        raise not_found("public image", image_id)
    return row


def _offer_columns(body: PublicImageCreate | PublicImageUpdate) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True, exclude={"services"})
    if body.services is not None and "services" in body.model_fields_set:
        changes["services"] = [offer.served().model_dump() for offer in body.services]
    if isinstance(body, PublicImageCreate):
        changes.setdefault("services", [offer.served().model_dump() for offer in body.services])
    return changes


def _save_public(session: Session, row: PublicImage) -> PublicImagePublic:
    if row.cuda_versions and row.accelerator != Accelerator.cuda:
        raise invalid("cuda_versions", "only an image whose accelerator is cuda offers CUDA versions")
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise conflict(f"a public image {row.name}:{row.tag} exists already", "tag") from None
    session.refresh(row)
    return public_image_public(row)


def create_public_image(session: Session, admin: User, body: PublicImageCreate) -> PublicImagePublic:
    row = PublicImage(id=new_id(), uploader=admin.username, uploader_id=admin.id, **_offer_columns(body))
    return _save_public(session, row)


def update_public_image(session: Session, image_id: str, body: PublicImageUpdate) -> PublicImagePublic:
    row = public_image(session, image_id)
    for field, value in _offer_columns(body).items():
        if value is None and field not in ("size_bytes",):
            raise invalid(field, "may not be null; leave it out to keep it")
        setattr(row, field, value)
    row.updated_at = utcnow()
    return _save_public(session, row)


def delete_public_image(session: Session, image_id: str) -> None:
    # Workloads keep the reference they were made with; templates naming it are refused at their next run.
    session.delete(public_image(session, image_id))
    session.commit()


# ---- custom images ---------------------------------------------------------------------------------


def _sees(row: CustomImage, user: User, members: list[ProjectMember]) -> bool:
    return row.type == ImageType.project or row.owner_id == user.id or sees_everything_in(members, user)


def readable_custom_image(
    session: Session, project_id: str, image_id: str, user: User
) -> tuple[CustomImage, list[ProjectMember]]:
    _, members = visible_project(session, project_id, user)
    row = session.get(CustomImage, image_id)
    if (
        row is None
        or row.project_id != project_id
        or row.status == ImageStatus.deleted
        or not _sees(row, user, members)
    ):
        raise not_found("image", image_id)
    return row, members


def changeable_custom_image(session: Session, project_id: str, image_id: str, user: User) -> CustomImage:
    row, members = readable_custom_image(session, project_id, image_id, user)
    if row.owner_id != user.id and not changes_everything_in(members, user):
        raise forbidden("only the image's owner and the project's admins may change it")
    return row


def list_custom_images(
    session: Session,
    project_id: str,
    user: User,
    *,
    name: str | None,
    type: ImageType | None,
    accelerator: Accelerator | None,
    status: ImageStatus | None,
    service: str | None,
    limit: int,
    offset: int,
) -> Page[CustomImagePublic]:
    _, members = visible_project(session, project_id, user)
    query = select(CustomImage).where(CustomImage.project_id == project_id)
    query = (
        query.where(CustomImage.status == status)
        if status
        else query.where(CustomImage.status != ImageStatus.deleted)
    )
    if type is not None:
        query = query.where(CustomImage.type == type)
    if not sees_everything_in(members, user):
        query = query.where((CustomImage.type == ImageType.project) | (CustomImage.owner_id == user.id))
    rows = session.exec(_filtered(query, CustomImage, name, accelerator)).all()
    matching = [row for row in rows if _offers_service(row, service)]
    page, total = _paged(matching, limit, offset)
    return Page(items=[custom_image_public(row) for row in page], total=total, limit=limit, offset=offset)


def update_custom_image(
    session: Session, project_id: str, image_id: str, user: User, body: CustomImageUpdate
) -> CustomImagePublic:
    row = changeable_custom_image(session, project_id, image_id, user)
    if body.description is not None:
        row.description = body.description
    if body.type is not None:
        row.type = body.type
    row.updated_at = utcnow()
    session.add(row)
    session.commit()
    session.refresh(row)
    return custom_image_public(row)


# ---- use: which image a workload runs ------------------------------------------------------------


class ImageUse(NamedTuple):
    reference: str
    services: list[ServicePort] | None  # None: a raw reference, whose services the request names
    login_methods: list[str]
    choice: ImageChoice
    frameworks: list[str] | None  # None: a raw reference, whose frameworks nobody can tell
    env: dict[str, str]  # what the runtime is told of the CUDA version


def _usable_image(
    session: Session, project_id: str, owner_id: str, image_id: str
) -> PublicImage | CustomImage:
    public = session.get(PublicImage, image_id)
    if public is not None:
        return public
    custom = session.get(CustomImage, image_id)
    if (
        custom is None
        or custom.project_id != project_id
        or custom.status == ImageStatus.deleted
        or (custom.type == ImageType.private and custom.owner_id != owner_id)
    ):
        raise invalid("image_id", f"no image {image_id!r} you may use in this project")
    if custom.status != ImageStatus.available:
        raise conflict(
            f"image {custom.name}:{custom.tag} is {custom.status.value}; it can be used once available",
            "image_id",
        )
    return custom


def _vendor_warning(session: Session, image: ImageFields, resources: ResourceRequest) -> str:
    if not resources.gpu or not resources.gpu_model:
        return ""
    model = session.exec(select(GpuModel).where(GpuModel.name == resources.gpu_model)).first()
    if model is None:
        return ""
    if image.accelerator == Accelerator.rocm and model.vendor == GpuVendor.NVIDIA:
        return ROCM_ON_NVIDIA
    if image.accelerator == Accelerator.cuda and model.vendor == GpuVendor.AMD:
        return CUDA_ON_AMD
    return ""


def _cuda_version(image: ImageFields, wanted: str | None) -> str | None:
    label = f"{image.name}:{image.tag}"
    if wanted is None:
        return max(image.cuda_versions, key=cuda_key) if image.cuda_versions else None
    if image.accelerator != Accelerator.cuda:
        raise invalid(
            "cuda_version", f"image {label} carries no CUDA ({image.accelerator.value}); leave it out"
        )
    if image.cuda_versions and wanted not in image.cuda_versions:
        offered = ", ".join(image.cuda_versions)
        raise invalid("cuda_version", f"CUDA {wanted} is not one image {label} offers ({offered})")
    return wanted


def _cuda_env(version: str | None) -> dict[str, str]:
    # The NVIDIA container runtime refuses to start a container whose node's driver is too old for it.
    return {"NVIDIA_REQUIRE_CUDA": f"cuda>={version}", "MLCP_CUDA_VERSION": version} if version else {}


def choose_image(
    session: Session,
    project_id: str,
    owner_id: str,
    *,
    image_id: str | None,
    reference: str | None,
    cuda_version: str | None,
    resources: ResourceRequest,
) -> ImageUse:
    """The image a workload of `owner_id` runs: a catalog or custom image by ID, or a raw reference."""
    if (image_id is None) == (reference is None):
        raise invalid(
            "image_id", "give image_id (a public or custom image) or image (a reference), one of them"
        )
    if reference is not None:
        choice = ImageChoice(cuda_version=cuda_version)
        return ImageUse(
            reference, None, [m.value for m in LoginMethod], choice, None, _cuda_env(cuda_version)
        )
    assert image_id is not None
    image = _usable_image(session, project_id, owner_id, image_id)
    version = _cuda_version(image, cuda_version)
    choice = ImageChoice(
        image_id=image.id, cuda_version=version, warning=_vendor_warning(session, image, resources)
    )
    return ImageUse(
        image.reference,
        image.service_ports(),
        list(image.login_methods),
        choice,
        list(image.frameworks),
        _cuda_env(version),
    )
