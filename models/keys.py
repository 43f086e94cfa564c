"""SSH keys (金鑰, manual 5.9.2): a user's public keys, for containers' key login. A key the platform makes
has its private half answered once, as a download; only public keys are kept."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field
from sqlalchemy import Text, UniqueConstraint
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from models.base import UTCDateTime, new_id, utcnow
from models.inputs import Multiline, RequestModel

KEY_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,62}$"


class SshKeyFields(SQLModel):
    id: str = SQLField(default_factory=new_id, primary_key=True, max_length=32)
    name: str = SQLField(max_length=64)
    public_key: str = SQLField(sa_type=Text)  # one OpenSSH line: type, base64, comment
    fingerprint: str = SQLField(max_length=128)  # SHA256:..., as ssh-keygen -l shows it
    algorithm: str = SQLField(max_length=64)
    created_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)


class SshKey(SshKeyFields, table=True):
    __tablename__ = "ssh_key"
    __table_args__ = (UniqueConstraint("user_id", "name"),)
    user_id: str = SQLField(foreign_key="user.id", index=True, ondelete="CASCADE")


class SshKeyCreate(RequestModel):
    name: str = Field(
        min_length=1,
        max_length=63,
        pattern=KEY_NAME_PATTERN,
        description="Letters, digits, space, '.', '_', '-'",
    )


class SshKeyImport(SshKeyCreate):
    public_key: Annotated[str, Multiline] = Field(
        min_length=16,
        max_length=16_384,
        description="An OpenSSH public key line (ssh-ed25519 AAAA... comment)",
    )


class SshKeyPublic(SshKeyFields):
    pass


class SshKeyCreated(SshKeyPublic):
    private_key: str = Field(description="OpenSSH private key: shown in this answer only, never again")


class SshKeyPage(BaseModel):
    items: list[SshKeyPublic]
    total: int
