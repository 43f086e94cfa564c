"""A user's SSH keys (manual 5.9.2): made here (the private key answered once) or imported (validated; a
private key pasted by mistake is refused without being kept or logged); deleted only when no live
container uses them."""

from __future__ import annotations

import asyncssh
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from models.accounts import User
from models.containers import Container, ContainerStatus
from models.keys import SshKey, SshKeyCreated, SshKeyPage, SshKeyPublic
from services.errors import conflict, invalid, not_found

ALGORITHMS = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)
MIN_RSA_BITS = 2048


def _looks_private(text: str) -> bool:
    if "PRIVATE KEY" in text:
        return True
    try:
        asyncssh.import_private_key(text)
    except (asyncssh.KeyImportError, ValueError):
        return False
    return True


def checked_public_key(text: str, field: str = "public_key") -> asyncssh.SSHKey:
    """The key a public key line holds; 422 naming why not. The text itself is never echoed back."""
    line = text.strip()
    if _looks_private(line):
        raise invalid(field, "this is a private key: paste the public one (the .pub file); nothing was kept")
    if "\n" in line:
        raise invalid(field, "must be one public key line")
    try:
        key = asyncssh.import_public_key(line)
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise invalid(field, "not an OpenSSH public key line (ssh-ed25519 AAAA... comment)") from exc
    algorithm = key.get_algorithm()
    if algorithm not in ALGORITHMS:
        raise invalid(field, f"{algorithm} keys are not accepted; use ssh-ed25519, ssh-rsa or ecdsa")
    if algorithm == "ssh-rsa" and _rsa_bits(key) < MIN_RSA_BITS:
        raise invalid(field, f"an RSA key needs at least {MIN_RSA_BITS} bits")
    return key


def _rsa_bits(key: asyncssh.SSHKey) -> int:
    public = getattr(key, "pyca_key", None)
    return int(getattr(public, "key_size", MIN_RSA_BITS))


def _public(row: SshKey) -> SshKeyPublic:
    return SshKeyPublic.model_validate(row, from_attributes=True)


def _save(session: Session, user: User, name: str, key: asyncssh.SSHKey) -> SshKey:
    row = SshKey(
        user_id=user.id,
        name=name,
        public_key=key.export_public_key("openssh").decode().strip(),  # with its comment, if it has one
        fingerprint=key.get_fingerprint("sha256"),
        algorithm=key.get_algorithm(),
    )
    session.add(row)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise conflict(f"you have a key named {name!r} already", "name") from exc
    session.refresh(row)
    return row


def create_key(session: Session, user: User, name: str) -> SshKeyCreated:
    private = asyncssh.generate_private_key("ssh-ed25519", comment=f"{user.username}@mlcp")
    public = private.convert_to_public()
    row = _save(session, user, name, public)
    secret = private.export_private_key("openssh").decode()
    return SshKeyCreated(**_public(row).model_dump(), private_key=secret)


def import_key(session: Session, user: User, name: str, text: str) -> SshKeyPublic:
    return _public(_save(session, user, name, checked_public_key(text)))


def list_keys(session: Session, user: User) -> SshKeyPage:
    rows = session.exec(
        select(SshKey).where(SshKey.user_id == user.id).order_by(col(SshKey.created_at))
    ).all()
    return SshKeyPage(items=[_public(row) for row in rows], total=len(rows))


def own_key(session: Session, user_id: str, key_id: str, field: str | None = None) -> SshKey:
    row = session.get(SshKey, key_id)
    if row is None or row.user_id != user_id:
        if field is not None:
            raise invalid(field, f"you have no key {key_id!r}")
        raise not_found("key", key_id)
    return row


def delete_key(session: Session, user: User, key_id: str) -> None:
    row = own_key(session, user.id, key_id)
    live = session.exec(
        select(Container.id, Container.name).where(
            Container.ssh_key_id == row.id, Container.status != ContainerStatus.deleted
        )
    ).all()
    if live:
        names = ", ".join(f"{ident} ({name})" for ident, name in live)
        raise conflict(f"key {row.name!r} is used by live containers: {names}; delete them first")
    session.delete(row)
    session.commit()
