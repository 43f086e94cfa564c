"""Users and their API tokens."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, EmailStr, Field, field_validator
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from models.base import UTCDateTime, new_id, utcnow
from models.inputs import RequestModel, check_time_zone

USERNAME_RULE = re.compile(r"^[a-z][a-z0-9_.-]{2,31}$")
PASSWORD_MIN_LENGTH = 8


class PlatformRole(StrEnum):
    admin = "admin"
    user = "user"


class User(SQLModel, table=True):
    id: str = SQLField(default_factory=new_id, primary_key=True, max_length=32)
    username: str = SQLField(unique=True, index=True, max_length=32)
    display_name: str = SQLField(default="", max_length=128)
    email: str = SQLField(default="", max_length=254)
    role: PlatformRole = SQLField(default=PlatformRole.user)
    is_active: bool = True
    # Where charts and reports show their times; None: the platform's (MLCP_DISPLAY_TIME_ZONE).
    time_zone: str | None = SQLField(default=None, max_length=64)
    password_hash: str = SQLField(max_length=255)
    created_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)


class ApiToken(SQLModel, table=True):
    """Only the SHA-256 of a token is kept: a database leak yields no usable token."""

    __tablename__ = "api_token"

    id: str = SQLField(default_factory=new_id, primary_key=True, max_length=32)
    token_hash: str = SQLField(unique=True, index=True, max_length=64)
    user_id: str = SQLField(foreign_key="user.id", index=True, ondelete="CASCADE")
    created_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = SQLField(sa_type=UTCDateTime)
    revoked_at: datetime | None = SQLField(default=None, sa_type=UTCDateTime)


def _check_password(value: str) -> str:
    if len(value) < PASSWORD_MIN_LENGTH:
        raise ValueError(f"must be at least {PASSWORD_MIN_LENGTH} characters")
    if len(value) > 256:
        raise ValueError("must be at most 256 characters")
    return value


class UserCreate(RequestModel):
    username: str = Field(max_length=32)
    password: str = Field(max_length=256)
    display_name: str = Field("", max_length=128)
    email: EmailStr | None = None
    role: PlatformRole = PlatformRole.user

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        if not USERNAME_RULE.fullmatch(value):
            raise ValueError(
                "must be 3-32 characters: a lowercase letter, then lowercase letters, digits, '_', '.' or '-'"
            )
        return value

    _password = field_validator("password")(_check_password)


class ProfileUpdate(RequestModel):
    """What a user changes of their own account."""

    display_name: str | None = Field(None, max_length=128)
    email: EmailStr | None = None
    time_zone: str | None = Field(
        None,
        max_length=64,
        description="IANA name (e.g. Asia/Taipei) for the times of charts and reports; null: the platform's",
    )

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, name: str | None) -> str | None:
        return None if name is None else check_time_zone(name)


class UserUpdate(ProfileUpdate):
    role: PlatformRole | None = None
    is_active: bool | None = None


class UserPublic(BaseModel):
    id: str
    username: str
    display_name: str
    email: str
    role: PlatformRole
    is_active: bool
    time_zone: str | None = None
    created_at: datetime


class PasswordChange(RequestModel):
    current_password: str = Field(max_length=256)
    new_password: str = Field(max_length=256)

    _new = field_validator("new_password")(_check_password)


class PasswordReset(RequestModel):
    """Admin reset: give a password, or leave it out to have one generated and shown once."""

    new_password: str | None = Field(None, max_length=256)

    @field_validator("new_password")
    @classmethod
    def _new(cls, value: str | None) -> str | None:
        return None if value is None else _check_password(value)


class PasswordResetResult(BaseModel):
    generated_password: str | None = None


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_at: datetime
