"""The SFTP transfer service, driven by real clients: asyncssh's, and OpenSSH's sftp in batch mode."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path

import asyncssh
import pytest
from argon2 import PasswordHasher

from activities.transfer_server import TransferConfig, TransferRoot, TransferServer

REPO = Path(__file__).resolve().parents[2]
USER = "alice"
PASSWORD = "s3cret-transfer"
# Cheap parameters keep the suite fast; verification reads them from the hash itself.
PASSWORD_HASH = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)


def make_config(tmp_path: Path, port: int = 0) -> TransferConfig:
    data, ref = tmp_path / "volumes" / "data", tmp_path / "volumes" / "ref"
    data.mkdir(parents=True, exist_ok=True)
    ref.mkdir(parents=True, exist_ok=True)
    (ref / "readme.txt").write_text("reference data\n")
    (ref / "sub").mkdir(exist_ok=True)
    return TransferConfig(
        username=USER,
        password_hash=PASSWORD_HASH,
        roots=(TransferRoot("data", data, read_only=False), TransferRoot("ref", ref, read_only=True)),
        host_key=tmp_path / "keys" / "host_ed25519",
        port=port,
    )


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[TransferServer]:
    transfer = TransferServer(make_config(tmp_path))
    await transfer.start()
    yield transfer
    await transfer.stop()


@asynccontextmanager
async def ssh_connect(
    port: int, username: str = USER, password: str = PASSWORD
) -> AsyncIterator[asyncssh.SSHClientConnection]:
    conn = await asyncssh.connect(
        "127.0.0.1",
        port,
        username=username,
        password=password,
        known_hosts=None,
        client_keys=None,
        agent_path=None,
        config=None,
    )
    async with conn:
        yield conn


@asynccontextmanager
async def sftp_client(
    port: int, username: str = USER, password: str = PASSWORD
) -> AsyncIterator[asyncssh.SFTPClient]:
    async with ssh_connect(port, username, password) as conn, conn.start_sftp_client() as sftp:
        yield sftp


async def denied(operation: Awaitable[object]) -> str:
    """The reason of the permission-denied error the operation must fail with."""
    with pytest.raises(asyncssh.SFTPError) as caught:
        await operation
    assert caught.value.code == asyncssh.FX_PERMISSION_DENIED, caught.value
    return str(caught.value.reason)


async def test_upload_then_download_round_trip(server: TransferServer, tmp_path: Path) -> None:
    payload = os.urandom(300_000)
    (tmp_path / "up.bin").write_bytes(payload)
    async with sftp_client(server.port) as sftp:
        await sftp.mkdir("/data/inbox")
        await sftp.put(str(tmp_path / "up.bin"), "/data/inbox/up.bin")
        await sftp.get("/data/inbox/up.bin", str(tmp_path / "down.bin"))
        await sftp.rename("/data/inbox/up.bin", "/data/inbox/kept.bin")
        assert sorted(await sftp.listdir("/data/inbox")) == [".", "..", "kept.bin"]
        assert await sftp.realpath("/data/inbox/../inbox/.") == "/data/inbox"
        await sftp.chmod("/data/inbox/kept.bin", 0o4640)
    assert (tmp_path / "down.bin").read_bytes() == payload
    kept = tmp_path / "volumes" / "data" / "inbox" / "kept.bin"
    assert kept.read_bytes() == payload
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640  # no setuid bit through the service


async def test_top_level_lists_the_roots_and_is_read_only(server: TransferServer) -> None:
    async with sftp_client(server.port) as sftp:
        assert sorted(await sftp.listdir("/")) == [".", "..", "data", "ref"]
        assert await sftp.isdir("/") and await sftp.isdir("/ref")
        assert await sftp.realpath(".") == "/"
        assert "top level" in await denied(sftp.mkdir("/newdir"))
        await denied(sftp.open("/new.txt", "w"))
        await denied(sftp.rmdir("/data"))
        await denied(sftp.rename("/data", "/renamed"))
        await denied(sftp.chmod("/data", 0o700))


async def test_read_only_root_refuses_every_write(server: TransferServer, tmp_path: Path) -> None:
    (tmp_path / "local.txt").write_text("new\n")
    (tmp_path / "volumes" / "data" / "mine.txt").write_text("mine\n")
    async with sftp_client(server.port) as sftp:
        reason = await denied(sftp.put(str(tmp_path / "local.txt"), "/ref/local.txt"))
        assert "'ref'" in reason and "read-only" in reason
        for mode in ("w", "a", "r+", "x"):
            await denied(sftp.open("/ref/readme.txt", mode))
        await denied(sftp.mkdir("/ref/newdir"))
        await denied(sftp.remove("/ref/readme.txt"))
        await denied(sftp.rmdir("/ref/sub"))
        await denied(sftp.rename("/ref/readme.txt", "/ref/moved.txt"))
        await denied(sftp.rename("/ref/readme.txt", "/data/moved.txt"))
        await denied(sftp.rename("/data/mine.txt", "/ref/mine.txt"))
        await denied(sftp.posix_rename("/ref/readme.txt", "/ref/moved.txt"))
        await denied(sftp.chmod("/ref/readme.txt", 0o777))
        await denied(sftp.utime("/ref/readme.txt", (0, 0)))
        await denied(sftp.truncate("/ref/readme.txt", 0))
        await denied(sftp.symlink("/ref/readme.txt", "/ref/link"))
        await denied(sftp.link("/ref/readme.txt", "/ref/hard"))
        async with sftp.open("/ref/readme.txt") as handle:
            assert await handle.read() == "reference data\n"
            await denied(handle.chmod(0o777))
    assert (tmp_path / "volumes" / "ref" / "readme.txt").read_text() == "reference data\n"
    assert sorted(os.listdir(tmp_path / "volumes" / "ref")) == ["readme.txt", "sub"]
    assert (tmp_path / "volumes" / "data" / "mine.txt").exists()


async def test_dot_dot_cannot_climb_out(server: TransferServer) -> None:
    async with sftp_client(server.port) as sftp:
        for path in ("/data/../../etc/passwd", "/../etc/passwd", "../../../etc/passwd", "/data/../etc"):
            with pytest.raises(asyncssh.SFTPNoSuchFile):  # confined: it names a volume that isn't there
                await sftp.stat(path)
        with pytest.raises(asyncssh.SFTPNoSuchFile):
            await sftp.listdir("/../etc")
        assert await sftp.realpath("/data/../../..") == "/"
        assert sorted(await sftp.listdir("/data/../../ref")) == [".", "..", "readme.txt", "sub"]
        with pytest.raises(asyncssh.SFTPNoSuchFile):
            await sftp.open("/data/../../etc/passwd", "w")


async def test_symlinks_cannot_lead_out(server: TransferServer, tmp_path: Path) -> None:
    data = tmp_path / "volumes" / "data"
    os.symlink("/etc", data / "etc")
    os.symlink("/etc/passwd", data / "passwd")
    os.symlink(tmp_path / "volumes" / "ref", data / "ref-link")  # another root is outside this one
    (data / "sub").mkdir()
    os.symlink("sub", data / "inner")
    async with sftp_client(server.port) as sftp:
        assert sorted(await sftp.listdir("/data")) == [".", "..", "etc", "inner", "passwd", "ref-link", "sub"]
        await denied(sftp.listdir("/data/etc"))
        await denied(sftp.open("/data/etc/passwd"))
        await denied(sftp.open("/data/passwd"))
        await denied(sftp.stat("/data/etc"))
        await denied(sftp.open("/data/etc/evil", "w"))
        await denied(sftp.listdir("/data/ref-link"))
        await denied(sftp.realpath("/data/etc"))
        await denied(sftp.readlink("/data/etc"))
        assert (await sftp.lstat("/data/etc")).type == asyncssh.FILEXFER_TYPE_SYMLINK
        await denied(sftp.lstat("/data/etc/."))
        await denied(sftp.symlink("/etc", "/data/made"))
        await denied(sftp.link("/data/sub", "/data/hard"))
        # links that stay inside the root work, and a bad link can be removed without touching its target
        await sftp.put(__file__, "/data/inner/copy.py")
        assert await sftp.realpath("/data/inner") == "/data/sub"
        assert await sftp.readlink("/data/inner") == "/data/sub"
        await sftp.remove("/data/etc")
    assert (data / "sub" / "copy.py").exists() and not (data / "etc").is_symlink()


async def test_wrong_credentials_are_refused(server: TransferServer) -> None:
    for username, password in ((USER, "wrong"), ("mallory", PASSWORD), (USER, "")):
        with pytest.raises(asyncssh.PermissionDenied):
            async with sftp_client(server.port, username, password):
                pass


async def test_only_sftp_is_served(server: TransferServer) -> None:
    async with ssh_connect(server.port) as conn:
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.run("id")
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.open_connection("127.0.0.1", server.port)


async def test_read_only_root_inside_a_writable_one(tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    (outer / "models").mkdir(parents=True)
    roots = (
        TransferRoot("outer", outer, read_only=False),
        TransferRoot("models", outer / "models", read_only=True),
    )
    transfer = TransferServer(TransferConfig(USER, PASSWORD_HASH, roots, tmp_path / "host_key"))
    port = await transfer.start()
    try:
        async with sftp_client(port) as sftp:
            assert "'models' is read-only" in await denied(sftp.open("/outer/models/weights.bin", "w"))
            await denied(sftp.rmdir("/outer/models"))
            await sftp.mkdir("/outer/other")
    finally:
        await transfer.stop()
    assert sorted(os.listdir(outer)) == ["models", "other"] and not os.listdir(outer / "models")


async def test_host_key_is_generated_private_then_reused(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    keys = []
    for _ in range(2):
        transfer = TransferServer(config)
        port = await transfer.start()
        try:
            async with ssh_connect(port) as conn:
                host_key = conn.get_server_host_key()
                assert host_key is not None
                keys.append(host_key.export_public_key())
        finally:
            await transfer.stop()
    assert keys[0] == keys[1] and keys[0].startswith(b"ssh-ed25519 ")
    assert stat.S_IMODE(config.host_key.stat().st_mode) == 0o600


def test_config_json_round_trip(tmp_path: Path) -> None:
    config = make_config(tmp_path, port=2222)
    assert TransferConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError):
        TransferRoot("../x", tmp_path, read_only=False)


def openssh_password_route() -> str:
    """Why OpenSSH's sftp can't be given a password here, or "" when sshpass or SSH_ASKPASS_REQUIRE can."""
    if not os.path.exists("/usr/bin/sftp"):
        return "OpenSSH's sftp client (/usr/bin/sftp) is not installed"
    if shutil.which("sshpass"):
        return ""
    version = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False).stderr
    found = re.match(r"OpenSSH_(\d+)\.(\d+)", version)
    if found is None or (int(found[1]), int(found[2])) < (8, 4):
        return (
            f"neither sshpass nor SSH_ASKPASS_REQUIRE (OpenSSH >= 8.4) can give sftp a password: {version!r}"
        )
    return ""


OPENSSH_SKIP = openssh_password_route()


async def run_openssh_sftp(port: int, tmp_path: Path, commands: str) -> tuple[int, str]:
    """OpenSSH's sftp in batch mode; the password comes from sshpass, or else from an askpass script."""
    env = {**os.environ, "LC_ALL": "C"}
    prefix: list[str] = []
    if shutil.which("sshpass"):
        prefix, env["SSHPASS"] = ["sshpass", "-e"], PASSWORD
    else:  # OpenSSH >= 8.4 asks this program even without a terminal or DISPLAY
        askpass = tmp_path / "askpass.sh"
        askpass.write_text(f"#!/bin/sh\necho '{PASSWORD}'\n")
        askpass.chmod(0o700)
        env.update(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force")
    options = [
        "-F/dev/null",
        "-oBatchMode=no",  # before -b, which would otherwise turn password prompts off
        "-oStrictHostKeyChecking=no",
        "-oUserKnownHostsFile=/dev/null",
        "-oPubkeyAuthentication=no",
        "-oPreferredAuthentications=password,keyboard-interactive",
        "-oNumberOfPasswordPrompts=1",
        "-oLogLevel=ERROR",
    ]
    process = await asyncio.create_subprocess_exec(
        *prefix,
        "/usr/bin/sftp",
        *options,
        "-P",
        str(port),
        "-b",
        "-",
        f"{USER}@127.0.0.1",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
        env=env,
        start_new_session=True,  # no controlling terminal: the password can only come from the helper
    )
    output, _ = await asyncio.wait_for(process.communicate(commands.encode()), timeout=15)
    return process.returncode or 0, output.decode(errors="replace")


@pytest.mark.skipif(bool(OPENSSH_SKIP), reason=OPENSSH_SKIP)
async def test_openssh_sftp_client(server: TransferServer, tmp_path: Path) -> None:
    (tmp_path / "local.txt").write_text("from openssh\n")
    code, output = await run_openssh_sftp(
        server.port, tmp_path, "ls /\ncd /data\nput local.txt up.txt\nget up.txt back.txt\nls\n"
    )
    assert code == 0, output
    assert "data" in output and "ref" in output and "up.txt" in output
    assert (tmp_path / "back.txt").read_text() == "from openssh\n"
    assert (tmp_path / "volumes" / "data" / "up.txt").read_text() == "from openssh\n"
    for refused in ("put local.txt /ref/local.txt", "mkdir /ref/new", "rm /ref/readme.txt", "cd /../etc"):
        code, output = await run_openssh_sftp(server.port, tmp_path, refused + "\n")
        assert code != 0, (refused, output)
    os.symlink("/etc", tmp_path / "volumes" / "data" / "etc")
    code, output = await run_openssh_sftp(server.port, tmp_path, "get /data/etc/passwd stolen\n")
    assert code != 0 and not (tmp_path / "stolen").exists(), output
    for refused in ("cd /data/etc", "ls /data/etc/*", "ls /data/etc/.", "ls -l /data/etc/"):
        code, output = await run_openssh_sftp(server.port, tmp_path, refused + "\n")
        assert code != 0 and "passwd" not in output, output
    code, output = await run_openssh_sftp(server.port, tmp_path, "ls -l /data\n")
    assert code == 0 and "etc" in output and "passwd" not in output, output  # the link's name only
    assert not (tmp_path / "stolen").exists() and not (tmp_path / "volumes" / "ref" / "local.txt").exists()


async def test_main_serves_until_sigterm(tmp_path: Path) -> None:
    config_file, port_file = tmp_path / "config.json", tmp_path / "run" / "port"
    config_file.write_text(make_config(tmp_path).to_json())
    port_file.parent.mkdir()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "activities.transfer_server",
        "--config",
        str(config_file),
        "--port-file",
        str(port_file),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=10)).decode()
        port = int(port_file.read_text())
        assert line == f"sftp transfer service for {USER} listening on 127.0.0.1:{port}\n"
        async with sftp_client(port) as sftp:
            assert sorted(await sftp.listdir("/")) == [".", "..", "data", "ref"]
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), timeout=10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert os.listdir(port_file.parent) == ["port"]  # no temporary file left behind
