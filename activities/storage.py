"""Where volumes live in a runtime, and where a project's S3 identity is kept for its workloads.

The runtime side of storage, beside the object store (activities/object_storage.py): NFS-type volumes
are folders (on the local runtime under ``<home>/volumes/<namespace>/<volume-id>``, on Kubernetes a
PersistentVolume and claim per volume, kopf-style in activities/kube_volumes.py), and the project's S3
secret key is kept where its workloads read it from (a 0600 file here, a Secret in the namespace there),
never in the platform database or in workflow history.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel

from activities.heartbeat import not_interrupted
from activities.local_supervisor import write_atomically
from activities.object_storage import AccessKeys
from activities.runtime import namespace_name

VOLUMES_FOLDER = "volumes"
HOMES_FOLDER = "homes"
IDENTITY_FILE = "storage-identity.json"


class VolumePlace(BaseModel):
    """A volume as the runtime needs it: everything derives from its IDs."""

    project_id: str
    volume_id: str
    type: str  # nfs | s3
    capacity_gb: float | None = None
    clone_of: str | None = None  # the source volume's ID, for a backend that clones as it creates


class VolumeStorage(Protocol):
    """Every method is idempotent; absent is success on delete."""

    def ensure_volume(self, place: VolumePlace) -> None: ...

    def delete_volume(self, place: VolumePlace) -> None: ...

    def usage_bytes(self, place: VolumePlace) -> int | None:
        """Bytes an NFS volume holds; None when this backend cannot tell."""
        ...

    def copy_volume(self, source: VolumePlace, target: VolumePlace) -> bool:
        """Copy an NFS volume's files; False when the backend cloned at creation already."""
        ...

    def delete_project_volumes(self, project_id: str) -> None: ...

    def ensure_home(self, username: str) -> str:
        """Make the user's home folder; where it is, for operators."""
        ...

    def store_identity(self, project_id: str, keys: AccessKeys) -> None: ...

    def identity(self, project_id: str) -> AccessKeys | None: ...

    def delete_identity(self, project_id: str) -> None: ...


def folder_usage(root: Path) -> int:
    """Bytes in the files under root, links not followed (they may point anywhere)."""
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def copy_folder(source: Path, target: Path) -> None:
    """A copy that a retry completes: files already there are overwritten, links copied as links."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)


class LocalStorage:
    """NFS-type volumes as folders under the home folder; the identity as a 0600 file beside them."""

    def __init__(self, home: Path) -> None:
        self.root = home.resolve() / VOLUMES_FOLDER
        self.homes = home.resolve() / HOMES_FOLDER

    def project_folder(self, project_id: str) -> Path:
        return self.root / namespace_name(project_id)

    def volume_folder(self, project_id: str, volume_id: str) -> Path:
        return self.project_folder(project_id) / volume_id

    def home_folder(self, username: str) -> Path:
        return self.homes / username

    def ensure_volume(self, place: VolumePlace) -> None:
        if place.type == "nfs":
            self.project_folder(place.project_id).mkdir(parents=True, exist_ok=True, mode=0o700)
            # Workloads run as other users in images; the folder is the volume's, not the worker's.
            self.volume_folder(place.project_id, place.volume_id).mkdir(exist_ok=True, mode=0o777)

    def delete_volume(self, place: VolumePlace) -> None:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.volume_folder(place.project_id, place.volume_id))

    def usage_bytes(self, place: VolumePlace) -> int | None:
        folder = self.volume_folder(place.project_id, place.volume_id)
        return folder_usage(folder) if folder.is_dir() else 0

    def copy_volume(self, source: VolumePlace, target: VolumePlace) -> bool:
        copy_folder(
            self.volume_folder(source.project_id, source.volume_id),
            self.volume_folder(target.project_id, target.volume_id),
        )
        return True

    def delete_project_volumes(self, project_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.project_folder(project_id))

    def ensure_home(self, username: str) -> str:
        return str(self.ensure_home_folder(username))

    def ensure_home_folder(self, username: str) -> Path:
        self.homes.mkdir(parents=True, exist_ok=True, mode=0o700)
        home = self.home_folder(username)
        home.mkdir(exist_ok=True, mode=0o777)
        return home

    def store_identity(self, project_id: str, keys: AccessKeys) -> None:
        folder = self.project_folder(project_id)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        text = json.dumps({"access_key": keys.access_key, "secret_key": keys.secret_key})
        with not_interrupted():
            write_atomically(folder / IDENTITY_FILE, text, mode=0o600)

    def identity(self, project_id: str) -> AccessKeys | None:
        try:
            data = json.loads((self.project_folder(project_id) / IDENTITY_FILE).read_text())
        except FileNotFoundError:
            return None
        return AccessKeys(data["access_key"], data["secret_key"])

    def delete_identity(self, project_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.project_folder(project_id) / IDENTITY_FILE).unlink()
