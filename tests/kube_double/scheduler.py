"""Fake nodes and the scheduler: pods bind to the first node with room, or stay Pending as Unschedulable."""

from __future__ import annotations

import copy
from collections import Counter
from fractions import Fraction
from typing import Any

from tests.kube_double import resources as r
from tests.kube_double.knobs import Clock, NodePool
from tests.kube_double.objects import TERMINAL, condition, record_event, set_condition, uid_of
from tests.kube_double.quantities import parse_quantity, pod_resources
from tests.kube_double.store import Store

GPU = "nvidia.com/gpu"
NODE_MANAGED_LABEL = "kube-double/node-pool"


def set_nodes(store: Store, pools: tuple[NodePool, ...]) -> None:
    """Replace the nodes the double made earlier by `pools`' nodes, named node-0, node-1, ..."""
    with store.lock:
        for node in store.items(r.NODES):
            if NODE_MANAGED_LABEL in (node["metadata"].get("labels") or {}):
                store.remove(r.NODES, node)
        number = 0
        for pool_index, pool in enumerate(pools):
            for _ in range(pool.count):
                name = f"node-{number}"
                labels = {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    NODE_MANAGED_LABEL: str(pool_index),
                    **pool.labels,
                }
                created = store.create(
                    r.NODES, "", {"metadata": {"name": name, "labels": labels}, "spec": {}}
                )
                capacity = {
                    "cpu": pool.cpu,
                    "memory": pool.memory,
                    "pods": str(pool.pods),
                    "ephemeral-storage": "500Gi",
                }
                if pool.gpu:
                    capacity[GPU] = str(pool.gpu)
                created["status"] = {
                    "capacity": capacity,
                    "allocatable": dict(capacity),
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "message": "kubelet is posting ready status",
                        }
                    ],
                    "addresses": [
                        {"type": "InternalIP", "address": f"10.0.0.{number + 1}"},
                        {"type": "Hostname", "address": name},
                    ],
                }
                store.save(r.NODES, created)
                number += 1


class Scheduler:
    """Honours resource requests (limits stand in for missing requests), `nodeSelector` and cordoned nodes."""

    def __init__(self, store: Store, clock: Clock, scheduled_at: dict[str, float]) -> None:
        self.store, self.clock, self.scheduled_at = store, clock, scheduled_at

    def free_capacity(self, pods: list[dict[str, Any]]) -> dict[str, dict[str, Fraction]]:
        free = {
            node["metadata"]["name"]: {
                k: parse_quantity(v) for k, v in ((node.get("status") or {}).get("allocatable") or {}).items()
            }
            for node in self.store.items(r.NODES)
        }
        for pod in pods:
            node = pod["spec"].get("nodeName")
            if node in free and (pod.get("status") or {}).get("phase") not in TERMINAL:
                self._take(free[node], pod)
        return free

    @staticmethod
    def _take(free: dict[str, Fraction], pod: dict[str, Any]) -> None:
        for name, amount in {**pod_resources(pod), "pods": Fraction(1)}.items():
            free[name] = free.get(name, Fraction(0)) - amount

    def _misfits(self, pod: dict[str, Any], node: dict[str, Any], free: dict[str, Fraction]) -> list[str]:
        if node["spec"].get("unschedulable"):
            return ["node(s) were unschedulable"]
        labels = node["metadata"].get("labels") or {}
        if any(labels.get(k) != v for k, v in (pod["spec"].get("nodeSelector") or {}).items()):
            return ["node(s) didn't match Pod's node affinity/selector"]
        wanted = {**pod_resources(pod), "pods": Fraction(1)}
        return [
            f"Insufficient {name}" if name != "pods" else "Too many pods"
            for name, amount in sorted(wanted.items())
            if amount > 0 and free.get(name, Fraction(0)) < amount
        ]

    def schedule(self, pod: dict[str, Any], free: dict[str, dict[str, Fraction]]) -> None:
        nodes = sorted(self.store.items(r.NODES), key=lambda n: n["metadata"]["name"])
        reasons: Counter[str] = Counter()
        for node in nodes:
            name = node["metadata"]["name"]
            misfits = self._misfits(pod, node, free.get(name, {}))
            if not misfits:
                self._take(free[name], pod)
                self._bind(pod, name)
                return
            reasons.update(misfits)
        if not nodes:
            message = "no nodes available to schedule pods"
        else:
            listed = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
            message = f"0/{len(nodes)} nodes are available: {listed}."
        status = copy.deepcopy(pod.get("status") or {})
        previous = condition(status.get("conditions") or [], "PodScheduled")
        status["conditions"] = set_condition(
            self.clock, status.get("conditions"), "PodScheduled", "False", "Unschedulable", message
        )
        self.store.save(r.PODS, {**pod, "status": status})
        if previous is None or previous.get("message") != message:
            record_event(self.store, pod, "FailedScheduling", message, "Warning", "default-scheduler")

    def _bind(self, pod: dict[str, Any], node: str) -> None:
        bound = copy.deepcopy(pod)
        bound["spec"]["nodeName"] = node
        bound["status"]["conditions"] = set_condition(
            self.clock, bound["status"].get("conditions"), "PodScheduled", "True"
        )
        saved = self.store.save(r.PODS, bound)
        self.scheduled_at[uid_of(pod)] = self.clock.now()
        record_event(
            self.store,
            saved,
            "Scheduled",
            f"Successfully assigned {pod['metadata']['namespace']}/{pod['metadata']['name']} to {node}",
            component="default-scheduler",
        )
