"""Settings from the environment (prefix ``MLCP_``) and the connections built from them."""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio.client import Client, TLSConfig
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from models.inputs import check_time_zone


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLCP_", env_file=".env", extra="ignore")

    home: Path = Field(Path(".mlcp"), description="Folder for embedded state: database, Temporal, logs.")
    database_url: str = Field("", description="SQLAlchemy URL; empty means a SQLite file in the home folder.")

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    public_url: str = Field(
        "", description="Address users reach the API at; derived from host/port if empty."
    )

    temporal_address: str = Field(
        "", description="host:port of the Temporal frontend; empty means local dev."
    )
    temporal_port: int = 7233
    temporal_ui_port: int = 8233
    temporal_namespace: str = "default"
    temporal_task_queue: str = "mlcp"
    temporal_tls: bool = False
    temporal_tls_ca: Path | None = None
    temporal_tls_cert: Path | None = None
    temporal_tls_key: Path | None = None

    runtime: Literal["local", "kubernetes"] = "local"
    kubeconfig: str = Field("", description="Kubeconfig file; empty: in-cluster, else ~/.kube/config.")
    node_host: str = Field("", description="Host users reach NodePorts at; empty: the pod's node IP.")
    kube_cluster_domain: str = Field(
        "cluster.local", description="The Kubernetes cluster's DNS domain: training cluster pods search it."
    )

    smtp_host: str = Field("", description="SMTP server; empty means mail goes to the outbox table.")
    smtp_port: int = 587
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_starttls: bool = True
    smtp_sender: str = "mlcp@localhost"

    token_ttl_minutes: int = Field(12 * 60, gt=0)

    admin_username: str = "admin"
    admin_password: SecretStr | None = None

    project_reminder_days: float = Field(
        7, ge=0, description="Mail project admins this many days before end."
    )
    project_grace_days: float = Field(14, ge=0, description="Days between a project's end and its deletion.")
    job_max_runtime_hours: int = Field(72, gt=0, description="Active deadline of every job (3 days).")
    worker_metrics_address: str = Field(
        "",
        description="host:port where the worker serves Temporal's Prometheus metrics (activity failures, "
        "retries, latencies); empty: off.",
    )
    sample_interval_seconds: float = Field(
        10, gt=0, description="How often the worker (local) or the node agent samples each workload pod."
    )
    prometheus_url: str = Field(
        "",
        description="Kubernetes: a Prometheus with DCGM-exporter and cAdvisor series, which the worker reads "
        "instead of running the node agent; empty: the node agent (deploy/kubernetes/agent.yaml) samples.",
    )
    display_time_zone: Annotated[str, AfterValidator(check_time_zone)] = Field(
        "UTC", description="Charts' and cost days' time zone where neither request nor user names one."
    )
    cluster_max_hours: float = Field(
        720, gt=0, description="The longest a training cluster may run: its end at most this far (30 days)."
    )

    # Object storage (the `s3` volumes). Empty endpoint: `mlcp dev` runs SeaweedFS and fills these in.
    s3_endpoint: str = Field(
        "", description="host:port of an S3-compatible server; empty: embedded SeaweedFS."
    )
    s3_public_endpoint: str = Field("", description="host:port workloads and users reach S3 at; empty: same.")
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    s3_access_key: str = Field("", description="An admin identity: creates buckets, quotas and identities.")
    s3_secret_key: SecretStr = SecretStr("")
    s3_port: int = Field(8333, description="Embedded SeaweedFS: its S3 port (master, volume, filer follow).")
    s3_csi_storage_class: str = Field(
        "",
        description="Kubernetes: StorageClass of an S3 CSI driver; empty: s3 volumes reach pods as env only.",
    )
    # NFS volumes on Kubernetes: a PersistentVolume per volume on this server, or claims of a StorageClass.
    nfs_server: str = ""
    nfs_path: str = Field("/exports/mlcp", description="Export on nfs_server; volumes are sub-folders.")
    nfs_storage_class: str = Field("", description="Claims of this StorageClass instead of static volumes.")
    nfs_mount: Path | None = Field(
        None, description="Where the worker sees nfs_path mounted, for usage, clone and cleanup."
    )
    platform_image: str = Field(
        "mlcp:latest", description="The platform's own image (deploy/Dockerfile): transfer services run it."
    )
    volume_usage_interval_seconds: int = Field(300, gt=0, description="How often volume usage is sampled.")

    # Custom images (commits). Empty registry: local commits stay in MLCP_HOME/images; Kubernetes needs one.
    registry_address: str = Field("", description="host:port of the platform's OCI registry (v2 API).")
    registry_username: str = ""
    registry_password: SecretStr = SecretStr("")
    registry_insecure: bool = Field(False, description="Reach the registry over plain HTTP.")
    registry_repository_prefix: str = Field(
        "mlcp", description="Custom images go to <prefix>/<project>/<name>."
    )
    commit_image: str = Field(
        "", description="Kubernetes: the commit Jobs' image (nerdctl and a shell); empty: the platform image."
    )
    commit_namespace: str = Field(
        "mlcp-commits", description="Kubernetes: where commit Jobs run (Pod Security must allow hostPath)."
    )
    containerd_socket: str = Field("/run/containerd/containerd.sock", description="On every node.")
    install_tools: bool = Field(
        True, description="mlcp dev installs Jupyter for local containers (background)."
    )
    tools_dir: Path | None = Field(
        None, description="Where the local runtime installs JupyterLab; empty: beside the platform's venv."
    )

    log_level: str = "INFO"

    @model_validator(mode="after")
    def _derive_defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.home / 'mlcp.db').resolve()}"
        if not self.temporal_address:
            self.temporal_address = f"127.0.0.1:{self.temporal_port}"
        if not self.public_url:
            self.public_url = f"http://{self.api_host}:{self.api_port}"
        return self

    @property
    def token_ttl(self) -> timedelta:
        return timedelta(minutes=self.token_ttl_minutes)

    @property
    def temporal_ui_url(self) -> str:
        return f"http://127.0.0.1:{self.temporal_ui_port}"


@lru_cache
def get_settings() -> Settings:
    return Settings()


def worker_runtime(settings: Settings) -> Runtime | None:
    """The worker's Temporal runtime when MLCP_WORKER_METRICS_ADDRESS is set: it serves the SDK's own
    Prometheus metrics there (activity and workflow task failures, schedule-to-start and execution
    latencies, poller and slot counts). Made once per process: it holds the address."""
    if not settings.worker_metrics_address:
        return None
    metrics = PrometheusConfig(bind_address=settings.worker_metrics_address)
    return Runtime(telemetry=TelemetryConfig(metrics=metrics))


async def connect_temporal(settings: Settings, runtime: Runtime | None = None) -> Client:
    """Connect with the pydantic data converter, so dataclasses and pydantic models cross the boundary;
    on `runtime` when given (the worker's, which serves its metrics)."""
    tls: TLSConfig | bool = False
    if settings.temporal_tls:
        tls = TLSConfig(
            server_root_ca_cert=settings.temporal_tls_ca.read_bytes() if settings.temporal_tls_ca else None,
            client_cert=settings.temporal_tls_cert.read_bytes() if settings.temporal_tls_cert else None,
            client_private_key=settings.temporal_tls_key.read_bytes() if settings.temporal_tls_key else None,
        )
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        tls=tls,
        runtime=runtime,
    )


async def register_search_attributes(client: Client, namespace: str) -> list[str]:
    """Register our custom search attributes on a Temporal cluster; returns the ones it added."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
    from temporalio.service import RPCError, RPCStatusCode

    from workflows.search_attributes import ALL

    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
        missing = [key.name for key in ALL if key.name not in existing.custom_attributes]
    except RPCError as exc:
        if exc.status != RPCStatusCode.UNIMPLEMENTED:
            raise
        missing = [key.name for key in ALL]  # the time-skipping test server can add but not list
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=namespace,
                search_attributes={name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for name in missing},
            )
        )
    return missing
