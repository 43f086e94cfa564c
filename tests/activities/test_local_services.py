"""A local container's services answer for real: SSH with a password and with a key (a real SSH client
runs commands in the container's folder), and JupyterLab and its web terminal where Jupyter is installed."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import httpx
import pytest

from activities.local import LocalRuntime
from activities.local_environment import tools_folder
from activities.local_services import install_jupyter, jupyter_state
from models.workloads import Credentials, Endpoint, ServicePort, WorkloadState, WorkloadStatus
from services.containers import hash_password
from services.kinds import runtime_kinds
from tests.activities.test_local_runtime import CONTAINER, PROJECT, fake_devices, make_spec

PASSWORD = "correct horse battery"
START_SECONDS = 60.0


def running(runtime: LocalRuntime, resource_id: str, seconds: float = START_SECONDS) -> WorkloadStatus:
    give_up = time.monotonic() + seconds
    while (status := runtime.status(PROJECT, CONTAINER, resource_id)).state != WorkloadState.running:
        assert status.state in (WorkloadState.creating, WorkloadState.pending), status
        if time.monotonic() > give_up:
            pytest.fail(f"container {resource_id} is still {status.state}: {status.message}")
        time.sleep(0.1)
    return status


def endpoint(status: WorkloadStatus, name: str) -> Endpoint:
    found = next(e for e in status.endpoints if e.name == name)
    assert found.node_port is not None and found.host == "127.0.0.1"
    return found


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[LocalRuntime]:
    runtime = LocalRuntime(
        tmp_path, runtime_kinds(), gpu_devices=fake_devices(0), stop_grace_seconds=5, tools=tmp_path / "tools"
    )
    yield runtime
    runtime.delete_project(PROJECT)


async def run_over_ssh(port: int, command: str, **login: object) -> asyncssh.SSHCompletedProcess:
    options = {"client_keys": None, **login}  # no keys of this host's user: only what the test gives
    async with asyncssh.connect(
        "127.0.0.1", port, username="root", known_hosts=None, **options
    ) as connection:
        return await connection.run(command, check=False)


def test_ssh_logs_in_with_the_password_and_the_key_and_runs_in_the_container_folder(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    other = asyncssh.generate_private_key("ssh-ed25519")
    spec = make_spec(
        "sshbox",
        kind=CONTAINER,
        ports=[ServicePort(name="ssh", port=22), ServicePort(name="jupyterlab", port=8889)],
        credentials=Credentials(
            password_hash=hash_password(PASSWORD),
            authorized_keys=[key.export_public_key().decode().strip()],
        ),
    )
    runtime.apply(spec)
    status = running(runtime, "sshbox")
    ssh = endpoint(status, "ssh")
    assert [e.name for e in status.endpoints] == ["ssh"]  # Jupyter is not installed in this home
    assert any(note.startswith("service jupyterlab: Jupyter is not installed") for note in status.unsupported)

    folder = tmp_path / "runtime" / f"mlcp-{PROJECT}" / "container-sshbox" / "files"  # its own, and its home
    by_password = asyncio.run(
        run_over_ssh(
            ssh.node_port or 0, 'pwd; echo made > made.txt; test "$HOME" = "$PWD"', password=PASSWORD
        )
    )
    assert by_password.exit_status == 0 and by_password.stdout == f"{folder}\n"
    assert (folder / "made.txt").read_text() == "made\n"

    by_key = asyncio.run(run_over_ssh(ssh.node_port or 0, "cat made.txt; exit 3", client_keys=[key]))
    assert (by_key.exit_status, by_key.stdout) == (3, "made\n")

    for refused in ({"password": "wrong password"}, {"client_keys": [other]}):
        with pytest.raises(asyncssh.PermissionDenied):
            asyncio.run(run_over_ssh(ssh.node_port or 0, "true", **refused))

    runtime.delete(PROJECT, CONTAINER, "sshbox")
    with pytest.raises(OSError):
        asyncio.run(run_over_ssh(ssh.node_port or 0, "true", password=PASSWORD))


@pytest.fixture(scope="session")
def jupyter_tools() -> Path:
    """Jupyter installed once per checkout, where `mlcp dev` installs it: the first run downloads it."""
    tools = tools_folder(None)
    if jupyter_state(tools) != "ready":
        install_jupyter(tools)
    return tools


def test_jupyterlab_answers_and_its_web_terminal_runs_a_command(tmp_path: Path, jupyter_tools: Path) -> None:
    runtime = LocalRuntime(tmp_path, runtime_kinds(), gpu_devices=fake_devices(0), tools=jupyter_tools)
    spec = make_spec(
        "lab",
        kind=CONTAINER,
        ports=[ServicePort(name="jupyterlab", port=8889), ServicePort(name="webterminal", port=7681)],
        credentials=Credentials(password_hash=hash_password(PASSWORD)),
    )
    try:
        runtime.apply(spec)
        status = running(runtime, "lab", seconds=120)
        lab, terminal = endpoint(status, "jupyterlab"), endpoint(status, "webterminal")
        with httpx.Client(base_url=f"http://127.0.0.1:{lab.node_port}", timeout=30) as client:
            assert client.get("/api/status").status_code == 403  # not logged in
            login_page = client.get("/login")
            form = {"password": PASSWORD, "_xsrf": client.cookies.get("_xsrf", "")}
            assert login_page.status_code == 200
            assert client.post("/login", data=form).status_code in (200, 302)
            answer = client.get("/api/status")
            assert answer.status_code == 200 and "started" in answer.json()
        asyncio.run(_terminal_echo(terminal.node_port or 0))
        # Jupyter's secrets stay with the credentials, out of what a commit of the container captures.
        files = tmp_path / "runtime" / f"mlcp-{PROJECT}" / "container-lab" / "files"
        assert files.is_dir() and not [path.name for path in files.rglob("*") if "secret" in path.name]
    finally:
        runtime.delete_project(PROJECT)


async def _terminal_echo(port: int) -> None:
    """Log in, open a terminal through the web terminal's API and read a command's output from its socket."""
    from websockets.asyncio.client import connect

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        await client.get("/login")
        xsrf = client.cookies.get("_xsrf") or ""
        await client.post("/login", data={"password": PASSWORD, "_xsrf": xsrf})
        opened = await client.post("/api/terminals", headers={"X-XSRFToken": xsrf})
        assert opened.status_code == 200, opened.text
        name = opened.json()["name"]
        cookie = "; ".join(f"{key}={value}" for key, value in client.cookies.items())
    url = f"ws://127.0.0.1:{port}/terminals/websocket/{name}"
    async with connect(url, additional_headers={"Cookie": cookie}) as socket:
        await socket.send(json.dumps(["stdin", "echo from-the-web-$((6*7))\r"]))
        seen = ""
        async with asyncio.timeout(30):
            while "from-the-web-42" not in seen:
                message = json.loads(await socket.recv())
                if message[0] == "stdout":
                    seen += message[1]
