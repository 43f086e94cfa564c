"""A thin client of the OCI distribution (Docker registry v2) API: what commits need and nothing more.

It checks a pushed manifest (digest, config digest), tags it again by putting the same bytes under another
tag (same digest, repeatable), pushes a local image's blobs, and deletes manifests. It answers the two
challenges registries give: Basic (the distribution registry with htpasswd) and Bearer tokens (Harbor,
GitLab, the distribution registry with a token server).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')
TIMEOUT = httpx.Timeout(30.0, read=300.0)


class RegistryError(Exception):
    def __init__(self, message: str, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class RegistryManifest:
    digest: str
    media_type: str
    body: bytes

    @property
    def config_digest(self) -> str:
        document: dict[str, Any] = json.loads(self.body)
        return str(document.get("config", {}).get("digest", ""))


class Registry:
    def __init__(self, address: str, username: str = "", password: str = "", insecure: bool = False) -> None:
        self.address = address
        scheme = "http" if insecure else "https"
        self._auth = (username, password) if username else None
        self._client = httpx.Client(base_url=f"{scheme}://{address}", timeout=TIMEOUT)
        self._token: str | None = None

    def close(self) -> None:
        self._client.close()

    # ---- plumbing ------------------------------------------------------------------------------

    def _token_for(self, challenge: str) -> str:
        fields = dict(_CHALLENGE.findall(challenge))
        realm = fields.pop("realm", "")
        if not realm:
            raise RegistryError(f"registry {self.address} asked for a token without a realm", permanent=True)
        answer = httpx.get(realm, params=fields, auth=self._auth, timeout=TIMEOUT)
        if answer.status_code in (401, 403):
            raise RegistryError(f"registry {self.address} refused the credentials", permanent=True)
        answer.raise_for_status()
        body = answer.json()
        return str(body.get("token") or body.get("access_token"))

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            response = self._client.request(
                method, url, headers=headers, auth=None if self._token else self._auth, **kwargs
            )
            if response.status_code == 401:
                challenge = response.headers.get("WWW-Authenticate", "")
                if challenge.lower().startswith("bearer"):
                    self._token = self._token_for(challenge[len("bearer") :].strip())
                    headers["Authorization"] = f"Bearer {self._token}"
                    response = self._client.request(method, url, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise RegistryError(f"registry {self.address} cannot be reached: {exc}", permanent=False) from exc
        if response.status_code in (401, 403):
            raise RegistryError(
                f"registry {self.address} refused {method} {url}: {response.status_code} {_detail(response)}",
                permanent=True,
            )
        if response.status_code >= 500:
            raise RegistryError(f"registry {self.address} failed: {response.status_code}", permanent=False)
        return response

    # ---- manifests -----------------------------------------------------------------------------

    def manifest(self, repository: str, reference: str) -> RegistryManifest | None:
        response = self._send(
            "GET", f"/v2/{repository}/manifests/{reference}", headers={"Accept": ", ".join(MANIFEST_TYPES)}
        )
        if response.status_code == 404:
            return None
        _check(response, f"reading {repository}:{reference}")
        body = response.content
        # Docker-Content-Digest is optional in the OCI spec: the body's own hash is the digest then.
        digest = response.headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(body).hexdigest()
        media_type = response.headers.get("Content-Type", "").split(";")[0]
        return RegistryManifest(digest=digest, media_type=media_type, body=body)

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        response = self._send(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            content=body,
            headers={"Content-Type": media_type},
        )
        _check(response, f"tagging {repository}:{reference}")
        return response.headers.get("Docker-Content-Digest", "")

    def delete_manifest(self, repository: str, digest: str) -> bool:
        """True once it is gone; False when the registry does not allow deletes (405)."""
        response = self._send("DELETE", f"/v2/{repository}/manifests/{digest}")
        if response.status_code in (202, 200, 404):
            return True
        if response.status_code == 405:
            return False
        _check(response, f"deleting {repository}@{digest}")
        return True

    # ---- blobs ---------------------------------------------------------------------------------

    def has_blob(self, repository: str, digest: str) -> bool:
        response = self._send("HEAD", f"/v2/{repository}/blobs/{digest}")
        return response.status_code == 200

    def push_blob(self, repository: str, digest: str, path: Path) -> None:
        if self.has_blob(repository, digest):
            return
        started = self._send("POST", f"/v2/{repository}/blobs/uploads/")
        _check(started, f"starting an upload to {repository}")
        location = started.headers["Location"]
        separator = "&" if "?" in location else "?"
        with path.open("rb") as handle:
            done = self._send(
                "PUT",
                f"{location}{separator}digest={digest}",
                content=handle.read(),
                headers={"Content-Type": "application/octet-stream"},
            )
        _check(done, f"uploading {digest} to {repository}")


def _detail(response: httpx.Response) -> str:
    try:
        errors = response.json().get("errors", [])
    except ValueError:
        return response.text[:200]
    return "; ".join(f"{error.get('code')}: {error.get('message')}" for error in errors)[:300]


def _check(response: httpx.Response, what: str) -> None:
    if response.status_code >= 400:
        raise RegistryError(f"{what} failed: {response.status_code} {_detail(response)}", permanent=True)
