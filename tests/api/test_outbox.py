"""The admin's view of platform mail."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import Engine

from models.base import utcnow
from models.database import session_scope
from models.mail import MailRecord, MailStatus, MailTransport

OUTBOX = "/api/v1/admin/outbox"


def add_mail(engine: Engine, key: str, recipients: str, status: MailStatus, minutes_ago: int) -> None:
    with session_scope(engine) as session:
        session.add(
            MailRecord(
                key=key,
                recipients=recipients,
                subject=f"About {key}",
                body="Hello.",
                status=status,
                transport=MailTransport.smtp if status == MailStatus.sent else MailTransport.outbox,
                created_at=utcnow() - timedelta(minutes=minutes_ago),
                attempts=1,
            )
        )


def seed(engine: Engine) -> None:
    add_mail(engine, "project-a/approved", "alice@example.com", MailStatus.sent, minutes_ago=30)
    add_mail(engine, "project-a/reminder", "alice@example.com, bob@example.org", MailStatus.outbox, 20)
    add_mail(engine, "project-b/rejected", "carol_x@example.net", MailStatus.failed, 10)
    add_mail(engine, "project-c/deleted", "", MailStatus.outbox, 5)


async def test_admin_lists_mail_newest_first_with_paging(
    api: httpx.AsyncClient, engine: Engine, admin_headers: dict[str, str]
) -> None:
    seed(engine)
    first = await api.get(OUTBOX, headers=admin_headers, params={"limit": 3})
    assert first.status_code == 200, first.text
    page = first.json()
    assert page["total"] == 4 and page["limit"] == 3 and page["offset"] == 0
    assert [m["key"] for m in page["items"]] == [
        "project-c/deleted",
        "project-b/rejected",
        "project-a/reminder",
    ]
    assert page["items"][2]["recipients"] == ["alice@example.com", "bob@example.org"]
    assert page["items"][0]["recipients"] == []

    rest = (await api.get(OUTBOX, headers=admin_headers, params={"limit": 3, "offset": 3})).json()
    assert [m["key"] for m in rest["items"]] == ["project-a/approved"]
    assert rest["total"] == 4


async def test_filters_by_status_and_recipient_substring(
    api: httpx.AsyncClient, engine: Engine, admin_headers: dict[str, str]
) -> None:
    seed(engine)

    async def keys(**params: str) -> list[str]:
        response = await api.get(OUTBOX, headers=admin_headers, params=params)
        assert response.status_code == 200, response.text
        return [m["key"] for m in response.json()["items"]]

    assert await keys(status="outbox") == ["project-c/deleted", "project-a/reminder"]
    assert await keys(recipient="ALICE@") == ["project-a/reminder", "project-a/approved"]
    assert await keys(recipient="bob", status="outbox") == ["project-a/reminder"]
    assert await keys(recipient="bob", status="sent") == []
    # '_' is a LIKE wildcard; the search treats it literally.
    assert await keys(recipient="carol_") == ["project-b/rejected"]
    assert await keys(recipient="a_ice") == []

    bad = await api.get(OUTBOX, headers=admin_headers, params={"status": "lost"})
    assert bad.status_code == 422 and bad.json()["field"] == "status"


async def test_admin_reads_one_mail_by_a_key_with_slashes(
    api: httpx.AsyncClient, engine: Engine, admin_headers: dict[str, str]
) -> None:
    seed(engine)
    response = await api.get(f"{OUTBOX}/project-a/reminder", headers=admin_headers)
    assert response.status_code == 200, response.text
    mail = response.json()
    assert mail["key"] == "project-a/reminder"
    assert mail["subject"] == "About project-a/reminder" and mail["body"] == "Hello."
    assert mail["status"] == "outbox" and mail["transport"] == "outbox" and mail["attempts"] == 1

    missing = await api.get(f"{OUTBOX}/project-a/nothing", headers=admin_headers)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


async def test_members_and_strangers_cannot_read_mail(
    api: httpx.AsyncClient, engine: Engine, user_headers: dict[str, str]
) -> None:
    seed(engine)
    for path in (OUTBOX, f"{OUTBOX}/project-a/approved"):
        member = await api.get(path, headers=user_headers)
        assert member.status_code == 403 and member.json()["code"] == "forbidden"
        assert (await api.get(path)).status_code == 401
