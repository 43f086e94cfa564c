"""The transfer service: SFTP for one user, by password, over a set of roots (project volumes).

``/`` lists the roots by name; ``/<name>/...`` maps onto that root's host folder. A client path is
normalised (``..`` stops at ``/``), mapped, resolved with realpath and must stay inside its root's own
realpath. Read-only roots and the top level refuse every write; no link can be made at all.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import os
import signal
import stat
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path

import asyncssh
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from asyncssh import SFTPAttrs, SFTPName, SFTPPermissionDenied

log = logging.getLogger(__name__)

_WRITE_FLAGS = (
    asyncssh.FXF_WRITE | asyncssh.FXF_APPEND | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC | asyncssh.FXF_EXCL
)


@dataclass(frozen=True)
class TransferRoot:
    name: str  # directory name shown at the top level (e.g. the volume's name)
    path: Path  # host folder
    read_only: bool

    def __post_init__(self) -> None:
        if self.name in ("", ".", "..") or "/" in self.name or "\0" in self.name:
            raise ValueError(f"a root's name must be one path component, not {self.name!r}")


@dataclass(frozen=True)
class TransferConfig:
    username: str
    password_hash: str  # argon2, as PasswordHasher().hash(password) makes it
    roots: tuple[TransferRoot, ...]
    host_key: Path  # ed25519 private key; generated (mode 0600) when missing
    host: str = "127.0.0.1"
    port: int = 0  # 0: pick a free port

    def __post_init__(self) -> None:
        names = [root.name for root in self.roots]
        if len(set(names)) != len(names):
            raise ValueError(f"root names must be unique: {names}")

    @classmethod
    def from_json(cls, text: str) -> TransferConfig:
        data = json.loads(text)
        roots = tuple(TransferRoot(r["name"], Path(r["path"]), bool(r["read_only"])) for r in data["roots"])
        return cls(**{**data, "roots": roots, "host_key": Path(data["host_key"])})

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str, indent=2)


def _split(path: bytes) -> list[bytes]:
    """The components of a client path, relative to ``/``; ``..`` never climbs above it."""
    parts: list[bytes] = []
    for part in path.split(b"/"):
        if part == b"..":
            if parts:
                parts.pop()
        elif part not in (b"", b"."):
            parts.append(part)
    return parts


def _follow(path: bytes, follow: bool) -> bool:
    """A trailing ``/``, ``.`` or ``..`` makes the last name a directory to enter, so it is followed."""
    return follow or path.rsplit(b"/", 1)[-1] in (b"", b".", b"..")


def _inside(base: bytes, host: bytes) -> bool:
    return host == base or host.startswith(base.rstrip(b"/") + b"/")


def _top_attrs() -> SFTPAttrs:
    return SFTPAttrs(permissions=stat.S_IFDIR | 0o555, size=0, nlink=2)


async def _iterate(names: list[SFTPName]) -> AsyncIterator[SFTPName]:
    for name in names:
        yield name


class _VolumesSFTP(asyncssh.SFTPServer):
    """One SFTP session. Each client path goes through ``_readable`` or ``_writable``; the base class's
    methods are only handed the resolved host paths (it has no chroot, so its map_path maps nothing)."""

    def __init__(self, chan: asyncssh.SSHServerChannel, roots: tuple[TransferRoot, ...]) -> None:
        super().__init__(chan)
        self._roots = {os.fsencode(root.name): root for root in roots}
        self._bases = {key: os.path.realpath(os.fsencode(root.path)) for key, root in self._roots.items()}

    def _resolve(self, parts: list[bytes], follow: bool = True) -> bytes:
        """The host path for non-empty ``parts``; without ``follow`` a final symlink is not followed."""
        root = self._roots.get(parts[0])
        if root is None:
            raise asyncssh.SFTPNoSuchFile(f"no volume named {os.fsdecode(parts[0])!r}")
        base, rest = self._bases[parts[0]], parts[1:]
        if follow or not rest:
            host = os.path.realpath(os.path.join(base, *rest))
        else:
            host = os.path.join(os.path.realpath(os.path.join(base, *rest[:-1])), rest[-1])
        if not _inside(base, host):
            shown = os.fsdecode(b"/" + b"/".join(parts))
            raise SFTPPermissionDenied(f"{shown} leads outside volume {root.name!r}")
        return host

    def _readable(self, path: bytes, follow: bool = True) -> bytes | None:
        """The host path to read, or None for the virtual top level."""
        parts = _split(path)
        return self._resolve(parts, _follow(path, follow)) if parts else None

    def _writable(self, path: bytes, follow: bool = True) -> bytes:
        parts = _split(path)
        if len(parts) < 2:
            raise SFTPPermissionDenied("the top level is read-only: write inside a volume")
        host = self._resolve(parts, _follow(path, follow))
        if host == self._bases[parts[0]]:
            raise SFTPPermissionDenied(f"volume {os.fsdecode(parts[0])!r} itself cannot be changed")
        self._refuse_read_only(host)
        return host

    def _refuse_read_only(self, host: bytes) -> None:
        for key, base in self._bases.items():  # every one: a read-only root may lie inside a writable one
            if self._roots[key].read_only and _inside(base, host):
                raise SFTPPermissionDenied(f"volume {self._roots[key].name!r} is read-only")

    @staticmethod
    def _check_attrs(attrs: SFTPAttrs) -> SFTPAttrs:
        if attrs.uid is not None or attrs.gid is not None or attrs.owner or attrs.group:
            raise SFTPPermissionDenied("ownership cannot be changed")
        if attrs.permissions is not None:
            attrs.permissions &= 0o777  # no setuid, setgid or sticky bits
        return attrs

    def _virtual(self, key: bytes, host: bytes) -> bytes:
        relative = os.path.relpath(host, self._bases[key])
        return b"/" + key if relative == b"." else b"/" + key + b"/" + relative

    def open(self, path: bytes, pflags: int, attrs: SFTPAttrs) -> object:
        host = self._writable(path) if pflags & _WRITE_FLAGS else self._readable(path)
        if host is None:
            raise SFTPPermissionDenied("the top level is not a file")
        perms = None if attrs.permissions is None else attrs.permissions & 0o777
        return super().open(host, pflags, SFTPAttrs(permissions=perms))

    def fsetstat(self, file_obj: object, attrs: SFTPAttrs) -> None:
        self._refuse_read_only(getattr(file_obj, "name", b""))  # the host path the base class opened
        super().fsetstat(file_obj, self._check_attrs(attrs))

    def stat(self, path: bytes) -> os.stat_result | SFTPAttrs:
        host = self._readable(path)
        return _top_attrs() if host is None else os.stat(host)

    def lstat(self, path: bytes) -> os.stat_result | SFTPAttrs:
        host = self._readable(path, follow=False)
        return _top_attrs() if host is None else os.lstat(host)

    def scandir(self, path: bytes) -> AsyncIterator[SFTPName]:
        # A plain method, not an async generator, so that a refused path fails at opendir, not readdir.
        host = self._readable(path)
        here = _top_attrs() if host is None else SFTPAttrs.from_local(os.stat(host))
        names = [SFTPName(b".", attrs=here), SFTPName(b"..", attrs=here)]
        if host is None:
            for key, root in self._roots.items():
                try:
                    attrs = SFTPAttrs.from_local(os.stat(self._bases[key]))
                except OSError:  # a missing folder still shows, as an empty directory
                    attrs = _top_attrs()
                if root.read_only and attrs.permissions is not None:
                    attrs.permissions &= ~0o222
                names.append(SFTPName(key, attrs=attrs))
        else:
            with os.scandir(host) as entries:
                names += [
                    SFTPName(e.name, attrs=SFTPAttrs.from_local(e.stat(follow_symlinks=False)))
                    for e in entries
                ]
        return _iterate(names)

    def realpath(self, path: bytes) -> bytes:
        parts = _split(path)
        return self._virtual(parts[0], self._resolve(parts)) if parts else b"/"

    def readlink(self, path: bytes) -> bytes:
        parts = _split(path)
        if not parts:
            raise asyncssh.SFTPInvalidParameter("the top level is not a link")
        os.readlink(self._resolve(parts, follow=False))  # raises unless it is a link
        return self._virtual(parts[0], self._resolve(parts))

    def statvfs(self, path: bytes) -> os.statvfs_result:
        host = self._readable(path)
        if host is None:
            raise asyncssh.SFTPOpUnsupported("the top level is not a file system")
        return os.statvfs(host)

    def setstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        super().setstat(self._writable(path), self._check_attrs(attrs))

    def lsetstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        super().lsetstat(self._writable(path, follow=False), self._check_attrs(attrs))

    def mkdir(self, path: bytes, attrs: SFTPAttrs) -> None:
        super().mkdir(self._writable(path), self._check_attrs(attrs))

    def remove(self, path: bytes) -> None:
        os.remove(self._writable(path, follow=False))  # a symlink itself is removed, never its target

    def rmdir(self, path: bytes) -> None:
        os.rmdir(self._writable(path, follow=False))

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        super().rename(self._writable(oldpath, follow=False), self._writable(newpath, follow=False))

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        os.replace(self._writable(oldpath, follow=False), self._writable(newpath, follow=False))

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        raise SFTPPermissionDenied("links cannot be made through the transfer service")

    link = symlink


class _PasswordAuth(asyncssh.SSHServer):
    """One connection's authentication: the configured user, by password only."""

    def __init__(self, server: TransferServer) -> None:
        self._server = server
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._server._connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._server._connections.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        config = self._server.config
        try:  # verified even for a wrong username, so the answer takes as long either way
            await asyncio.to_thread(PasswordHasher().verify, config.password_hash, password)
            valid = True
        except (VerificationError, InvalidHashError):
            valid = False
        valid = hmac.compare_digest(username.encode(), config.username.encode()) and valid
        log.info("transfer service: password %s for user %r", "accepted" if valid else "refused", username)
        return valid


def _host_key(path: Path) -> asyncssh.SSHKey:
    if not path.exists():
        key = asyncssh.generate_private_key("ssh-ed25519")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key.export_private_key())
        return key
    return asyncssh.read_private_key(path)


class TransferServer:
    def __init__(self, config: TransferConfig) -> None:
        self.config = config
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._connections: set[asyncssh.SSHServerConnection] = set()
        self._port = 0

    async def start(self) -> int:
        """Listen and return the bound port."""
        roots = self.config.roots
        self._acceptor = await asyncssh.listen(
            self.config.host,
            self.config.port,
            server_factory=lambda: _PasswordAuth(self),
            server_host_keys=[_host_key(self.config.host_key)],
            sftp_factory=lambda chan: _VolumesSFTP(chan, roots),
            sftp_version=3,  # so open56 (versions 5 and 6) is never called
            allow_pty=False,
            agent_forwarding=False,  # scp, x11 and port forwarding are off by default
        )
        self._port = self._acceptor.get_port()
        return self._port

    async def stop(self) -> None:
        """Stop listening and close the open connections (closing the acceptor alone leaves them open)."""
        if self._acceptor is None:
            return
        self._acceptor.close()
        for conn in list(self._connections):
            conn.close()
            await conn.wait_closed()
        await self._acceptor.wait_closed()
        self._acceptor = None

    @property
    def port(self) -> int:
        return self._port


async def _serve(config: TransferConfig, port_file: Path | None) -> None:
    server = TransferServer(config)
    port = await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    if port_file is not None:  # atomically: a reader sees the whole number or no file
        temporary = port_file.with_name(f".{port_file.name}.{os.getpid()}.tmp")
        temporary.write_text(str(port))
        os.replace(temporary, port_file)
    print(f"sftp transfer service for {config.username} listening on {config.host}:{port}", flush=True)
    try:
        await stopping.wait()
    finally:
        await server.stop()


CONFIG_ENV = "MLCP_TRANSFER_CONFIG"  # a TransferConfig's JSON without its password hash
PASSWORD_HASH_FILE_ENV = "MLCP_PASSWORD_HASH_FILE"  # where the runtime put the hash (a Secret's file)


def config_from_environment(environ: dict[str, str]) -> TransferConfig:
    """The config a runtime gives a transfer workload: JSON in the environment, the hash in a file."""
    try:
        data = json.loads(environ[CONFIG_ENV])
        data["password_hash"] = Path(environ[PASSWORD_HASH_FILE_ENV]).read_text().strip()
    except (KeyError, OSError, ValueError) as exc:
        raise SystemExit(
            f"transfer service: no usable {CONFIG_ENV} and {PASSWORD_HASH_FILE_ENV}: {exc}"
        ) from exc
    return TransferConfig.from_json(json.dumps(data))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SFTP transfer service over a project's volumes")
    parser.add_argument("--config", type=Path, help=f"JSON file of a TransferConfig; else ${CONFIG_ENV}")
    parser.add_argument("--port-file", type=Path, help="where to write the bound port")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    if args.config is not None:
        config = TransferConfig.from_json(args.config.read_text())
    else:
        config = config_from_environment(dict(os.environ))
    asyncio.run(_serve(config, args.port_file))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
