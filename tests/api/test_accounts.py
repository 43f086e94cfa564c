from __future__ import annotations

import httpx
from sqlalchemy import Engine
from sqlmodel import Session, select

from models.accounts import ApiToken, User
from tests.conftest import PASSWORD, make_user, sign_in


async def test_sign_in_returns_bearer_token_stored_only_as_hash(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    make_user(engine, "bob")
    response = await api.post("/api/v1/auth/token", data={"username": "bob", "password": PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    token = body["access_token"]
    with Session(engine) as session:
        stored = session.exec(select(ApiToken)).all()
        assert len(stored) == 1
        assert stored[0].token_hash != token and token not in stored[0].token_hash
        assert "argon2" in session.exec(select(User)).one().password_hash
    me = await api.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert me.json()["username"] == "bob"
    assert "password_hash" not in me.json()


async def test_wrong_password_and_unknown_user_are_indistinguishable(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    make_user(engine, "bob")
    wrong = await api.post("/api/v1/auth/token", data={"username": "bob", "password": "nope-nope"})
    unknown = await api.post("/api/v1/auth/token", data={"username": "nobody", "password": "nope-nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["code"] == unknown.json()["code"] == "invalid_credentials"


async def test_requests_without_or_with_bad_token_are_401(api: httpx.AsyncClient) -> None:
    missing = await api.get("/api/v1/users/me")
    assert missing.status_code == 401
    assert missing.json()["code"] == "unauthorized"
    assert missing.headers["www-authenticate"] == "Bearer"
    bad = await api.get("/api/v1/users/me", headers={"Authorization": "Bearer mlcp_forged"})
    assert bad.status_code == 401


async def test_logout_revokes_the_token(api: httpx.AsyncClient, user_headers: dict[str, str]) -> None:
    assert (await api.post("/api/v1/auth/logout", headers=user_headers)).status_code == 204
    assert (await api.get("/api/v1/users/me", headers=user_headers)).status_code == 401


async def test_admin_creates_lists_and_disables_users(
    api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    created = await api.post(
        "/api/v1/users",
        headers=admin_headers,
        json={
            "username": "carol",
            "password": "carol-password",
            "email": "carol@example.com",
            "display_name": "Carol",
        },
    )
    assert created.status_code == 201, created.text
    carol_id = created.json()["id"]
    carol = await sign_in(api, "carol", "carol-password")

    listed = await api.get("/api/v1/users", headers=admin_headers, params={"q": "car", "limit": 10})
    assert listed.status_code == 200
    assert [u["username"] for u in listed.json()["items"]] == ["carol"]
    assert listed.json()["total"] == 1

    duplicate = await api.post(
        "/api/v1/users", headers=admin_headers, json={"username": "carol", "password": "another-password"}
    )
    assert duplicate.status_code == 409
    assert duplicate.json()["field"] == "username"

    disabled = await api.patch(f"/api/v1/users/{carol_id}", headers=admin_headers, json={"is_active": False})
    assert disabled.status_code == 200
    assert disabled.json()["is_active"] is False
    # The token issued before the disable stops working at once.
    assert (await api.get("/api/v1/users/me", headers=carol)).status_code == 401
    relogin = await api.post("/api/v1/auth/token", data={"username": "carol", "password": "carol-password"})
    assert relogin.status_code == 401
    assert relogin.json()["code"] == "account_disabled"


async def test_members_cannot_manage_users(api: httpx.AsyncClient, user_headers: dict[str, str]) -> None:
    response = await api.post(
        "/api/v1/users", headers=user_headers, json={"username": "mallory", "password": "mallory-password"}
    )
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    assert (await api.get("/api/v1/users", headers=user_headers)).status_code == 403


async def test_bad_input_names_the_field(api: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    response = await api.post(
        "/api/v1/users", headers=admin_headers, json={"username": "Bad Name", "password": "x"}
    )
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_error"
    assert body["field"] == "username"
    assert "lowercase" in body["message"]
    assert body["request_id"] == response.headers["x-request-id"]


async def test_user_changes_own_password_and_other_sessions_end(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    make_user(engine, "dave")
    first = await sign_in(api, "dave")
    second = await sign_in(api, "dave")
    wrong = await api.post(
        "/api/v1/users/me/password",
        headers=first,
        json={"current_password": "guess-guess", "new_password": "new-password-1"},
    )
    assert wrong.status_code == 422
    assert wrong.json()["field"] == "current_password"
    ok = await api.post(
        "/api/v1/users/me/password",
        headers=first,
        json={"current_password": PASSWORD, "new_password": "new-password-1"},
    )
    assert ok.status_code == 204
    assert (await api.get("/api/v1/users/me", headers=first)).status_code == 200
    assert (await api.get("/api/v1/users/me", headers=second)).status_code == 401
    await sign_in(api, "dave", "new-password-1")


async def test_admin_resets_password_generated_once(
    api: httpx.AsyncClient, engine: Engine, admin_headers: dict[str, str]
) -> None:
    make_user(engine, "erin")
    generated = await api.post("/api/v1/users/erin/password", headers=admin_headers, json={})
    assert generated.status_code == 200
    password = generated.json()["generated_password"]
    assert len(password) >= 12
    await sign_in(api, "erin", password)
    chosen = await api.post(
        "/api/v1/users/erin/password", headers=admin_headers, json={"new_password": "chosen-password"}
    )
    assert chosen.json()["generated_password"] is None
    await sign_in(api, "erin", "chosen-password")


async def test_admin_cannot_disable_self(api: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    me = (await api.get("/api/v1/users/me", headers=admin_headers)).json()
    response = await api.patch(f"/api/v1/users/{me['id']}", headers=admin_headers, json={"is_active": False})
    assert response.status_code == 409


async def test_unknown_route_uses_error_shape(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


async def test_a_user_sets_their_own_name_and_time_zone(
    api: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    changed = await api.patch(
        "/api/v1/users/me",
        headers=user_headers,
        json={"display_name": "Alice L.", "time_zone": "Asia/Taipei"},
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["display_name"], changed.json()["time_zone"]) == ("Alice L.", "Asia/Taipei")
    assert (await api.get("/api/v1/users/me", headers=user_headers)).json()["time_zone"] == "Asia/Taipei"
    for body, field in (
        ({"time_zone": "Mars/Olympus"}, "time_zone"),
        ({"display_name": None}, "display_name"),
    ):
        refused = await api.patch("/api/v1/users/me", headers=user_headers, json=body)
        assert refused.status_code == 422 and refused.json()["field"] == field, refused.text
    ignored = await api.patch("/api/v1/users/me", headers=user_headers, json={"role": "admin"})
    assert ignored.json()["role"] == "user"  # a user's own role is not theirs to change
    cleared = await api.patch("/api/v1/users/me", headers=user_headers, json={"time_zone": None})
    assert cleared.json()["time_zone"] is None  # the platform's again
