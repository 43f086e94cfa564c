"""The Prometheus sampler against httpx.MockTransport answering as Prometheus' instant-query API does."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from activities.kube_pod_inventory import NO_CPU_REQUEST, WorkloadPod
from activities.prometheus_sampler import (
    NO_CADVISOR,
    NO_DCGM,
    PrometheusSampler,
    PrometheusUnreachable,
    namespaces_matcher,
    promql_string,
)
from models.monitoring import NO_GPU, Metric, PodSample

GIB = 2**30
AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
URL = "http://prometheus.monitoring:9090"
DEVBOX = WorkloadPod(
    namespace="mlcp-p1",
    name="container-devbox1-5f7d",
    uid="u1",
    kind="container",
    workload_id="devbox1",
    pod="main",
    project_id="p1",
    vcpu=2,
    ram_gb=4,
    gpus=0,
)
WORKER = WorkloadPod(
    namespace="mlcp-p2",
    name="cluster-k7-worker-00",
    uid="u2",
    kind="cluster",
    workload_id="k7",
    pod="worker-00",
    project_id="p2",
    vcpu=8,
    ram_gb=64,
    gpus=2,
)

Series = list[tuple[dict[str, str], float]]


def vector(series: Series) -> dict[str, Any]:
    result = [{"metric": labels, "value": [AT.timestamp(), str(value)]} for labels, value in series]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def on(pod: WorkloadPod, **labels: str) -> dict[str, str]:
    return {"namespace": pod.namespace, "pod": pod.name, **labels}


CADVISOR: dict[str, Series] = {
    "container_cpu_usage_seconds_total": [
        (on(DEVBOX, container="main"), 1.0),
        (on(DEVBOX, container="main"), 1.0),  # scraped by two jobs: counted once
        (on(DEVBOX, container="sidecar"), 0.5),
        (on(WORKER, container="main"), 4.0),
        ({"namespace": "mlcp-p1", "pod": "not-in-the-inventory", "container": "main"}, 9.0),
    ],
    "container_memory_working_set_bytes": [
        (on(DEVBOX, container="main"), 1 * GIB),
        (on(WORKER, container="main"), 16 * GIB),
    ],
    "container_network_receive_bytes_total": [
        (on(DEVBOX, interface="eth0", container="POD"), 1000.0),  # the one namespace, seen per container
        (on(DEVBOX, interface="eth0", container=""), 1000.0),
        (on(DEVBOX, interface="net1"), 24.0),
    ],
    "container_network_transmit_bytes_total": [(on(DEVBOX, interface="eth0"), 300.0)],
}
# GPUs 5 and 2 of the node: the pod's GPU 0 is the node's 2. Scraped without honor_labels, the pod's
# namespace and name move to exported_*, and namespace/pod are dcgm-exporter's own.
EXPORTER = {"namespace": "gpu-operator", "pod": "nvidia-dcgm-exporter-x"}
DCGM: dict[str, Series] = {
    "DCGM_FI_DEV_GPU_UTIL": [
        ({**on(WORKER, gpu="5", UUID="GPU-bbbb")}, 30.0),
        ({**EXPORTER, "exported_namespace": WORKER.namespace, "exported_pod": WORKER.name, "gpu": "2"}, 90.0),
        ({**EXPORTER, "gpu": "0"}, 0.0),  # an unallocated GPU
    ],
    "DCGM_FI_DEV_FB_USED": [
        (on(WORKER, gpu="5", UUID="GPU-bbbb"), 1000.0),
        (on(WORKER, gpu="2", UUID="GPU-aaaa"), 3000.0),
    ],
    "DCGM_FI_DEV_FB_FREE": [
        (on(WORKER, gpu="5", UUID="GPU-bbbb"), 3000.0),
        (on(WORKER, gpu="2", UUID="GPU-aaaa"), 1000.0),
    ],
}


def prometheus(
    answers: dict[str, Series], errors: dict[str, str] | None = None, queries: list[str] | None = None
) -> httpx.Client:
    """Answers each query with the series of the metric it names; a metric in `errors` gets a 400."""

    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/query"
        query = request.url.params["query"]
        assert float(request.url.params["time"]) == AT.timestamp()
        if queries is not None:
            queries.append(query)
        metric = next(name for name in (*CADVISOR, *DCGM) if name in query)
        if metric in (errors or {}):
            body = {"status": "error", "errorType": "bad_data", "error": (errors or {})[metric]}
            return httpx.Response(400, json=body)
        return httpx.Response(200, json=vector(answers.get(metric, [])))

    return httpx.Client(transport=httpx.MockTransport(handle))


def sampler(http: httpx.Client, pods: list[WorkloadPod]) -> PrometheusSampler:
    return PrometheusSampler(URL, lambda: pods, http=http, now=lambda: AT)


def values(sample: PodSample) -> dict[tuple[Metric, str], float]:
    return {(value.metric, value.device): value.value for value in sample.values}


def test_values_are_summed_per_pod_and_measured_against_its_requests() -> None:
    queries: list[str] = []
    devbox, worker = sampler(prometheus({**CADVISOR, **DCGM}, queries=queries), [DEVBOX, WORKER]).sample()
    assert (devbox.kind, devbox.workload_id, devbox.pod, devbox.project_id, devbox.at) == (
        "container",
        "devbox1",
        "main",
        "p1",
        AT,
    )
    assert values(devbox) == {
        (Metric.vcpu_percent, ""): 75.0,  # 1.5 cores of 2
        (Metric.memory_percent, ""): 25.0,  # 1 GiB of 4
        (Metric.network_in, ""): 1024.0,
        (Metric.network_out, ""): 300.0,
    }
    assert devbox.unavailable == {Metric.gpu_percent: NO_GPU, Metric.gpu_memory_percent: NO_GPU}
    assert (worker.kind, worker.workload_id, worker.pod) == ("cluster", "k7", "worker-00")
    assert values(worker)[Metric.vcpu_percent, ""] == 50.0
    assert worker.unavailable == {Metric.network_in: NO_CADVISOR, Metric.network_out: NO_CADVISOR}
    cpu_query = next(q for q in queries if "cpu" in q)
    assert cpu_query == (
        'rate(container_cpu_usage_seconds_total{container!="",container!="POD",'
        'namespace=~"mlcp\\\\-p1|mlcp\\\\-p2"}[1m])'
    )


def test_gpus_are_numbered_in_the_order_of_the_gpu_label() -> None:
    (worker,) = sampler(prometheus({**CADVISOR, **DCGM}), [WORKER]).sample()
    gpus = {key: value for key, value in values(worker).items() if key[1]}
    assert gpus == {
        (Metric.gpu_percent, "0"): 90.0,  # the node's GPU 2
        (Metric.gpu_percent, "1"): 30.0,  # the node's GPU 5
        (Metric.gpu_memory_percent, "0"): 75.0,  # 3000 MiB used of 4000
        (Metric.gpu_memory_percent, "1"): 25.0,
    }


def test_a_gpu_pod_without_dcgm_series_says_why() -> None:
    (worker,) = sampler(prometheus(CADVISOR), [WORKER]).sample()
    assert worker.unavailable[Metric.gpu_percent] == worker.unavailable[Metric.gpu_memory_percent] == NO_DCGM
    assert values(worker)[Metric.memory_percent, ""] == 25.0


def test_a_query_error_makes_only_that_metric_unavailable_with_prometheus_words() -> None:
    errors = {"container_cpu_usage_seconds_total": "1:6: parse error: unexpected end of input"}
    errors["DCGM_FI_DEV_FB_FREE"] = "query timed out in expression evaluation"
    devbox, worker = sampler(prometheus({**CADVISOR, **DCGM}, errors), [DEVBOX, WORKER]).sample()
    assert "bad_data: 1:6: parse error: unexpected end of input" in devbox.unavailable[Metric.vcpu_percent]
    assert values(devbox)[Metric.memory_percent, ""] == 25.0
    assert "query timed out" in worker.unavailable[Metric.gpu_memory_percent]
    assert devbox.unavailable[Metric.gpu_memory_percent] == NO_GPU  # no GPU outranks any DCGM error
    assert values(worker)[Metric.gpu_percent, "0"] == 90.0


def test_a_pod_that_requests_no_cpu_has_no_percentage() -> None:
    (sample,) = sampler(prometheus(CADVISOR), [replace(DEVBOX, vcpu=0.0)]).sample()
    assert sample.unavailable[Metric.vcpu_percent] == NO_CPU_REQUEST


def refuse_connection(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def gateway_error(request: httpx.Request) -> httpx.Response:
    return httpx.Response(502, text="<html>Bad Gateway</html>")


@pytest.mark.parametrize(
    ("handle", "words"),
    [(refuse_connection, "cannot be reached"), (gateway_error, "without a Prometheus answer")],
)
def test_an_unreachable_prometheus_raises_a_clear_error(
    handle: Callable[[httpx.Request], httpx.Response], words: str
) -> None:
    http = httpx.Client(transport=httpx.MockTransport(handle))
    with pytest.raises(PrometheusUnreachable, match=words) as raised:
        sampler(http, [DEVBOX]).sample()
    assert "prometheus.monitoring:9090" in str(raised.value)


def test_no_pods_no_queries() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no pod, so nothing to ask")

    assert sampler(httpx.Client(transport=httpx.MockTransport(refuse)), []).sample() == []


def test_label_values_are_escaped_for_the_regex_and_then_for_the_string() -> None:
    assert promql_string('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    # A dot must match only a dot: regex-escaped, and that backslash doubled inside the string.
    assert namespaces_matcher(["mlcp-a.b", "mlcp-a.b", "mlcp-c"]) == '"mlcp\\\\-a\\\\.b|mlcp\\\\-c"'
    assert namespaces_matcher(f"mlcp-{n}" for n in range(60)) == '"mlcp-.*"'
