"""Commits without the workflow around them: the local snapshot (deterministic, restorable), the registry v2
checks against a real distribution registry (Debian's docker-registry), and the Kubernetes commit Job on
the API double (its termination message, a retry that commits nothing twice, a pod not running, a push
refused)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from activities.image_commits import PublishRequest, internal_tag, publish_to_registry
from activities.kube_commits import KubernetesCommitter, job_name
from activities.oci_layout import ImageStore
from activities.registry import Registry, RegistryError, RegistryManifest
from activities.runtime import CommitFailed
from config import Settings
from models.images import CommitProgress, CommitResult, CommitSource
from tests.activities.kube_harness import CONTAINER, Kube
from tests.kube_double import resources as r

SOURCE = CommitSource(
    image_id="img1",
    project_id=CONTAINER.project_id,
    container_id=CONTAINER.resource_id,
    container_kind="container",
    owner="alice",
    name="mymodel",
    tag="v1",
    base_image="python:3.11",
)


def tree(root: Path) -> Path:
    (root / "work").mkdir(parents=True)
    (root / "work" / "model.txt").write_text("trained\n")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    (root / "link").symlink_to("work/model.txt")
    return root


def test_the_same_tree_gives_the_same_digest_and_restores(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    first = store.snapshot(tree(tmp_path / "a"), lambda _: None)
    time.sleep(0.01)
    copy = tmp_path / "b"
    shutil.copytree(tmp_path / "a", copy, symlinks=True)
    (copy / "work" / "model.txt").touch()  # new mtime, same content
    assert store.snapshot(copy, lambda _: None).digest == first.digest
    (copy / "work" / "model.txt").write_text("retrained\n")
    assert store.snapshot(copy, lambda _: None).digest != first.digest

    store.tag("mlcp/p/mymodel:v1", first.digest)
    restored = tmp_path / "restored"
    restored.mkdir()
    store.restore(first.digest, restored)
    assert (restored / "work" / "model.txt").read_text() == "trained\n"
    assert (restored / "run.sh").stat().st_mode & 0o111 and (restored / "link").is_symlink()
    index = json.loads((tmp_path / "store" / "index.json").read_text())
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]] == [
        "mlcp/p/mymodel:v1"
    ]
    store.untag_exact("mlcp/p/mymodel:v1")
    assert not store.has(first.digest)


# ---- a real registry ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serve_registry(folder: Path, read_only: bool = False, password: str = "") -> Iterator[str]:
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("docker-registry is not installed (Debian: apt-get install docker-registry)")
    port = _free_port()
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "config.yml"
    readonly = "  maintenance:\n    readonly:\n      enabled: true\n" if read_only else ""
    auth = ""
    if password:  # htpasswd wants bcrypt, which the C library's crypt makes
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt
        (folder / "htpasswd").write_text(
            f"robot:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n"
        )
        auth = f"auth:\n  htpasswd:\n    realm: mlcp\n    path: {folder / 'htpasswd'}\n"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {folder / 'data'}\n  delete:\n    enabled: true\n{readonly}"
        f"http:\n  addr: 127.0.0.1:{port}\n{auth}"
    )
    process = subprocess.Popen(
        [binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        give_up = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/").status_code in (200, 401):
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < give_up and process.poll() is None, "the registry did not start"
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    for address in _serve_registry(tmp_path / "registry"):
        client = Registry(address, insecure=True)
        yield client
        client.close()


def _local_committer(tmp_path: Path, registry: Registry | None) -> Any:
    from activities.local import LocalRuntime
    from activities.local_commits import LocalCommitter
    from services.kinds import runtime_kinds

    runtime = LocalRuntime(tmp_path / "home", runtime_kinds(), tools=tmp_path / "tools")
    folder = tree(
        tmp_path / "home" / "runtime" / f"mlcp-{SOURCE.project_id}" / f"container-{SOURCE.container_id}"
    )
    runtime.commit_folder = lambda *_: folder  # type: ignore[method-assign]  # as if it were running
    return LocalCommitter(runtime, registry, "mlcp")


def test_a_local_commit_pushes_once_and_the_registry_confirms_its_digests(
    tmp_path: Path, registry: Registry
) -> None:
    committer = _local_committer(tmp_path, registry)
    progress: list[CommitProgress] = []
    result = committer.commit(SOURCE, progress.append)
    repository = f"mlcp/{SOURCE.project_id}/mymodel"
    assert (result.repository, result.internal_tag, result.registry) == (
        repository,
        "commit-img1",
        registry.address,
    )
    assert {p.stage for p in progress} == {"committing", "pushing"}
    pushed = registry.manifest(repository, internal_tag("img1"))
    assert (
        pushed is not None and pushed.digest == result.digest and pushed.config_digest == result.config_digest
    )

    again = committer.commit(SOURCE, progress.append)  # a retry: the same image, nothing new
    assert again.digest == result.digest

    published = committer.publish(PublishRequest(source=SOURCE, result=result))
    assert published.reference == f"{registry.address}/{repository}@{result.digest}"
    tagged = registry.manifest(repository, "v1")
    assert tagged is not None and tagged.digest == result.digest

    wrong = result.model_copy(update={"config_digest": "sha256:" + "1" * 64})
    with pytest.raises(CommitFailed) as mismatch:
        publish_to_registry(registry, PublishRequest(source=SOURCE, result=wrong))
    assert mismatch.value.reason == "DigestMismatch"

    committer.remove(PublishRequest(source=SOURCE, result=result))
    assert registry.manifest(repository, "v1") is None


def test_a_read_only_registry_refuses_the_push_for_good(tmp_path: Path) -> None:
    for address in _serve_registry(tmp_path / "registry", read_only=True):
        committer = _local_committer(tmp_path, Registry(address, insecure=True))
        with pytest.raises(RegistryError) as refused:
            committer.commit(SOURCE, lambda _: None)
        assert refused.value.permanent


def test_a_registry_with_credentials_takes_the_right_ones_only(tmp_path: Path) -> None:
    for address in _serve_registry(tmp_path / "registry", password="s3cret-pass"):
        committer = _local_committer(tmp_path, Registry(address, "robot", "s3cret-pass", insecure=True))
        result = committer.commit(SOURCE, lambda _: None)
        assert committer.publish(PublishRequest(source=SOURCE, result=result)).digest == result.digest
        with pytest.raises(RegistryError) as refused:
            Registry(address, "robot", "wrong", insecure=True).manifest(result.repository, "v1")
        assert refused.value.permanent and "401" in str(refused.value)


# ---- Kubernetes: the commit Job on the double -----------------------------------------------------


class PushedWhenJobRuns:
    """A registry that holds the internal tag once the commit Job has succeeded, as a real push would."""

    def __init__(self, kube: Kube, config_digest: str) -> None:
        self.address = "registry.example:5000"
        self.kube, self.config_digest = kube, config_digest
        self.manifests: dict[tuple[str, str], RegistryManifest] = {}

    def _job_succeeded(self) -> bool:
        jobs = self.kube.double.objects(r.JOBS, "mlcp-commits")
        return any(job.get("status", {}).get("succeeded") for job in jobs)

    def manifest(self, repository: str, reference: str) -> RegistryManifest | None:
        if (
            (repository, reference) not in self.manifests
            and reference.startswith("commit-")
            and self._job_succeeded()
        ):
            body = json.dumps({"config": {"digest": self.config_digest}, "layers": [{"size": 5}]}).encode()
            self.manifests[(repository, reference)] = RegistryManifest(
                "sha256:" + "d" * 64, "application/json", body
            )
        return self.manifests.get((repository, reference))

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        self.manifests[(repository, reference)] = RegistryManifest("sha256:" + "d" * 64, media_type, body)
        return "sha256:" + "d" * 64

    def delete_manifest(self, repository: str, digest: str) -> bool:
        self.manifests = {key: value for key, value in self.manifests.items() if value.digest != digest}
        return True


@pytest.fixture
def running_container(kube: Kube) -> Kube:
    kube.project()
    kube.runtime.apply_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mlcp-commits"}})
    kube.runtime.apply(CONTAINER)
    kube.settle()
    return kube


def _committer(kube: Kube, registry: Any) -> KubernetesCommitter:
    settings = Settings(
        registry_address=registry.address, registry_username="robot", registry_password="s3cret"
    )

    def poll(_: float) -> None:  # the double settles without moving its clock: a finished Job stays
        kube.double.settle(advance_clock=False)

    return KubernetesCommitter(kube.runtime, registry, settings, sleep=poll)


def test_the_commit_job_runs_on_the_pods_node_and_a_retry_commits_nothing_twice(
    running_container: Kube,
) -> None:
    kube = running_container
    config = "sha256:" + "c" * 64
    kube.double.knobs.exit_codes = {f"job-name={job_name('img1')}": 0}
    kube.double.knobs.termination_messages = {
        f"job-name={job_name('img1')}": json.dumps({"config_digest": config, "size_bytes": 4096})
    }
    registry = PushedWhenJobRuns(kube, config)
    committer = _committer(kube, registry)
    result = committer.commit(SOURCE, lambda _: None)
    assert (result.config_digest, result.size_bytes, result.digest) == (config, 4096, "sha256:" + "d" * 64)
    assert any("volumes" in note for note in result.notes)

    (job,) = kube.double.objects(r.JOBS, "mlcp-commits")
    pod_spec = job["spec"]["template"]["spec"]
    (pod,) = [
        p for p in kube.objects(r.PODS) if p["metadata"]["labels"].get("mlcp.io/resource-id") == "c0ntainer1"
    ]
    terms = pod_spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms[0]["matchFields"][0]["values"] == [pod["spec"]["nodeName"]]
    env = {item["name"]: item["value"] for item in pod_spec["containers"][0]["env"]}
    assert env["CONTAINER_ID"] == pod["status"]["containerStatuses"][0]["containerID"].removeprefix(
        "containerd://"
    )
    assert env["TARGET"] == f"registry.example:5000/mlcp/{CONTAINER.project_id}/mymodel:commit-img1"
    assert job["spec"]["backoffLimit"] == 0 and job["metadata"]["labels"]["mlcp.io/kind"] == "image-commit"
    secret = kube.double.objects(r.SECRETS, "mlcp-commits")[0]
    assert secret["type"] == "kubernetes.io/dockerconfigjson" and "s3cret" not in json.dumps(job)

    committer.clean_up(SOURCE)
    kube.settle()
    assert kube.double.objects(r.JOBS, "mlcp-commits") == []
    assert committer.commit(SOURCE, lambda _: None).digest == result.digest  # the pushed tag is found
    assert kube.double.objects(r.JOBS, "mlcp-commits") == []  # and no Job is made again

    published = committer.publish(PublishRequest(source=SOURCE, result=result))
    assert published.reference == f"registry.example:5000/mlcp/{CONTAINER.project_id}/mymodel@{result.digest}"
    committer.clean_up(SOURCE)  # absent is success


def test_a_commit_fails_with_its_reason(running_container: Kube) -> None:
    kube = running_container
    registry = PushedWhenJobRuns(kube, "sha256:" + "c" * 64)
    committer = _committer(kube, registry)
    with pytest.raises(CommitFailed) as not_running:
        committer.commit(SOURCE.model_copy(update={"container_id": "n0such"}), lambda _: None)
    assert not_running.value.reason == "ContainerNotRunning"

    kube.double.knobs.exit_codes = {f"job-name={job_name('img1')}": 3}
    kube.double.knobs.termination_messages = {
        f"job-name={job_name('img1')}": "push: denied: requested access"
    }
    with pytest.raises(CommitFailed) as refused:
        committer.commit(SOURCE, lambda _: None)
    assert (refused.value.reason, refused.value.message) == ("PushRefused", "push: denied: requested access")

    nowhere = KubernetesCommitter(kube.runtime, None, Settings())
    with pytest.raises(CommitFailed) as no_registry:
        nowhere.commit(SOURCE, lambda _: None)
    assert no_registry.value.reason == "NoRegistry"


def test_commit_result_round_trips() -> None:
    result = CommitResult(repository="r", internal_tag="t", digest="d", config_digest="c", size_bytes=1)
    assert CommitResult.model_validate_json(result.model_dump_json()) == result
