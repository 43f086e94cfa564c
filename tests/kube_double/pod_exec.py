"""Exec into the double's pods, which run nothing: the command runs here with /bin/sh instead, each pod's
/etc/mlcp (where the hostfile goes) being a folder of its own, so the real hostfile script is what runs."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from activities.kube_exec import KubernetesPodExec
from models.clusters import HOSTFILE_FOLDER


class PodFolders:
    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, namespace: str, pod: str) -> Path:
        return self.root / namespace / pod

    def __call__(self, namespace: str, pod: str, argv: Sequence[str]) -> tuple[int, str]:
        folder = self.folder(namespace, pod)
        folder.mkdir(parents=True, exist_ok=True)
        command = [part.replace(HOSTFILE_FOLDER, str(folder)) for part in argv]
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        return done.returncode, done.stdout + done.stderr


@pytest.fixture
def pod_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PodFolders]:
    """Every exec a runtime built from settings makes lands in these folders."""
    folders = PodFolders(tmp_path / "pods")
    monkeypatch.setattr(
        KubernetesPodExec, "__call__", lambda self, namespace, pod, argv: folders(namespace, pod, argv)
    )
    yield folders
