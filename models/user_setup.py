"""User setup (開通服務, manual 4): what a new account needs before it works, first its home storage."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel
from sqlalchemy import String
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from models.base import UTCDateTime, utcnow

HOME_VOLUME = "home"  # what a mount names to mount its owner's home


class SetupStatus(StrEnum):
    provisioning = "provisioning"  # 開通中
    ready = "ready"  # 已開通
    failed = "failed"  # with the reason; a platform admin retries it


class UserSetupFields(SQLModel):
    user_id: str = SQLField(primary_key=True, foreign_key="user.id", ondelete="CASCADE")
    username: str = SQLField(max_length=32)
    status: SetupStatus = SQLField(default=SetupStatus.provisioning, sa_type=String(16))
    reason: str = SQLField(default="", max_length=128)
    message: str = SQLField(default="", max_length=2000)
    home: str = SQLField(default="", max_length=1024)  # where the home lives, for operators
    attempt: int = 1  # the setup's run: a retry is the next one, and an older run's record never wins


class UserSetup(UserSetupFields, table=True):
    __tablename__ = "user_setup"
    updated_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)


class UserSetupInput(BaseModel):
    user_id: str
    username: str
    attempt: int = 1


class UserSetupPublic(UserSetupFields):
    updated_at: datetime
