"""The field validation that makes the real API answer 422 Invalid, for the shapes the platform uses."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any

from tests.kube_double import resources as r
from tests.kube_double.quantities import parse_quantity
from tests.kube_double.selectors import selector_from_spec

Cause = tuple[str, str]

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_KEY_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
LABEL_MESSAGE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
    "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
    f"validation is '{_LABEL.pattern[1:-1]}')"
)
SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
    f"validation is '{_SUBDOMAIN.pattern[1:-1]}')"
)
_WORKLOADS = (r.DEPLOYMENTS, r.REPLICA_SETS, r.STATEFUL_SETS)
_SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
NODE_PORT_RANGE = range(30000, 32768)


def name_causes(name: str, dns_label: bool, field: str = "metadata.name") -> list[Cause]:
    if dns_label and (len(name) > 63 or not _LABEL.match(name)):
        return [(field, f'Invalid value: "{name}": {LABEL_MESSAGE}')]
    if not dns_label and (len(name) > 253 or not _SUBDOMAIN.match(name)):
        return [(field, f'Invalid value: "{name}": {SUBDOMAIN_MESSAGE}')]
    return []


def _label_causes(labels: Any, field: str) -> list[Cause]:
    if not isinstance(labels, Mapping):
        return [(field, "Invalid value: labels must be a map of strings")] if labels is not None else []
    causes = []
    for key, value in labels.items():
        prefix, _, name = str(key).rpartition("/")
        if (prefix and name_causes(prefix, False)) or len(name) > 63 or not _LABEL_KEY_NAME.match(name):
            causes.append(
                (
                    field,
                    f'Invalid value: "{key}": name part must consist of alphanumeric characters, '
                    "'-', '_' or '.', and must start and end with an alphanumeric character",
                )
            )
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            causes.append(
                (
                    field,
                    f'Invalid value: "{value}": a valid label must be an empty string or consist '
                    "of alphanumeric characters, '-', '_' or '.', and must start and end with an "
                    "alphanumeric character",
                )
            )
    return causes


def _quantity_causes(amounts: Any, field: str) -> list[Cause]:
    causes = []
    for name, value in (amounts or {}).items():
        try:
            parse_quantity(value)
        except ValueError as error:
            causes.append((f"{field}[{name}]", f'Invalid value: "{value}": {error}'))
    return causes


def _containers_causes(containers: Any, field: str, volumes: set[str], required: bool) -> list[Cause]:
    if not containers:
        return [(field, "Required value")] if required else []
    causes: list[Cause] = []
    seen: set[str] = set()
    for index, container in enumerate(containers):
        at = f"{field}[{index}]"
        name = container.get("name") or ""
        causes += name_causes(name, True, f"{at}.name") if name else [(f"{at}.name", "Required value")]
        if name in seen:
            causes.append((f"{at}.name", f'Duplicate value: "{name}"'))
        seen.add(name)
        if not container.get("image"):
            causes.append((f"{at}.image", "Required value"))
        resources = container.get("resources") or {}
        causes += _quantity_causes(resources.get("requests"), f"{at}.resources.requests")
        causes += _quantity_causes(resources.get("limits"), f"{at}.resources.limits")
        for port_index, port in enumerate(container.get("ports") or []):
            number = port.get("containerPort")
            if not isinstance(number, int) or not 0 < number < 65536:
                causes.append(
                    (
                        f"{at}.ports[{port_index}].containerPort",
                        f"Invalid value: {port.get('containerPort')}: must be between 1 and 65535",
                    )
                )
        for mount_index, mount in enumerate(container.get("volumeMounts") or []):
            if mount.get("name") not in volumes:
                causes.append((f"{at}.volumeMounts[{mount_index}].name", f'Not found: "{mount.get("name")}"'))
    return causes


def pod_spec_causes(spec: Mapping[str, Any], field: str, restart_policies: tuple[str, ...]) -> list[Cause]:
    volumes = [v.get("name", "") for v in spec.get("volumes") or []]
    causes = [
        (f"{field}.volumes[{i}].name", f'Duplicate value: "{name}"')
        for i, name in enumerate(volumes)
        if name in volumes[:i]
    ]
    causes += _containers_causes(spec.get("containers"), f"{field}.containers", set(volumes), True)
    causes += _containers_causes(spec.get("initContainers"), f"{field}.initContainers", set(volumes), False)
    policy = spec.get("restartPolicy", restart_policies[0])
    if policy not in restart_policies:
        supported = ", ".join(f'"{p}"' for p in restart_policies)
        causes.append(
            (f"{field}.restartPolicy", f'Unsupported value: "{policy}": supported values: {supported}')
        )
    return causes


def _template_causes(
    spec: Mapping[str, Any], restart_policies: tuple[str, ...], check_selector: bool, field: str = "spec"
) -> list[Cause]:
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    causes = _label_causes(labels, f"{field}.template.metadata.labels")
    if check_selector:
        selector = spec.get("selector")
        if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")):
            causes.append((f"{field}.selector", "Required value"))
        else:
            try:
                if not selector_from_spec(selector).matches(labels):
                    causes.append(
                        (
                            f"{field}.template.metadata.labels",
                            f"Invalid value: {json.dumps(labels)}: "
                            "`selector` does not match template `labels`",
                        )
                    )
            except ValueError as error:
                causes.append((f"{field}.selector", f"Invalid value: {error}"))
    for counter in ("replicas", "completions", "parallelism", "backoffLimit"):
        if isinstance(spec.get(counter), int) and spec[counter] < 0:
            causes.append(
                (f"{field}.{counter}", f"Invalid value: {spec[counter]}: must be greater than or equal to 0")
            )
    return causes + pod_spec_causes(template.get("spec") or {}, f"{field}.template.spec", restart_policies)


def _service_causes(spec: Mapping[str, Any]) -> list[Cause]:
    kind = spec.get("type", "ClusterIP")
    if kind not in _SERVICE_TYPES:
        return [
            (
                "spec.type",
                f'Unsupported value: "{kind}": supported values: '
                + ", ".join(f'"{t}"' for t in _SERVICE_TYPES),
            )
        ]
    causes: list[Cause] = []
    for index, port in enumerate(spec.get("ports") or []):
        if not isinstance(port.get("port"), int) or not 0 < port["port"] < 65536:
            causes.append(
                (
                    f"spec.ports[{index}].port",
                    f"Invalid value: {port.get('port')}: must be between 1 and 65535, inclusive",
                )
            )
        node_port = port.get("nodePort")
        if node_port and kind == "ClusterIP":
            causes.append(
                (f"spec.ports[{index}].nodePort", "Forbidden: may not be used when `type` is 'ClusterIP'")
            )
        elif node_port and node_port not in NODE_PORT_RANGE:
            causes.append(
                (
                    f"spec.ports[{index}].nodePort",
                    f"Invalid value: {node_port}: provided port is not "
                    "in the valid range. The range of valid ports is 30000-32767",
                )
            )
    if not spec.get("ports") and kind != "ExternalName" and spec.get("clusterIP") != "None":
        causes.append(("spec.ports", "Required value"))
    return causes + _label_causes(spec.get("selector"), "spec.selector")


def _config_causes(obj: Mapping[str, Any], is_secret: bool) -> list[Cause]:
    causes = []
    for section in ("data", "stringData", "binaryData"):
        for key, value in (obj.get(section) or {}).items():
            if not _CONFIG_KEY.match(key):
                causes.append(
                    (
                        f"{section}[{key}]",
                        f'Invalid value: "{key}": a valid config key must consist of '
                        "alphanumeric characters, '-', '_' or '.'",
                    )
                )
            if is_secret and section == "data":
                try:
                    base64.b64decode(str(value), validate=True)
                except (binascii.Error, ValueError):
                    causes.append((f"data[{key}]", "Invalid value: illegal base64 data"))
    return causes


def _kind_causes(resource: r.ResourceType, obj: Mapping[str, Any]) -> list[Cause]:
    spec = obj.get("spec") or {}
    if resource is r.PODS:
        return pod_spec_causes(spec, "spec", ("Always", "OnFailure", "Never"))
    if resource in _WORKLOADS:
        return _template_causes(spec, ("Always",), check_selector=True)
    if resource is r.JOBS:
        return _template_causes(spec, ("OnFailure", "Never"), check_selector=False)
    if resource is r.CRON_JOBS:
        causes = [] if spec.get("schedule") else [("spec.schedule", "Required value")]
        job_spec = (spec.get("jobTemplate") or {}).get("spec") or {}
        return causes + _template_causes(job_spec, ("OnFailure", "Never"), False, "spec.jobTemplate.spec")
    if resource is r.SERVICES:
        return _service_causes(spec)
    if resource in (r.CONFIG_MAPS, r.SECRETS):
        return _config_causes(obj, resource is r.SECRETS)
    if resource is r.PVCS:
        causes = [] if spec.get("accessModes") else [("spec.accessModes", "Required value")]
        storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
        if storage is None:
            return [*causes, ("spec.resources[storage]", "Required value")]
        return causes + _quantity_causes({"storage": storage}, "spec.resources.requests")
    if resource is r.RESOURCE_QUOTAS:
        return _quantity_causes(spec.get("hard"), "spec.hard")
    if resource is r.HPAS:
        causes = [] if spec.get("scaleTargetRef") else [("spec.scaleTargetRef", "Required value")]
        if not isinstance(spec.get("maxReplicas"), int) or spec["maxReplicas"] < 1:
            causes.append(
                (
                    "spec.maxReplicas",
                    f"Invalid value: {spec.get('maxReplicas')}: must be greater than or equal to 1",
                )
            )
        return causes
    return []


def validate(resource: r.ResourceType, obj: Mapping[str, Any]) -> list[Cause]:
    metadata = obj.get("metadata") or {}
    causes = name_causes(metadata.get("name", ""), resource.dns_label_names)
    causes += _label_causes(metadata.get("labels"), "metadata.labels")
    for index, owner in enumerate(metadata.get("ownerReferences") or []):
        for field in ("apiVersion", "kind", "name", "uid"):
            if not owner.get(field):
                causes.append((f"metadata.ownerReferences[{index}].{field}", "Required value"))
    return causes + _kind_causes(resource, obj)


def _without(spec: Mapping[str, Any], *fields: str) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k not in fields}


def _pod_spec_frozen(spec: Mapping[str, Any]) -> dict[str, Any]:
    frozen = _without(spec, "activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds")
    for group in ("containers", "initContainers"):
        frozen[group] = [_without(c, "image") for c in spec.get(group) or []]
    return frozen


def validate_update(resource: r.ResourceType, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Cause]:
    """Fields the real API refuses to change after creation."""
    before, after = old.get("spec") or {}, new.get("spec") or {}
    if resource is r.PODS and _pod_spec_frozen(before) != _pod_spec_frozen(after):
        return [
            (
                "spec",
                "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, "
                "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only "
                "additions to existing tolerations) or `spec.terminationGracePeriodSeconds`",
            )
        ]
    if resource in (*_WORKLOADS, r.JOBS) and before.get("selector") != after.get("selector"):
        return [("spec.selector", f"Invalid value: {json.dumps(after.get('selector'))}: field is immutable")]
    if resource is r.JOBS:
        for field in ("template", "completions", "completionMode"):
            if before.get(field) != after.get(field) and not (field == "template" and after.get("suspend")):
                return [(f"spec.{field}", "Invalid value: field is immutable")]
    if resource is r.STATEFUL_SETS:
        mutable = (
            "replicas",
            "ordinals",
            "template",
            "updateStrategy",
            "persistentVolumeClaimRetentionPolicy",
            "minReadySeconds",
        )
        if _without(before, *mutable) != _without(after, *mutable):
            return [
                (
                    "spec",
                    "Forbidden: updates to statefulset spec for fields other than 'replicas', "
                    "'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and "
                    "'minReadySeconds' are forbidden",
                )
            ]
    if resource is r.SERVICES and before.get("clusterIP") not in (None, after.get("clusterIP")):
        return [("spec.clusterIP", f'Invalid value: "{after.get("clusterIP")}": field is immutable')]
    if resource in (r.CONFIG_MAPS, r.SECRETS) and old.get("immutable"):
        if not new.get("immutable"):
            return [("immutable", "Forbidden: field is immutable when `immutable` is set")]
        for section in ("data", "stringData", "binaryData"):
            if old.get(section) != new.get(section):
                return [(section, "Forbidden: field is immutable when `immutable` is set")]
    if resource is r.PVCS and _without(before, "resources") != _without(after, "resources"):
        return [
            (
                "spec",
                "Forbidden: spec is immutable after creation except resources.requests and "
                "volumeAttributesClassName for bound claims",
            )
        ]
    return []
