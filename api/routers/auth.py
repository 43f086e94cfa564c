"""Sign in (OAuth2 password form) and sign out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Response
from pydantic import Field
from sqlmodel import select

from api.deps import CurrentToken, CurrentUser, SessionDep, SettingsDep
from api.errors import ApiError
from api.security import hash_token, new_token, verify_password
from models.accounts import ApiToken, TokenResponse, User
from models.base import utcnow
from models.inputs import RequestModel

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


class PasswordForm(RequestModel):
    """The OAuth2 password grant's form, as the docs' Authorize button and curl -d send it."""

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)
    grant_type: str | None = Field(None, pattern="^password$")
    scope: str = Field("", max_length=256)


@router.post("/token", response_model=TokenResponse)
def issue_token(
    form: Annotated[PasswordForm, Form()], session: SessionDep, settings: SettingsDep
) -> TokenResponse:
    user = session.exec(select(User).where(User.username == form.username)).first()
    password_ok = verify_password(user.password_hash if user else None, form.password)
    if user is None or not password_ok:
        raise ApiError(401, "invalid_credentials", "wrong username or password")
    if not user.is_active:
        raise ApiError(401, "account_disabled", "this account is disabled; ask a platform admin")
    token = new_token()
    expires_at = utcnow() + settings.token_ttl
    session.add(ApiToken(token_hash=hash_token(token), user_id=user.id, expires_at=expires_at))
    session.commit()
    return TokenResponse(access_token=token, expires_at=expires_at)


@router.post("/logout", status_code=204)
def logout(token: CurrentToken, _: CurrentUser, session: SessionDep) -> Response:
    """A disabled account's tokens are refused here too: disabling stops them at once, everywhere."""
    token.revoked_at = utcnow()
    session.add(token)
    session.commit()
    return Response(status_code=204)
