"""The registry of workload kinds: one descriptor per kind, read by the worker, the API and the runtimes.

A descriptor holds everything that is a kind's own: its status enum, its table, public, detail, state and
workflow-input models, its workflow class (whose ID prefix is the kind's name), its activities (the record
activity among them), how the runtimes realise it (its Kubernetes controller and the builders of its
manifest and final status; whether it runs to completion), and the API module holding its routes (built
by the shared router factory, api/workload_routes.py, plus whatever is the kind's own).

Adding a kind is its own modules (models, workflow, activities, routes) plus one entry in KINDS. Nothing
else branches on a kind's name, and a runtime refuses a name not registered here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Engine
from sqlmodel import SQLModel

from activities.clusters import ClusterActivities
from activities.containers import ContainerRecords
from activities.image_commits import ImageCommitActivities
from activities.jobs import JobActivities
from activities.kube_clusters import cluster_pod_manifest
from activities.kube_manifests import deployment_manifest, job_manifest
from activities.kube_status import job_outcome
from activities.runtime import RuntimeKind, WorkloadRuntime
from activities.transfers import TransferRecords
from activities.volumes import VolumeActivities
from config import Settings
from models.clusters import Cluster, ClusterDetail, ClusterInput, ClusterPublic, ClusterState, ClusterStatus
from models.containers import (
    Container,
    ContainerDetail,
    ContainerInput,
    ContainerPublic,
    ContainerState,
    ContainerStatus,
)
from models.images import CustomImage, CustomImagePublic, ImageStatus
from models.jobs import Job, JobDetail, JobInput, JobPublic, JobState, JobStatus
from models.transfers import Transfer, TransferPublic
from models.volumes import Volume, VolumePublic, VolumeStatus
from models.workload_lifecycle import WorkloadLifecycleState, WorkloadRecord
from workflows.cluster import ClusterWorkflow
from workflows.container import ContainerWorkflow
from workflows.image_commit import KIND as IMAGE_KIND
from workflows.image_commit import ImageCommitWorkflow
from workflows.job import JobWorkflow
from workflows.transfer import TransferWorkflow
from workflows.volume import VolumeWorkflow
from workflows.workload import WorkloadLifecycle, workload_workflow_id

ActivitiesFor = Callable[[Engine, WorkloadRuntime], list[Callable[..., Any]]]


@dataclass(frozen=True)
class WorkloadKind:
    name: str  # the label value, the workflow ID prefix (`job-<id>`), runtime object names' prefix
    plural: str  # the API's path segment: /api/v1/projects/{id}/<plural>
    id_letter: str  # first letter of IDs derived from an Idempotency-Key, so kinds never share one
    status: type[StrEnum]
    final_statuses: frozenset[str]  # a row in one of these is done; its workflow has ended or is ending
    table: type[WorkloadRecord]
    public: type[BaseModel]
    detail: type[BaseModel]
    state: type[WorkloadLifecycleState]
    input: type[BaseModel]
    workflow: type[WorkloadLifecycle] | type[ClusterWorkflow]
    activities: ActivitiesFor
    runtime: RuntimeKind
    api_module: str  # imported by the API only, so the worker never loads FastAPI
    hidden_statuses: frozenset[str] = field(default_factory=lambda: frozenset({"deleted"}))
    # Where its utilisation series are, under its own path: the workload's one pod, or each of its pods.
    metrics_path: str = "/{resource_id}"
    metrics_longest_range: timedelta = timedelta(hours=24)

    def workflow_id(self, resource_id: str) -> str:
        return workload_workflow_id(self.name, resource_id)


def _job_activities(engine: Engine, runtime: WorkloadRuntime) -> list[Callable[..., Any]]:
    jobs = JobActivities(engine, runtime)
    return [jobs.record_job, jobs.keep_job_log]


CONTAINER = WorkloadKind(
    name=ContainerWorkflow.kind,
    plural="containers",
    id_letter="c",
    status=ContainerStatus,
    final_statuses=frozenset({ContainerStatus.deleted.value}),
    table=Container,
    public=ContainerPublic,
    detail=ContainerDetail,
    state=ContainerState,
    input=ContainerInput,
    workflow=ContainerWorkflow,
    activities=lambda engine, _: [ContainerRecords(engine).record_container],
    runtime=RuntimeKind(
        name=ContainerWorkflow.kind,
        controller="Deployment",
        controller_manifest=deployment_manifest,
        outcome=None,
        runs_to_completion=False,
    ),
    api_module="api.routers.containers",
)

JOB = WorkloadKind(
    name=JobWorkflow.kind,
    plural="jobs",
    id_letter="j",
    status=JobStatus,
    final_statuses=frozenset({JobStatus.succeeded.value, JobStatus.failed.value, JobStatus.deleted.value}),
    table=Job,
    public=JobPublic,
    detail=JobDetail,
    state=JobState,
    input=JobInput,
    workflow=JobWorkflow,
    activities=_job_activities,
    runtime=RuntimeKind(
        name=JobWorkflow.kind,
        controller="Job",
        controller_manifest=job_manifest,
        outcome=job_outcome,
        runs_to_completion=True,
    ),
    api_module="api.routers.jobs",
)

# A transfer service lives as a container does; only its name, read model, workflow and routes differ.
TRANSFER = replace(
    CONTAINER,
    name=TransferWorkflow.kind,
    plural="transfer",
    id_letter="t",
    table=Transfer,
    public=TransferPublic,
    detail=TransferPublic,
    workflow=TransferWorkflow,
    activities=lambda engine, _: [TransferRecords(engine).record_transfer],
    runtime=replace(CONTAINER.runtime, name=TransferWorkflow.kind),
    api_module="api.routers.transfers",
)


# A cluster's pods are its runtime workloads, one by one (`<id>-launcher`, `<id>-worker-00`, ...); each is a
# bare Pod on Kubernetes, so ordinals are stable and the highest goes first on scale-in.
CLUSTER = WorkloadKind(
    name=ClusterWorkflow.kind,
    plural="clusters",
    id_letter="k",
    status=ClusterStatus,
    final_statuses=frozenset({ClusterStatus.failed.value, ClusterStatus.deleted.value}),
    table=Cluster,
    public=ClusterPublic,
    detail=ClusterDetail,
    state=ClusterState,
    input=ClusterInput,
    workflow=ClusterWorkflow,
    activities=lambda engine, runtime: ClusterActivities(engine, runtime).all(),
    runtime=RuntimeKind(
        name=ClusterWorkflow.kind,
        controller="Pod",
        controller_manifest=cluster_pod_manifest,
        outcome=None,
        runs_to_completion=False,
    ),
    api_module="api.routers.clusters",
    metrics_path="/{resource_id}/pods/{pod}",
    metrics_longest_range=timedelta(days=30),
)

KINDS: tuple[WorkloadKind, ...] = (CONTAINER, JOB, TRANSFER, CLUSTER)


@dataclass(frozen=True)
class DataKind:
    """A kind that holds data rather than running: it has a lifecycle and routes but no runtime workload.

    Its activities are built with the settings too (the object store they reach is configured there).
    """

    name: str  # the workflow ID prefix and the `mlcp.io/kind` label of its runtime objects
    plural: str
    id_letter: str
    status: type[StrEnum]
    final_statuses: frozenset[str]
    table: type[SQLModel]
    public: type[BaseModel]
    workflow: type
    activities: Callable[[Engine, WorkloadRuntime, Settings], list[Callable[..., Any]]]
    api_module: str

    def workflow_id(self, resource_id: str) -> str:
        return f"{self.name}-{resource_id}"


def _volume_activities(
    engine: Engine, runtime: WorkloadRuntime, settings: Settings
) -> list[Callable[..., Any]]:
    from services.runtimes import object_store, storage_for

    return VolumeActivities(engine, storage_for(settings, runtime), lambda: object_store(settings)).all()


VOLUME = DataKind(
    name="volume",
    plural="volumes",
    id_letter="v",
    status=VolumeStatus,
    final_statuses=frozenset({VolumeStatus.deleted.value}),
    table=Volume,
    public=VolumePublic,
    workflow=VolumeWorkflow,
    activities=_volume_activities,
    api_module="api.routers.volumes",
)


def _image_activities(
    engine: Engine, runtime: WorkloadRuntime, settings: Settings
) -> list[Callable[..., Any]]:
    from services.runtimes import committer_for

    return ImageCommitActivities(engine, committer_for(settings, runtime)).all()


IMAGE = DataKind(
    name=IMAGE_KIND,
    plural="images",
    id_letter="i",
    status=ImageStatus,
    final_statuses=frozenset({ImageStatus.deleted.value}),
    table=CustomImage,
    public=CustomImagePublic,
    workflow=ImageCommitWorkflow,
    activities=_image_activities,
    api_module="api.routers.images",
)

DATA_KINDS: tuple[DataKind, ...] = (VOLUME, IMAGE)


def runtime_kinds() -> Mapping[str, RuntimeKind]:
    """What the runtimes are built with: every kind they may run."""
    return {kind.name: kind.runtime for kind in KINDS}


def workflows() -> list[type]:
    return [kind.workflow for kind in KINDS] + [kind.workflow for kind in DATA_KINDS]


def activities(engine: Engine, runtime: WorkloadRuntime, settings: Settings) -> list[Callable[..., Any]]:
    return [activity for kind in KINDS for activity in kind.activities(engine, runtime)] + [
        activity for kind in DATA_KINDS for activity in kind.activities(engine, runtime, settings)
    ]


def api_modules() -> list[str]:
    return [kind.api_module for kind in KINDS] + [kind.api_module for kind in DATA_KINDS]
