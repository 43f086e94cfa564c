"""A folder as an OCI image, deterministically, and the local image store (an OCI image layout).

A snapshot is one gzip layer of the folder's tree written the same way every time: entries sorted, owner
0:0 without names, every mtime 0, gzip without a name or time; and a config holding only that layer's
diff ID. So the same tree always gives the same manifest digest, and a retried commit makes nothing new.
The store is a standard OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/`), so `skopeo copy
oci:<store>:<ref>` or `oras` can read it; tags are the index's `org.opencontainers.image.ref.name`.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import os
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
CHUNK = 1 << 20
Progress = Callable[[int], None]  # bytes read so far


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Snapshot:
    digest: str  # the manifest's
    config_digest: str
    size_bytes: int  # the layer's compressed size plus config and manifest
    manifest: bytes


class _HashingWriter:
    """Counts and hashes what passes to the file beneath."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target, self.hash, self.size = target, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.target.write(data)

    def flush(self) -> None:
        self.target.flush()


def _entries(root: Path) -> Iterator[Path]:
    """Every path under root, sorted, depth first."""
    for entry in sorted(os.scandir(root), key=lambda item: item.name):
        path = Path(entry.path)
        yield path
        if entry.is_dir(follow_symlinks=False):
            yield from _entries(path)


def _tar_info(root: Path, path: Path) -> tarfile.TarInfo | None:
    status = path.lstat()
    info = tarfile.TarInfo(path.relative_to(root).as_posix())
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    info.mode = stat.S_IMODE(status.st_mode)
    if stat.S_ISLNK(status.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
    elif stat.S_ISDIR(status.st_mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISREG(status.st_mode):
        info.size = status.st_size
    else:
        return None  # sockets, pipes and devices are not files an image holds
    return info


def write_layer(root: Path, target: IO[bytes], progress: Progress) -> tuple[str, str, int]:
    """The tree as a gzip tar into `target`: (blob digest, diff ID, compressed size)."""
    compressed = _HashingWriter(target)
    read = 0
    # Level 1: what a container holds (weights, wheels, binaries) barely compresses, and time counts more.
    with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=1) as zipped:
        uncompressed = _HashingWriter(zipped)  # type: ignore[arg-type]
        with tarfile.open(fileobj=uncompressed, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            for path in _entries(root):
                info = _tar_info(root, path)
                if info is None:
                    continue
                if info.isreg():
                    with path.open("rb") as handle:
                        tar.addfile(info, handle)
                    read += info.size
                    progress(read)
                else:
                    tar.addfile(info)
    return "sha256:" + compressed.hash.hexdigest(), "sha256:" + uncompressed.hash.hexdigest(), compressed.size


class ImageStore:
    """The local image store: an OCI image layout folder, safe for several processes at once."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _blob(self, digest: str) -> Path:
        algorithm, _, hexdigest = digest.partition(":")
        return self.root / "blobs" / algorithm / hexdigest

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        layout = self.root / "oci-layout"
        if not layout.exists():
            layout.write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        with (self.root / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def _index(self) -> dict[str, Any]:
        try:
            index: dict[str, Any] = json.loads((self.root / "index.json").read_text())
        except FileNotFoundError:
            index = {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [],
            }
        return index

    def _write_index(self, index: dict[str, Any]) -> None:
        scratch = self.root / ".index.json.new"
        scratch.write_text(json.dumps(index, indent=2))
        os.replace(scratch, self.root / "index.json")

    def _put(self, data: bytes) -> str:
        digest = digest_of(data)
        path = self._blob(digest)
        if not path.exists():
            scratch = path.with_name(path.name + ".new")
            scratch.write_bytes(data)
            os.replace(scratch, path)
        return digest

    def blob(self, digest: str) -> bytes:
        return self._blob(digest).read_bytes()

    def blob_path(self, digest: str) -> Path:
        return self._blob(digest)

    def has(self, digest: str) -> bool:
        return self._blob(digest).is_file()

    def snapshot(self, folder: Path, progress: Progress) -> Snapshot:
        """The folder's tree as an image in the store (its blobs; tag it to keep it)."""
        with self._locked():
            pass  # the layout exists before the long copy; the copy itself needs no lock
        with tempfile.NamedTemporaryFile(
            dir=self.root / "blobs" / "sha256", prefix=".layer-", delete=False
        ) as handle:
            scratch = Path(handle.name)
            layer_digest, diff_id, layer_size = write_layer(folder, handle, progress)
        layer_path = self._blob(layer_digest)
        if layer_path.exists():
            scratch.unlink()
        else:
            os.replace(scratch, layer_path)
        config = canonical(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            }
        )
        with self._locked():
            config_digest = self._put(config)
            manifest = canonical(
                {
                    "schemaVersion": 2,
                    "mediaType": MANIFEST_TYPE,
                    "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": len(config)},
                    "layers": [{"mediaType": LAYER_TYPE, "digest": layer_digest, "size": layer_size}],
                }
            )
            digest = self._put(manifest)
        return Snapshot(digest, config_digest, layer_size + len(config) + len(manifest), manifest)

    def tag(self, reference: str, digest: str, annotations: dict[str, str] | None = None) -> None:
        """Name a manifest in the index; the same name moves to the new manifest."""
        with self._locked():
            index = self._index()
            manifests = [m for m in index["manifests"] if m.get("annotations", {}).get(REF_NAME) != reference]
            manifests.append(
                {
                    "mediaType": MANIFEST_TYPE,
                    "digest": digest,
                    "size": self._blob(digest).stat().st_size,
                    "annotations": {**(annotations or {}), REF_NAME: reference},
                }
            )
            index["manifests"] = manifests
            self._write_index(index)

    def tagged(self, reference: str) -> str | None:
        for entry in self._index()["manifests"]:
            if entry.get("annotations", {}).get(REF_NAME) == reference:
                return str(entry["digest"])
        return None

    def untag_exact(self, reference: str) -> None:
        """Drop a name, then the blobs no name holds any more."""
        with self._locked():
            index = self._index()
            index["manifests"] = [
                m for m in index["manifests"] if m.get("annotations", {}).get(REF_NAME) != reference
            ]
            self._write_index(index)
            kept: set[str] = set()
            for entry in index["manifests"]:
                kept |= set(self.blobs_of(entry["digest"]))
            for path in (self.root / "blobs" / "sha256").iterdir():
                if not path.name.startswith(".") and f"sha256:{path.name}" not in kept:
                    path.unlink(missing_ok=True)

    def manifest(self, digest: str) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.blob(digest))
        return document

    def blobs_of(self, digest: str) -> list[str]:
        """The manifest, its config and its layers."""
        if not self.has(digest):
            return []
        manifest = self.manifest(digest)
        return [digest, manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]

    def restore(self, digest: str, into: Path) -> int:
        """Unpack the image's layers into a folder; the number of entries written."""
        written = 0
        for layer in self.manifest(digest)["layers"]:
            with tarfile.open(self._blob(layer["digest"]), mode="r:gz") as tar:
                members = tar.getmembers()
                # The data filter refuses absolute paths, `..`, links out of the folder and device files.
                tar.extractall(into, members=members, filter="data")
                written += len(members)
        return written
