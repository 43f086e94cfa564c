"""The settings tests turn to shape the simulated cluster, and the clock the simulation runs on."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass
class NodePool:
    """N identical fake nodes; `labels` lets tests model a GPU model (`nvidia.com/gpu.product`)."""

    count: int = 2
    cpu: str = "32"
    memory: str = "128Gi"
    gpu: int = 4
    pods: int = 110
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Knobs:
    """Live settings; change them at any time, the next request or controller step sees them.

    Label-selector keyed rules (`crash_loop`, `exit_codes`, `logs`) match a pod's labels, so
    `"job-name=train"` picks the pods of Job `train`; the first matching rule wins.
    """

    pod_start_delay: float = 0.0
    """Seconds on the double's clock from a pod being scheduled to it running."""
    run_seconds: float = 0.0
    """Seconds a run-to-completion pod (restartPolicy Never/OnFailure) runs before its containers exit."""
    image_pull_failures: list[str] = field(default_factory=list)
    """fnmatch patterns; containers whose image matches wait in ErrImagePull, then ImagePullBackOff."""
    crash_loop: list[str] = field(default_factory=list)
    """Label selectors; matching pods' containers start, exit 1 and wait in CrashLoopBackOff."""
    exit_codes: dict[str, int] = field(default_factory=dict)
    """Label selector -> exit code of matching pods' containers, before the `exit N` command rule."""
    logs: dict[str, str] = field(default_factory=dict)
    """Label selector -> log text of matching pods, instead of the `echo` lines of their command."""
    termination_messages: dict[str, str] = field(default_factory=dict)
    """Label selector -> what matching pods' containers wrote to their termination-log when they ended."""
    error_rate: float = 0.0
    """Fraction of API requests answered with an injected 5xx Status, decided by the seeded RNG."""
    error_statuses: tuple[int, ...] = (500, 503)
    fault_verbs: frozenset[str] | None = None
    """Restrict injected errors to these verbs (get, list, create, update, patch, delete, ...)."""
    latency_seconds: float = 0.0
    """Real time added to every API request."""
    tick_seconds: float = 0.02
    """How often the background loop steps the controllers."""
    auto_step: bool = True
    """Whether the background loop runs at all; tests wanting full control set it False and call step()."""


class Clock:
    """Wall-clock time plus an offset that `settle()` and `advance()` move forward, so delays cost nothing."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += max(seconds, 0.0)

    def advance_to(self, when: float) -> None:
        self.advance(when - self.now())

    def timestamp(self, when: float | None = None) -> str:
        moment = datetime.fromtimestamp(self.now() if when is None else when, UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
