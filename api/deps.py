"""FastAPI dependencies: settings, database session, Temporal client, workload runtime, the signed-in user,
and the guard every route has against control characters in its path, query and headers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import Engine
from sqlmodel import Session, select
from temporalio.client import Client

from activities.runtime import WorkloadRuntime
from api.errors import ApiError
from api.security import hash_token
from config import Settings
from models.accounts import ApiToken, PlatformRole, User
from models.base import utcnow
from models.inputs import MAX_LIMIT, MAX_OFFSET, refused_character
from services.errors import forbidden
from services.runtimes import runtime_from_settings

CHECKED_HEADERS = ("idempotency-key",)

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_session(engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session


async def get_temporal(request: Request) -> Client:
    client: Client | None = await request.app.state.temporal.get()
    if client is None:
        raise ApiError(503, "unavailable", "the workflow engine is not reachable; try again shortly")
    return client


async def get_optional_temporal(request: Request) -> Client | None:
    """The workflow engine if it is reachable: pages that merely add its live view degrade without it."""
    client: Client | None = await request.app.state.temporal.get()
    return client


def get_runtime(request: Request) -> WorkloadRuntime:
    """The workload runtime, built once per app: routes read events and logs from it."""
    runtime: WorkloadRuntime | None = getattr(request.app.state, "runtime", None)
    if runtime is None:
        runtime = request.app.state.runtime = runtime_from_settings(request.app.state.settings)
    return runtime


def refuse_control_characters(request: Request) -> None:
    """Path and query values and the headers routes read may hold no control characters: they reach
    database queries (PostgreSQL refuses NUL) and runtimes. Body fields are checked by their models."""
    values = [
        *(("path", name, value) for name, value in request.path_params.items()),
        *(("query", name, value) for name, value in request.query_params.multi_items()),
        *(("header", name, request.headers[name]) for name in CHECKED_HEADERS if name in request.headers),
    ]
    for _, name, value in values:
        found = refused_character(str(value))
        if found is not None:
            raise ApiError(
                422, "validation_error", f"{name}: must not contain control characters; found {found}", name
            )


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
TemporalDep = Annotated[Client, Depends(get_temporal)]
RuntimeDep = Annotated[WorkloadRuntime, Depends(get_runtime)]
# IDs, usernames, catalog names and mail keys in a path: bounded like every other input.
PathId = Annotated[str, Path(min_length=1, max_length=255)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"Page size, 1-{MAX_LIMIT}")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description=f"Rows to skip, 0-{MAX_OFFSET}")]
OptionalTemporalDep = Annotated[Client | None, Depends(get_optional_temporal)]

_UNAUTHENTICATED = {"WWW-Authenticate": "Bearer"}


def get_current_token(session: SessionDep, token: Annotated[str | None, Depends(oauth2_scheme)]) -> ApiToken:
    if not token:
        raise ApiError(
            401,
            "unauthorized",
            "sign in first: send 'Authorization: Bearer <token>'",
            headers=_UNAUTHENTICATED,
        )
    row = session.exec(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).first()
    if row is None or row.revoked_at is not None or row.expires_at <= utcnow():
        raise ApiError(
            401,
            "unauthorized",
            "the token is invalid, expired or revoked; sign in again",
            headers=_UNAUTHENTICATED,
        )
    return row


def active_user(session: Session, user_id: str, field: str | None = None) -> User:
    """The user a credential speaks for, checked on every request, so disabling a user stops their tokens
    and links at once."""
    user = session.get(User, user_id)
    if user is None or not user.is_active:
        raise ApiError(401, "unauthorized", "this account is disabled", field, headers=_UNAUTHENTICATED)
    return user


def get_current_user(session: SessionDep, token: Annotated[ApiToken, Depends(get_current_token)]) -> User:
    return active_user(session, token.user_id)


CurrentUser = Annotated[User, Depends(get_current_user)]
CurrentToken = Annotated[ApiToken, Depends(get_current_token)]


def require_admin(user: CurrentUser) -> User:
    if user.role != PlatformRole.admin:
        raise forbidden("only platform admins may do this")
    return user


AdminUser = Annotated[User, Depends(require_admin)]
