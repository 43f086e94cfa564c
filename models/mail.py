"""Platform mail: the message a workflow asks to send, and the record of what became of it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import String, Text
from sqlmodel import Column, SQLModel
from sqlmodel import Field as SQLField

from models.base import UTCDateTime, utcnow

MAIL_KEY_MAX_LENGTH = 255
SUBJECT_MAX_LENGTH = 998  # the longest header line RFC 5322 allows
RECIPIENT_SEPARATOR = ", "


class MailStatus(StrEnum):
    pending = "pending"  # recorded, delivery failed transiently and is being retried
    sent = "sent"
    outbox = "outbox"  # kept here instead of sent: no SMTP server configured, or nobody to send to
    failed = "failed"  # the server rejected it for good


# A row in one of these states is final: sending the same key again returns it untouched.
MAIL_DONE = frozenset({MailStatus.sent, MailStatus.outbox})


class MailTransport(StrEnum):
    smtp = "smtp"
    outbox = "outbox"


class MailMessage(BaseModel):
    """What a workflow asks to send. ``key`` makes the send idempotent across retries and replays."""

    key: str = Field(min_length=1, max_length=MAIL_KEY_MAX_LENGTH, examples=["project-abc123/approved"])
    to_user_ids: list[str] = Field(
        default_factory=list, description="Resolved to current emails at send time."
    )
    to_addresses: list[str] = Field(default_factory=list, description="Extra literal addresses.")
    subject: str = Field(min_length=1, max_length=SUBJECT_MAX_LENGTH)
    body: str = Field(description="Plain text.")

    @field_validator("key", "subject")
    @classmethod
    def _single_line(cls, value: str) -> str:
        # A line break in a header would let the text inject headers of its own.
        if "\r" in value or "\n" in value:
            raise ValueError("must be a single line")
        return value


class MailResult(BaseModel):
    key: str
    status: MailStatus
    transport: MailTransport
    recipients: list[str]
    note: str = ""
    sent_at: datetime | None = None
    attempts: int


class MailRecord(SQLModel, table=True):
    """One row per mail key: written before delivery, updated with its outcome."""

    __tablename__ = "mail"

    key: str = SQLField(primary_key=True, max_length=MAIL_KEY_MAX_LENGTH)
    # Validated addresses joined by ", " (a validated address holds no comma): readable and searchable.
    recipients: str = SQLField(default="", sa_column=Column(Text, nullable=False))
    subject: str = SQLField(max_length=SUBJECT_MAX_LENGTH)
    body: str = SQLField(sa_column=Column(Text, nullable=False))
    # Plain strings rather than database enums, so a new status needs no type migration.
    status: MailStatus = SQLField(sa_type=String(16), index=True)
    transport: MailTransport = SQLField(sa_type=String(16))
    note: str = SQLField(default="", sa_column=Column(Text, nullable=False))
    error: str = SQLField(default="", sa_column=Column(Text, nullable=False))
    created_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    sent_at: datetime | None = SQLField(default=None, sa_type=UTCDateTime)
    attempts: int = 0

    @property
    def recipient_list(self) -> list[str]:
        return self.recipients.split(RECIPIENT_SEPARATOR) if self.recipients else []

    def result(self) -> MailResult:
        return MailResult(
            key=self.key,
            status=self.status,
            transport=self.transport,
            recipients=self.recipient_list,
            note=self.note,
            sent_at=self.sent_at,
            attempts=self.attempts,
        )


class MailPublic(BaseModel):
    key: str
    recipients: list[str]
    subject: str
    body: str
    status: MailStatus
    transport: MailTransport
    note: str
    error: str
    created_at: datetime
    sent_at: datetime | None
    attempts: int

    @classmethod
    def of(cls, record: MailRecord) -> MailPublic:
        return cls(
            key=record.key,
            recipients=record.recipient_list,
            subject=record.subject,
            body=record.body,
            status=record.status,
            transport=record.transport,
            note=record.note,
            error=record.error,
            created_at=record.created_at,
            sent_at=record.sent_at,
            attempts=record.attempts,
        )
