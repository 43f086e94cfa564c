"""Running a command in a pod's main container, behind an interface a test can stand in for."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream
from kubernetes.stream.ws_client import ERROR_CHANNEL
from websocket import WebSocketException

from activities.kube_manifests import CONTAINER_NAME


class ClusterNotReady(RuntimeError):
    """Something the step needs is not there yet (the anchor, a running launcher, an exec session):
    a later attempt may succeed, so the activity retries."""


class PodExec(Protocol):
    """Runs `argv` in a pod's main container; answers its exit code and output. Raises ClusterNotReady
    when no session could be had."""

    def __call__(self, namespace: str, pod: str, argv: Sequence[str]) -> tuple[int, str]: ...


def _exit_status(text: str) -> tuple[int, str]:
    """The exec error channel's Status: (exit code, what it says besides)."""
    try:
        status = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        status = {}
    if not isinstance(status, dict):
        status = {}
    if status.get("status") == "Success":
        return 0, ""
    causes = (status.get("details") or {}).get("causes") or []
    code = next((c.get("message") for c in causes if c.get("reason") == "ExitCode"), None)
    if code is not None and str(code).isdigit():
        return int(code), ""
    return 1, str(status.get("message") or "the exec session ended without an exit status")


class KubernetesPodExec:
    """Exec over the API's websocket, on a client of its own: `stream` swaps the client's transport while
    it connects, which would hijack other threads' calls on a shared one."""

    def __init__(self, configuration: client.Configuration, timeout_seconds: float = 60) -> None:
        self._configuration, self._timeout = configuration, timeout_seconds

    def __call__(self, namespace: str, pod: str, argv: Sequence[str]) -> tuple[int, str]:
        with client.ApiClient(self._configuration) as api_client:
            core = client.CoreV1Api(api_client)
            try:
                session = stream(
                    core.connect_get_namespaced_pod_exec,
                    pod,
                    namespace,
                    command=list(argv),
                    container=CONTAINER_NAME,
                    stdin=False,
                    stdout=True,
                    stderr=True,
                    tty=False,
                    _preload_content=False,
                )
            except (ApiException, WebSocketException, OSError) as error:
                raise ClusterNotReady(f"exec into {namespace}/{pod} failed: {error}") from error
            try:
                session.run_forever(timeout=self._timeout)
                if session.is_open():
                    raise ClusterNotReady(f"exec into {namespace}/{pod} took over {self._timeout:g}s")
                code, said = _exit_status(session.read_channel(ERROR_CHANNEL))
                return code, str(session.read_all()) + said
            except (WebSocketException, OSError) as error:
                raise ClusterNotReady(f"exec into {namespace}/{pod} broke off: {error}") from error
            finally:
                session.close()
