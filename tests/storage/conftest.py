"""A real SeaweedFS server for the storage tests, started as `mlcp dev` starts it (embedded_s3.py)."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from activities.object_storage import ObjectStore
from embedded_s3 import EmbeddedS3, S3Admin, ports


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_s3_port() -> int:
    """An S3 port whose followers (and their gRPC ports, +10000) are free too."""
    # Parallel test processes search their own share of the range: two would otherwise find the same
    # ports free at the same moment, and the second server to bind them would fail.
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    for base in range(21000, 40000, 7)[worker::workers]:
        if all(_free(port) and _free(port + 10000) for port in ports(base).values()):
            return base
    raise RuntimeError("no free ports for SeaweedFS")


@pytest.fixture(scope="session")
async def seaweedfs_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedS3]:
    server = EmbeddedS3(Path(tmp_path_factory.mktemp("seaweedfs")), free_s3_port())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture(scope="session")
def seaweedfs(seaweedfs_server: EmbeddedS3) -> S3Admin:
    return seaweedfs_server.admin()


@pytest.fixture
def store(seaweedfs: S3Admin) -> ObjectStore:
    return ObjectStore(seaweedfs.endpoint, seaweedfs.access_key, seaweedfs.secret_key)
