"""What the real API server adds on write: defaults, cluster IPs and node ports, quota admission."""

from __future__ import annotations

import base64
from collections import defaultdict
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from tests.kube_double import errors
from tests.kube_double import resources as r
from tests.kube_double.quantities import format_quantity, parse_quantity, pod_resources
from tests.kube_double.validation import NODE_PORT_RANGE

if TYPE_CHECKING:
    from tests.kube_double.store import Store

TEMPLATED = (r.DEPLOYMENTS, r.REPLICA_SETS, r.STATEFUL_SETS, r.JOBS)
_COMPUTE_KEYS = {"cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"}


def _normalise_amounts(amounts: dict[str, Any] | None) -> None:
    """Store quantities as strings, as the real API does, so typed clients read them back."""
    for name, value in (amounts or {}).items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            amounts[name] = format_quantity(Fraction(value))  # type: ignore[index]
        elif not isinstance(value, str):
            amounts[name] = str(value)  # type: ignore[index]


def pod_spec_defaults(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    for container in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        image = str(container.get("image", ""))
        tagged = ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest")
        container.setdefault("imagePullPolicy", "IfNotPresent" if tagged or "@" in image else "Always")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        resources = container.setdefault("resources", {})
        _normalise_amounts(resources.get("requests"))
        _normalise_amounts(resources.get("limits"))
        for port in container.get("ports") or []:
            port.setdefault("protocol", "TCP")


def _guaranteed(resources: dict[str, Any]) -> bool:
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    return all(
        key in limits and parse_quantity(requests.get(key, limits[key])) == parse_quantity(limits[key])
        for key in ("cpu", "memory")
    )


def _qos_class(pod: dict[str, Any]) -> str:
    amounts = [c.get("resources") or {} for c in (pod.get("spec") or {}).get("containers") or []]
    if not any(a.get("requests") or a.get("limits") for a in amounts):
        return "BestEffort"
    return "Guaranteed" if all(_guaranteed(a) for a in amounts) else "Burstable"


def _workload_defaults(resource: r.ResourceType, obj: dict[str, Any], creating: bool) -> None:
    spec = obj.setdefault("spec", {})
    template = spec.setdefault("template", {})
    template.setdefault("metadata", {})
    pod_spec_defaults(template.setdefault("spec", {}))
    if resource is r.JOBS:
        spec.setdefault("parallelism", 1)
        spec.setdefault("completions", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        if creating and not spec.get("selector"):
            uid, name = obj["metadata"]["uid"], obj["metadata"]["name"]
            spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
            template["metadata"].setdefault("labels", {}).update(
                {
                    "batch.kubernetes.io/controller-uid": uid,
                    "controller-uid": uid,
                    "batch.kubernetes.io/job-name": name,
                    "job-name": name,
                }
            )
        return
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    if resource is r.DEPLOYMENTS:
        spec.setdefault("progressDeadlineSeconds", 600)
        spec.setdefault(
            "strategy",
            {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
        )
    if resource is r.STATEFUL_SETS:
        spec.setdefault("podManagementPolicy", "OrderedReady")
        spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        spec.setdefault(
            "persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"}
        )
        for claim in spec.get("volumeClaimTemplates") or []:
            _normalise_amounts(((claim.get("spec") or {}).get("resources") or {}).get("requests"))


def _allocate_service(store: Store, service: dict[str, Any], old: dict[str, Any] | None) -> None:
    spec = service.setdefault("spec", {})
    kind = spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    uid = service["metadata"].get("uid")
    others = [s for s in store.items(r.SERVICES) if s["metadata"]["uid"] != uid]
    old_spec = (old or {}).get("spec") or {}
    if kind != "ExternalName" and not spec.get("clusterIP"):
        used = {s["spec"].get("clusterIP") for s in others}
        spec["clusterIP"] = old_spec.get("clusterIP") or next(
            ip for ip in (f"10.96.{n // 256}.{n % 256}" for n in range(10, 65535)) if ip not in used
        )
    if spec.get("clusterIP"):
        spec["clusterIPs"] = [spec["clusterIP"]]
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
    used_ports = {p["nodePort"] for s in others for p in s["spec"].get("ports") or [] if p.get("nodePort")}
    old_ports = {p.get("port"): p.get("nodePort") for p in old_spec.get("ports") or []}
    for index, port in enumerate(spec.get("ports") or []):
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
        if kind not in ("NodePort", "LoadBalancer"):
            port.pop("nodePort", None)
        elif port.get("nodePort") in used_ports:
            raise errors.invalid(
                r.SERVICES,
                service["metadata"]["name"],
                [
                    (
                        f"spec.ports[{index}].nodePort",
                        f"Invalid value: {port['nodePort']}: provided port is already allocated",
                    )
                ],
            )
        elif not port.get("nodePort"):
            port["nodePort"] = old_ports.get(port.get("port")) or next(
                n for n in NODE_PORT_RANGE if n not in used_ports
            )
        if port.get("nodePort"):
            used_ports.add(port["nodePort"])
    service.setdefault("status", {"loadBalancer": {}})


def apply_defaults(
    store: Store, resource: r.ResourceType, obj: dict[str, Any], old: dict[str, Any] | None = None
) -> None:
    """Fill in what the real API fills in; `old` is the stored object on updates."""
    metadata = obj["metadata"]
    if resource is r.NAMESPACES:
        metadata.setdefault("labels", {})["kubernetes.io/metadata.name"] = metadata["name"]
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj.setdefault("status", {}).setdefault("phase", "Active")
    elif resource is r.PODS:
        pod_spec_defaults(obj.setdefault("spec", {}))
        status = obj.setdefault("status", {})
        status.setdefault("phase", "Pending")
        status.setdefault("qosClass", _qos_class(obj))
    elif resource in TEMPLATED:
        _workload_defaults(resource, obj, creating=old is None)
    elif resource is r.CRON_JOBS:
        spec = obj.setdefault("spec", {})
        for field, value in (
            ("concurrencyPolicy", "Allow"),
            ("suspend", False),
            ("successfulJobsHistoryLimit", 3),
            ("failedJobsHistoryLimit", 1),
        ):
            spec.setdefault(field, value)
        template = spec.setdefault("jobTemplate", {}).setdefault("spec", {}).setdefault("template", {})
        pod_spec_defaults(template.setdefault("spec", {}))
    elif resource is r.SERVICES:
        _allocate_service(store, obj, old)
    elif resource is r.SECRETS:
        obj.setdefault("type", "Opaque")
        for key, text in (obj.pop("stringData", None) or {}).items():
            obj.setdefault("data", {})[key] = base64.b64encode(str(text).encode()).decode()
    elif resource is r.PVCS:
        obj.setdefault("spec", {}).setdefault("volumeMode", "Filesystem")
        _normalise_amounts((obj["spec"].get("resources") or {}).get("requests"))
        obj.setdefault("status", {}).setdefault("phase", "Pending")
    elif resource is r.RESOURCE_QUOTAS:
        _normalise_amounts(obj.setdefault("spec", {}).get("hard"))
        obj.setdefault("status", {"hard": dict(obj["spec"].get("hard") or {}), "used": {}})
    elif resource is r.HPAS:
        obj.setdefault("spec", {}).setdefault("minReplicas", 1)


def object_usage(resource: r.ResourceType, obj: dict[str, Any]) -> dict[str, Fraction]:
    """What one object counts against a ResourceQuota."""
    usage: dict[str, Fraction] = {f"count/{resource.key}": Fraction(1)}
    if resource is r.PODS:
        if (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return {}
        usage["pods"] = Fraction(1)
        for name, amount in pod_resources(obj, "requests").items():
            usage[f"requests.{name}"] = amount
            if name in ("cpu", "memory"):
                usage[name] = amount
        for name, amount in pod_resources(obj, "limits").items():
            usage[f"limits.{name}"] = amount
    elif resource is r.PVCS:
        usage["persistentvolumeclaims"] = Fraction(1)
        storage = ((obj.get("spec") or {}).get("resources") or {}).get("requests", {}).get("storage")
        usage["requests.storage"] = parse_quantity(storage or 0)
    elif resource in (r.SERVICES, r.SECRETS, r.CONFIG_MAPS, r.RESOURCE_QUOTAS):
        usage[resource.plural] = Fraction(1)
    return usage


def namespace_usage(store: Store, namespace: str) -> dict[str, Fraction]:
    total: dict[str, Fraction] = defaultdict(Fraction)
    for resource in (
        r.PODS,
        r.PVCS,
        r.SERVICES,
        r.SECRETS,
        r.CONFIG_MAPS,
        r.RESOURCE_QUOTAS,
        r.DEPLOYMENTS,
        r.STATEFUL_SETS,
        r.JOBS,
    ):
        for obj in store.items(resource, namespace):
            for key, amount in object_usage(resource, obj).items():
                total[key] += amount
    return dict(total)


def _listing(amounts: dict[str, Fraction], keys: list[str]) -> str:
    return ",".join(f"{key}={format_quantity(amounts.get(key, Fraction(0)))}" for key in keys)


def admit_quota(store: Store, resource: r.ResourceType, obj: dict[str, Any], name: str) -> None:
    """Refuse a new object that would push a ResourceQuota in its namespace past its hard limits.

    `name` is what the refusal names: the real API admits before generating a name, so an object
    created with `generateName` is refused under that prefix.
    """
    namespace = obj["metadata"].get("namespace", "")
    quotas = store.items(r.RESOURCE_QUOTAS, namespace)
    if not quotas:
        return
    requested = object_usage(resource, obj)
    used = namespace_usage(store, namespace)
    for quota in quotas:
        hard = {k: parse_quantity(v) for k, v in ((quota.get("spec") or {}).get("hard") or {}).items()}
        if resource is r.PODS:
            missing = sorted(k for k in hard if k in _COMPUTE_KEYS and k not in requested)
            if missing:
                raise errors.forbidden(
                    resource,
                    name,
                    f"failed quota: {quota['metadata']['name']}: must specify {','.join(missing)}",
                )
        over = sorted(k for k in hard if k in requested and used.get(k, Fraction(0)) + requested[k] > hard[k])
        if over:
            raise errors.forbidden(
                resource,
                name,
                f"exceeded quota: {quota['metadata']['name']}, requested: "
                f"{_listing(requested, over)}, used: {_listing(used, over)}, limited: {_listing(hard, over)}",
            )
