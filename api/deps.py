"""FastAPI dependencies: settings, database session, Temporal client, the signed-in user."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import Engine
from sqlmodel import Session, select
from temporalio.client import Client

from api.errors import ApiError, forbidden
from api.security import hash_token
from config import Settings
from models.accounts import ApiToken, PlatformRole, User
from models.base import utcnow

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


def release_connection(session: Session) -> None:
    """Give the session's connection back to the pool before awaiting the workflow engine.

    A session holds its connection until its transaction ends, and a wait on a workflow can be long: under
    load, requests parked on Temporal would otherwise drain the pool that activities need. Loaded rows stay
    readable, and the session opens a new transaction if used again.
    """
    session.close()


async def get_temporal(request: Request) -> Client:
    client: Client | None = await request.app.state.temporal.get()
    if client is None:
        raise ApiError(503, "unavailable", "the workflow engine is not reachable; try again shortly")
    return client


async def get_optional_temporal(request: Request) -> Client | None:
    """The workflow engine if it is reachable: pages that merely add its live view degrade without it."""
    client: Client | None = await request.app.state.temporal.get()
    return client


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
TemporalDep = Annotated[Client, Depends(get_temporal)]
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


def get_current_user(session: SessionDep, token: Annotated[ApiToken, Depends(get_current_token)]) -> User:
    user = session.get(User, token.user_id)
    # Checked on every request, so disabling a user stops their tokens at once.
    if user is None or not user.is_active:
        raise ApiError(401, "unauthorized", "this account is disabled", headers=_UNAUTHENTICATED)
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]
CurrentToken = Annotated[ApiToken, Depends(get_current_token)]


def require_admin(user: CurrentUser) -> User:
    if user.role != PlatformRole.admin:
        raise forbidden("only platform admins may do this")
    return user


AdminUser = Annotated[User, Depends(require_admin)]
