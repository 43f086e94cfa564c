"""Imports every table module so SQLModel.metadata is complete (for Alembic and tests)."""

from models.accounts import ApiToken, User
from models.catalog import GpuModel, Purpose, Spec
from models.containers import Container
from models.jobs import Job, JobLog
from models.mail import MailRecord
from models.projects import ApplicationRecord, Project, ProjectMember

__all__ = [
    "ApiToken",
    "ApplicationRecord",
    "Container",
    "GpuModel",
    "Job",
    "JobLog",
    "MailRecord",
    "Project",
    "ProjectMember",
    "Purpose",
    "Spec",
    "User",
]
