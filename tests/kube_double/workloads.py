"""Deployments (through replica sets) and stateful sets: pods from templates, rollouts, status."""

from __future__ import annotations

import copy
from typing import Any

from tests.kube_double import resources as r
from tests.kube_double.objects import (
    TERMINAL,
    ControllerBase,
    deleting,
    owned_by,
    owner_reference,
    pod_from_template,
    pod_ready,
    record_event,
    set_condition,
    template_hash,
    without_zeros,
)

BACKGROUND = {"propagationPolicy": "Background"}


def _max_unavailable(spec: dict[str, Any]) -> int:
    value = ((spec.get("strategy") or {}).get("rollingUpdate") or {}).get("maxUnavailable", "25%")
    if isinstance(value, str) and value.endswith("%"):
        return int(spec.get("replicas", 1) * int(value[:-1]) // 100)
    return int(value)


class WorkloadControllers(ControllerBase):
    def step(self) -> None:
        self._deployments()
        self._replica_sets()
        self._stateful_sets()

    def _deployments(self) -> None:
        for deployment in self.store.items(r.DEPLOYMENTS):
            if not deleting(deployment):
                self._deployment(deployment)

    def _scale(self, deployment: dict[str, Any], replica_set: dict[str, Any], replicas: int) -> None:
        before = replica_set["spec"].get("replicas", 0)
        if before == replicas:
            return
        scaled = copy.deepcopy(replica_set)
        scaled["spec"]["replicas"] = replicas
        self.store.save(r.REPLICA_SETS, scaled)
        direction = "up" if replicas > before else "down"
        record_event(
            self.store,
            deployment,
            "ScalingReplicaSet",
            f"Scaled {direction} replica set {replica_set['metadata']['name']} from {before} to {replicas}",
            component="deployment-controller",
        )

    def _deployment(self, deployment: dict[str, Any]) -> None:
        spec, name = deployment["spec"], deployment["metadata"]["name"]
        replicas, pod_hash = spec.get("replicas", 1), template_hash(spec.get("template"))
        owned = owned_by(r.REPLICA_SETS, self.store, deployment)
        current = next(
            (rs for rs in owned if rs["metadata"].get("labels", {}).get("pod-template-hash") == pod_hash),
            None,
        )
        if not spec.get("paused"):
            if current is None:
                template = copy.deepcopy(spec["template"])
                template["metadata"].setdefault("labels", {})["pod-template-hash"] = pod_hash
                selector = copy.deepcopy(spec["selector"])
                selector.setdefault("matchLabels", {})["pod-template-hash"] = pod_hash
                revisions = [
                    int(rs["metadata"].get("annotations", {}).get("deployment.kubernetes.io/revision", 0))
                    for rs in owned
                ]
                body = {
                    "metadata": {
                        "name": f"{name}-{pod_hash}",
                        "labels": template["metadata"]["labels"],
                        "annotations": {
                            "deployment.kubernetes.io/revision": str(max(revisions, default=0) + 1)
                        },
                        "ownerReferences": [owner_reference(r.DEPLOYMENTS, deployment)],
                    },
                    "spec": {"replicas": 0, "selector": selector, "template": template},
                }
                current = self._create(r.REPLICA_SETS, deployment, body, "deployment-controller")
            if current is not None:
                self._scale(deployment, current, replicas)
            for old in owned:
                if old is not current:
                    self._scale(deployment, old, 0)
        owned = owned_by(r.REPLICA_SETS, self.store, deployment)
        counts = {
            field: sum((rs.get("status") or {}).get(field, 0) for rs in owned)
            for field in ("replicas", "readyReplicas", "availableReplicas")
        }
        updated = next(
            (
                (rs.get("status") or {}).get("replicas", 0)
                for rs in owned
                if rs["metadata"].get("labels", {}).get("pod-template-hash") == pod_hash
            ),
            0,
        )
        status = copy.deepcopy(deployment.get("status") or {})
        available = counts["availableReplicas"] >= replicas - _max_unavailable(spec)
        conditions = set_condition(
            self.clock,
            status.get("conditions"),
            "Available",
            "True" if available else "False",
            "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
            "Deployment has minimum availability."
            if available
            else "Deployment does not have minimum availability.",
            update_time=True,
        )
        rs_name = f"{name}-{pod_hash}"
        done = updated == counts["replicas"] == counts["availableReplicas"] == replicas
        conditions = set_condition(
            self.clock,
            conditions,
            "Progressing",
            "True",
            "NewReplicaSetAvailable" if done else "ReplicaSetUpdated",
            f'ReplicaSet "{rs_name}" has successfully progressed.'
            if done
            else f'ReplicaSet "{rs_name}" is progressing.',
            update_time=True,
        )
        status.update(
            counts,
            updatedReplicas=updated,
            observedGeneration=deployment["metadata"].get("generation", 1),
            unavailableReplicas=max(replicas - counts["availableReplicas"], 0),
            conditions=conditions,
        )
        self._save_status(
            r.DEPLOYMENTS,
            deployment,
            without_zeros(
                status,
                "replicas",
                "readyReplicas",
                "availableReplicas",
                "updatedReplicas",
                "unavailableReplicas",
            ),
        )

    def _replica_sets(self) -> None:
        for replica_set in self.store.items(r.REPLICA_SETS):
            if deleting(replica_set):
                continue
            pods = [
                p
                for p in owned_by(r.PODS, self.store, replica_set)
                if p["status"].get("phase") not in TERMINAL
            ]
            wanted = replica_set["spec"].get("replicas", 1)
            for _ in range(wanted - len(pods)):
                body = pod_from_template(replica_set["spec"]["template"], r.REPLICA_SETS, replica_set)
                body["metadata"]["generateName"] = f"{replica_set['metadata']['name']}-"
                created = self._create(r.PODS, replica_set, body, "replicaset-controller")
                if created is None:
                    break
                record_event(
                    self.store,
                    replica_set,
                    "SuccessfulCreate",
                    f"Created pod: {created['metadata']['name']}",
                    component="replicaset-controller",
                )
            surplus = sorted(
                pods,
                key=lambda p: (
                    pod_ready(p),
                    bool(p["spec"].get("nodeName")),
                    p["metadata"]["creationTimestamp"],
                ),
            )[: max(len(pods) - wanted, 0)]
            for pod in surplus:
                self._delete(r.PODS, pod, BACKGROUND)
                record_event(
                    self.store,
                    replica_set,
                    "SuccessfulDelete",
                    f"Deleted pod: {pod['metadata']['name']}",
                    component="replicaset-controller",
                )
            pods = [
                p
                for p in owned_by(r.PODS, self.store, replica_set)
                if p["status"].get("phase") not in TERMINAL
            ]
            ready = sum(pod_ready(p) for p in pods)
            status = {
                "replicas": len(pods),
                "fullyLabeledReplicas": len(pods),
                "readyReplicas": ready,
                "availableReplicas": ready,
                "observedGeneration": replica_set["metadata"].get("generation", 1),
            }
            self._save_status(
                r.REPLICA_SETS,
                replica_set,
                without_zeros(status, "fullyLabeledReplicas", "readyReplicas", "availableReplicas"),
            )

    # Stateful sets.

    def _stateful_sets(self) -> None:
        for stateful_set in self.store.items(r.STATEFUL_SETS):
            if not deleting(stateful_set):
                self._stateful_set(stateful_set)

    def _stateful_pod(self, stateful_set: dict[str, Any], ordinal: int, revision: str) -> None:
        name, spec = stateful_set["metadata"]["name"], stateful_set["spec"]
        pod_name = f"{name}-{ordinal}"
        body = pod_from_template(
            spec["template"],
            r.STATEFUL_SETS,
            stateful_set,
            {
                "statefulset.kubernetes.io/pod-name": pod_name,
                "apps.kubernetes.io/pod-index": str(ordinal),
                "controller-revision-hash": revision,
            },
        )
        body["metadata"]["name"] = pod_name
        body["spec"]["hostname"] = pod_name
        if spec.get("serviceName"):
            body["spec"]["subdomain"] = spec["serviceName"]
        volumes = body["spec"].setdefault("volumes", [])
        for claim in spec.get("volumeClaimTemplates") or []:
            claim_name = f"{claim['metadata']['name']}-{pod_name}"
            if self.store.find(r.PVCS, stateful_set["metadata"]["namespace"], claim_name) is None:
                owners = (
                    [owner_reference(r.STATEFUL_SETS, stateful_set)]
                    if (spec.get("persistentVolumeClaimRetentionPolicy") or {}).get("whenDeleted") == "Delete"
                    else []
                )
                labels = {
                    **(claim["metadata"].get("labels") or {}),
                    **spec["selector"].get("matchLabels", {}),
                }
                self._create(
                    r.PVCS,
                    stateful_set,
                    {
                        "metadata": {"name": claim_name, "labels": labels, "ownerReferences": owners},
                        "spec": copy.deepcopy(claim.get("spec")),
                    },
                    "statefulset-controller",
                )
            if not any(v.get("name") == claim["metadata"]["name"] for v in volumes):
                volumes.append(
                    {"name": claim["metadata"]["name"], "persistentVolumeClaim": {"claimName": claim_name}}
                )
        if self._create(r.PODS, stateful_set, body, "statefulset-controller") is not None:
            record_event(
                self.store,
                stateful_set,
                "SuccessfulCreate",
                f"create Pod {pod_name} in StatefulSet {name} successful",
                component="statefulset-controller",
            )

    def _stateful_set(self, stateful_set: dict[str, Any]) -> None:
        spec, name = stateful_set["spec"], stateful_set["metadata"]["name"]
        replicas, ordered = spec.get("replicas", 1), spec.get("podManagementPolicy") != "Parallel"
        revision = f"{name}-{template_hash(spec.get('template'))}"
        pods = {
            int(p["metadata"]["name"].rsplit("-", 1)[-1]): p
            for p in owned_by(r.PODS, self.store, stateful_set)
        }
        for ordinal in range(replicas):
            if ordinal not in pods:
                self._stateful_pod(stateful_set, ordinal, revision)
                if ordered:
                    break
            elif ordered and not pod_ready(pods[ordinal]):
                break
        surplus = sorted((o for o in pods if o >= replicas), reverse=True)
        for ordinal in surplus[:1] if ordered else surplus:
            self._delete(r.PODS, pods[ordinal], BACKGROUND)
            record_event(
                self.store,
                stateful_set,
                "SuccessfulDelete",
                f"delete Pod {name}-{ordinal} in StatefulSet {name} successful",
                component="statefulset-controller",
            )
        in_range = [pods[o] for o in sorted(pods) if o < replicas]
        outdated = [
            p for p in in_range if p["metadata"]["labels"].get("controller-revision-hash") != revision
        ]
        if outdated and len(in_range) == replicas and all(pod_ready(p) for p in in_range):
            self._delete(r.PODS, outdated[-1], BACKGROUND)  # rolling update, highest ordinal first
        pods_now = owned_by(r.PODS, self.store, stateful_set)
        ready = sum(pod_ready(p) for p in pods_now)
        current = sum(p["metadata"]["labels"].get("controller-revision-hash") == revision for p in pods_now)
        status = {
            "replicas": len(pods_now),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "currentReplicas": current,
            "updatedReplicas": current,
            "currentRevision": revision,
            "updateRevision": revision,
            "collisionCount": 0,
            "observedGeneration": stateful_set["metadata"].get("generation", 1),
        }
        self._save_status(
            r.STATEFUL_SETS,
            stateful_set,
            without_zeros(status, "readyReplicas", "availableReplicas", "currentReplicas", "updatedReplicas"),
        )
