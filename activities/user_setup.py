"""User setup activities: provision a user's home in the runtime's storage, and write the read model."""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import Engine
from sqlmodel import Session
from temporalio import activity

from activities.storage import VolumeStorage
from activities.volumes import storage_call
from models.base import utcnow
from models.user_setup import SetupStatus, UserSetup


class SetupRecord(BaseModel):
    user_id: str
    username: str
    attempt: int
    status: SetupStatus = SetupStatus.provisioning
    reason: str = ""
    message: str = "provisioning the home storage"
    home: str = ""


class UserSetupActivities:
    def __init__(self, engine: Engine, storage: VolumeStorage) -> None:
        self._engine = engine
        self._storage = storage

    @activity.defn
    def provision_home(self, username: str) -> str:
        """Make the user's home (idempotent); where it is."""
        with storage_call():
            return self._storage.ensure_home(username)

    @activity.defn
    def record_setup(self, record: SetupRecord) -> None:
        with Session(self._engine) as session:
            row = session.get(UserSetup, record.user_id, with_for_update=True)
            if row is not None and row.attempt > record.attempt:
                return  # a newer attempt has begun
            row = row or UserSetup(user_id=record.user_id, username=record.username)
            row.sqlmodel_update(record.model_dump())
            row.reason, row.message = record.reason[:128], record.message[:2000]
            row.updated_at = utcnow()
            session.add(row)
            session.commit()
