"""Where objects live: one lock, resource versions, watch history, and writes that never mutate in place."""

from __future__ import annotations

import copy
import random
import threading
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tests.kube_double import errors
from tests.kube_double import resources as r
from tests.kube_double.knobs import Clock

HISTORY_LENGTH = 20_000
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_OMITTED_WHEN_EMPTY = ("labels", "annotations", "ownerReferences", "finalizers", "managedFields")


@dataclass(frozen=True)
class WatchEvent:
    revision: int
    type: str
    resource: r.ResourceType
    obj: dict[str, Any]


def _without_bookkeeping(obj: dict[str, Any]) -> dict[str, Any]:
    metadata = {
        k: v for k, v in obj.get("metadata", {}).items() if k not in ("resourceVersion", "managedFields")
    }
    return {**obj, "metadata": metadata}


def pending_finalizers(resource: r.ResourceType, obj: dict[str, Any]) -> list[str]:
    finalizers = list(obj["metadata"].get("finalizers") or [])
    if resource is r.NAMESPACES:
        finalizers += (obj.get("spec") or {}).get("finalizers") or []
    return finalizers


class Storage:
    """Every object of every resource, guarded by one re-entrant lock shared with the controllers.

    Stored dicts are never changed in place: writers store a new dict, so watch history keeps snapshots.
    """

    def __init__(self, clock: Clock, seed: int = 0) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.random = random.Random(seed)
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {res.key: {} for res in r.RESOURCES}
        self._revision = 0
        self.history: deque[WatchEvent] = deque(maxlen=HISTORY_LENGTH)
        self._forgotten_revision = 0
        self._dry_run = False

    @property
    def revision(self) -> int:
        return self._revision

    @contextmanager
    def dry_run(self, enabled: bool) -> Iterator[None]:
        with self.lock:
            self._dry_run = enabled
            try:
                yield
            finally:
                self._dry_run = False

    # Reads for the controllers: stored dicts, to be copied before changing.

    def items(self, resource: r.ResourceType, namespace: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            stored = self._objects[resource.key]
            return [obj for (ns, _), obj in stored.items() if namespace is None or ns == namespace]

    def find(self, resource: r.ResourceType, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objects[resource.key].get((namespace if resource.namespaced else "", name))

    def everything(self) -> Iterator[tuple[r.ResourceType, dict[str, Any]]]:
        for resource in r.RESOURCES:
            for obj in list(self._objects[resource.key].values()):
                yield resource, obj

    def dependents(self, uid: str) -> list[tuple[r.ResourceType, dict[str, Any]]]:
        return [
            (resource, obj)
            for resource, obj in self.everything()
            if any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])
        ]

    def events_since(self, revision: int) -> list[WatchEvent] | None:
        """Changes after `revision`, or None when the history no longer reaches back that far."""
        with self.lock:
            if revision < self._forgotten_revision:
                return None
            return [event for event in self.history if event.revision > revision]

    # Writes for the controllers, without validation.

    def save(self, resource: r.ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        """Update a stored object; an object deleted meanwhile (another uid, or none) is not brought back."""
        with self.lock:
            metadata = obj["metadata"]
            previous = self.find(resource, metadata.get("namespace", ""), metadata["name"])
            if previous is None or previous["metadata"]["uid"] != metadata["uid"]:
                return obj
            return self._commit(resource, copy.deepcopy(obj), previous)

    def remove(self, resource: r.ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            if self._dry_run:
                return copy.deepcopy(obj)
            metadata = obj["metadata"]
            self._objects[resource.key].pop((metadata.get("namespace", ""), metadata["name"]), None)
            final = copy.deepcopy(obj)
            self._revision += 1
            final["metadata"]["resourceVersion"] = str(self._revision)
            self._record("DELETED", resource, final)
            return copy.deepcopy(final)

    def _record(self, kind: str, resource: r.ResourceType, obj: dict[str, Any]) -> None:
        if len(self.history) == self.history.maxlen:
            self._forgotten_revision = self.history[0].revision
        self.history.append(WatchEvent(self._revision, kind, resource, obj))

    def _commit(
        self, resource: r.ResourceType, obj: dict[str, Any], previous: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Store `obj` with the next resource version, unless nothing but bookkeeping changed."""
        metadata = obj["metadata"]
        for key in _OMITTED_WHEN_EMPTY:
            if metadata.get(key) in ([], {}):
                del metadata[key]
        if previous is not None and _without_bookkeeping(previous) == _without_bookkeeping(obj):
            return previous
        if self._dry_run:
            return obj
        if metadata.get("deletionTimestamp") and not pending_finalizers(resource, obj):
            return self.remove(resource, obj)
        self._revision += 1
        metadata["resourceVersion"] = str(self._revision)
        self._objects[resource.key][(metadata.get("namespace", ""), metadata["name"])] = obj
        self._record("ADDED" if previous is None else "MODIFIED", resource, obj)
        return obj

    def require(self, resource: r.ResourceType, namespace: str, name: str) -> dict[str, Any]:
        found = self.find(resource, namespace, name)
        if found is None:
            raise errors.not_found(resource, name)
        return found

    def _generated_name(self, resource: r.ResourceType, namespace: str, prefix: str) -> str:
        while True:
            name = prefix + "".join(self.random.choice(_NAME_ALPHABET) for _ in range(5))
            if self.find(resource, namespace, name) is None:
                return name

    def new_uid(self) -> str:
        return str(uuid.UUID(int=self.random.getrandbits(128), version=4))
