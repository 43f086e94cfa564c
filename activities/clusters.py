"""Training-cluster activities: the read model and the runtime's cluster-wide steps.

A cluster's pods are applied, looked at and deleted one by one with the workload activities (each is a
single-pod workload of kind `cluster`); what is the cluster's own goes through these: its shared objects
(host names, SSH key, hostfile), the hostfile's rewrite, one look at all its pods, and its removal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine
from temporalio import activity

from activities.records import record_workload
from activities.runtime import WorkloadRuntime
from activities.workloads import WorkloadRef, runtime_call
from models.clusters import Cluster, ClusterHosts, ClusterPlace, ClusterRef, ClusterState
from models.workloads import WorkloadStatus


class ClusterActivities:
    def __init__(self, engine: Engine, runtime: WorkloadRuntime) -> None:
        self._engine, self._runtime = engine, runtime

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.record_cluster,
            self.prepare_cluster,
            self.publish_hosts,
            self.member_statuses,
            self.delete_cluster,
        ]

    @activity.defn
    def record_cluster(self, state: ClusterState) -> None:
        record_workload(self._engine, Cluster, state, state.record())

    @activity.defn
    def prepare_cluster(self, place: ClusterPlace) -> str:
        """Make the cluster's shared objects (once); answers with its public key, the private one stays."""
        with runtime_call():
            return self._runtime.prepare_cluster(place)

    @activity.defn
    def publish_hosts(self, hosts: ClusterHosts) -> None:
        with runtime_call():
            self._runtime.publish_hosts(hosts)

    @activity.defn
    def member_statuses(self, refs: list[WorkloadRef]) -> list[WorkloadStatus]:
        with runtime_call():
            return [self._runtime.status(ref.project_id, ref.kind, ref.resource_id) for ref in refs]

    @activity.defn
    def delete_cluster(self, ref: ClusterRef) -> bool:
        """Delete every pod and shared object of the cluster; True once the runtime holds nothing of it."""
        with runtime_call():
            return self._runtime.delete_cluster(ref.project_id, ref.cluster_id)
