"""The sampling loop the worker runs beside its Temporal worker (and the node agent on each node).

Samples every 10 s would flood workflow history, so sampling is a plain loop, not a workflow: a round that
fails is logged and the next one tries again; nothing depends on any one round. Which sampler runs depends
on where workloads run: the local runtime's processes on this host, Prometheus' series where one is
configured, and on Kubernetes without one, nothing here (the node agent samples on every node).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Protocol

from sqlalchemy import Engine

from activities.metric_store import store_samples
from config import Settings
from models.monitoring import PodSample

log = logging.getLogger("mlcp.sampler")


class Sampler(Protocol):
    name: str

    def sample(self) -> list[PodSample]: ...


def sampler_for(settings: Settings) -> Sampler | None:
    """The worker's sampler for these settings; None where the node agent samples instead."""
    if settings.prometheus_url:
        from kubernetes.client import CoreV1Api

        from activities.kube import kube_api_client
        from activities.kube_pod_inventory import list_workload_pods
        from activities.prometheus_sampler import PrometheusSampler

        core = CoreV1Api(kube_api_client(settings.kubeconfig))
        return PrometheusSampler(settings.prometheus_url, lambda: list_workload_pods(core))
    if settings.runtime == "local":
        from activities.gpu_metrics import NvmlProbe
        from activities.local import RUNTIME_FOLDER, is_running
        from activities.local_sampler import LocalSampler

        return LocalSampler(Path(settings.home).resolve() / RUNTIME_FOLDER, NvmlProbe(), is_running)
    return None


def sample_once(sampler: Sampler, engine: Engine) -> int:
    return store_samples(engine, sampler.name, sampler.sample())


async def sample_forever(
    sampler: Sampler, engine: Engine, interval_seconds: float, stop: asyncio.Event | None = None
) -> None:
    """Sample every `interval_seconds` until `stop` is set (or the task is cancelled)."""
    stop = stop or asyncio.Event()
    failing = False
    while not stop.is_set():
        try:
            written = await asyncio.to_thread(sample_once, sampler, engine)
        except Exception as exc:  # a round's failure must never end sampling
            if not failing:
                log.warning("%s sampler: a round failed, retrying every round: %s", sampler.name, exc)
            failing = True
        else:
            if failing:
                log.info("%s sampler: sampling again (%d values)", sampler.name, written)
            failing = False
        with contextlib.suppress(TimeoutError):  # the interval passed: the next round
            await asyncio.wait_for(stop.wait(), interval_seconds)
