"""The first platform admin, created once on an empty database."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlmodel import Session, select

from api.security import generate_password, hash_password
from config import Settings
from models.accounts import USERNAME_RULE, PlatformRole, User


@dataclass(frozen=True)
class BootstrapAdmin:
    username: str
    password: str
    generated: bool


def ensure_bootstrap_admin(engine: Engine, settings: Settings) -> BootstrapAdmin | None:
    """Create the admin when no admin exists yet; return its credentials only then."""
    with Session(engine) as session:
        if session.exec(select(User).where(User.role == PlatformRole.admin)).first():
            return None
        username = settings.admin_username
        if not USERNAME_RULE.fullmatch(username):
            raise ValueError(f"MLCP_ADMIN_USERNAME {username!r} is not a valid username")
        given = settings.admin_password.get_secret_value() if settings.admin_password else ""
        password = given or generate_password()
        existing = session.exec(select(User).where(User.username == username)).first()
        user = existing or User(username=username, display_name="Platform admin", password_hash="")
        user.role, user.is_active, user.password_hash = PlatformRole.admin, True, hash_password(password)
        session.add(user)
        session.commit()
        return BootstrapAdmin(username=username, password=password, generated=not given)
