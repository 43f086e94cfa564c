"""Activities of the volume lifecycle: thin, idempotent and heartbeating, over the object store (s3
volumes) and the runtime's volume storage (nfs volumes, the project's identity)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pydantic import BaseModel
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import heartbeating
from activities.object_storage import ObjectStorageError, ObjectStore, bucket_name, bucket_prefix
from activities.storage import VolumePlace, VolumeStorage
from models.base import utcnow
from models.volumes import GIB, StorageIdentity, Volume, VolumeState, VolumeStatus

STORAGE_REFUSED = "StorageRefused"
ObjectStoreFactory = Callable[[], ObjectStore]


class VolumeReady(BaseModel):
    bucket: str = ""
    quota_note: str = ""


class VolumeUsage(BaseModel):
    usage_bytes: int | None  # None: the backend cannot tell
    over_quota: bool = False


class VolumeCopy(BaseModel):
    source: VolumePlace
    target: VolumePlace


@contextmanager
def storage_call() -> Iterator[None]:
    """Heartbeat while storage works; a refusal no retry can change fails at once, with its reason."""
    with heartbeating():
        try:
            yield
        except ObjectStorageError as exc:
            if not exc.permanent:
                raise
            raise ApplicationError(str(exc)[:2000], type=STORAGE_REFUSED, non_retryable=True) from exc
        except ValueError as exc:  # a setting the backend needs is missing
            raise ApplicationError(str(exc)[:2000], type=STORAGE_REFUSED, non_retryable=True) from exc


def capacity_bytes(capacity_gb: float) -> int:
    return int(capacity_gb * GIB)


class VolumeActivities:
    def __init__(self, engine: Engine, storage: VolumeStorage, objects: ObjectStoreFactory) -> None:
        self._engine = engine
        self._storage = storage
        self._objects = objects

    def all(self) -> list[Callable[..., object]]:
        """Every activity of the volume lifecycle (and the project's storage sweep), bound to this object."""
        return [
            self.record_volume,
            self.create_volume,
            self.resize_volume,
            self.measure_volume,
            self.copy_volume,
            self.delete_volume,
            self.delete_project_storage,
        ]

    @activity.defn
    def record_volume(self, state: VolumeState) -> None:
        """Upsert the row; an older snapshot never wins. The permission is the row's own after creation."""
        shared = set(Volume.model_fields) & set(VolumeState.model_fields) - {"permission"}
        values = state.model_dump(include=shared)
        values["reason"], values["message"] = state.reason[:128], state.message[:2000]
        with Session(self._engine) as session:
            row = session.get(Volume, state.id, with_for_update=True)
            if row is not None and row.version > state.version:
                return
            if row is None:
                row = Volume(**values, permission=state.permission)
            else:
                row.sqlmodel_update(values)
            row.updated_at = utcnow()
            session.add(row)
            session.commit()

    @activity.defn
    def create_volume(self, place: VolumePlace) -> VolumeReady:
        with storage_call():
            ready = VolumeReady()
            if place.type == "s3":
                objects = self._objects()
                ready.bucket = bucket_name(place.project_id, place.volume_id)
                objects.ensure_bucket(ready.bucket)
                ready.quota_note = objects.set_quota(
                    ready.bucket, capacity_bytes(place.capacity_gb or 0)
                ).note
                self._ensure_identity(objects, place.project_id)
            self._storage.ensure_volume(place)
            return ready

    def _ensure_identity(self, objects: ObjectStore, project_id: str) -> None:
        """The project's S3 user; new keys (to be shown once) only when the runtime keeps none yet."""
        objects.ensure_identity(project_id)
        if self._storage.identity(project_id) is not None:
            return
        keys = objects.rotate_keys(project_id)
        self._storage.store_identity(project_id, keys)
        with Session(self._engine) as session:
            row = session.get(StorageIdentity, project_id) or StorageIdentity(
                project_id=project_id, access_key=""
            )
            row.access_key, row.secret_pending, row.rotated_at = keys.access_key, True, utcnow()
            session.add(row)
            session.commit()

    @activity.defn
    def resize_volume(self, place: VolumePlace) -> str:
        with storage_call():
            objects = self._objects()
            bucket = bucket_name(place.project_id, place.volume_id)
            return objects.set_quota(bucket, capacity_bytes(place.capacity_gb or 0)).note

    @activity.defn
    def measure_volume(self, place: VolumePlace) -> VolumeUsage:
        with storage_call():
            if place.type == "s3":
                used: int | None = self._objects().usage_bytes(bucket_name(place.project_id, place.volume_id))
            else:
                used = self._storage.usage_bytes(place)
            over = (
                used is not None
                and place.capacity_gb is not None
                and used > capacity_bytes(place.capacity_gb)
            )
            return VolumeUsage(usage_bytes=used, over_quota=over)

    @activity.defn
    def copy_volume(self, copy: VolumeCopy) -> None:
        with storage_call():
            if copy.source.type == "s3":
                objects = self._objects()
                source = bucket_name(copy.source.project_id, copy.source.volume_id)
                objects.copy_bucket(source, bucket_name(copy.target.project_id, copy.target.volume_id))
            else:
                self._storage.copy_volume(copy.source, copy.target)

    @activity.defn
    def delete_volume(self, place: VolumePlace) -> None:
        with storage_call():
            if place.type == "s3":
                self._objects().remove_bucket(bucket_name(place.project_id, place.volume_id))
            self._storage.delete_volume(place)

    @activity.defn
    def delete_project_storage(self, project_id: str) -> list[str]:
        """Whatever of a deleted project's storage is left: its buckets, folders and identity; what went."""
        with storage_call():
            removed: list[str] = []
            try:
                objects: ObjectStore | None = self._objects()
            except ObjectStorageError:
                objects = None  # no object storage configured: nothing of it can be left
            if objects is not None:
                for bucket in objects.buckets_with_prefix(bucket_prefix(project_id)):
                    objects.remove_bucket(bucket)
                    removed.append(bucket)
                objects.delete_identity(project_id)
            self._storage.delete_project_volumes(project_id)
            self._storage.delete_identity(project_id)
        with Session(self._engine) as session:
            rows = session.exec(
                select(Volume).where(
                    Volume.project_id == project_id, col(Volume.status) != VolumeStatus.deleted
                )
            ).all()
            for row in rows:
                row.status, row.message, row.updated_at = (
                    VolumeStatus.deleted,
                    "removed with its project",
                    utcnow(),
                )
                session.add(row)
            session.commit()
        return removed
