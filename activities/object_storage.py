"""One object-storage interface over any S3-compatible server, through the `minio` client.

Buckets and objects are plain S3. What S3 leaves out differs by server and is found out, never assumed:

- bucket quotas: SeaweedFS's `PUT /{bucket}?seaweedfs-quota` extension, MinIO's admin API; a server with
  neither gets none, and capacity is then kept by the platform's ledger alone (said in the volume's note).
  A quota is always set as an absolute value, so setting it again is harmless.
- identities: SeaweedFS (and Ceph RGW) speak the AWS IAM API on the S3 port; MinIO has its admin API.
  Each project gets one user whose policy allows only the project's own buckets.

Which server it is comes from the `Server` header of an unauthenticated request: other servers answer
MinIO's admin calls as if they had worked (SeaweedFS makes a bucket called `minio`), so it must be known.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from minio import Minio
from minio.commonconfig import CopySource
from minio.credentials import Credentials, StaticProvider
from minio.deleteobjects import DeleteObject
from minio.error import S3Error
from minio.signer import sign_v4_s3

REQUEST_TIMEOUT_SECONDS = 30.0
IAM_VERSION = "2010-05-08"
POLICY_NAME = "mlcp-project-buckets"
# What a project's identity may do in its buckets: objects and listings, never the buckets themselves,
# so the capacities the platform sets are the only buckets it has.
OBJECT_ACTIONS = [
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:ListBucket",
    "s3:GetBucketLocation",
    "s3:AbortMultipartUpload",  # uploading parts is PutObject; SeaweedFS knows no multipart listing actions
    "s3:GetObjectTagging",
    "s3:PutObjectTagging",
]


class ServerFlavour(StrEnum):
    seaweedfs = "seaweedfs"
    minio = "minio"
    other = "other"


class ObjectStorageError(RuntimeError):
    """The server refused or failed; `permanent` when retrying cannot help (bad credentials, no support)."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class AccessKeys:
    access_key: str
    secret_key: str

    def __repr__(self) -> str:  # never in a log line
        return f"AccessKeys(access_key={self.access_key!r}, secret_key='***')"


@dataclass(frozen=True)
class QuotaOutcome:
    enforced: bool
    note: str  # what the server does about capacity, for the volume's detail


def bucket_name(project_id: str, volume_id: str) -> str:
    """Derived from IDs only; 3-63 lowercase letters, digits and dashes as S3 requires."""
    return f"mlcp-{project_id}-{volume_id}"


def bucket_prefix(project_id: str) -> str:
    return f"mlcp-{project_id}-"


def identity_name(project_id: str) -> str:
    return f"mlcp-project-{project_id}"


def project_policy(project_id: str) -> dict[str, Any]:
    prefix = bucket_prefix(project_id)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": OBJECT_ACTIONS,
                "Resource": [f"arn:aws:s3:::{prefix}*", f"arn:aws:s3:::{prefix}*/*"],
            }
        ],
    }


class ObjectStore:
    """Blocking calls (activities run them in the worker's thread pool); every one is idempotent."""

    def __init__(
        self, endpoint: str, access_key: str, secret_key: str, secure: bool = False, region: str = "us-east-1"
    ) -> None:
        if not endpoint or not access_key or not secret_key:
            raise ObjectStorageError(
                "object storage is not configured: set MLCP_S3_ENDPOINT, MLCP_S3_ACCESS_KEY and "
                "MLCP_S3_SECRET_KEY (`mlcp dev` runs SeaweedFS and sets them itself)",
                permanent=True,
            )
        self.endpoint = endpoint
        self.secure = secure
        self.region = region
        self._credentials = Credentials(access_key, secret_key)
        self._client = Minio(
            endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region
        )
        self._flavour: ServerFlavour | None = None

    @property
    def base_url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.endpoint}"

    # --- what the server is

    def flavour(self) -> ServerFlavour:
        if self._flavour is None:
            try:
                response = httpx.get(self.base_url + "/", timeout=REQUEST_TIMEOUT_SECONDS)
            except httpx.HTTPError as exc:
                raise ObjectStorageError(f"the S3 server at {self.endpoint} does not answer: {exc}") from exc
            server = response.headers.get("server", "").lower()
            self._flavour = (
                ServerFlavour.seaweedfs
                if "seaweedfs" in server
                else ServerFlavour.minio
                if "minio" in server
                else ServerFlavour.other
            )
        return self._flavour

    def ping(self) -> None:
        """One signed request, no retries: answers once the server serves S3 (raises before)."""
        self._signed("GET", "/", "", b"", "application/xml")

    # --- buckets

    def ensure_bucket(self, bucket: str) -> None:
        try:
            if not self._client.bucket_exists(bucket):
                self._client.make_bucket(bucket)
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise self._error("create bucket " + bucket, exc) from exc

    def bucket_exists(self, bucket: str) -> bool:
        try:
            return self._client.bucket_exists(bucket)
        except S3Error as exc:
            raise self._error("look up bucket " + bucket, exc) from exc

    def usage_bytes(self, bucket: str) -> int:
        """Bytes stored in the bucket (the sum of its objects' sizes); 0 when it does not exist."""
        try:
            return sum(obj.size or 0 for obj in self._client.list_objects(bucket, recursive=True))
        except S3Error as exc:
            if exc.code == "NoSuchBucket":
                return 0
            raise self._error("measure bucket " + bucket, exc) from exc

    def copy_bucket(self, source: str, target: str) -> int:
        """Copy every object not yet in the target (a retried clone skips what it copied); bytes copied."""
        copied = 0
        try:
            present = {obj.object_name for obj in self._client.list_objects(target, recursive=True)}
            for obj in self._client.list_objects(source, recursive=True):
                name = obj.object_name
                if name is None or name in present:
                    continue
                # Server-side: the bytes never pass through the worker.
                self._client.copy_object(target, name, CopySource(source, name))
                copied += obj.size or 0
        except S3Error as exc:
            raise self._error(f"copy bucket {source} to {target}", exc) from exc
        return copied

    def remove_bucket(self, bucket: str) -> None:
        """Empty the bucket, then remove it; absent is success."""
        try:
            if not self._client.bucket_exists(bucket):
                return
            while True:
                batch = [
                    DeleteObject(obj.object_name)
                    for obj, _ in zip(
                        self._client.list_objects(bucket, recursive=True), range(1000), strict=False
                    )
                    if obj.object_name is not None
                ]
                if not batch:
                    break
                errors = list(self._client.remove_objects(bucket, batch))
                if errors:
                    raise ObjectStorageError(f"emptying bucket {bucket}: {errors[0]}")
            self._client.remove_bucket(bucket)
        except S3Error as exc:
            if exc.code == "NoSuchBucket":
                return
            raise self._error("remove bucket " + bucket, exc) from exc

    def buckets_with_prefix(self, prefix: str) -> list[str]:
        try:
            return [b.name for b in self._client.list_buckets() if b.name.startswith(prefix)]
        except S3Error as exc:
            raise self._error("list buckets", exc) from exc

    # --- quotas

    def set_quota(self, bucket: str, capacity_bytes: int) -> QuotaOutcome:
        flavour = self.flavour()
        if flavour is ServerFlavour.seaweedfs:
            body = json.dumps({"quota_size": capacity_bytes, "quota_unit": "B", "quota_enabled": True})
            self._signed("PUT", f"/{bucket}", "seaweedfs-quota=", body.encode(), "application/json")
            return QuotaOutcome(
                True,
                "SeaweedFS enforces the capacity about once a minute: a bucket found over it turns read-only",
            )
        if flavour is ServerFlavour.minio:
            self._minio_admin().bucket_quota_set(bucket, capacity_bytes)
            return QuotaOutcome(
                True, "MinIO enforces the capacity as a hard bucket quota (its scanner checks)"
            )
        return QuotaOutcome(
            False,
            "this S3 server has no bucket quota the platform can set: the capacity is kept by the project's "
            "quota ledger, and usage above it is reported as over quota",
        )

    # --- identities

    def ensure_identity(self, project_id: str) -> AccessKeys | None:
        """The project's user with its policy; new keys when it has none yet, else None (kept keys stand)."""
        name = identity_name(project_id)
        flavour = self.flavour()
        if flavour is ServerFlavour.minio:
            return self._minio_identity(project_id, name)
        if flavour is ServerFlavour.other:
            raise ObjectStorageError(
                f"the S3 server at {self.endpoint} is neither SeaweedFS nor MinIO: the platform cannot make "
                "per-project identities on it",
                permanent=True,
            )
        users = re.findall(r"<UserName>([^<]+)</UserName>", self._iam("ListUsers").text)
        if name not in users:
            self._iam("CreateUser", UserName=name)
        self._iam(
            "PutUserPolicy",
            UserName=name,
            PolicyName=POLICY_NAME,
            PolicyDocument=json.dumps(project_policy(project_id)),
        )
        existing = re.findall(
            r"<AccessKeyId>([^<]+)</AccessKeyId>", self._iam("ListAccessKeys", UserName=name).text
        )
        if existing:
            return None
        return self._new_iam_key(name)

    def rotate_keys(self, project_id: str) -> AccessKeys:
        """New keys for the project's user; the old ones stop working."""
        name = identity_name(project_id)
        if self.flavour() is ServerFlavour.minio:
            keys = _generated_keys(project_id)
            self._minio_admin().user_add(keys.access_key, keys.secret_key)
            self._minio_admin().policy_set(POLICY_NAME + "-" + project_id, user=keys.access_key)
            return keys
        self.ensure_identity(project_id)
        old = re.findall(
            r"<AccessKeyId>([^<]+)</AccessKeyId>", self._iam("ListAccessKeys", UserName=name).text
        )
        keys = self._new_iam_key(name)
        for key in old:
            self._iam("DeleteAccessKey", UserName=name, AccessKeyId=key)
        return keys

    def delete_identity(self, project_id: str) -> None:
        name = identity_name(project_id)
        flavour = self.flavour()
        if flavour is ServerFlavour.other:
            return
        if flavour is ServerFlavour.minio:
            admin = self._minio_admin()
            users = json.loads(admin.user_list() or "{}")
            for access_key, info in users.items():
                if info.get("policyName") == POLICY_NAME + "-" + project_id:
                    admin.user_remove(access_key)
            return
        users = re.findall(r"<UserName>([^<]+)</UserName>", self._iam("ListUsers").text)
        if name not in users:
            return
        for key in re.findall(
            r"<AccessKeyId>([^<]+)</AccessKeyId>", self._iam("ListAccessKeys", UserName=name).text
        ):
            self._iam("DeleteAccessKey", UserName=name, AccessKeyId=key)
        self._iam("DeleteUserPolicy", UserName=name, PolicyName=POLICY_NAME)
        self._iam("DeleteUser", UserName=name)

    # --- plumbing

    def _new_iam_key(self, name: str) -> AccessKeys:
        text = self._iam("CreateAccessKey", UserName=name).text
        access = re.search(r"<AccessKeyId>([^<]+)</AccessKeyId>", text)
        secret = re.search(r"<SecretAccessKey>([^<]+)</SecretAccessKey>", text)
        if access is None or secret is None:
            raise ObjectStorageError(f"the S3 server made no access key for {name}")
        return AccessKeys(access.group(1), secret.group(1))

    def _minio_identity(self, project_id: str, name: str) -> AccessKeys | None:
        admin = self._minio_admin()
        policy = POLICY_NAME + "-" + project_id
        admin.policy_add(policy, policy=project_policy(project_id))
        users = json.loads(admin.user_list() or "{}")
        if any(info.get("policyName") == policy for info in users.values()):
            return None
        keys = _generated_keys(project_id)
        admin.user_add(keys.access_key, keys.secret_key)
        admin.policy_set(policy, user=keys.access_key)
        return keys

    def _minio_admin(self) -> Any:
        from minio import MinioAdmin

        return MinioAdmin(
            endpoint=self.endpoint,
            credentials=StaticProvider(self._credentials.access_key, self._credentials.secret_key),
            secure=self.secure,
            region=self.region,
        )

    def _iam(self, action: str, **parameters: str) -> httpx.Response:
        body = urlencode({"Action": action, "Version": IAM_VERSION, **parameters}).encode()
        return self._signed("POST", "/", "", body, "application/x-www-form-urlencoded")

    def _signed(self, method: str, path: str, query: str, body: bytes, content_type: str) -> httpx.Response:
        url = self.base_url + path + (f"?{query}" if query else "")
        digest = hashlib.sha256(body).hexdigest()
        now = datetime.now(UTC)
        headers: dict[str, str] = {
            "Host": self.endpoint,
            "Content-Type": content_type,
            "x-amz-content-sha256": digest,
            "x-amz-date": now.strftime("%Y%m%dT%H%M%SZ"),
        }
        signed = sign_v4_s3(
            method=method,
            url=urlsplit(url),
            region=self.region,
            headers=headers,  # type: ignore[arg-type]
            credentials=self._credentials,
            content_sha256=digest,
            date=now,
        )
        try:
            response = httpx.request(
                method,
                url,
                content=body,
                headers={k: str(v) for k, v in signed.items()},
                timeout=REQUEST_TIMEOUT_SECONDS,
            )
        except httpx.HTTPError as exc:
            raise ObjectStorageError(f"the S3 server at {self.endpoint} does not answer: {exc}") from exc
        if response.status_code >= 400:
            code = re.search(r"<Code>([^<]+)</Code>", response.text)
            permanent = response.status_code in (400, 401, 403, 404, 405, 501)
            raise ObjectStorageError(
                f"{method} {path}?{query} was refused with HTTP {response.status_code}"
                + (f" ({code.group(1)})" if code else ""),
                permanent=permanent,
            )
        return response

    @staticmethod
    def _error(operation: str, exc: S3Error) -> ObjectStorageError:
        permanent = exc.code in (
            "AccessDenied",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "InvalidBucketName",
        )
        return ObjectStorageError(f"could not {operation}: {exc.code}: {exc.message}", permanent=permanent)


def _generated_keys(project_id: str) -> AccessKeys:
    return AccessKeys(f"mlcp{project_id}{secrets.token_hex(4)}", secrets.token_urlsafe(30))
