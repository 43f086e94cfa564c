"""Accounts: the signed-in user's own, and the admin's management of everyone's."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy import func, or_, update
from sqlmodel import Session, col, select

from api.deps import (
    AdminUser,
    CurrentToken,
    CurrentUser,
    Limit,
    Offset,
    OptionalTemporalDep,
    PathId,
    SessionDep,
    SettingsDep,
    TemporalDep,
)
from api.errors import ApiError
from api.security import generate_password, hash_password, verify_password
from models.accounts import (
    ApiToken,
    PasswordChange,
    PasswordReset,
    PasswordResetResult,
    PlatformRole,
    ProfileUpdate,
    User,
    UserCreate,
    UserPublic,
    UserUpdate,
)
from models.base import Page, utcnow
from models.user_setup import UserSetupPublic
from services import user_setup
from services.errors import conflict, not_found

router = APIRouter(prefix="/api/v1/users", tags=["users"])
NULLABLE = frozenset({"time_zone"})  # null puts it back to the platform's default


def _public(user: User) -> UserPublic:
    return UserPublic.model_validate(user, from_attributes=True)


def revoke_tokens(session: Session, user_id: PathId, keep_token_id: str | None = None) -> None:
    statement = update(ApiToken).where(col(ApiToken.user_id) == user_id, col(ApiToken.revoked_at).is_(None))
    if keep_token_id:
        statement = statement.where(col(ApiToken.id) != keep_token_id)
    session.execute(statement.values(revoked_at=utcnow()))


@router.get("/me", response_model=UserPublic)
def read_me(user: CurrentUser) -> UserPublic:
    return _public(user)


@router.patch(
    "/me",
    response_model=UserPublic,
    description="Change your own display name, email or time zone (null: the platform's default).",
)
def update_me(body: ProfileUpdate, user: CurrentUser, session: SessionDep) -> UserPublic:
    _apply(session, user, body.model_dump(exclude_unset=True))
    session.commit()
    return _public(user)


def _apply(session: Session, user: User, changes: dict[str, object]) -> None:
    for name, value in changes.items():
        if value is None and name not in NULLABLE:
            raise ApiError(422, "validation_error", f"{name}: may not be null", name)
        setattr(user, name, str(value) if name == "email" else value)
    user.updated_at = utcnow()
    session.add(user)


@router.post("/me/password", status_code=204)
def change_my_password(
    body: PasswordChange, user: CurrentUser, token: CurrentToken, session: SessionDep
) -> Response:
    if not verify_password(user.password_hash, body.current_password):
        raise ApiError(422, "validation_error", "current_password: does not match", "current_password")
    user.password_hash = hash_password(body.new_password)
    user.updated_at = utcnow()
    session.add(user)
    # Other sessions may belong to whoever learnt the old password.
    revoke_tokens(session, user.id, keep_token_id=token.id)
    session.commit()
    return Response(status_code=204)


@router.get(
    "/me/setup",
    response_model=UserSetupPublic,
    description="Your account's setup (開通服務): `provisioning` (開通中), `ready` (已開通) or `failed` "
    "with why.",
)
def my_setup(user: CurrentUser, session: SessionDep) -> UserSetupPublic:
    return UserSetupPublic.model_validate(user_setup.setup_of(session, user), from_attributes=True)


@router.post(
    "",
    response_model=UserPublic,
    status_code=201,
    description="Create an account; its setup (home storage) starts at once: see GET /users/{id}/setup.",
)
async def create_user(
    body: UserCreate,
    _: AdminUser,
    session: SessionDep,
    settings: SettingsDep,
    client: OptionalTemporalDep,
) -> UserPublic:
    if session.exec(select(User).where(User.username == body.username)).first():
        raise conflict(f"username {body.username!r} is taken", "username")
    user = User(
        username=body.username,
        display_name=body.display_name or body.username,
        email=str(body.email or ""),
        role=body.role,
        password_hash=hash_password(body.password),
    )
    session.add(user)
    session.commit()
    if client is None:
        user_setup.record_unstarted(session, user, "the workflow engine was unreachable; retry the setup")
    else:
        await user_setup.retry_setup(client, session, settings, user)
    return _public(user)


@router.get("", response_model=Page[UserPublic])
def list_users(
    _: AdminUser,
    session: SessionDep,
    q: Annotated[str | None, Query(max_length=64, description="Substring of username, name or email")] = None,
    role: PlatformRole | None = None,
    is_active: bool | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[UserPublic]:
    statement = select(User)
    if q:
        pattern = f"%{q.lower()}%"
        statement = statement.where(
            or_(
                col(User.username).like(pattern),
                func.lower(User.display_name).like(pattern),
                func.lower(User.email).like(pattern),
            )
        )
    if role is not None:
        statement = statement.where(User.role == role)
    if is_active is not None:
        statement = statement.where(User.is_active == is_active)
    total = session.exec(select(func.count()).select_from(statement.subquery())).one()
    rows = session.exec(statement.order_by(col(User.username)).offset(offset).limit(limit)).all()
    return Page(items=[_public(u) for u in rows], total=total, limit=limit, offset=offset)


def _get_user(session: Session, user_id: PathId) -> User:
    user = session.get(User, user_id) or session.exec(select(User).where(User.username == user_id)).first()
    if user is None:
        raise not_found("user", user_id)
    return user


@router.get("/{user_id}", response_model=UserPublic, description="By ID or username.")
def read_user(user_id: PathId, _: AdminUser, session: SessionDep) -> UserPublic:
    return _public(_get_user(session, user_id))


@router.patch("/{user_id}", response_model=UserPublic)
def update_user(user_id: PathId, body: UserUpdate, admin: AdminUser, session: SessionDep) -> UserPublic:
    user = _get_user(session, user_id)
    changes = body.model_dump(exclude_unset=True)
    if user.id == admin.id and (
        changes.get("is_active") is False or changes.get("role") == PlatformRole.user
    ):
        raise conflict("you cannot disable or demote yourself; ask another admin", "is_active")
    _apply(session, user, changes)
    if changes.get("is_active") is False:
        revoke_tokens(session, user.id)
    session.commit()
    return _public(user)


@router.post("/{user_id}/password", response_model=PasswordResetResult)
def reset_password(
    user_id: PathId, body: PasswordReset, _: AdminUser, session: SessionDep
) -> PasswordResetResult:
    user = _get_user(session, user_id)
    generated = None if body.new_password else generate_password()
    user.password_hash = hash_password(body.new_password or generated or "")
    user.updated_at = utcnow()
    session.add(user)
    revoke_tokens(session, user.id)
    session.commit()
    return PasswordResetResult(generated_password=generated)


@router.get(
    "/{user_id}/setup", response_model=UserSetupPublic, description="A user's setup (platform admins)."
)
def read_setup(user_id: PathId, _: AdminUser, session: SessionDep) -> UserSetupPublic:
    user = _get_user(session, user_id)
    return UserSetupPublic.model_validate(user_setup.setup_of(session, user), from_attributes=True)


@router.post(
    "/{user_id}/setup",
    response_model=UserSetupPublic,
    status_code=202,
    description="Run a user's setup again (after `failed`, or for an account made before setups existed).",
)
async def retry_setup(
    user_id: PathId, _: AdminUser, session: SessionDep, settings: SettingsDep, client: TemporalDep
) -> UserSetupPublic:
    user = _get_user(session, user_id)
    row = await user_setup.retry_setup(client, session, settings, user)
    return UserSetupPublic.model_validate(row, from_attributes=True)
