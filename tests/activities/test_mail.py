"""Platform mail against a real SMTP server (aiosmtpd on a free local port), run as a Temporal activity."""

from __future__ import annotations

import email
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from pydantic import SecretStr, ValidationError
from sqlalchemy import Engine
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.mail import MAIL_DEFERRED, MAIL_REJECTED, NOBODY_NOTE, OUTBOX_NOTE, MailActivities
from config import Settings
from models.database import session_scope
from models.mail import MailMessage, MailRecord, MailStatus, MailTransport
from tests.conftest import make_user

SMTP_USER = "mailer"
SMTP_PASSWORD = "s3cret-smtp-password"


@dataclass
class MailCollector:
    """An aiosmtpd handler: keeps what it accepts, refuses the addresses it is told to."""

    received: list[Envelope] = field(default_factory=list)
    refuse_recipients: dict[str, str] = field(default_factory=dict)
    refuse_data: str | None = None

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse_recipients:
            return self.refuse_recipients[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refuse_data:
            return self.refuse_data
        self.received.append(envelope)
        return "250 Message accepted for delivery"

    def message(self, index: int = 0) -> Message:
        content = self.received[index].content
        assert isinstance(content, bytes)
        return email.message_from_bytes(content)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def start_server(handler: MailCollector, port: int, **smtp_options: Any) -> Controller:
    controller = Controller(handler, hostname="127.0.0.1", port=port, **smtp_options)
    controller.start()
    return controller


@pytest.fixture
def collector() -> MailCollector:
    return MailCollector()


@pytest.fixture
def smtp_port(collector: MailCollector) -> Iterator[int]:
    port = free_port()
    controller = start_server(collector, port)
    yield port
    controller.stop()


def smtp_settings(settings: Settings, port: int, **changes: Any) -> Settings:
    return settings.model_copy(
        update={"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_starttls": False, **changes}
    )


def send(engine: Engine, settings: Settings, message: MailMessage) -> Any:
    return ActivityEnvironment().run(MailActivities(engine, settings).send_mail, message)


def stored(engine: Engine, key: str) -> MailRecord:
    with session_scope(engine) as session:
        record = session.get(MailRecord, key)
        assert record is not None
        return record


def test_sends_once_even_when_the_activity_runs_twice(
    engine: Engine, settings: Settings, collector: MailCollector, smtp_port: int
) -> None:
    alice = make_user(engine, "alice")
    message = MailMessage(
        key="project-abc123/approved",
        to_user_ids=[alice.id],
        to_addresses=["ops@example.org"],
        subject="Project approved: 影像辨識",
        body="Your project is approved.\nIt starts tomorrow.",
    )
    config = smtp_settings(settings, smtp_port)

    first = send(engine, config, message)
    again = send(engine, config, message)

    assert len(collector.received) == 1
    envelope = collector.received[0]
    assert envelope.mail_from == "mlcp@localhost"
    assert envelope.rcpt_tos == ["alice@example.com", "ops@example.org"]
    delivered = collector.message()
    assert str(email.header.make_header(email.header.decode_header(delivered["Subject"]))) == message.subject
    assert delivered["Auto-Submitted"] == "auto-generated"
    assert delivered["Message-ID"].endswith("@localhost>")
    payload = delivered.get_payload(decode=True)
    assert isinstance(payload, bytes)
    assert "It starts tomorrow." in payload.decode()

    assert first.status == MailStatus.sent and first.transport == MailTransport.smtp
    assert first.sent_at is not None and first.attempts == 1
    assert again == first
    record = stored(engine, message.key)
    assert record.status == MailStatus.sent and record.attempts == 1
    assert record.recipient_list == ["alice@example.com", "ops@example.org"]


def test_recipients_are_users_current_emails_and_skipped_users_are_noted(
    engine: Engine, settings: Settings, collector: MailCollector, smtp_port: int
) -> None:
    alice, carol, dave = make_user(engine, "alice"), make_user(engine, "carol"), make_user(engine, "dave")
    with session_scope(engine) as session:
        for user, changes in ((alice, {"email": "Alice.New@Example.com"}), (carol, {"email": ""})):
            user.sqlmodel_update(changes)
            session.add(user)
        dave.is_active = False
        session.add(dave)
    message = MailMessage(
        key="project-x/reminder",
        to_user_ids=[alice.id, carol.id, dave.id, "ghost", alice.id],
        to_addresses=["alice.new@example.com", "not an address"],
        subject="Reminder",
        body="Your project ends in 7 days.",
    )

    result = send(engine, smtp_settings(settings, smtp_port), message)

    assert result.status == MailStatus.sent
    assert result.recipients == ["Alice.New@example.com"]
    assert collector.received[0].rcpt_tos == ["Alice.New@example.com"]
    assert "skipped user carol: no email address" in result.note
    assert "skipped user dave: account disabled" in result.note
    assert "skipped user ghost: no such user" in result.note
    assert "skipped address: 'not an address' is not a valid email address" in result.note
    assert stored(engine, message.key).note == result.note


def test_without_an_smtp_host_mail_goes_to_the_outbox_once(engine: Engine, settings: Settings) -> None:
    alice = make_user(engine, "alice")
    message = MailMessage(key="project-y/rejected", to_user_ids=[alice.id], subject="Rejected", body="Sorry.")
    assert settings.smtp_host == ""

    first = send(engine, settings, message)
    again = send(engine, settings, message)

    assert first.status == MailStatus.outbox and first.transport == MailTransport.outbox
    assert first.recipients == ["alice@example.com"] and first.note == OUTBOX_NOTE
    assert again == first
    record = stored(engine, message.key)
    assert record.body == "Sorry." and record.attempts == 1 and record.sent_at is None


def test_a_message_with_nobody_to_send_to_is_kept_in_the_outbox_without_error(
    engine: Engine, settings: Settings, collector: MailCollector, smtp_port: int
) -> None:
    carol = make_user(engine, "carol")
    with session_scope(engine) as session:
        carol.email = ""
        session.add(carol)
    message = MailMessage(key="project-z/deleted", to_user_ids=[carol.id], subject="Deleted", body="Gone.")

    result = send(engine, smtp_settings(settings, smtp_port), message)

    assert result.status == MailStatus.outbox and result.recipients == []
    assert result.note == f"skipped user carol: no email address; {NOBODY_NOTE}"
    assert collector.received == []


def test_a_550_rejection_is_recorded_failed_and_not_retried(
    engine: Engine, settings: Settings, collector: MailCollector, smtp_port: int
) -> None:
    collector.refuse_recipients["gone@example.org"] = "550 5.1.1 mailbox unavailable"
    message = MailMessage(key="k/550", to_addresses=["gone@example.org"], subject="Hello", body="Hi.")

    with pytest.raises(ApplicationError) as raised:
        send(engine, smtp_settings(settings, smtp_port), message)

    assert raised.value.non_retryable is True
    assert raised.value.type == MAIL_REJECTED
    record = stored(engine, message.key)
    assert record.status == MailStatus.failed
    assert "550 5.1.1 mailbox unavailable" in record.error
    assert collector.received == []


def test_rejected_content_is_failed_and_refused_recipients_among_accepted_ones_are_noted(
    engine: Engine, settings: Settings, collector: MailCollector, smtp_port: int
) -> None:
    config = smtp_settings(settings, smtp_port)
    collector.refuse_recipients["gone@example.org"] = "550 5.1.1 mailbox unavailable"
    partly = MailMessage(
        key="k/partly", to_addresses=["gone@example.org", "here@example.org"], subject="Hi", body="Hi."
    )
    result = send(engine, config, partly)
    assert result.status == MailStatus.sent
    assert collector.received[0].rcpt_tos == ["here@example.org"]
    assert "refused by the server: gone@example.org: 550 5.1.1 mailbox unavailable" in result.note

    collector.refuse_data = "554 5.6.0 message content rejected"
    content = MailMessage(key="k/content", to_addresses=["here@example.org"], subject="Hi", body="Hi.")
    with pytest.raises(ApplicationError) as raised:
        send(engine, config, content)
    assert raised.value.non_retryable is True
    assert stored(engine, content.key).status == MailStatus.failed


def test_connection_refused_raises_retryably_and_a_later_attempt_delivers(
    engine: Engine, settings: Settings, collector: MailCollector
) -> None:
    port = free_port()  # nothing listens here yet
    config = smtp_settings(settings, port)
    message = MailMessage(key="k/refused", to_addresses=["ops@example.org"], subject="Hi", body="Hi.")

    with pytest.raises(ApplicationError) as raised:
        send(engine, config, message)
    assert raised.value.non_retryable is False
    assert raised.value.type == MAIL_DEFERRED
    pending = stored(engine, message.key)
    assert pending.status == MailStatus.pending and pending.error and pending.attempts == 1

    controller = start_server(collector, port)
    try:
        result = send(engine, config, message)
    finally:
        controller.stop()
    assert result.status == MailStatus.sent and result.attempts == 2
    assert stored(engine, message.key).error == ""
    assert len(collector.received) == 1


def test_a_temporary_recipient_refusal_is_retried(
    engine: Engine, settings: Settings, collector: MailCollector, smtp_port: int
) -> None:
    collector.refuse_recipients["busy@example.org"] = "451 4.3.0 try again later"
    message = MailMessage(key="k/451", to_addresses=["busy@example.org"], subject="Hi", body="Hi.")
    with pytest.raises(ApplicationError) as raised:
        send(engine, smtp_settings(settings, smtp_port), message)
    assert raised.value.non_retryable is False
    assert stored(engine, message.key).status == MailStatus.pending


def _echoing_authenticator(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    assert isinstance(auth_data, LoginPassword)
    if (auth_data.login.decode(), auth_data.password.decode()) == (SMTP_USER, SMTP_PASSWORD):
        return AuthResult(success=True)
    # A careless server that repeats the password it was given: it must still not reach records or logs.
    return AuthResult(success=False, handled=False, message=f"535 5.7.8 bad password {auth_data.password!r}")


def test_smtp_login_works_and_a_wrong_password_is_retried_without_leaking(
    engine: Engine, settings: Settings, collector: MailCollector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()
    controller = start_server(collector, port, authenticator=_echoing_authenticator, auth_require_tls=False)
    try:
        good = smtp_settings(settings, port, smtp_username=SMTP_USER, smtp_password=SecretStr(SMTP_PASSWORD))
        ok = MailMessage(key="k/auth-ok", to_addresses=["ops@example.org"], subject="Hi", body="Hi.")
        assert send(engine, good, ok).status == MailStatus.sent

        wrong_password = "wrong-" + SMTP_PASSWORD
        bad = smtp_settings(settings, port, smtp_username=SMTP_USER, smtp_password=SecretStr(wrong_password))
        denied = MailMessage(key="k/auth-bad", to_addresses=["ops@example.org"], subject="Hi", body="Hi.")
        with pytest.raises(ApplicationError) as raised:
            send(engine, bad, denied)
    finally:
        controller.stop()

    assert raised.value.non_retryable is False
    record = stored(engine, denied.key)
    assert record.status == MailStatus.pending and "535" in record.error
    assert wrong_password not in record.error and wrong_password not in str(raised.value)
    # "mail.log" is the test server's own logger, which sees the password on the wire.
    our_logs = "\n".join(r.getMessage() for r in caplog.records if r.name != "mail.log")
    assert "535" in our_logs
    assert SMTP_PASSWORD not in our_logs and wrong_password not in our_logs
    assert len(collector.received) == 1


@pytest.mark.parametrize("field_name", ["subject", "key"])
def test_header_values_must_be_single_lines(field_name: str) -> None:
    values = {"key": "k/1", "subject": "Hi", "body": "Hi.", field_name: "Hi\r\nBcc: everyone@example.org"}
    with pytest.raises(ValidationError, match="single line"):
        MailMessage.model_validate(values)
