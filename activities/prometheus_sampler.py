"""Workload pods' utilisation from a Prometheus that scrapes cAdvisor (the kubelet) and DCGM-exporter.

One instant query per metric per round, all evaluated at the same moment, for every workload pod at once;
the answers are matched to the inventory's pods and measured against what each pod requested.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from activities.kube_pod_inventory import NO_CPU_REQUEST, NO_MEMORY_REQUEST, WorkloadPod
from models.monitoring import NO_GPU, Metric, MetricValue, PodSample
from models.volumes import GIB

NO_DCGM = "DCGM-exporter has no series for this pod (is dcgm-exporter installed, with pod labels?)"
NO_CADVISOR = "cAdvisor has no series for this pod (a new pod has none until scraped twice)"
# Past this many namespaces the exact list would make a long URL; the prefix matches them all as well.
MAX_LISTED_NAMESPACES = 50
_PROMQL_STRING_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n"}

# cAdvisor: the `container=""` series is the whole pod's cgroup and `POD` the sandbox (pause), both of
# which would count the containers twice. Network counters exist once per pod (its one namespace).
_CONTAINERS = 'container!="",container!="POD",namespace=~{namespaces}'
POD_QUERIES = {
    Metric.vcpu_percent: "rate(container_cpu_usage_seconds_total{" + _CONTAINERS + "}[1m])",
    Metric.memory_percent: "container_memory_working_set_bytes{" + _CONTAINERS + "}",
    Metric.network_in: "rate(container_network_receive_bytes_total{namespace=~{namespaces}}[1m])",
    Metric.network_out: "rate(container_network_transmit_bytes_total{namespace=~{namespaces}}[1m])",
}
# What a pod's series are summed over.
POD_QUERY_PARTS = {
    Metric.vcpu_percent: "container",
    Metric.memory_percent: "container",
    Metric.network_in: "interface",
    Metric.network_out: "interface",
}
# DCGM series are not filtered by namespace: scraped without honor_labels they carry the pod's namespace
# as `exported_namespace`, and there is only one series per GPU anyway.
GPU_UTIL_QUERY = "DCGM_FI_DEV_GPU_UTIL"
GPU_USED_QUERY = "DCGM_FI_DEV_FB_USED"
GPU_FREE_QUERY = "DCGM_FI_DEV_FB_FREE"

Labels = dict[str, str]
PodKey = tuple[str, str]  # namespace, pod name
GpuKey = tuple[int, str]  # the node's GPU index (DCGM's `gpu` label), UUID


class PrometheusUnreachable(RuntimeError):
    """No answer from Prometheus at all: this round has no samples; the caller tries again next round."""


def promql_string(text: str) -> str:
    """`text` as a double-quoted PromQL string literal."""
    return '"' + "".join(_PROMQL_STRING_ESCAPES.get(char, char) for char in text) + '"'


def namespaces_matcher(namespaces: Iterable[str]) -> str:
    """A `=~` operand matching exactly these namespaces: regex-escaped (RE2 accepts Python's escapes of
    punctuation), then string-escaped, so a backslash from the first survives the second."""
    names = sorted(set(namespaces))
    if len(names) > MAX_LISTED_NAMESPACES:
        return promql_string("mlcp-.*")
    return promql_string("|".join(re.escape(name) for name in names))


@dataclass(frozen=True)
class _Answer:
    """One query's series, or the error Prometheus gave instead."""

    series: list[tuple[Labels, float]]
    error: str = ""


def _pod_key(labels: Labels) -> PodKey:
    # Scraped without honor_labels, an exporter's own namespace and pod take the plain names.
    namespace = labels.get("exported_namespace") or labels.get("namespace", "")
    return namespace, labels.get("exported_pod") or labels.get("pod", "")


def per_pod_sums(series: Iterable[tuple[Labels, float]], part: str) -> dict[PodKey, float]:
    """Each pod's total over its parts (containers, interfaces). A part seen twice (two scrape jobs, a
    restarted container's stale series) counts once, at its largest."""
    parts: dict[tuple[str, str, str], float] = {}
    for labels, value in series:
        key = (*_pod_key(labels), labels.get(part, ""))
        parts[key] = max(value, parts.get(key, value))
    sums: dict[PodKey, float] = defaultdict(float)
    for (namespace, pod, _), value in parts.items():
        sums[namespace, pod] += value
    return dict(sums)


def per_pod_gpus(series: Iterable[tuple[Labels, float]]) -> dict[PodKey, dict[GpuKey, float]]:
    """Each pod's GPUs, keyed so that they sort into the pod's GPU order."""
    gpus: dict[PodKey, dict[GpuKey, float]] = defaultdict(dict)
    for labels, value in series:
        index = labels.get("gpu", "")
        gpus[_pod_key(labels)][(int(index) if index.isdigit() else -1, labels.get("UUID", ""))] = value
    return dict(gpus)


def gpu_memory_percents(
    used: Iterable[tuple[Labels, float]], free: Iterable[tuple[Labels, float]]
) -> dict[PodKey, dict[GpuKey, float]]:
    """DCGM gives framebuffer MiB used and free, not the total; a GPU lacking either has no percentage."""
    free_by_pod = per_pod_gpus(free)
    percents: dict[PodKey, dict[GpuKey, float]] = {}
    for pod, gpus in per_pod_gpus(used).items():
        for gpu, in_use in gpus.items():
            total = in_use + free_by_pod.get(pod, {}).get(gpu, math.nan)
            if total > 0:  # NaN, where there was no free series, compares false too
                percents.setdefault(pod, {})[gpu] = in_use / total * 100
    return percents


class PrometheusSampler:
    name = "prometheus"

    def __init__(
        self,
        url: str,
        pods: Callable[[], list[WorkloadPod]],
        http: httpx.Client | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.url = url.rstrip("/")
        self._pods = pods
        self._owns_http = http is None
        self._http = http or httpx.Client(timeout=10.0)
        self._now = now

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def sample(self) -> list[PodSample]:
        pods = self._pods()
        if not pods:
            return []
        at = self._now()
        matcher = namespaces_matcher(pod.namespace for pod in pods)
        answers = {m: self._query(q.replace("{namespaces}", matcher), at) for m, q in POD_QUERIES.items()}
        totals = {m: per_pod_sums(answers[m].series, POD_QUERY_PARTS[m]) for m in POD_QUERIES}
        errors = {metric: answer.error for metric, answer in answers.items()}
        utilisation = self._query(GPU_UTIL_QUERY, at)
        used, free = self._query(GPU_USED_QUERY, at), self._query(GPU_FREE_QUERY, at)
        per_gpu = {
            Metric.gpu_percent: per_pod_gpus(utilisation.series),
            Metric.gpu_memory_percent: gpu_memory_percents(used.series, free.series),
        }
        errors |= {Metric.gpu_percent: utilisation.error, Metric.gpu_memory_percent: used.error or free.error}
        samples = []
        for pod in pods:
            sample = PodSample(
                kind=pod.kind, workload_id=pod.workload_id, pod=pod.pod, project_id=pod.project_id, at=at
            )
            key = (pod.namespace, pod.name)
            for metric, found in totals.items():
                _put(sample, metric, errors[metric] or _scaled(pod, metric, found.get(key)))
            for metric, found_gpus in per_gpu.items():
                _put_gpus(sample, metric, _gpu_reading(pod, errors[metric], found_gpus.get(key)))
            samples.append(sample)
        return samples

    def _query(self, query: str, at: datetime) -> _Answer:
        address = f"{self.url}/api/v1/query"
        try:
            response = self._http.get(address, params={"query": query, "time": f"{at.timestamp():.3f}"})
        except httpx.TransportError as exc:
            raise PrometheusUnreachable(f"Prometheus at {self.url} cannot be reached: {exc!r}") from exc
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("status") not in {"success", "error"}:
            raise PrometheusUnreachable(
                f"{address} answered HTTP {response.status_code} without a Prometheus answer: "
                f"{response.text[:200]!r}"
            )
        if body["status"] == "error":
            return _Answer([], f"Prometheus refused {query!r}: {body.get('errorType')}: {body.get('error')}")
        data = body.get("data") or {}
        if data.get("resultType") != "vector":
            return _Answer([], f"Prometheus answered {query!r} with a {data.get('resultType')}, not a vector")
        series = []
        for item in data.get("result") or []:
            value = float(item["value"][1])
            if math.isfinite(value):  # a rate over a counter reset or a 0/0 comes as NaN
                series.append((dict(item.get("metric") or {}), value))
        return _Answer(series)


def _scaled(pod: WorkloadPod, metric: Metric, total: float | None) -> float | str:
    """The pod's total in the metric's unit, or why there is none (no series, no request to measure by)."""
    if total is None:
        return NO_CADVISOR
    if metric is Metric.vcpu_percent:
        return total / pod.vcpu * 100 if pod.vcpu > 0 else NO_CPU_REQUEST
    if metric is Metric.memory_percent:
        return total / (pod.ram_gb * GIB) * 100 if pod.ram_gb > 0 else NO_MEMORY_REQUEST
    return total


def _put(sample: PodSample, metric: Metric, reading: float | str) -> None:
    if isinstance(reading, str):
        sample.unavailable[metric] = reading
    else:
        sample.values.append(MetricValue(metric=metric, value=reading))


def _gpu_reading(pod: WorkloadPod, error: str, gpus: dict[GpuKey, float] | None) -> dict[GpuKey, float] | str:
    """The pod's GPUs' values, or why there are none; a pod without GPUs says so whatever DCGM answered."""
    if pod.gpus == 0:
        return NO_GPU
    return error or gpus or NO_DCGM


def _put_gpus(sample: PodSample, metric: Metric, reading: dict[GpuKey, float] | str) -> None:
    """The pod's GPUs numbered 0, 1... in the order of the node's indices, or why there are none."""
    if isinstance(reading, str):
        sample.unavailable[metric] = reading
        return
    sample.values += [
        MetricValue(metric=metric, value=reading[gpu], device=str(index))
        for index, gpu in enumerate(sorted(reading))
    ]
