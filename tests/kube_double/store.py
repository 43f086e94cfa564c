"""Objects, resource versions and the API verbs' semantics, independent of HTTP."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

from tests.kube_double import errors
from tests.kube_double import resources as r
from tests.kube_double.admission import admit_quota, apply_defaults
from tests.kube_double.patching import (
    PatchError,
    apply_configuration,
    field_paths,
    fields_v1,
    json_patch,
    merge_patch,
    paths_from_fields_v1,
    strategic_merge_patch,
)
from tests.kube_double.selectors import parse_field_selector, parse_label_selector
from tests.kube_double.storage import Storage, pending_finalizers
from tests.kube_double.validation import validate, validate_update

APPLY = "application/apply-patch+yaml"
MERGE_PATCHES = {
    "application/merge-patch+json": merge_patch,
    "application/strategic-merge-patch+json": strategic_merge_patch,
}
_SERVER_OWNED = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "selfLink",
)


def _metadata(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.setdefault("metadata", {}), dict):
        raise errors.bad_request("the request body must be a JSON object with an object `metadata`")
    metadata: dict[str, Any] = body["metadata"]
    return metadata


class Store(Storage):
    """The API verbs with the real API's semantics, on top of the storage the controllers share."""

    def _require_namespace(self, namespace: str, resource: r.ResourceType, name: str) -> None:
        found = self.find(r.NAMESPACES, "", namespace)
        if found is None:
            raise errors.not_found(r.NAMESPACES, namespace)
        if found["metadata"].get("deletionTimestamp"):
            raise errors.forbidden(
                resource,
                name,
                f"unable to create new content in namespace {namespace} because it is being terminated",
            )

    def create(
        self,
        resource: r.ResourceType,
        namespace: str,
        body: Any,
        field_manager: str | None = None,
        operation: str = "Update",
    ) -> dict[str, Any]:
        with self.lock:
            obj = copy.deepcopy(body)
            metadata = _metadata(obj)
            managed = [self._managed_entry(resource, field_manager, operation, body)] if field_manager else []
            if not resource.namespaced:
                metadata.pop("namespace", None)
                namespace = ""
            elif metadata.get("namespace") not in (None, "", namespace):
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            else:
                metadata["namespace"] = namespace
            shown_name = metadata.get("name") or metadata.get("generateName") or ""
            if not metadata.get("name") and metadata.get("generateName"):
                metadata["name"] = self._generated_name(resource, namespace, str(metadata["generateName"]))
            name = metadata.get("name") or ""
            if not name:
                raise errors.invalid(
                    resource, "", [("metadata.name", "Required value: name or generateName is required")]
                )
            if resource.namespaced:
                self._require_namespace(namespace, resource, name)
            if self.find(resource, namespace, name) is not None:
                raise errors.already_exists(resource, name)
            for key in _SERVER_OWNED:
                metadata.pop(key, None)
            metadata.update(uid=self.new_uid(), creationTimestamp=self.clock.timestamp())
            obj.update(apiVersion=resource.api_version, kind=resource.kind)
            if resource.status:
                obj.pop("status", None)
            apply_defaults(self, resource, obj)
            if "spec" in obj:
                metadata["generation"] = 1
            causes = validate(resource, obj)
            if causes:
                raise errors.invalid(resource, name, causes)
            admit_quota(self, resource, obj, shown_name)
            if managed:
                metadata["managedFields"] = managed
            return copy.deepcopy(self._commit(resource, obj, None))

    def get(self, resource: r.ResourceType, namespace: str, name: str) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.require(resource, namespace, name))

    def list(
        self,
        resource: r.ResourceType,
        namespace: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int = 0,
        continue_token: str = "",
    ) -> dict[str, Any]:
        try:
            labels, fields = parse_label_selector(label_selector), parse_field_selector(field_selector)
            after = tuple(json.loads(base64.urlsafe_b64decode(continue_token))) if continue_token else None
        except ValueError as error:
            raise errors.bad_request(str(error)) from error
        with self.lock:
            matching = sorted(
                (
                    obj
                    for obj in self.items(resource, namespace)
                    if labels.matches(obj["metadata"].get("labels")) and fields.matches(obj)
                ),
                key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]),
            )
            if after is not None:
                matching = [
                    o for o in matching if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > after
                ]
            metadata: dict[str, Any] = {"resourceVersion": str(self._revision)}
            if 0 < limit < len(matching):
                last = matching[limit - 1]["metadata"]
                token = json.dumps([last.get("namespace", ""), last["name"]]).encode()
                metadata.update(
                    remainingItemCount=len(matching) - limit,
                    **{"continue": base64.urlsafe_b64encode(token).decode()},
                )
                matching = matching[:limit]
            items = [
                {k: v for k, v in copy.deepcopy(o).items() if k not in ("kind", "apiVersion")}
                for o in matching
            ]
            return {
                "kind": resource.list_kind,
                "apiVersion": resource.api_version,
                "metadata": metadata,
                "items": items,
            }

    def _managed_entry(
        self,
        resource: r.ResourceType,
        manager: str,
        operation: str,
        config: dict[str, Any],
        subresource: str | None = None,
    ) -> dict[str, Any]:
        entry = {
            "manager": manager,
            "operation": operation,
            "apiVersion": resource.api_version,
            "time": self.clock.timestamp(),
            "fieldsType": "FieldsV1",
            "fieldsV1": fields_v1(field_paths(config)),
        }
        if subresource:
            entry["subresource"] = subresource
        return entry

    def _update(
        self,
        resource: r.ResourceType,
        current: dict[str, Any],
        incoming: dict[str, Any],
        subresource: str | None,
    ) -> dict[str, Any]:
        """The shared end of PUT and PATCH: keep what the caller may not change, validate, store."""
        if subresource == "status":
            new = {**copy.deepcopy(current), "status": incoming.get("status") or {}}
        else:
            new = incoming
            metadata, kept = _metadata(new), current["metadata"]
            for key in (
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ):
                metadata.pop(key, None)
                if key in kept:
                    metadata[key] = kept[key]
            if "managedFields" not in metadata and "managedFields" in kept:
                metadata["managedFields"] = kept["managedFields"]
            new.update(apiVersion=resource.api_version, kind=resource.kind)
            new.pop("status", None)
            if resource.status and "status" in current:
                new["status"] = copy.deepcopy(current["status"])
            apply_defaults(self, resource, new, old=current)
            causes = validate(resource, new) + validate_update(resource, current, new)
            if causes:
                raise errors.invalid(resource, kept["name"], causes)
            if "generation" in metadata and new.get("spec") != current.get("spec"):
                metadata["generation"] += 1
        return copy.deepcopy(self._commit(resource, new, current))

    def replace(
        self, resource: r.ResourceType, namespace: str, name: str, body: Any, subresource: str | None = None
    ) -> dict[str, Any]:
        with self.lock:
            current = self.require(resource, namespace, name)
            incoming = copy.deepcopy(body)
            metadata = _metadata(incoming)
            if metadata.get("name") not in (None, name):
                raise errors.bad_request(
                    f"the name of the object ({metadata['name']}) does not match the name on the URL ({name})"
                )
            if metadata.get("resourceVersion") not in (None, "", current["metadata"]["resourceVersion"]):
                raise errors.stale(resource, name)
            return self._update(resource, current, incoming, subresource)

    def patch(
        self,
        resource: r.ResourceType,
        namespace: str,
        name: str,
        content_type: str,
        body: Any,
        subresource: str | None = None,
        field_manager: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Apply a patch; returns the object and whether it was created (server-side apply only)."""
        media_type = content_type.split(";")[0].strip().lower()
        with self.lock:
            current = self.find(resource, namespace, name)
            if media_type == APPLY:
                return self._apply(resource, namespace, name, current, body, subresource, field_manager)
            if current is None:
                raise errors.not_found(resource, name)
            try:
                if media_type == "application/json-patch+json":
                    patched = json_patch(current, body)
                elif media_type in MERGE_PATCHES and isinstance(body, dict):
                    patched = MERGE_PATCHES[media_type](current, body)
                elif media_type in MERGE_PATCHES:
                    raise PatchError("a merge patch must be a JSON object")
                else:
                    raise errors.KubeError(
                        415,
                        "UnsupportedMediaType",
                        f"the body of the request was in an "
                        f"unknown format - accepted media types include: "
                        f"application/json-patch+json, {', '.join(MERGE_PATCHES)}, {APPLY}",
                    )
            except PatchError as error:
                raise errors.KubeError(422, "Invalid", str(error)) from error
            if not isinstance(patched, dict) or _metadata(patched).get("name") != name:
                raise errors.KubeError(422, "Invalid", "a patch may not change the object's name")
            if patched["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                raise errors.stale(resource, name)
            return self._update(resource, current, patched, subresource), False

    def _apply(
        self,
        resource: r.ResourceType,
        namespace: str,
        name: str,
        current: dict[str, Any] | None,
        body: Any,
        subresource: str | None,
        field_manager: str | None,
    ) -> tuple[dict[str, Any], bool]:
        if not field_manager:
            raise errors.bad_request("PATCH with apply requires the fieldManager parameter")
        config = copy.deepcopy(body)
        metadata = _metadata(config)
        if config.get("apiVersion") != resource.api_version or config.get("kind") != resource.kind:
            raise errors.bad_request(
                f"apply needs apiVersion {resource.api_version!r} and kind {resource.kind!r} in the body"
            )
        if metadata.get("name") != name:
            raise errors.bad_request(
                f"the name of the object ({metadata.get('name')}) does not match the name on the URL ({name})"
            )
        if current is None:
            if subresource:
                raise errors.not_found(resource, name)
            return self.create(resource, namespace, config, field_manager, "Apply"), True
        if metadata.get("resourceVersion") not in (None, "", current["metadata"]["resourceVersion"]):
            raise errors.stale(resource, name)
        owned = current["metadata"].get("managedFields") or []
        mine = [
            e
            for e in owned
            if e.get("manager") == field_manager
            and e.get("operation") == "Apply"
            and e.get("subresource") == subresource
        ]
        previously = set().union(*(paths_from_fields_v1(e.get("fieldsV1") or {}) for e in mine))
        merged = apply_configuration(current, config, previously)
        merged["metadata"]["managedFields"] = [e for e in owned if e not in mine] + [
            self._managed_entry(resource, field_manager, "Apply", config, subresource)
        ]
        return self._update(resource, current, merged, subresource), False

    def delete(
        self, resource: r.ResourceType, namespace: str, name: str, options: dict[str, Any]
    ) -> tuple[dict[str, Any], int]:
        """Delete with DeleteOptions; returns the response body and HTTP code (202 while finalizers run)."""
        with self.lock:
            current = self.require(resource, namespace, name)
            metadata = current["metadata"]
            preconditions = options.get("preconditions") or {}
            for field, mine in (("uid", metadata["uid"]), ("resourceVersion", metadata["resourceVersion"])):
                if preconditions.get(field) not in (None, mine):
                    raise errors.conflict(
                        resource,
                        name,
                        f"Precondition failed: {field[0].upper()}{field[1:]} in "
                        f"precondition: {preconditions[field]}, in object meta: {mine}",
                    )
            policy = options.get("propagationPolicy") or (
                "Orphan" if options.get("orphanDependents") else "Background"
            )
            if policy not in ("Orphan", "Background", "Foreground"):
                raise errors.invalid(
                    resource,
                    name,
                    [
                        (
                            "propagationPolicy",
                            f'Unsupported value: "{policy}": '
                            'supported values: "Foreground", "Background", "Orphan"',
                        )
                    ],
                )
            if metadata.get("deletionTimestamp"):
                if resource is r.NAMESPACES:
                    raise errors.conflict(
                        resource,
                        name,
                        "The system is ensuring all content is removed from "
                        "this namespace.  Upon completion, this namespace will automatically "
                        "be purged by the system.",
                    )
                return copy.deepcopy(current), 202
            if policy == "Orphan":
                for dependent_resource, dependent in self.dependents(metadata["uid"]):
                    orphan = copy.deepcopy(dependent)
                    orphan["metadata"]["ownerReferences"] = [
                        ref
                        for ref in orphan["metadata"]["ownerReferences"]
                        if ref.get("uid") != metadata["uid"]
                    ]
                    self.save(dependent_resource, orphan)
            deleting = copy.deepcopy(current)
            if policy == "Foreground" and self.dependents(metadata["uid"]):
                deleting["metadata"]["finalizers"] = [
                    *(metadata.get("finalizers") or []),
                    "foregroundDeletion",
                ]
            if resource is r.NAMESPACES:
                deleting["status"] = {**deleting.get("status", {}), "phase": "Terminating"}
            if pending_finalizers(resource, deleting):
                deleting["metadata"].update(
                    deletionTimestamp=self.clock.timestamp(), deletionGracePeriodSeconds=0
                )
                saved = copy.deepcopy(self._commit(resource, deleting, current))
                return saved, 200 if resource is r.NAMESPACES else 202
            removed = self.remove(resource, current)
            return (removed if resource.returns_deleted_object else errors.success(resource, current)), 200

    def delete_collection(
        self,
        resource: r.ResourceType,
        namespace: str | None,
        label_selector: str | None,
        field_selector: str | None,
        options: dict[str, Any],
    ) -> dict[str, Any]:
        with self.lock:
            for item in self.list(resource, namespace, label_selector, field_selector)["items"]:
                self.delete(
                    resource, item["metadata"].get("namespace", ""), item["metadata"]["name"], options
                )
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
