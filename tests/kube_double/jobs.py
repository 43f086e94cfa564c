"""Jobs: pods until enough succeed, backoff limit, deadlines, suspension and TTL after finishing."""

from __future__ import annotations

import copy
from typing import Any

from tests.kube_double import resources as r
from tests.kube_double.knobs import Clock, Knobs
from tests.kube_double.objects import (
    TERMINAL,
    ControllerBase,
    condition,
    deleting,
    owned_by,
    pod_from_template,
    pod_ready,
    record_event,
    set_condition,
    uid_of,
    without_zeros,
)
from tests.kube_double.store import Store
from tests.kube_double.workloads import BACKGROUND


class JobController(ControllerBase):
    def __init__(self, store: Store, knobs: Knobs, clock: Clock) -> None:
        super().__init__(store, knobs, clock)
        self.job_started: dict[str, float] = {}
        self.job_finished: dict[str, float] = {}
        self.job_counted: dict[str, dict[str, set[str]]] = {}

    def next_due(self) -> float | None:
        due = []
        for job in self.store.items(r.JOBS):
            uid, spec = uid_of(job), job["spec"]
            if deleting(job):
                continue
            if uid in self.job_finished and spec.get("ttlSecondsAfterFinished") is not None:
                due.append(self.job_finished[uid] + spec["ttlSecondsAfterFinished"])
            elif (
                uid in self.job_started and uid not in self.job_finished and spec.get("activeDeadlineSeconds")
            ):
                due.append(self.job_started[uid] + spec["activeDeadlineSeconds"])
        return min(due) if due else None

    def step(self) -> None:
        for job in self.store.items(r.JOBS):
            if not deleting(job):
                self._job(job)

    def _finish_job(
        self,
        job: dict[str, Any],
        status: dict[str, Any],
        active: list[dict[str, Any]],
        outcome: tuple[str, str, str],
    ) -> None:
        kind, reason, message = outcome
        for pod in active:
            self._delete(r.PODS, pod, BACKGROUND)
        first = "SuccessCriteriaMet" if kind == "Complete" else "FailureTarget"
        for condition_kind in (first, kind):
            status["conditions"] = set_condition(
                self.clock, status.get("conditions"), condition_kind, "True", reason, message
            )
        status.update(active=0, ready=0)
        if kind == "Complete":
            status["completionTime"] = self.clock.timestamp()
        self.job_finished[uid_of(job)] = self.clock.now()
        record_event(
            self.store,
            job,
            reason,
            message if kind == "Failed" else "Job completed",
            "Warning" if kind == "Failed" else "Normal",
            "job-controller",
        )

    def _job(self, job: dict[str, Any]) -> None:
        spec, uid = job["spec"], uid_of(job)
        status = copy.deepcopy(job.get("status") or {})
        conditions = status.get("conditions") or []
        if any(condition(conditions, kind) for kind in ("Complete", "Failed")):
            self.job_finished.setdefault(uid, self.clock.now())
            ttl = spec.get("ttlSecondsAfterFinished")
            if ttl is not None and self.clock.now() >= self.job_finished[uid] + ttl:
                self._delete(r.JOBS, job, BACKGROUND)
            return
        pods = owned_by(r.PODS, self.store, job)
        counted = self.job_counted.setdefault(uid, {"Succeeded": set(), "Failed": set()})
        for pod in pods:
            if pod["status"].get("phase") in counted:
                counted[pod["status"]["phase"]].add(uid_of(pod))
        active = [p for p in pods if p["status"].get("phase") not in TERMINAL]
        succeeded, failed = len(counted["Succeeded"]), len(counted["Failed"])
        status.update(succeeded=succeeded, failed=failed, uncountedTerminatedPods={})
        if spec.get("suspend"):
            for pod in active:
                self._delete(r.PODS, pod, BACKGROUND)
            status["conditions"] = set_condition(
                self.clock, conditions, "Suspended", "True", "JobSuspended", "Job suspended"
            )
            status.update(active=0, ready=0)
            status.pop("startTime", None)  # as in the real API: the deadline restarts on resume
            self.job_started.pop(uid, None)
        else:
            if condition(conditions, "Suspended"):
                status["conditions"] = set_condition(
                    self.clock, conditions, "Suspended", "False", "JobResumed", "Job resumed"
                )
            self.job_started.setdefault(uid, self.clock.now())
            status.setdefault("startTime", self.clock.timestamp())
            deadline = spec.get("activeDeadlineSeconds")
            if failed > spec.get("backoffLimit", 6):
                self._finish_job(
                    job,
                    status,
                    active,
                    ("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"),
                )
            elif deadline and self.clock.now() >= self.job_started[uid] + deadline:
                self._finish_job(
                    job,
                    status,
                    active,
                    ("Failed", "DeadlineExceeded", "Job was active longer than specified deadline"),
                )
            elif succeeded >= spec.get("completions", 1):
                self._finish_job(
                    job,
                    status,
                    active,
                    ("Complete", "CompletionsReached", "Reached expected number of succeeded pods"),
                )
            else:
                wanted = min(spec.get("parallelism", 1), spec.get("completions", 1) - succeeded) - len(active)
                for _ in range(wanted):
                    body = pod_from_template(spec["template"], r.JOBS, job)
                    body["metadata"]["generateName"] = f"{job['metadata']['name']}-"
                    created = self._create(r.PODS, job, body, "job-controller")
                    if created is None:
                        break
                    active.append(created)
                    record_event(
                        self.store,
                        job,
                        "SuccessfulCreate",
                        f"Created pod: {created['metadata']['name']}",
                        component="job-controller",
                    )
                status.update(active=len(active), ready=sum(pod_ready(p) for p in active))
        self._save_status(r.JOBS, job, without_zeros(status, "active", "succeeded", "failed"))
