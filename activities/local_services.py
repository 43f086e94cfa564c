"""A local container's services, run as real servers: SSH, JupyterLab, the classic notebook, a web terminal,
TensorBoard where installed (manual 5.4.2.1).

Run as a script, it is the container's command on the local runtime (in place of the image's entrypoint):
``python -E -s local_services.py``, in the container's process group under its supervisor, so every server
ends with the container. Each service listens on a free loopback port; what listens where, what is still
being installed and what cannot run here is written to ``$MLCP_SERVICES_FILE`` as services come up, and
the runtime shows endpoints only for services that listen (activities/local.py).

- SSH (asyncssh): a shell (with a terminal when asked), commands and SFTP, in the container's working
  folder; passwords are checked against the stored SHA-512 crypt hash, keys against the container's
  authorized keys. The host key is made once per container and kept with its credentials.
- Jupyter: a Notebook 7 environment (JupyterLab, the classic notebook UI, terminals) installed once per host
  into the tools folder, in the background (``mlcp dev`` starts it); a container waits while it installs.
  It logs in with the container's password; without one, with a token kept in the credentials folder.

The platform imports this module for the tools' install and state; as a script it needs only asyncssh.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hmac
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

JUPYTER_PACKAGES = ("notebook>=7.2,<8",)  # brings JupyterLab, the classic notebook UI and terminals
JUPYTER_FOLDER = "jupyter"
READY_MARKER = ".installed"
LOCK_NAME = ".install.lock"
LOOPBACK = "127.0.0.1"
READY_TIMEOUT_SECONDS = 120.0
INSTALL_POLL_SECONDS = 2.0
# What each Jupyter-served service runs: the app and the page it opens on.
JUPYTER_APPS = {
    "jupyterlab": ("lab", "/lab"),
    "jupyter": ("notebook", "/tree"),
    "webterminal": ("notebook", "/terminals/1"),
}


# ---- the tools folder (shared with the platform) -------------------------------------------------


def jupyter_home(tools: Path) -> Path:
    return tools / JUPYTER_FOLDER


def jupyter_state(tools: Path) -> str:
    """`ready`, `installing` (another process holds the install lock) or `missing`."""
    home = jupyter_home(tools)
    if (home / READY_MARKER).is_file():
        return "ready"
    lock = tools / LOCK_NAME
    if not lock.exists():
        return "missing"
    with lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return "installing"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return "ready" if (home / READY_MARKER).is_file() else "missing"


def install_jupyter(tools: Path, python: str = sys.executable) -> None:
    """Install Jupyter into its own virtualenv under `tools`, once; concurrent callers wait for the first."""
    tools.mkdir(parents=True, exist_ok=True)
    home = jupyter_home(tools)
    with (tools / LOCK_NAME).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        if (home / READY_MARKER).is_file():
            return
        shutil.rmtree(home, ignore_errors=True)  # what a killed install left
        subprocess.run([python, "-m", "venv", str(home)], check=True)
        subprocess.run(
            [
                str(home / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-compile",
                *JUPYTER_PACKAGES,
            ],
            check=True,
        )
        (home / READY_MARKER).write_text(json.dumps({"packages": list(JUPYTER_PACKAGES), "at": time.time()}))


# ---- what the services process reports ---------------------------------------------------------------


class Report:
    """services.json: one entry per service, rewritten whole at every change."""

    def __init__(self, path: Path, names: list[str]) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {name: {"state": "starting"} for name in names}
        self.write()

    def set(self, name: str, state: str, port: int | None = None, message: str = "") -> None:
        entry: dict[str, Any] = {"state": state, "message": message}
        if port is not None:
            entry["port"] = port
        self.entries[name] = entry
        self.write()

    def write(self) -> None:
        scratch = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        scratch.write_text(json.dumps(self.entries))
        os.replace(scratch, self.path)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def _read(path: str | None) -> str:
    if not path:
        return ""
    with contextlib.suppress(OSError):
        return Path(path).read_text().strip()
    return ""


def password_matches(password: str, stored_hash: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # the standard library's SHA-512 crypt, as the hash was made with
    return bool(stored_hash) and hmac.compare_digest(crypt.crypt(password, stored_hash), stored_hash)


# ---- SSH -------------------------------------------------------------------------------------------


def _terminal_child() -> None:
    # A session of its own with the terminal as its controlling one, so ^C and job control work. It keeps
    # the container's labels in its environment, by which the runtime's delete finds and stops it too.
    os.setsid()
    import termios

    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


async def _run_session(process: Any, workdir: Path, env: dict[str, str]) -> None:
    import asyncssh

    shell = env.get("SHELL") or shutil.which("bash") or "/bin/sh"
    command = process.command
    terminal = process.get_terminal_type()
    try:
        if terminal:
            import pty
            import struct
            import termios

            master, slave = pty.openpty()
            width, height, *_ = process.get_terminal_size()
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", height or 24, width or 80, 0, 0))
            argv = [shell, "-c", command] if command else [shell, "-l"]
            child = await asyncio.create_subprocess_exec(
                *argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=workdir,
                env={**env, "TERM": terminal},
                preexec_fn=_terminal_child,
            )
            os.close(slave)
            stream = os.fdopen(master, "r+b", buffering=0)
            await process.redirect(stdin=stream, stdout=stream)
        else:
            child = await asyncio.create_subprocess_exec(
                *([shell, "-c", command] if command else [shell]),
                stdin=asyncssh.PIPE,
                stdout=asyncssh.PIPE,
                stderr=asyncssh.PIPE,
                cwd=workdir,
                env=env,
            )
            await process.redirect(stdin=child.stdin, stdout=child.stdout, stderr=child.stderr)
        code = await child.wait()
        with contextlib.suppress(Exception):
            await process.stdout.drain()
        process.exit(code)
    except OSError as exc:
        process.stderr.write(f"mlcp: cannot start {shell}: {exc.strerror}\n")
        process.exit(127)


def _ssh_credentials() -> tuple[str, str | None, Path]:
    """The password hash, the authorized keys file (None: no keys), the host key (made on first start)."""
    import asyncssh

    password_hash = _read(os.environ.get("MLCP_PASSWORD_HASH_FILE"))
    keys_file = os.environ.get("MLCP_AUTHORIZED_KEYS_FILE", "")
    host_key_file = Path(os.environ["MLCP_SSH_HOST_KEY_FILE"])
    if not host_key_file.exists():
        key = asyncssh.generate_private_key("ssh-ed25519")
        descriptor = os.open(host_key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(key.export_private_key())
    return password_hash, keys_file if keys_file and Path(keys_file).is_file() else None, host_key_file


async def serve_ssh(report: Report, name: str, workdir: Path, env: dict[str, str]) -> Any:
    import asyncssh

    password_hash, keys_file, host_key_file = _ssh_credentials()
    has_keys = keys_file is not None

    class Server(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            return True

        def password_auth_supported(self) -> bool:
            return bool(password_hash)

        def validate_password(self, username: str, password: str) -> bool:
            return password_matches(password, password_hash)

        def public_key_auth_supported(self) -> bool:
            return has_keys

    port = free_port()
    server = await asyncssh.create_server(
        Server,
        LOOPBACK,
        port,
        server_host_keys=[str(host_key_file)],
        authorized_client_keys=keys_file,
        process_factory=lambda process: _run_session(process, workdir, env),
        sftp_factory=True,
        allow_scp=True,
        encoding=None,
    )
    logins = [m for m, given in (("password", password_hash), ("key", keys_file)) if given]
    report.set(
        name, "ready", port, f"log in with {' or '.join(logins) or 'nothing: no credentials were given'}"
    )
    return server


# ---- Jupyter and the web terminal ----------------------------------------------------------------


JUPYTER_CONFIG = '''
import hmac, warnings
from jupyter_server.auth.identity import PasswordIdentityProvider
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

HASH = open({hash_file!r}).read().strip()

class ContainerPassword(PasswordIdentityProvider):
    """The container's password, checked against its SHA-512 crypt hash (the platform keeps no other)."""

    @property
    def login_available(self):
        return True

    def passwd_check(self, password):
        return hmac.compare_digest(crypt.crypt(password, HASH), HASH)

c.ServerApp.identity_provider_class = ContainerPassword
c.PasswordIdentityProvider.token = ""
c.PasswordIdentityProvider.hashed_password = "crypt"
'''


def _jupyter_login(credentials: Path) -> tuple[list[str], str]:
    """The arguments that set its login, and how a user logs in."""
    hash_file = os.environ.get("MLCP_PASSWORD_HASH_FILE", "")
    if hash_file and _read(hash_file):
        config = credentials / "jupyter_server_config.py"
        config.write_text(JUPYTER_CONFIG.format(hash_file=hash_file))
        return [f"--config={config}"], "log in with the container's password"
    token_file = credentials / "jupyter-token"
    if not token_file.exists():
        descriptor = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(24))
    return [f"--IdentityProvider.token={_read(str(token_file))}"], f"log in with the token in {token_file}"


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/api", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # it answers, if only to refuse
    except OSError:
        return False


async def serve_jupyter(
    report: Report, name: str, workdir: Path, env: dict[str, str], tools: Path, credentials: Path, log: Any
) -> asyncio.subprocess.Process | None:
    while (state := jupyter_state(tools)) == "installing":
        report.set(
            name, "installing", message="Jupyter is being installed on this host (first use); it starts after"
        )
        await asyncio.sleep(INSTALL_POLL_SECONDS)
    if state != "ready":
        report.set(
            name,
            "unavailable",
            message="Jupyter is not installed on this host: `mlcp tools install` installs it (mlcp dev "
            "does so in the background)",
        )
        return None
    app, page = JUPYTER_APPS[name]
    login, how = _jupyter_login(credentials)
    port = free_port()
    child = await asyncio.create_subprocess_exec(
        str(jupyter_home(tools) / "bin" / "jupyter"),
        app,
        "--no-browser",
        f"--ip={LOOPBACK}",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={workdir}",
        f"--ServerApp.default_url={page}",
        *login,
        *(["--allow-root"] if os.geteuid() == 0 else []),  # the worker's user, whoever that is
        cwd=workdir,
        # Its config and runtime files (the cookie secret, the server's token file) stay with the
        # credentials, out of the container's own folder that a commit captures.
        env={
            **env,
            "JUPYTER_CONFIG_DIR": str(credentials / f"jupyter-{name}"),
            "JUPYTER_RUNTIME_DIR": str(credentials / f"jupyter-{name}-runtime"),
        },
        stdout=log,
        stderr=log,
    )
    give_up = time.monotonic() + READY_TIMEOUT_SECONDS
    while not await asyncio.to_thread(_answers, port):
        if child.returncode is not None or time.monotonic() > give_up:
            report.set(
                name, "unavailable", message=f"{app} did not start; its output is in the container's log"
            )
            return None
        await asyncio.sleep(0.5)
    report.set(name, "ready", port, how)
    return child


async def serve_program(
    report: Report, name: str, argv: list[str], port: int, workdir: Path, env: dict[str, str], log: Any
) -> asyncio.subprocess.Process | None:
    child = await asyncio.create_subprocess_exec(*argv, cwd=workdir, env=env, stdout=log, stderr=log)
    give_up = time.monotonic() + READY_TIMEOUT_SECONDS
    while True:
        with contextlib.suppress(OSError):
            socket.create_connection((LOOPBACK, port), timeout=1).close()
            report.set(name, "ready", port)
            return child
        if child.returncode is not None or time.monotonic() > give_up:
            report.set(name, "unavailable", message=f"{argv[0]} did not start; its output is in the log")
            return None
        await asyncio.sleep(0.5)


# ---- the process ------------------------------------------------------------------------------------


async def main() -> int:
    services = json.loads(os.environ.get("MLCP_SERVICES", "[]"))
    report = Report(Path(os.environ["MLCP_SERVICES_FILE"]), [service["name"] for service in services])
    tools = Path(os.environ.get("MLCP_TOOLS_DIR", ""))
    credentials = Path(os.environ["MLCP_SSH_HOST_KEY_FILE"]).parent
    # The container's own folder is its home; a mount marked as the working folder is where sessions start.
    home = os.environ.get("MLCP_CONTAINER_FILES") or os.getcwd()
    workdir = Path(os.environ.get("MLCP_WORKDIR") or home)
    # The sessions' environment: the container's, without what only this process needs.
    env = {
        key: value for key, value in os.environ.items() if key not in ("MLCP_SERVICES", "MLCP_SERVICES_FILE")
    }
    env["HOME"] = home
    held: list[Any] = []
    children: list[asyncio.subprocess.Process] = []
    log = sys.stdout

    async def start(service: dict[str, Any]) -> None:
        name = service["name"]
        if name == "ssh":
            held.append(await serve_ssh(report, name, workdir, env))
        elif name in JUPYTER_APPS:
            child = await serve_jupyter(report, name, workdir, env, tools, credentials, log)
            if child is not None:
                children.append(child)
        elif name == "tensorboard" and (binary := shutil.which("tensorboard")):
            port = free_port()
            argv = [binary, "--logdir", str(workdir), "--host", LOOPBACK, "--port", str(port)]
            child = await serve_program(report, name, argv, port, workdir, env, log)
            if child is not None:
                children.append(child)
        elif name == "tensorboard":
            report.set(
                name,
                "unavailable",
                message="TensorBoard is not installed on this host (pip install tensorboard)",
            )
        elif name == "codeserver":
            report.set(
                name,
                "unavailable",
                message="code-server needs the plain password, which the platform never keeps",
            )
        else:
            report.set(
                name, "unavailable", message=f"the image's own {name} server cannot run on the local runtime"
            )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    results = await asyncio.gather(*(start(service) for service in services), return_exceptions=True)
    for service, result in zip(services, results, strict=True):
        if isinstance(result, BaseException):
            report.set(service["name"], "unavailable", message=f"failed to start: {result}")
    print(f"mlcp local runtime: services {json.dumps(report.entries)}", flush=True)
    await stop.wait()
    for server in held:
        server.close()
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            child.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
