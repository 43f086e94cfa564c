"""Boots ``mlcp dev`` exactly as ``make run`` does, in a temporary home folder on free ports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.storage.conftest import free_s3_port

MLCP = Path(sysconfig.get_path("scripts")) / "mlcp"
ADMIN_PASSWORD = "e2e-admin-password"
# Bounds, not measurements: `make run` is ready in well under a minute, but on a machine that is also
# running the rest of the suite the first answers can take many seconds each.
READY_TIMEOUT_SECONDS = 120.0
READY_REQUEST_TIMEOUT_SECONDS = 15.0
STOP_TIMEOUT_SECONDS = 30.0
BANNER_END = "Press Ctrl-C to stop."


@dataclass(frozen=True)
class Ports:
    api: int
    temporal: int
    temporal_ui: int
    s3: int  # SeaweedFS's S3 port; its master, volume and filer take the next three (gRPC at +10000)

    @classmethod
    def free(cls) -> Ports:
        # Held open together so the three differ; released just before the stack binds them.
        sockets = [socket.socket() for _ in range(3)]
        try:
            for sock in sockets:
                sock.bind(("127.0.0.1", 0))
            api, temporal, ui = (sock.getsockname()[1] for sock in sockets)
        finally:
            for sock in sockets:
                sock.close()
        return cls(api, temporal, ui, free_s3_port())


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses; the fields after the last ")" do not.
    return int(stat.rsplit(")", 1)[1].split()[1])


def descendants(pid: int) -> set[int]:
    pids = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    parents = {child: _parent_of(child) for child in pids}
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def port_answers(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class DevStack:
    home: Path
    ports: Ports
    runs: int = 0
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.api}"

    @property
    def temporal_address(self) -> str:
        return f"127.0.0.1:{self.ports.temporal}"

    def environment(self) -> dict[str, str]:
        # Nothing from the developer's own MLCP_* settings may leak in (a database URL, say).
        env = {key: value for key, value in os.environ.items() if not key.startswith("MLCP_")}
        env.update(
            MLCP_HOME=str(self.home),
            MLCP_API_PORT=str(self.ports.api),
            MLCP_TEMPORAL_PORT=str(self.ports.temporal),
            MLCP_TEMPORAL_UI_PORT=str(self.ports.temporal_ui),
            MLCP_S3_PORT=str(self.ports.s3),
            MLCP_ADMIN_PASSWORD=ADMIN_PASSWORD,
            MLCP_LOG_LEVEL="INFO",
            # Jupyter is not installed for these stacks: containers say so, at once.
            MLCP_INSTALL_TOOLS="false",
            MLCP_TOOLS_DIR=str(self.home / "tools"),
        )
        return env

    async def start(self) -> None:
        """Start ``mlcp dev`` and wait until /readyz answers 200 and the banner is out."""
        self._spawn()
        await self._wait_ready()

    def _spawn(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.runs += 1
        self.log_path = self.home.parent / f"mlcp-dev-run{self.runs}.log"
        with self.log_path.open("wb") as log:
            # The working folder is outside the repository so its .env (if any) is not read.
            self.process = subprocess.Popen(
                [str(MLCP), "dev"],
                cwd=self.home.parent,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def _wait_ready(self) -> None:
        assert self.process is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_SECONDS
        last = "no answer"
        async with httpx.AsyncClient(base_url=self.api_url, timeout=READY_REQUEST_TIMEOUT_SECONDS) as client:
            while loop.time() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(f"mlcp dev exited with {self.process.returncode}:\n{self.output()}")
                try:
                    response = await client.get("/readyz")
                    # The API accepts connections a moment before the banner is printed.
                    if response.status_code == 200 and BANNER_END in self.output():
                        return
                    last = f"{response.status_code} {response.text}"
                except httpx.TransportError as exc:
                    last = repr(exc)
                await asyncio.sleep(0.1)
        raise AssertionError(f"/readyz not 200 within {READY_TIMEOUT_SECONDS} s ({last}):\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def stop(self) -> int:
        """SIGTERM, as a service manager or Ctrl-C would; the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.process.wait, STOP_TIMEOUT_SECONDS)

    def kill_leftovers(self) -> None:
        """Teardown after a failed test: nothing may outlive it."""
        if self.process is None or self.process.poll() is not None:
            return
        for pid in descendants(self.process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.kill()
        self.process.wait()
