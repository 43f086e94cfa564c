"""The kubelet: bound pods get pulled, started, and crash or run to completion, as the knobs decide."""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import re
import shlex
from collections import defaultdict
from typing import Any

from tests.kube_double import resources as r
from tests.kube_double.knobs import Clock, Knobs
from tests.kube_double.objects import (
    TERMINAL,
    deleting,
    matches_rule,
    record_event,
    set_condition,
    uid_of,
)
from tests.kube_double.scheduler import Scheduler
from tests.kube_double.store import Store

_EXIT = re.compile(r"\bexit\s+(\d+)")
_SHELLS = ("sh", "bash", "/bin/sh", "/bin/bash", "/usr/bin/env")


def _script(container: dict[str, Any]) -> str:
    words = [str(w) for w in [*(container.get("command") or []), *(container.get("args") or [])]]
    if len(words) >= 3 and words[0] in _SHELLS and words[1] == "-c":
        return " ".join(words[2:])
    return " ".join(words)


def echo_output(script: str) -> str:
    """What the `echo` commands of a shell line print: the double's stand-in for real output."""
    lines = []
    for segment in re.split(r";|&&|\|\||\n", script):
        segment = segment.strip()
        if segment.startswith("echo ") or segment == "echo":
            try:
                lines.append(" ".join(shlex.split(segment)[1:]))
            except ValueError:
                lines.append(segment[5:])
    return "".join(f"{line}\n" for line in lines)


class Kubelet:
    """Moves pods along: Pending -> (image pull) -> Running -> Succeeded/Failed, or CrashLoopBackOff."""

    def __init__(self, store: Store, knobs: Knobs, clock: Clock) -> None:
        self.store, self.knobs, self.clock = store, knobs, clock
        self.scheduled_at: dict[str, float] = {}
        self.started_at: dict[str, float] = {}
        self._next_ip: dict[str, int] = defaultdict(lambda: 2)
        self.scheduler = Scheduler(store, clock, self.scheduled_at)

    # Rules the knobs decide.

    def _pull_fails(self, container: dict[str, Any]) -> bool:
        return any(
            fnmatch.fnmatchcase(str(container.get("image", "")), p) for p in self.knobs.image_pull_failures
        )

    def exit_code(self, pod: dict[str, Any], container: dict[str, Any]) -> int:
        ruled = matches_rule(self.knobs.exit_codes, pod["metadata"].get("labels"))
        if ruled is not None:
            return int(ruled)
        codes = _EXIT.findall(_script(container))
        return int(codes[-1]) if codes else 0

    def _crashes(self, pod: dict[str, Any]) -> bool:
        if pod["spec"].get("restartPolicy", "Always") != "Always":
            return False
        if matches_rule(self.knobs.crash_loop, pod["metadata"].get("labels")):
            return True
        return any(self.exit_code(pod, c) != 0 for c in pod["spec"].get("containers") or [])

    def log_text(self, pod: dict[str, Any], container: dict[str, Any]) -> str:
        ruled = matches_rule(self.knobs.logs, pod["metadata"].get("labels"))
        return str(ruled) if ruled is not None else echo_output(_script(container))

    # The loop.

    def step(self) -> None:
        pods = sorted(
            self.store.items(r.PODS),
            key=lambda p: (
                p["metadata"]["creationTimestamp"],
                p["metadata"].get("namespace", ""),
                p["metadata"]["name"],
            ),
        )
        live = {uid_of(p) for p in pods}
        for table in (self.scheduled_at, self.started_at):
            for uid in set(table) - live:
                del table[uid]
        free = self.scheduler.free_capacity(pods)
        for pod in pods:
            if deleting(pod) or (pod.get("status") or {}).get("phase") in TERMINAL:
                continue
            if not pod["spec"].get("nodeName"):
                self.scheduler.schedule(pod, free)
            else:
                self._run(pod)

    def next_due(self) -> float | None:
        """When the next timed transition (start delay, run time) happens, if one is waiting."""
        due = []
        for pod in self.store.items(r.PODS):
            uid, phase = uid_of(pod), (pod.get("status") or {}).get("phase")
            if deleting(pod):
                continue  # the kubelet leaves pods being deleted alone, so no timer fires for them
            if (
                phase == "Pending"
                and uid in self.scheduled_at
                and not any(self._pull_fails(c) for c in pod["spec"].get("containers") or [])
            ):
                due.append(self.scheduled_at[uid] + self.knobs.pod_start_delay)
            elif (
                phase == "Running"
                and uid in self.started_at
                and not self._crashes(pod)
                and pod["spec"].get("restartPolicy") != "Always"
            ):
                due.append(self.started_at[uid] + self.knobs.run_seconds)
        return min(due) if due else None

    # Running.

    def _container_id(self, pod: dict[str, Any], container: dict[str, Any]) -> str:
        return "containerd://" + hashlib.sha256(f"{uid_of(pod)}/{container['name']}".encode()).hexdigest()

    def _base_status(
        self, pod: dict[str, Any], container: dict[str, Any], state: dict[str, Any]
    ) -> dict[str, Any]:
        image = str(container.get("image", ""))
        return {
            "name": container["name"],
            "image": image,
            "imageID": "",
            "ready": False,
            "started": False,
            "restartCount": 0,
            "state": state,
            "lastState": {},
        }

    def _initialise(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        node = self.store.find(r.NODES, "", pod["spec"]["nodeName"])
        addresses = ((node or {}).get("status") or {}).get("addresses") or []
        host_ip = next((a["address"] for a in addresses if a.get("type") == "InternalIP"), "10.0.0.1")
        index = int(host_ip.rsplit(".", 1)[-1]) - 1
        pod_ip = f"10.244.{index}.{self._next_ip[host_ip] % 254 + 1}"
        self._next_ip[host_ip] += 1
        status.update(
            hostIP=host_ip,
            hostIPs=[{"ip": host_ip}],
            podIP=pod_ip,
            podIPs=[{"ip": pod_ip}],
            startTime=self.clock.timestamp(),
        )
        conditions = set_condition(self.clock, status.get("conditions"), "Initialized", "True")
        for kind in ("Ready", "ContainersReady"):
            conditions = set_condition(
                self.clock,
                conditions,
                kind,
                "False",
                "ContainersNotReady",
                "containers with unready status: ["
                + " ".join(c["name"] for c in pod["spec"]["containers"])
                + "]",
            )
        status["conditions"] = conditions
        status["containerStatuses"] = [
            self._base_status(pod, c, {"waiting": {"reason": "ContainerCreating"}})
            for c in pod["spec"]["containers"]
        ]

    def _pull(self, pod: dict[str, Any], status: dict[str, Any]) -> bool:
        """Advance failing image pulls; True while some image cannot be pulled."""
        failing = False
        for container, container_status in zip(
            pod["spec"]["containers"], status["containerStatuses"], strict=True
        ):
            if not self._pull_fails(container):
                continue
            failing = True
            image, waiting = container.get("image"), container_status["state"].get("waiting") or {}
            if waiting.get("reason") == "ContainerCreating":
                message = (
                    f'failed to pull and unpack image "{image}": failed to resolve reference "{image}": '
                    f"{image}: not found"
                )
                container_status["state"] = {"waiting": {"reason": "ErrImagePull", "message": message}}
                record_event(
                    self.store, pod, "Failed", f'Failed to pull image "{image}": {message}', "Warning"
                )
            elif waiting.get("reason") == "ErrImagePull":
                message = f'Back-off pulling image "{image}"'
                container_status["state"] = {"waiting": {"reason": "ImagePullBackOff", "message": message}}
                record_event(self.store, pod, "BackOff", message, "Warning")
        return failing

    def _start(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        now = self.clock.timestamp()
        crashing = self._crashes(pod)
        statuses = []
        for container in pod["spec"]["containers"]:
            for reason, message in (
                ("Pulled", f'Container image "{container.get("image")}" already present on machine'),
                ("Created", f"Created container {container['name']}"),
                ("Started", f"Started container {container['name']}"),
            ):
                record_event(self.store, pod, reason, message)
            container_status = self._base_status(pod, container, {"running": {"startedAt": now}})
            container_status["containerID"] = self._container_id(pod, container)
            container_status["imageID"] = f"{container.get('image')}@sha256:" + "0" * 64
            if crashing:
                code = self.exit_code(pod, container) or 1
                container_status.update(
                    restartCount=1,
                    state={
                        "waiting": {
                            "reason": "CrashLoopBackOff",
                            "message": f"back-off 10s restarting failed container={container['name']} pod="
                            f"{pod['metadata']['name']}_{pod['metadata']['namespace']}({uid_of(pod)})",
                        }
                    },
                    lastState={
                        "terminated": {
                            "exitCode": code,
                            "reason": "Error",
                            "startedAt": now,
                            "finishedAt": now,
                            "containerID": container_status["containerID"],
                        }
                    },
                )
                record_event(
                    self.store,
                    pod,
                    "BackOff",
                    f"Back-off restarting failed container "
                    f"{container['name']} in pod {pod['metadata']['name']}",
                    "Warning",
                )
            else:
                container_status.update(ready=True, started=True)
            statuses.append(container_status)
        status.update(phase="Running", containerStatuses=statuses)
        ready = "False" if crashing else "True"
        why = "ContainersNotReady" if crashing else None
        for kind in ("Ready", "ContainersReady"):
            status["conditions"] = set_condition(self.clock, status["conditions"], kind, ready, why)
        self.started_at[uid_of(pod)] = self.clock.now()

    def _finish(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        now = self.clock.timestamp()
        codes = []
        for container, container_status in zip(
            pod["spec"]["containers"], status["containerStatuses"], strict=True
        ):
            code = self.exit_code(pod, container)
            codes.append(code)
            started = (container_status["state"].get("running") or {}).get("startedAt", now)
            terminated = {
                "exitCode": code,
                "reason": "Completed" if code == 0 else "Error",
                "startedAt": started,
                "finishedAt": now,
                "containerID": container_status.get("containerID", ""),
            }
            message = matches_rule(self.knobs.termination_messages, pod["metadata"].get("labels"))
            if message is not None:
                terminated["message"] = str(message)
            container_status.update(ready=False, started=False, state={"terminated": terminated})
        failed = any(codes)
        status["phase"] = "Failed" if failed else "Succeeded"
        for kind in ("Ready", "ContainersReady"):
            status["conditions"] = set_condition(
                self.clock, status["conditions"], kind, "False", "PodFailed" if failed else "PodCompleted"
            )

    def _run(self, pod: dict[str, Any]) -> None:
        uid, status = uid_of(pod), copy.deepcopy(pod.get("status") or {})
        self.scheduled_at.setdefault(uid, self.clock.now())
        now = self.clock.now()
        if status.get("phase", "Pending") == "Pending":
            if not status.get("containerStatuses"):
                self._initialise(pod, status)
            elif self._pull(pod, status):
                pass
            elif now >= self.scheduled_at[uid] + self.knobs.pod_start_delay:
                self._start(pod, status)
        elif status["phase"] == "Running" and pod["spec"].get("restartPolicy") != "Always":
            self.started_at.setdefault(uid, now)
            if now >= self.started_at[uid] + self.knobs.run_seconds:
                self._finish(pod, status)
        current = self.store.find(r.PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
        if current is not None and uid_of(current) == uid:
            self.store.save(r.PODS, {**current, "status": status})
