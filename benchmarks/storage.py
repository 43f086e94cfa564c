"""Storage figures on this machine: the embedded SeaweedFS (bucket with quota and a project identity, S3
upload and download through that identity, usage of a bucket of many objects), the SFTP transfer server's
throughput, and what bubblewrap adds to a workload's start.

    .venv/bin/python -m benchmarks.storage --megabytes 256 --objects 2000
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import asyncssh
from argon2 import PasswordHasher
from minio import Minio

from activities.local_mounts import HostMount, bubblewrap, wrapped
from activities.object_storage import ObjectStore, bucket_name
from activities.transfer_server import TransferConfig, TransferRoot, TransferServer
from embedded_s3 import EmbeddedS3
from tests.storage.conftest import free_s3_port

MIB = 1024 * 1024


def timed(work: Callable[[], object]) -> float:
    began = time.perf_counter()
    work()
    return time.perf_counter() - began


async def object_storage(home: Path, megabytes: int, objects: int) -> None:
    server = EmbeddedS3(home, free_s3_port())
    began = time.perf_counter()
    admin = await server.start()
    print(f"SeaweedFS start to first answer: {time.perf_counter() - began:.1f} s")
    try:
        store = ObjectStore(admin.endpoint, admin.access_key, admin.secret_key)
        bucket = bucket_name("bench", "data")
        began = time.perf_counter()
        store.ensure_bucket(bucket)
        store.set_quota(bucket, 100 * 1024 * MIB)
        seconds = time.perf_counter() - began
        print(f"bucket with quota: {seconds * 1000:.0f} ms")
        keys = store.rotate_keys("bench")
        await asyncio.sleep(1)
        client = Minio(admin.endpoint, access_key=keys.access_key, secret_key=keys.secret_key, secure=False)
        payload = os.urandom(megabytes * MIB)
        seconds = timed(lambda: client.put_object(bucket, "big", io.BytesIO(payload), len(payload)))
        print(f"S3 upload of {megabytes} MiB: {megabytes / seconds:.0f} MiB/s")
        seconds = timed(lambda: client.get_object(bucket, "big").read())
        print(f"S3 download of {megabytes} MiB: {megabytes / seconds:.0f} MiB/s")
        for number in range(objects):
            client.put_object(bucket, f"small/{number:06d}", io.BytesIO(b"x" * 100), 100)
        seconds = timed(lambda: store.usage_bytes(bucket))
        print(f"usage of a bucket of {objects + 1} objects: {seconds * 1000:.0f} ms")
        seconds = timed(lambda: store.remove_bucket(bucket))
        print(f"emptying and removing it: {seconds:.1f} s")
        store.delete_identity("bench")
    finally:
        await server.stop()


async def transfer(folder: Path, megabytes: int) -> None:
    volume = folder / "volume"
    volume.mkdir()
    config = TransferConfig(
        username="bench",
        password_hash=PasswordHasher().hash("bench-password"),
        roots=(TransferRoot("data", volume, read_only=False),),
        host_key=folder / "host_key",
    )
    server = TransferServer(config)
    port = await server.start()
    source = folder / "upload.bin"
    source.write_bytes(os.urandom(megabytes * MIB))
    try:
        async with (
            asyncssh.connect(
                "127.0.0.1", port, username="bench", password="bench-password", known_hosts=None
            ) as conn,
            conn.start_sftp_client() as sftp,
        ):
            began = time.perf_counter()
            await sftp.put(str(source), "/data/upload.bin")
            up = time.perf_counter() - began
            began = time.perf_counter()
            await sftp.get("/data/upload.bin", str(folder / "download.bin"))
            down = time.perf_counter() - began
        print(
            f"SFTP upload of {megabytes} MiB: {megabytes / up:.0f} MiB/s; "
            f"download: {megabytes / down:.0f} MiB/s"
        )
    finally:
        await server.stop()


def bubblewrap_start(folder: Path, runs: int = 20) -> None:
    if bubblewrap() is None:
        print("bubblewrap: cannot run here")
        return
    mount = HostMount(folder, "/bench-volume", read_only=True)
    plain = [timed(lambda: subprocess.run(["true"], check=True)) for _ in range(runs)]
    sandboxed = [
        timed(lambda: subprocess.run(wrapped(["true"], [mount], None), check=True)) for _ in range(runs)
    ]
    print(
        f"process start: {statistics.median(plain) * 1000:.1f} ms plain, "
        f"{statistics.median(sandboxed) * 1000:.1f} ms in bubblewrap with a volume mounted (median of {runs})"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--megabytes", type=int, default=256)
    parser.add_argument("--objects", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlcp-bench-storage-") as scratch:
        folder = Path(scratch)
        await object_storage(folder / "seaweedfs", args.megabytes, args.objects)
        (folder / "sftp").mkdir()
        await transfer(folder / "sftp", args.megabytes)
        bubblewrap_start(folder)


if __name__ == "__main__":
    asyncio.run(main())
