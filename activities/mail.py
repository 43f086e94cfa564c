"""Platform mail: SMTP when a server is configured, otherwise the outbox table admins read through the API.

Sending is idempotent on the message key: the row is written before the server is contacted, and a row
that is sent or in the outbox is returned as is, so a retried or replayed activity never mails twice.
The one window left, a crash between the server accepting the message and the row recording it, can
repeat a mail; the repeat carries the same Message-ID, which lets mail clients fold it into the first.
"""

from __future__ import annotations

import asyncio
import hashlib
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any, NoReturn

import aiosmtplib
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import heartbeating
from config import Settings
from models.accounts import User
from models.base import utcnow
from models.database import session_scope
from models.mail import (
    MAIL_DONE,
    RECIPIENT_SEPARATOR,
    MailMessage,
    MailRecord,
    MailResult,
    MailStatus,
    MailTransport,
)

SMTP_TIMEOUT_SECONDS = 30.0
IMPLICIT_TLS_PORT = 465  # SMTPS: TLS from the first byte instead of a STARTTLS upgrade
NOBODY_NOTE = "no recipient with an email address; kept in the outbox"
OUTBOX_NOTE = "no SMTP server configured; kept in the outbox"
# ApplicationError types, for workflows that want to tell a rejected mail from other failures.
MAIL_REJECTED = "MailRejected"
MAIL_DEFERRED = "MailDeferred"


def _normalise(address: str) -> str | None:
    try:
        return validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError:
        return None


def resolve_recipients(session: Session, message: MailMessage) -> tuple[list[str], list[str]]:
    """Current, valid, de-duplicated addresses for the message, and a note for everyone skipped."""
    recipients: dict[str, str] = {}
    notes: list[str] = []

    def add(address: str, who: str) -> None:
        normalised = _normalise(address)
        if normalised is None:
            notes.append(f"skipped {who}: {address!r} is not a valid email address")
        else:
            recipients.setdefault(normalised.lower(), normalised)

    user_ids = list(dict.fromkeys(message.to_user_ids))
    users = {}
    if user_ids:
        users = {u.id: u for u in session.exec(select(User).where(col(User.id).in_(user_ids)))}
    for user_id in user_ids:
        user = users.get(user_id)
        if user is None:
            notes.append(f"skipped user {user_id}: no such user")
        elif not user.is_active:
            notes.append(f"skipped user {user.username}: account disabled")
        elif not user.email:
            notes.append(f"skipped user {user.username}: no email address")
        else:
            add(user.email, f"user {user.username}")
    for address in message.to_addresses:
        add(address, "address")
    return list(recipients.values()), notes


def message_id(key: str, sender: str) -> str:
    """The same key always yields the same Message-ID, so a repeated delivery is recognisable."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}.mlcp@{domain}>"


def compose(message: MailMessage, recipients: list[str], sender: str) -> EmailMessage:
    email = EmailMessage()
    email["From"] = sender
    email["To"] = RECIPIENT_SEPARATOR.join(recipients)
    email["Subject"] = message.subject
    email["Date"] = format_datetime(utcnow())
    email["Message-ID"] = message_id(message.key, sender)
    # RFC 3834: keeps vacation responders from answering platform notices.
    email["Auto-Submitted"] = "auto-generated"
    email.set_content(message.body)
    return email


def _describe(error: BaseException) -> str:
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        return "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in error.recipients)
    if isinstance(error, aiosmtplib.SMTPResponseException):
        return f"{error.code} {error.message}"
    return str(error) or type(error).__name__


def _is_permanent(error: BaseException) -> bool:
    """5xx about this message's recipients or content; server, login and network trouble is retried."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        return all(r.code >= 500 for r in error.recipients)
    return isinstance(error, aiosmtplib.SMTPDataError) and error.code >= 500


class MailActivities:
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings

    @activity.defn
    def send_mail(self, message: MailMessage) -> MailResult:
        """Send, or keep in the outbox, once per ``message.key``; transient SMTP trouble raises to retry.
        Heartbeats while the SMTP server takes its time, so a lost worker's mail is retried in seconds."""
        with heartbeating():
            return self._send(message)

    def _send(self, message: MailMessage) -> MailResult:
        with session_scope(self._engine) as session:
            record = session.get(MailRecord, message.key)
            if record is not None and record.status in MAIL_DONE:
                return record.result()
            recipients, notes = resolve_recipients(session, message)
            if record is None:
                record = MailRecord(
                    key=message.key,
                    subject=message.subject,
                    body=message.body,
                    status=MailStatus.pending,
                    transport=MailTransport.smtp,
                )
            record.subject, record.body = message.subject, message.body
            record.recipients = RECIPIENT_SEPARATOR.join(recipients)
            record.attempts += 1
            record.error = ""
            if not recipients or not self._settings.smtp_host:
                notes.append(NOBODY_NOTE if not recipients else OUTBOX_NOTE)
                record.status, record.transport = MailStatus.outbox, MailTransport.outbox
            else:
                record.status, record.transport = MailStatus.pending, MailTransport.smtp
            record.note = "; ".join(notes)
            session.add(record)
        if record.status == MailStatus.outbox:
            activity.logger.info("mail %s kept in the outbox (%d recipients)", message.key, len(recipients))
            return record.result()

        try:
            refused = asyncio.run(
                self._deliver(compose(message, recipients, self._settings.smtp_sender), recipients)
            )
        except (aiosmtplib.SMTPException, OSError) as error:
            self._on_failure(message.key, error)
        if refused:
            notes.append(
                "refused by the server: "
                + "; ".join(
                    f"{address}: {response.code} {response.message}" for address, response in refused.items()
                )
            )
        result = self._update(message.key, status=MailStatus.sent, sent_at=utcnow(), note="; ".join(notes))
        activity.logger.info("mail %s sent to %d recipients", message.key, len(recipients) - len(refused))
        return result

    async def _deliver(self, email: EmailMessage, recipients: list[str]) -> dict[str, Any]:
        """Hands the message to the server; returns the recipients it refused while accepting others."""
        settings = self._settings
        implicit_tls = settings.smtp_port == IMPLICIT_TLS_PORT
        username = settings.smtp_username or None
        refused, _ = await aiosmtplib.send(
            email,
            sender=parseaddr(settings.smtp_sender)[1] or settings.smtp_sender,
            recipients=recipients,
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=username,
            password=settings.smtp_password.get_secret_value() if username else None,
            use_tls=implicit_tls,
            start_tls=False if implicit_tls else settings.smtp_starttls,
            timeout=SMTP_TIMEOUT_SECONDS,
        )
        return dict(refused)

    def _on_failure(self, key: str, error: BaseException) -> NoReturn:
        description = self._redact(_describe(error))
        if _is_permanent(error):
            self._update(key, status=MailStatus.failed, error=description)
            activity.logger.warning("mail %s rejected by the SMTP server: %s", key, description)
            raise ApplicationError(
                f"mail {key!r} rejected by the SMTP server: {description}",
                type=MAIL_REJECTED,
                non_retryable=True,
            ) from error
        self._update(key, status=MailStatus.pending, error=description)
        activity.logger.warning("mail %s not delivered yet, will retry: %s", key, description)
        raise ApplicationError(
            f"mail {key!r} not delivered yet: {description}", type=MAIL_DEFERRED
        ) from error

    def _redact(self, text: str) -> str:
        # Servers do not echo passwords, but an error text must never be the way one leaks.
        password = self._settings.smtp_password.get_secret_value()
        return text.replace(password, "********") if password else text

    def _update(self, key: str, **changes: Any) -> MailResult:
        with session_scope(self._engine) as session:
            record = session.get(MailRecord, key)
            if record is None:
                raise ApplicationError(f"mail {key!r} vanished while being sent")
            for name, value in changes.items():
                setattr(record, name, value)
            session.add(record)
            return record.result()
