"""Imports every table module so SQLModel.metadata is complete (for Alembic and tests)."""

from models.accounts import ApiToken, User
from models.catalog import GpuModel, Purpose, Spec
from models.clusters import Cluster
from models.containers import Container
from models.images import CustomImage, PublicImage
from models.job_templates import JobTemplate
from models.jobs import Job, JobLog
from models.keys import SshKey
from models.mail import MailRecord
from models.monitoring import ChartLink, MetricSample, MetricSource
from models.projects import ApplicationRecord, Project, ProjectMember
from models.schedules import Schedule, ScheduleRun
from models.transfers import Transfer
from models.usage import UsagePeriod
from models.user_setup import UserSetup
from models.volumes import StorageIdentity, StorageSettings, Volume

__all__ = [
    "ApiToken",
    "ApplicationRecord",
    "ChartLink",
    "Cluster",
    "Container",
    "CustomImage",
    "GpuModel",
    "Job",
    "JobLog",
    "JobTemplate",
    "MailRecord",
    "MetricSample",
    "MetricSource",
    "Project",
    "ProjectMember",
    "PublicImage",
    "Purpose",
    "Schedule",
    "ScheduleRun",
    "Spec",
    "SshKey",
    "StorageIdentity",
    "StorageSettings",
    "Transfer",
    "UsagePeriod",
    "User",
    "UserSetup",
    "Volume",
]
