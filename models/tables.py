"""Imports every table module so SQLModel.metadata is complete (for Alembic and tests)."""

from models.accounts import ApiToken, User
from models.catalog import GpuModel, Purpose, Spec
from models.mail import MailRecord

__all__ = ["ApiToken", "GpuModel", "MailRecord", "Purpose", "Spec", "User"]
