"""The object-storage interface against a real SeaweedFS server, through the real `minio` client."""

from __future__ import annotations

import asyncio
import io
import os
import uuid
from pathlib import Path

import pytest
from minio import Minio
from minio.error import S3Error

from activities.object_storage import ObjectStore, ServerFlavour, bucket_name
from activities.storage import LocalStorage, VolumePlace
from activities.volumes import VolumeActivities
from embedded_s3 import EmbeddedS3

MIB = 1024 * 1024


def project_client(store: ObjectStore, project_id: str) -> Minio:
    keys = store.rotate_keys(project_id)
    return Minio(store.endpoint, access_key=keys.access_key, secret_key=keys.secret_key, secure=False)


def new_project() -> str:
    return "p" + uuid.uuid4().hex[:9]


def test_the_server_is_recognised_and_buckets_are_idempotent(store: ObjectStore) -> None:
    assert store.flavour() is ServerFlavour.seaweedfs
    bucket = bucket_name(new_project(), "v1")
    store.ensure_bucket(bucket)
    store.ensure_bucket(bucket)
    assert bucket in store.buckets_with_prefix(bucket)
    outcome = store.set_quota(bucket, 5 * 1024**3)
    assert outcome.enforced and "SeaweedFS" in outcome.note
    store.remove_bucket(bucket)
    store.remove_bucket(bucket)  # absent is success
    assert store.buckets_with_prefix(bucket) == []


async def test_a_project_identity_reaches_its_own_buckets_only(store: ObjectStore) -> None:
    mine, theirs = new_project(), new_project()
    own, other = bucket_name(mine, "data"), bucket_name(theirs, "data")
    for bucket in (own, other):
        store.ensure_bucket(bucket)
    client = project_client(store, mine)
    await asyncio.sleep(1)  # the gateway reloads identities from its filer
    client.put_object(own, "hello.txt", io.BytesIO(b"hello"), 5)
    assert [o.object_name for o in client.list_objects(own)] == ["hello.txt"]
    assert store.usage_bytes(own) == 5
    with pytest.raises(S3Error) as refused:
        client.put_object(other, "x.txt", io.BytesIO(b"x"), 1)
    assert refused.value.code == "AccessDenied"
    with pytest.raises(S3Error):
        list(client.list_objects(other))
    with pytest.raises(S3Error):
        client.make_bucket(bucket_name(mine, "extra"))  # buckets are the platform's to make, with capacity
    assert [b.name for b in client.list_buckets()] == [own]

    store.delete_identity(mine)
    await asyncio.sleep(1)
    with pytest.raises(S3Error):
        client.put_object(own, "late.txt", io.BytesIO(b"x"), 1)
    store.remove_bucket(own)
    store.remove_bucket(other)


async def test_writes_past_the_quota_are_refused_once_the_backend_enforces_it(
    store: ObjectStore, seaweedfs_server: EmbeddedS3, tmp_path: Path
) -> None:
    """SeaweedFS enforces quotas periodically (its master runs the enforcement every minute): the test runs
    that same enforcement now instead of waiting for it."""
    project = new_project()
    bucket = bucket_name(project, "small")
    store.ensure_bucket(bucket)
    store.set_quota(bucket, 1 * MIB)
    answer = store._signed("GET", f"/{bucket}", "seaweedfs-quota=", b"", "application/json").json()
    assert answer == {"quota_size": MIB, "quota_unit": "B", "quota_enabled": True}
    client = project_client(store, project)
    await asyncio.sleep(1)
    payload = os.urandom(2 * MIB)  # SeaweedFS counts stored (compressed) bytes: random data does not shrink
    client.put_object(bucket, "big", io.BytesIO(payload), len(payload))
    client.put_object(bucket, "still-fits-until-enforced", io.BytesIO(b"y"), 1)

    refused = False
    for attempt in range(30):  # the bucket's size reaches the master within seconds; then it is enforced
        await asyncio.to_thread(seaweedfs_server.enforce_quotas)
        try:
            client.put_object(bucket, f"more{attempt}", io.BytesIO(b"z"), 1)
        except Exception:  # SeaweedFS answers 500 to a write into a read-only bucket
            refused = True
            break
        await asyncio.sleep(1)
    assert refused, "writes past the quota were still accepted after enforcement"
    assert client.get_object(bucket, "big").read() == payload  # reads keep working

    activities = VolumeActivities(None, LocalStorage(tmp_path), lambda: store)  # type: ignore[arg-type]
    place = VolumePlace(project_id=project, volume_id="small", type="s3", capacity_gb=1 / 1024)
    usage = activities.measure_volume(place)
    assert usage.usage_bytes is not None and usage.usage_bytes > MIB and usage.over_quota
    store.remove_bucket(bucket)  # and emptying it works too
    store.delete_identity(project)
