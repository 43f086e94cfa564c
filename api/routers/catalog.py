"""The admin catalog: GPU models, MLS specs and project purposes.

Every signed-in user reads it (people pick a spec for a container and a purpose for a project);
only platform admins write it. Anything still referenced cannot be deleted: the answer is a 409
naming what uses it, and foreign keys with ON DELETE RESTRICT back that up against races.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel
from sqlalchemy import ForeignKeyConstraint, Table, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, col, select
from sqlmodel.sql.expression import SelectOfScalar

import models.tables  # noqa: F401  (every table registered, so every reference is found)
from api.deps import AdminUser, CurrentUser, Limit, Offset, PathId, SessionDep
from models.base import Page, utcnow
from models.catalog import (
    GpuModel,
    GpuModelCreate,
    GpuModelPublic,
    GpuModelUpdate,
    Purpose,
    PurposeCreate,
    PurposePublic,
    PurposeUpdate,
    Spec,
    SpecCreate,
    SpecPublic,
    SpecUpdate,
)
from services.errors import conflict, invalid, not_found

router = APIRouter(prefix="/api/v1/catalog", tags=["catalog"])

Row = TypeVar("Row", GpuModel, Spec, Purpose)
NameFilter = Annotated[str | None, Query(max_length=64, description="Case-insensitive substring of the name")]
_REFERENCES_NAMED = 5
_KIND = {GpuModel: "GPU model", Spec: "spec", Purpose: "purpose"}


# --- shared helpers -----------------------------------------------------------------------------------


def _get(session: Session, table: type[Row], ident: PathId) -> Row:
    """By ID or by name."""
    row = session.get(table, ident) or session.exec(select(table).where(table.name == ident)).first()
    if row is None:
        raise not_found(_KIND[table], ident)
    return row


def _ensure_name_free(session: Session, table: type[Row], name: str, own_id: str | None = None) -> None:
    existing = session.exec(select(table).where(table.name == name)).first()
    if existing is not None and existing.id != own_id:
        raise conflict(f"a {_KIND[table]} named {name!r} already exists", "name")


def _page(
    session: Session,
    statement: SelectOfScalar[Row],
    table: type[Row],
    limit: int,
    offset: int,
) -> tuple[Sequence[Row], int]:
    total = session.exec(select(func.count()).select_from(statement.subquery())).one()
    rows = session.exec(statement.order_by(col(table.name)).offset(offset).limit(limit)).all()
    return rows, total


def _name_contains(statement: SelectOfScalar[Row], table: type[Row], name: str | None) -> SelectOfScalar[Row]:
    if not name:
        return statement
    return statement.where(func.lower(table.name).contains(name.lower(), autoescape=True))


def _changes(body: BaseModel, nullable: frozenset[str] = frozenset()) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True)
    for field, value in changes.items():
        if value is None and field not in nullable:
            raise invalid(field, "may not be null")
    return changes


def _apply(row: Row, changes: dict[str, Any]) -> None:
    for field, value in changes.items():
        setattr(row, field, value)
    row.updated_at = utcnow()


def _is_unique_violation(error: IntegrityError) -> bool:
    sqlstate = getattr(error.orig, "sqlstate", None)  # psycopg
    return sqlstate == "23505" or "UNIQUE constraint failed" in str(error.orig)


def _commit(session: Session, table: type[Row], name: str) -> None:
    """Commit, turning a lost race on a unique name into the same 409 the pre-check gives."""
    try:
        session.commit()
    except IntegrityError as error:
        session.rollback()
        if _is_unique_violation(error):
            raise conflict(f"a {_KIND[table]} named {name!r} already exists", "name") from error
        raise


def _restricting_references(table: Table) -> list[ForeignKeyConstraint]:
    """Foreign keys elsewhere that stop a row of ``table`` from being deleted (not CASCADE/SET NULL)."""
    found = []
    for other in SQLModel.metadata.tables.values():
        for constraint in other.foreign_key_constraints:
            if constraint.referred_table is table and (constraint.ondelete or "RESTRICT").upper() in {
                "RESTRICT",
                "NO ACTION",
            }:
                found.append(constraint)
    return found


def in_use_by(session: Session, table: Table, row_id: str) -> list[str]:
    """Describe the rows that reference ``row_id``, e.g. ["spec 'a100x1'", "project 'vision'"].

    Found through the metadata, so tables added later (projects, containers) are covered without
    this module knowing them.
    """
    users: list[str] = []
    for constraint in _restricting_references(table):
        referencing = constraint.table
        column = constraint.columns[0]
        # Name the users where the table has names (specs, projects), otherwise give their IDs.
        columns = referencing.c
        label_column = columns["name"] if "name" in columns else referencing.primary_key.columns[0]
        kind = referencing.name.replace("_", " ")
        where = column == row_id
        count = session.execute(select(func.count()).select_from(referencing).where(where)).scalar_one()
        if not count:
            continue
        labels = session.execute(
            select(label_column).where(where).order_by(label_column).limit(_REFERENCES_NAMED)
        ).scalars()
        users.extend(f"{kind} {label!r}" for label in labels)
        if count > _REFERENCES_NAMED:
            users.append(f"{count - _REFERENCES_NAMED} more {kind} rows")
    return users


def _delete(session: Session, table: type[Row], ident: PathId) -> Response:
    row = _get(session, table, ident)
    kind = _KIND[table]
    table_object: Table = table.__table__  # type: ignore[attr-defined]
    users = in_use_by(session, table_object, row.id)
    if users:
        raise conflict(f"{kind} {row.name!r} is in use by {', '.join(users)}; change or delete those first")
    session.delete(row)
    try:
        session.commit()
    except IntegrityError as error:
        # Something started using it between the check and the delete.
        session.rollback()
        raise conflict(f"{kind} {row.name!r} is in use; change or delete what uses it first") from error
    return Response(status_code=204)


# --- GPU models ---------------------------------------------------------------------------------------


def _gpu_public(row: GpuModel) -> GpuModelPublic:
    return GpuModelPublic.model_validate(row, from_attributes=True)


@router.get("/gpu-models", response_model=Page[GpuModelPublic])
def list_gpu_models(
    _: CurrentUser, session: SessionDep, name: NameFilter = None, limit: Limit = 50, offset: Offset = 0
) -> Page[GpuModelPublic]:
    statement = _name_contains(select(GpuModel), GpuModel, name)
    rows, total = _page(session, statement, GpuModel, limit, offset)
    return Page(items=[_gpu_public(r) for r in rows], total=total, limit=limit, offset=offset)


@router.get("/gpu-models/{ident}", response_model=GpuModelPublic, description="By ID or name.")
def read_gpu_model(ident: PathId, _: CurrentUser, session: SessionDep) -> GpuModelPublic:
    return _gpu_public(_get(session, GpuModel, ident))


@router.post("/gpu-models", response_model=GpuModelPublic, status_code=201)
def create_gpu_model(body: GpuModelCreate, _: AdminUser, session: SessionDep) -> GpuModelPublic:
    _ensure_name_free(session, GpuModel, body.name)
    row = GpuModel.model_validate(body.model_dump())
    session.add(row)
    _commit(session, GpuModel, row.name)
    return _gpu_public(row)


@router.patch("/gpu-models/{ident}", response_model=GpuModelPublic)
def update_gpu_model(
    ident: PathId, body: GpuModelUpdate, _: AdminUser, session: SessionDep
) -> GpuModelPublic:
    row = _get(session, GpuModel, ident)
    changes = _changes(body)
    if "name" in changes:
        _ensure_name_free(session, GpuModel, changes["name"], row.id)
    _apply(row, changes)
    session.add(row)
    _commit(session, GpuModel, row.name)
    return _gpu_public(row)


@router.delete("/gpu-models/{ident}", status_code=204)
def delete_gpu_model(ident: PathId, _: AdminUser, session: SessionDep) -> Response:
    return _delete(session, GpuModel, ident)


# --- specs --------------------------------------------------------------------------------------------


def _spec_public(row: Spec, gpu_names: dict[str, str]) -> SpecPublic:
    public = SpecPublic.model_validate(row, from_attributes=True)
    public.gpu_model_name = gpu_names.get(row.gpu_model_id or "")
    return public


def _gpu_names(session: Session, specs: Sequence[Spec]) -> dict[str, str]:
    ids = {s.gpu_model_id for s in specs if s.gpu_model_id}
    if not ids:
        return {}
    rows = session.exec(select(GpuModel.id, GpuModel.name).where(col(GpuModel.id).in_(ids))).all()
    return dict(rows)


def _check_gpu_rule(session: Session, gpu_model_id: str | None, gpu_count: int) -> None:
    """A GPU spec names an existing GPU model and at least one GPU; a CPU-only spec names neither."""
    if gpu_model_id is not None and session.get(GpuModel, gpu_model_id) is None:
        raise invalid("gpu_model_id", f"GPU model {gpu_model_id!r} does not exist")
    if gpu_count > 0 and gpu_model_id is None:
        raise invalid("gpu_model_id", "a spec with GPUs needs a GPU model")
    if gpu_count == 0 and gpu_model_id is not None:
        raise invalid(
            "gpu_count", "must be at least 1 when a GPU model is set (clear gpu_model_id for CPU only)"
        )


def _with_gpu_names(session: Session, row: Spec) -> SpecPublic:
    return _spec_public(row, _gpu_names(session, [row]))


@router.get("/specs", response_model=Page[SpecPublic])
def list_specs(
    _: CurrentUser,
    session: SessionDep,
    name: NameFilter = None,
    gpu_model_id: Annotated[str | None, Query(max_length=32)] = None,
    min_gpu_count: Annotated[int | None, Query(ge=0, le=64)] = None,
    is_active: bool | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[SpecPublic]:
    statement = _name_contains(select(Spec), Spec, name)
    if gpu_model_id is not None:
        statement = statement.where(Spec.gpu_model_id == gpu_model_id)
    if min_gpu_count is not None:
        statement = statement.where(Spec.gpu_count >= min_gpu_count)
    if is_active is not None:
        statement = statement.where(Spec.is_active == is_active)
    rows, total = _page(session, statement, Spec, limit, offset)
    gpu_names = _gpu_names(session, rows)
    return Page(items=[_spec_public(r, gpu_names) for r in rows], total=total, limit=limit, offset=offset)


@router.get("/specs/{ident}", response_model=SpecPublic, description="By ID or name.")
def read_spec(ident: PathId, _: CurrentUser, session: SessionDep) -> SpecPublic:
    return _with_gpu_names(session, _get(session, Spec, ident))


@router.post("/specs", response_model=SpecPublic, status_code=201)
def create_spec(body: SpecCreate, _: AdminUser, session: SessionDep) -> SpecPublic:
    _ensure_name_free(session, Spec, body.name)
    _check_gpu_rule(session, body.gpu_model_id, body.gpu_count)
    row = Spec.model_validate(body.model_dump())
    session.add(row)
    _commit(session, Spec, row.name)
    return _with_gpu_names(session, row)


@router.patch("/specs/{ident}", response_model=SpecPublic)
def update_spec(ident: PathId, body: SpecUpdate, _: AdminUser, session: SessionDep) -> SpecPublic:
    row = _get(session, Spec, ident)
    changes = _changes(body, nullable=frozenset({"gpu_model_id"}))
    if "name" in changes:
        _ensure_name_free(session, Spec, changes["name"], row.id)
    _check_gpu_rule(
        session, changes.get("gpu_model_id", row.gpu_model_id), changes.get("gpu_count", row.gpu_count)
    )
    _apply(row, changes)
    session.add(row)
    _commit(session, Spec, row.name)
    return _with_gpu_names(session, row)


@router.delete("/specs/{ident}", status_code=204, description="Retire a spec with is_active=false instead.")
def delete_spec(ident: PathId, _: AdminUser, session: SessionDep) -> Response:
    return _delete(session, Spec, ident)


# --- project purposes ---------------------------------------------------------------------------------


def _purpose_public(row: Purpose) -> PurposePublic:
    return PurposePublic.model_validate(row, from_attributes=True)


@router.get("/purposes", response_model=Page[PurposePublic])
def list_purposes(
    _: CurrentUser, session: SessionDep, name: NameFilter = None, limit: Limit = 50, offset: Offset = 0
) -> Page[PurposePublic]:
    statement = _name_contains(select(Purpose), Purpose, name)
    rows, total = _page(session, statement, Purpose, limit, offset)
    return Page(items=[_purpose_public(r) for r in rows], total=total, limit=limit, offset=offset)


@router.get("/purposes/{ident}", response_model=PurposePublic, description="By ID or name.")
def read_purpose(ident: PathId, _: CurrentUser, session: SessionDep) -> PurposePublic:
    return _purpose_public(_get(session, Purpose, ident))


@router.post("/purposes", response_model=PurposePublic, status_code=201)
def create_purpose(body: PurposeCreate, _: AdminUser, session: SessionDep) -> PurposePublic:
    _ensure_name_free(session, Purpose, body.name)
    row = Purpose.model_validate(body.model_dump())
    session.add(row)
    _commit(session, Purpose, row.name)
    return _purpose_public(row)


@router.patch("/purposes/{ident}", response_model=PurposePublic)
def update_purpose(ident: PathId, body: PurposeUpdate, _: AdminUser, session: SessionDep) -> PurposePublic:
    row = _get(session, Purpose, ident)
    changes = _changes(body)
    if "name" in changes:
        _ensure_name_free(session, Purpose, changes["name"], row.id)
    _apply(row, changes)
    session.add(row)
    _commit(session, Purpose, row.name)
    return _purpose_public(row)


@router.delete("/purposes/{ident}", status_code=204)
def delete_purpose(ident: PathId, _: AdminUser, session: SessionDep) -> Response:
    return _delete(session, Purpose, ident)
