"""Imports every table module so SQLModel.metadata is complete (for Alembic and tests)."""

from models.accounts import ApiToken, User

__all__ = ["ApiToken", "User"]
